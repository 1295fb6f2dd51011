"""I/O throttle groups (QEMU 7.2 block/throttle-groups.c) and the -drive
throttling options (blockdev.c): two virtio-blk drives in one group share
its limits; query-block and HMP `info block` through a conversation of
block_set_io_throttle calls (a limit set through one member, a drive moving
to another group and back, limits off) equal QEMU's on the same command
line; the guest writing to both disks at once stays within the group's
limit (an upper bound: accuracy is a bench figure); -drive's invalid
throttling values fail with QEMU's messages."""
import time

import pytest

from conftest import Guest, guest_args, tap_results
from test_qcow2 import normalized
from test_virtio_blk import message, run

MIB = 2
LIMIT = 2 << 20
CHUNK = 128 << 10   # the guest's request size


@pytest.fixture
def disks(tmp_path):
    paths = []
    for n in ("a", "b"):
        p = tmp_path / f"{n}.img"
        with open(p, "wb") as f:
            f.truncate(16 << 20)
        paths.append(str(p))
    return paths


def command_line(disks):
    a, b = disks
    # One drive with the new names, the other with the legacy aliases.
    return ["-M", "q35", "-m", "128", "-S",
            "-drive", f"file={a},format=raw,if=none,id=d0,"
                      f"throttling.bps-total={LIMIT},throttling.group=g",
            "-drive", f"file={b},format=raw,if=none,id=d1,bps={LIMIT},group=g",
            "-device", "virtio-blk-pci,drive=d0,id=vd0",
            "-device", "virtio-blk-pci,drive=d1,id=vd1"]


ZERO = {k: 0 for k in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr")}
# block_set_io_throttle calls, each followed by query-block and info block.
STEPS = [
    None,
    # Through the second member, without a group: the group's limits change.
    {"device": "d1", **ZERO, "bps": 3 << 20, "bps_max": 4 << 20, "iops_size": 0},
    # The second member moves to group h (by its QOM path): g keeps d0 alone.
    {"id": "/machine/peripheral/vd1/virtio-backend", **ZERO, "bps_wr": 1 << 20,
     "iops": 100, "iops_size": 8192, "group": "h"},
    # All zero: d1 is no longer throttled, and h goes.
    {"device": "d1", **ZERO},
    # A new group named h again starts from these limits, not the old ones.
    {"device": "d1", **ZERO, "iops_rd": 7, "group": "h"},
    # Back into g: its limits are the ones set now, for both.
    {"device": "d1", **ZERO, "bps": LIMIT, "group": "g"},
]


def conversation(q):
    out = []
    for step in STEPS:
        if step is not None:
            out.append(q.cmd("block_set_io_throttle", step))
        out.append(normalized(q.cmd("query-block")))
        out.append(normalized(q.cmd("human-monitor-command", {"command-line": "info block"})))
    return out


def test_two_drives_in_one_group(ferrovm, qemu, testguest, disks, launch, sockdir):
    from qmp_util import Qmp
    append = f"plan=blk-fill2 blk_mib={MIB}"
    sock = f"{sockdir}/t.sock"
    qmp = ["-qmp", f"unix:{sock},server=on,wait=off"]
    got = {}
    g = launch(guest_args(qemu, testguest, append, *command_line(disks), *qmp))
    with Qmp(sock, proc=g.proc) as q:
        got[qemu] = conversation(q)
        q.cmd("quit")
    g.wait_exit(10)
    g = launch(guest_args(ferrovm, testguest, append, *command_line(disks), *qmp))
    with Qmp(sock, proc=g.proc) as q:
        got[ferrovm] = conversation(q)
        first = got[ferrovm][0]
        assert [(b["device"], b["inserted"]["group"], b["inserted"]["bps"]) for b in first] == \
            [("d0", "g", LIMIT), ("d1", "g", LIMIT)], first
        # After the conversation both drives are in g again, limited together.
        start = time.monotonic()
        q.cmd("cont")
        assert g.wait_exit(60) == 0, g.output()
        elapsed = time.monotonic() - start
    for i, (ours, theirs) in enumerate(zip(got[ferrovm], got[qemu])):
        assert ours == theirs, (i, STEPS[(i + 1) // 3])
    results = {name: ok for ok, _, name in tap_results(g.output())}
    assert results.get(f"blk fill2 mib={MIB}") is True, g.output()
    written = 2 * MIB << 20
    # QEMU's bucket lets avg/10 through at once, and one request beyond it.
    assert written <= LIMIT * elapsed + LIMIT / 10 + CHUNK, (written, elapsed)


# -drive throttling values QEMU 7.2 refuses, each with its own message.
BAD_DRIVES = [
    "throttling.bps-total=abc",
    "throttling.iops-read=1k",
    "throttling.bps-write=12.5",
    "throttling.bps-total=",
    "throttling.bps-total=99999999999999999999",
    "throttling.bps-total=-1",
    "throttling.bps-total=1000000000000001",
    "bps=100,throttling.bps-total=5",
    "iops_rd=5,throttling.iops-read=5",
    "group=a,throttling.group=b",
    "bps=100,bps_rd=5",
    "throttling.iops-total=5,throttling.iops-write-max=9",
    "throttling.iops-size=4096",
    "iops_size=abc",
    "throttling.bps-total-max-length=0,throttling.bps-total=5",
    "throttling.bps-total=5,throttling.bps-total-max-length=3",
    "throttling.bps-total=5,throttling.bps-total-max=3",
    "bps=100,iops_rd_max=5",
    "throttling.bps-read=5,throttling.bps-read-max=10,"
    "throttling.bps-read-max-length=1000000000000000",
    "throttling.foo=1",
    "throttling=5",
    "readonly=on,read-only=on",
]


@pytest.mark.parametrize("opts", BAD_DRIVES)
def test_bad_drive_throttling_fails_as_qemu_does(ferrovm, qemu, testguest, disks, opts):
    drive = ["-drive", f"file={disks[0]},format=raw,if=none,id=d0,{opts}"]
    common = ["-accel", "kvm", "-M", "q35", "-nodefaults", "-display", "none", "-S"]
    ours = run([ferrovm, *common, "-kernel", testguest, *drive])
    theirs = run([qemu, *common, *drive])
    assert theirs.returncode == 1, theirs.stderr
    assert ours.returncode == 1, ours.stderr
    assert message(ours.stderr, "ferrovm") == message(theirs.stderr, "qemu")


def test_hex_and_octal_limits_as_qemu_reads_them(ferrovm, qemu, disks, sockdir):
    """QemuOpts numbers are strtoull's in base 0: 0x100 is 256, 010 is 8."""
    from qmp_util import Qmp
    drive = ["-drive", f"file={disks[0]},format=raw,if=none,id=d0,"
                       "throttling.bps-total=0x100000,throttling.iops-total=010"]
    got = {}
    for binary in (ferrovm, qemu):
        sock = f"{sockdir}/h.sock"
        g = Guest([binary, "-accel", "kvm", "-M", "q35", "-nodefaults", "-display", "none", "-S",
                   "-qmp", f"unix:{sock},server=on,wait=off", *drive])
        try:
            with Qmp(sock, proc=g.proc) as q:
                got[binary] = normalized(q.cmd("query-block"))
                q.cmd("quit")
            g.wait_exit(10)
        finally:
            g.kill()
    assert got[ferrovm] == got[qemu]
    assert (got[qemu][0]["inserted"]["bps"], got[qemu][0]["inserted"]["iops"]) == (1 << 20, 8)
