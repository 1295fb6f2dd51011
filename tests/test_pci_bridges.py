"""libvirt's q35 PCI layout (pcie-root-port x4, a pcie-pci-bridge behind the first, the
disk, watchdog and balloon behind them) on ferrovm and on QEMU 7.2: the guest's view of
the buses (QEMU's SeaBIOS numbers them; ferrovm does on direct boot), the disk working
behind a root port, the watchdog behind the pcie-pci-bridge, query-pci's nesting, and
QEMU's messages for bad bus= references."""
import json
import re
import subprocess

import pytest

from conftest import tap_results
from qmp_util import Qmp, short_tmpdir, vm_argv


def libvirt_devices(image):
    """The -blockdev/-device objects libvirt 9 writes for this layout."""
    objs = [
        ("-blockdev", {"driver": "file", "filename": image, "node-name": "libvirt-1-storage"}),
        ("-blockdev", {"node-name": "libvirt-1-format", "driver": "raw",
                       "file": "libvirt-1-storage"}),
        ("-device", {"driver": "pcie-root-port", "port": 8, "chassis": 1, "id": "pci.1",
                     "bus": "pcie.0", "multifunction": True, "addr": "0x1"}),
        ("-device", {"driver": "pcie-root-port", "port": 9, "chassis": 2, "id": "pci.2",
                     "bus": "pcie.0", "addr": "0x1.0x1"}),
        ("-device", {"driver": "pcie-root-port", "port": 10, "chassis": 3, "id": "pci.3",
                     "bus": "pcie.0", "addr": "0x1.0x2"}),
        ("-device", {"driver": "pcie-root-port", "port": 11, "chassis": 4, "id": "pci.4",
                     "bus": "pcie.0", "addr": "0x1.0x3"}),
        ("-device", {"driver": "pcie-pci-bridge", "id": "pci.5", "bus": "pci.1",
                     "addr": "0x0"}),
        ("-device", {"driver": "virtio-blk-pci", "bus": "pci.3", "addr": "0x0",
                     "drive": "libvirt-1-format", "id": "virtio-disk0", "bootindex": 1}),
        ("-device", {"driver": "i6300esb", "id": "watchdog0", "bus": "pci.5", "addr": "0x1"}),
        ("-device", {"driver": "virtio-balloon-pci", "id": "balloon0", "bus": "pci.4",
                     "addr": "0x0"}),
    ]
    out = []
    for opt, obj in objs:
        out += [opt, json.dumps(obj)]
    return out


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    return str(path)


def boot(binary, testguest, image, plan, launch):
    g = launch(vm_argv(binary, testguest, *libvirt_devices(image), plan=plan))
    assert g.wait_exit(60) == 0, g.output()
    return g.output()


FN_LINE = re.compile(r"^# ([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ([0-9a-f]{4}:[0-9a-f]{4}) "
                     r"([0-9a-f]{6})(?: mf)?(?: buses=([0-9a-f:]+))?", re.M)


def functions(out):
    """{bdf: (vendor:device, class, buses)} of what the guest enumerated, without bus 0's
    q35 built-ins (QEMU has SATA and SMBus at 00:1f.2/3, ferrovm does not)."""
    return {m[1]: (m[2], m[3], m[4]) for m in FN_LINE.finditer(out)
            if not m[1].startswith("00:1f")}


def test_guest_sees_the_same_buses_and_uses_the_disk_behind_a_root_port(
        ferrovm, qemu, testguest, image, launch):
    ours = boot(ferrovm, testguest, image, "blk-write", launch)
    # QEMU reads what ferrovm wrote: the same image behind the same root port.
    theirs = boot(qemu, testguest, image, "blk-read", launch)
    for out in (ours, theirs):
        results = {name: ok for ok, _, name in tap_results(out)}
        assert all(results.values()), out
        assert "virtio-blk init 04:00.0" in results, out
    assert "blk write sectors=0+1024 seed=0" in ours
    assert "ok 10 - blk read sectors=0+1024 seed=0" in theirs
    mine, qemus = functions(ours), functions(theirs)
    assert mine == qemus
    # SeaBIOS's depth-first numbering, read back by the guest.
    assert qemus["00:01.0"] == ("1b36:000c", "060400", "01:02")
    assert qemus["01:00.0"] == ("1b36:000e", "060400", "02:02")
    assert qemus["02:01.0"][0] == "8086:25ab", "i6300esb behind the pcie-pci-bridge"
    assert qemus["05:00.0"][0] == "1af4:1045", "the balloon behind pci.4"


def tree(devices):
    """query-pci's devices as nested (qdev_id, vendor, device, class, bus numbers, children),
    addresses aside; q35's built-in functions without qdev ids are left out except 00:00.0."""
    out = []
    for d in devices:
        if not d["qdev_id"] and (d["bus"], d["slot"]) != (0, 0):
            continue
        node = [d["qdev_id"], d["id"]["vendor"], d["id"]["device"], d["class_info"]["class"],
                "subsystem" in d["id"], d["irq_pin"], [(r["bar"], r["type"], r["size"])
                                                       for r in d["regions"]]]
        if "pci_bridge" in d:
            b = d["pci_bridge"]["bus"]
            node.append((b["number"], b["secondary"], b["subordinate"]))
            node.append(sorted(b.keys()))
            node.append(tree(d["pci_bridge"].get("devices", [])))
        out.append(node)
    return out


def query_pci_after_boot(binary, testguest, image, launch):
    d = short_tmpdir()
    sock = f"{d}/qmp"
    g = launch(vm_argv(binary, testguest, *libvirt_devices(image), "-qmp",
                       f"unix:{sock},server=on,wait=off", plan="idle"))
    g.wait_line(r"tick 1\b", timeout=60)
    with Qmp(sock, proc=g.proc) as q:
        r = q.cmd("query-pci")
    g.kill()  # releases the image for the other VMM
    return r


def test_query_pci_nests_bridges_like_qemu(ferrovm, qemu, testguest, image, launch):
    ours = query_pci_after_boot(ferrovm, testguest, image, launch)
    theirs = query_pci_after_boot(qemu, testguest, image, launch)
    assert len(ours) == len(theirs) == 1
    mine, qemus = tree(ours[0]["devices"]), tree(theirs[0]["devices"])
    # The host bridge differs in nothing that matters here; compare what libvirt added.
    assert mine[1:] == qemus[1:]
    pci1 = next(d for d in ours[0]["devices"] if d["qdev_id"] == "pci.1")
    inner = pci1["pci_bridge"]["devices"][0]
    assert (inner["qdev_id"], inner["bus"], inner["slot"]) == ("pci.5", 1, 0)
    wdt = inner["pci_bridge"]["devices"][0]
    assert (wdt["qdev_id"], wdt["bus"], wdt["slot"]) == ("watchdog0", 2, 1)
    # Every BAR behind a bridge lies in its windows.
    rng = inner["pci_bridge"]["bus"]["memory_range"]
    assert rng["base"] <= wdt["regions"][0]["address"] <= rng["limit"]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


BAD = [
    ["-device", "virtio-balloon-pci,bus=pci.9"],
    # A bus is known only once its bridge is created, in -device order.
    ["-device", "i6300esb,bus=pci.1", "-device", "pcie-root-port,id=pci.1,chassis=1"],
    ["-device", "pcie-root-port,id=pci.1,chassis=1", "-device", "pcie-root-port,id=pci.2,chassis=1"],
    ["-device", "pcie-root-port,id=pci.1,chassis=1,port=300"],
    ["-device", "pcie-root-port,id=pci.1,chassis=1", "-device", "pcie-pci-bridge,id=b,bus=pci.1",
     "-device", "i6300esb,bus=b", "-device", "pvpanic-pci,bus=b,addr=0"],
    ["-device", "pcie-root-port,id=pci.1,chassis=1,mem-reserve=4G"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a))
def test_bad_bus_references_fail_as_qemu_does(ferrovm, qemu, testguest, args):
    ours = run([ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-S",
                "-kernel", testguest] + args)
    theirs = run([qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none",
                  "-S"] + args)
    assert theirs.returncode == 1 and ours.returncode == 1, (ours.stderr, theirs.stderr)

    def msg(s):
        lines = [l for l in s.splitlines() if "warning:" not in l and l.strip()]
        return re.sub(r"^(ferrovm|qemu-system-x86_64): ", "", lines[0])
    assert msg(ours.stderr) == msg(theirs.stderr)
