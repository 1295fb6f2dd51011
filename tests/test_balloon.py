"""virtio-balloon-pci on KVM: the test guest (plan=balloon, firmware/testguest/README.md)
inflates and deflates its balloon as `balloon` asks, reports stats, and checks that the pages
it gets back are usable. The host side: the process's guest-RAM mapping shrinks by what the
guest gave up (madvise), query-balloon and BALLOON_CHANGE agree with the guest, and the stats
reach `qom-get guest-stats` in QEMU's shape."""
import time

import pytest

from conftest import Guest, guest_args
from qmp_util import Qmp, short_tmpdir, wait_for

MIB = 1 << 20
RAM_MIB = 256


def guest_ram_rss(pid, ram_bytes):
    """RSS (bytes) of the mappings at least as large as guest RAM's low part, from smaps:
    the guest-RAM mapping, not the VMM's own memory."""
    total, size = 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1]) * 1024
            elif line.startswith("Rss:") and size >= ram_bytes // 2:
                total += int(line.split()[1]) * 1024
    return total


@pytest.fixture
def balloon_guest(ferrovm, testguest):
    sock = short_tmpdir() + "/q.sock"
    g = Guest(guest_args(ferrovm, testguest, "plan=balloon", "-m", str(RAM_MIB),
                         "-device", "virtio-balloon-pci,id=bal0",
                         "-qmp", f"unix:{sock},server=on,wait=off"))
    try:
        pool = int(g.wait_line(r"^# balloon pool=(\d+) pages", 30).group(1))
        g.wait_line(r"^ok \d+ - balloon", 10)
        g.wait_line(r"^# balloon actual=0 pages", 10)
        with Qmp(sock, proc=g.proc) as q:
            yield g, q, pool
    finally:
        g.kill()


def test_inflate_returns_memory_to_the_host_and_deflate_brings_it_back(balloon_guest):
    g, q, pool = balloon_guest
    ram = RAM_MIB * MIB
    # The guest touched its whole pool at start: those pages are resident now.
    assert pool * 4096 >= 160 * MIB, pool
    assert q.cmd("query-balloon") == {"actual": ram}
    before = guest_ram_rss(g.proc.pid, ram)
    target = 128 * MIB
    events = len(q.events)
    start = len(g.lines)
    q.cmd("balloon", {"value": target})
    g.wait_line(r"^# balloon actual=32768 pages$", 30, start)
    # BALLOON_CHANGE is rate-limited (one a second): the last one carries the final size.
    q.wait_event("BALLOON_CHANGE", 5, events, data={"actual": target})
    assert q.cmd("query-balloon") == {"actual": target}
    inflated = ram - target
    after = guest_ram_rss(g.proc.pid, ram)
    assert before - after >= 0.8 * inflated, (
        f"RSS of guest RAM fell by {(before - after) / MIB:.1f} MiB for {inflated / MIB:.0f} MiB "
        f"inflated ({before / MIB:.1f} -> {after / MIB:.1f} MiB)")

    start = len(g.lines)
    q.cmd("balloon", {"value": ram})
    g.wait_line(r"^# balloon actual=0 pages$", 30, start)
    q.wait_event("BALLOON_CHANGE", 5, events, data={"actual": ram})
    assert q.cmd("query-balloon") == {"actual": ram}
    assert "not ok" not in g.output(), g.output()
    # The guest rewrote every page it got back: they are resident again.
    assert guest_ram_rss(g.proc.pid, ram) >= after + 0.8 * inflated
    q.cmd("system_powerdown")
    g.wait_line(r"^# balloon stats_sent=\d+", 20)
    assert g.wait_exit(20) == 0


def test_stats_reach_qom_in_qemus_shape(balloon_guest):
    g, q, pool = balloon_guest
    path = "/machine/peripheral/bal0"
    unknown = (1 << 64) - 1  # QEMU prints its -1 "no value" as uint64
    # The driver's first buffer is read at once (QEMU virtio_balloon_receive_stats), so
    # a report exists already; polling brings fresh ones.
    q.cmd("qom-set", {"path": path, "property": "guest-stats-polling-interval", "value": 1})
    assert q.cmd("qom-get", {"path": path, "property": "guest-stats-polling-interval"}) == 1
    t0 = time.time()

    def fresh():
        s = q.cmd("qom-get", {"path": path, "property": "guest-stats"})
        return s if s["last-update"] >= int(t0) else None
    s = wait_for(fresh, 10, "a stats report")
    st = s["stats"]
    # What the guest reports (README: MEMTOT = its RAM, MEMFREE = AVAIL = pool not ballooned).
    assert 250 * MIB <= st["stat-total-memory"] <= RAM_MIB * MIB, st
    assert st["stat-free-memory"] == st["stat-available-memory"] == pool * 4096, st
    assert st["stat-swap-in"] == st["stat-swap-out"] == 0
    assert st["stat-major-faults"] == unknown  # not reported by the guest
    # Polling goes on: a later report has a later stamp.
    first = s["last-update"]
    wait_for(lambda: q.cmd("qom-get", {"path": path, "property": "guest-stats"})["last-update"]
             > first, 10, "a second stats report")
    assert q.error("qom-set", {"path": path, "property": "guest-stats-polling-interval",
                               "value": -1}) == ("GenericError",
                                                 "timer value must be greater than zero")
