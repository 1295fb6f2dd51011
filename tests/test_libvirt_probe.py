"""libvirt's capability probe with ferrovm as the emulator (issue 13, part 1):
`virsh domcapabilities --emulatorbin FERROVM --virttype kvm` runs ferrovm
twice (`-machine none,accel=kvm:tcg`, then `accel=tcg`) and asks it what it
has. It must succeed, and the domain capabilities libvirt derives must name
what ferrovm really builds: its virtio devices, its CPU models, its machine
types, and nothing it lacks.

Needs Debian's libvirt 9.0 (libvirt-daemon-system, libvirt-clients; see
scripts/deps.sh): uses a running libvirtd, or starts one and stops only that
one. libvirt's capability cache is cleared before and restored after."""
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

CACHE = "/var/cache/libvirt/qemu/capabilities"
URI = "qemu:///system"


def virsh(*args, timeout=60):
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                          timeout=timeout)


def daemon_answers():
    try:
        return virsh("version", timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def libvirt():
    """A libvirtd to talk to: the system's, or one started here (its log
    kept for the failure message)."""
    for tool in ("virsh", "libvirtd"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.fail(f"{tool} is missing: install libvirt-daemon-system and libvirt-clients "
                        "(scripts/deps.sh)")
    if os.geteuid() != 0:
        pytest.fail("the libvirt probe test runs libvirtd's system instance: run it as root")
    saved = tempfile.mkdtemp(prefix="fv-libvirt-cache")
    if os.path.isdir(CACHE):
        shutil.copytree(CACHE, os.path.join(saved, "capabilities"))
    # Probe afresh: a daemon started here has no capabilities in memory, and
    # one already running re-probes a binary whose ctime changed (a rebuild).
    shutil.rmtree(CACHE, ignore_errors=True)
    logdir = tempfile.mkdtemp(prefix="fv-libvirtd")
    log = os.path.join(logdir, "libvirtd.log")
    proc = None
    if not daemon_answers():
        env = {**os.environ, "LIBVIRT_LOG_FILTERS": "1:qemu 3:object 3:json 3:event 1:util",
               "LIBVIRT_LOG_OUTPUTS": f"1:file:{log}"}
        proc = subprocess.Popen(["/usr/sbin/libvirtd"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not daemon_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"libvirtd did not start (exit {proc.poll()}); log: {log}")
            time.sleep(0.2)
    try:
        yield log
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(CACHE, ignore_errors=True)
        if os.path.isdir(os.path.join(saved, "capabilities")):
            shutil.copytree(os.path.join(saved, "capabilities"), CACHE)
        shutil.rmtree(saved, ignore_errors=True)


def domcapabilities(ferrovm, log, *extra):
    r = virsh("domcapabilities", "--emulatorbin", ferrovm, "--virttype", "kvm", *extra)
    if r.returncode != 0:
        tail = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                tail = "".join(l for l in f.readlines()[-4000:] if "error" in l.lower())[-4000:]
        pytest.fail(f"virsh domcapabilities {' '.join(extra)} failed: {r.stderr}\n{tail}")
    return ET.fromstring(r.stdout)


def enum(root, path, name):
    e = root.find(f"{path}/enum[@name='{name}']")
    return [v.text for v in e.findall("value")] if e is not None else []


def cached_flags(binary):
    """The capability flags libvirt derived from the probe of `binary`
    (its cache file, kept until the next probe)."""
    for name in os.listdir(CACHE):
        root = ET.parse(os.path.join(CACHE, name)).getroot()
        if root.findtext("emulator") == binary:
            return {f.get("name") for f in root.findall("flag")}
    pytest.fail(f"no libvirt capability cache entry for {binary} in {CACHE}")


# Flags libvirt 9.0 sets from qom-list-types and device-list-properties:
# the ones for ferrovm's three virtio devices and qemu-xhci, and some for devices ferrovm
# does not have (checked to be real flag names against QEMU's probe).
HAS = {"virtio-net", "virtio-balloon-pci.deflate-on-oom", "virtio-balloon.free-page-reporting",
       "virtio-blk.queue-size", "x86-max-cpu", "query-cpu-model-expansion",
       "query-cpu-definitions", "pcie-root-port", "qemu-xhci"}
LACKS = {"piix3-usb-uhci", "virtio-scsi-pci", "vfio-pci",
         "usb-storage", "ich9-ahci", "VGA", "virtio-rng", "pci-bridge", "virtio-gpu"}


def check_common(root, ferrovm, builtin_ide=False):
    assert root.findtext("path") == ferrovm
    assert root.findtext("domain") == "kvm"
    assert root.findtext("arch") == "x86_64"
    # virtio-blk-pci: the virtio disk bus and model. libvirt 9.0 adds scsi
    # and fdc whatever the emulator says (virQEMUCapsFillDomainDeviceDiskCaps);
    # the buses it adds only from the probe's answers must be absent.
    buses = enum(root, "devices/disk", "bus")
    assert "virtio" in buses and enum(root, "devices/disk", "model") == ["virtio"], buses
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
    flags = cached_flags(ferrovm)
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
        flags = cached_flags(qemu)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert (HAS | LACKS) <= flags, (HAS | LACKS) - flags


def test_domcapabilities_q35(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt, "--machine", "q35")
    check_common(root, ferrovm)
    # libvirt resolves the alias to the canonical type query-machines gives.
    assert root.findtext("machine") == "pc-q35-7.2"


def test_domcapabilities_default_machine(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt)
    # libvirt assumes any pc-i440fx-* machine has a built-in IDE controller
    # (qemuDomainMachineHasBuiltinIDE, by name); ferrovm's `pc` is its Q35-like
    # board without one (docs/known-gaps.md).
    check_common(root, ferrovm, builtin_ide=True)
    # query-machines' default is pc-i440fx-7.2 (alias pc), as QEMU's.
    assert root.findtext("machine") == "pc-i440fx-7.2"
