"""libvirt's capability probe with ferrovm as the emulator (issue 13, part 1):
`virsh domcapabilities --emulatorbin FERROVM --virttype kvm` runs ferrovm
twice (`-machine none,accel=kvm:tcg`, then `accel=tcg`) and asks it what it
has. It must succeed, and the domain capabilities libvirt derives must name
what ferrovm really builds: its virtio devices, its CPU models, its machine
types, and nothing it lacks.

Needs Debian's libvirt 9.0 (libvirt-daemon-system, libvirt-clients; see
scripts/deps.sh). The test runs its own libvirtd (tests/libvirt_env.py), whose
capability cache starts empty, so every binary is probed afresh."""
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET

import pytest

from libvirt_env import Libvirt, require_libvirt


@pytest.fixture(scope="module")
def libvirt():
    require_libvirt()
    lv = Libvirt()
    try:
        lv.start()
        yield lv
    finally:
        lv.close()


def domcapabilities(ferrovm, lv, *extra):
    return ET.fromstring(lv.ok("domcapabilities", "--emulatorbin", ferrovm, "--virttype", "kvm",
                               *extra))


def enum(root, path, name):
    e = root.find(f"{path}/enum[@name='{name}']")
    return [v.text for v in e.findall("value")] if e is not None else []


def cached_flags(lv, binary):
    """The capability flags libvirt derived from the probe of `binary`
    (its cache file, kept until the next probe)."""
    cache = os.path.join(lv.root, "cache", "qemu", "capabilities")
    for name in os.listdir(cache):
        root = ET.parse(os.path.join(cache, name)).getroot()
        if root.findtext("emulator") == binary:
            return {f.get("name") for f in root.findall("flag")}
    pytest.fail(f"no libvirt capability cache entry for {binary} in {cache}")


# Flags libvirt 9.0 sets from qom-list-types and device-list-properties:
# the ones for ferrovm's three virtio devices and qemu-xhci, and some for devices ferrovm
# does not have (checked to be real flag names against QEMU's probe).
HAS = {"virtio-net", "virtio-balloon-pci.deflate-on-oom", "virtio-balloon.free-page-reporting",
       "virtio-blk.queue-size", "x86-max-cpu", "query-cpu-model-expansion",
       "query-cpu-definitions", "pcie-root-port", "qemu-xhci",
       # virtio devices on PCIe root ports (the non-transitional twins); COM1 for <serial>.
       "virtio-pci-non-transitional", "isa-serial"}
LACKS = {"piix3-usb-uhci", "virtio-scsi-pci", "vfio-pci",
         "usb-storage", "ich9-ahci", "VGA", "virtio-rng", "pci-bridge", "virtio-gpu"}


def check_common(lv, root, ferrovm, builtin_ide=False):
    assert root.findtext("path") == ferrovm
    assert root.findtext("domain") == "kvm"
    assert root.findtext("arch") == "x86_64"
    # virtio-blk-pci: the virtio disk bus and model. libvirt 9.0 adds scsi
    # and fdc whatever the emulator says (virQEMUCapsFillDomainDeviceDiskCaps);
    # the buses it adds only from the probe's answers must be absent.
    buses = enum(root, "devices/disk", "bus")
    # libvirt derives both twins' models from one flag (qemu_capabilities.c
    # QEMU_CAPS_VIRTIO_PCI_TRANSITIONAL); ferrovm builds only the
    # non-transitional one, so a `virtio-transitional` disk fails to start
    # with ferrovm's "not a valid device model name" (docs/libvirt.md).
    assert "virtio" in buses, buses
    assert enum(root, "devices/disk", "model") == [
        "virtio", "virtio-transitional", "virtio-non-transitional"]
    for absent in ("sata", "usb") + (() if builtin_ide else ("ide",)):
        assert absent not in buses, buses
    # No display device, no PCI passthrough, no RNG, no TPM, no SEV/SGX.
    assert enum(root, "devices/video", "modelType") == ["none"]
    assert enum(root, "devices/graphics", "type") == []
    assert enum(root, "devices/hostdev", "pciBackend") == []
    assert enum(root, "devices/rng", "model") == []
    assert root.find("devices/tpm").get("supported") == "no"
    for f in ("sev", "sgx"):
        assert root.find(f"features/{f}").get("supported") == "no", f
    # The CPU models are ferrovm's own: qemu64 as the only named one (with
    # the host's features on top for host-model), host and max as modes.
    custom = root.find("cpu/mode[@name='custom']")
    assert [m.text for m in custom.findall("model")] == ["qemu64"]
    assert root.findtext("cpu/mode[@name='host-model']/model") == "qemu64"
    assert root.find("cpu/mode[@name='host-passthrough']").get("supported") == "yes"
    assert root.find("cpu/mode[@name='maximum']").get("supported") == "yes"
    flags = cached_flags(lv, ferrovm)
    assert HAS <= flags, HAS - flags
    assert not LACKS & flags, LACKS & flags


def test_flag_names_are_real_for_qemu(libvirt):
    """The reference: QEMU 7.2 probed the same way sets the flags of HAS and
    LACKS, so their absence for ferrovm is a statement, not a typo."""
    real = shutil.which("qemu-system-x86_64")
    if not real:
        pytest.fail("qemu-system-x86_64 is missing (Debian's qemu-system-x86)")
    # A path of its own, so libvirt probes it now whatever it has cached.
    d = tempfile.mkdtemp(prefix="fv-qemu")
    os.chmod(d, 0o755)
    qemu = os.path.join(d, "qemu-system-x86_64")
    os.symlink(real, qemu)
    try:
        domcapabilities(qemu, libvirt, "--machine", "q35")
        flags = cached_flags(libvirt, qemu)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert (HAS | LACKS) <= flags, (HAS | LACKS) - flags


def test_domcapabilities_q35(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt, "--machine", "q35")
    check_common(libvirt, root, ferrovm)
    # libvirt resolves the alias to the canonical type query-machines gives.
    assert root.findtext("machine") == "pc-q35-7.2"


def test_domcapabilities_default_machine(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt)
    # libvirt assumes any pc-i440fx-* machine has a built-in IDE controller
    # (qemuDomainMachineHasBuiltinIDE, by name); ferrovm's `pc` is its Q35-like
    # board without one (docs/known-gaps.md).
    check_common(libvirt, root, ferrovm, builtin_ide=True)
    # query-machines' default is pc-i440fx-7.2 (alias pc), as QEMU's.
    assert root.findtext("machine") == "pc-i440fx-7.2"
