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
    shutil.rmtree(CACHE, ignore_errors=True)  # probe afresh, not from the cache
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


def check_common(root, ferrovm):
    assert root.findtext("path") == ferrovm
    assert root.findtext("domain") == "kvm"
    # virtio-blk-pci is ferrovm's only disk: the virtio bus, as a disk, no
    # IDE/SATA/SCSI/USB disk bus (no such controller is listed).
    assert enum(root, "devices/disk", "bus") == ["virtio"], ET.tostring(root.find("devices/disk"))
    assert "disk" in enum(root, "devices/disk", "diskDevice")
    # virtio-balloon-pci: the memballoon model (libvirt lists it from the
    # virtio-balloon-pci type), no graphics or video device, no TPM.
    assert "virtio" in enum(root, "devices/memballoon", "model") or \
        root.find("devices/memballoon") is None or \
        root.find("devices/memballoon").get("supported") == "yes"
    tpm = root.find("devices/tpm")
    assert tpm is None or tpm.get("supported") == "no" or not enum(root, "devices/tpm", "model")
    video = enum(root, "devices/video", "modelType")
    assert not {"vga", "qxl", "cirrus", "bochs", "virtio"} & set(video), video
    for absent in ("scsi", "sata", "usb", "fdc", "ide"):
        assert absent not in enum(root, "devices/disk", "bus"), absent
    # No PCI passthrough (vfio-pci is not a ferrovm type), no SEV.
    assert "vfio" not in enum(root, "devices/hostdev", "pciBackend")
    sev = root.find("features/sev")
    assert sev is None or sev.get("supported") == "no"
    # The CPU models libvirt lists as usable are ferrovm's own.
    custom = root.find("cpu/mode[@name='custom']")
    models = {m.text for m in custom.findall("model")} if custom is not None else set()
    assert models <= {"qemu64"}, models
    assert root.find("cpu/mode[@name='host-passthrough']").get("supported") == "yes"


def test_domcapabilities_q35(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt, "--machine", "q35")
    check_common(root, ferrovm)
    # libvirt resolves the alias to the canonical type query-machines gives.
    assert root.findtext("machine") == "pc-q35-7.2"
    assert root.findtext("arch") == "x86_64"


def test_domcapabilities_default_machine(ferrovm, libvirt):
    root = domcapabilities(ferrovm, libvirt)
    check_common(root, ferrovm)
    # query-machines' default is pc-i440fx-7.2 (alias pc), as QEMU's.
    assert root.findtext("machine") == "pc-i440fx-7.2"
