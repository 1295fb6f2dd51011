"""The CMOS RTC end to end, ferrovm against QEMU 7.2 booting the same test
guest (firmware/testguest/rtc.c): the guest's view (sets read back in BCD,
binary and 12-hour mode; update-ended, alarm and periodic interrupts on
IRQ 8), RTC_CHANGE (its data and QEMU's one-a-second rate limit),
`rtc-reset-reinjection`, and `-rtc clock=vm` against `clock=host` across
stop/cont (hw/rtc/mc146818rtc.c, softmmu/rtc.c)."""
import calendar
import re
import time

from qmp_util import Qmp, start_vm

# The dates plan=rtc-set writes, derived here from the calendar.
FIRST = calendar.timegm((2030, 6, 15, 12, 34, 56))
SECOND = calendar.timegm((2031, 1, 2, 13, 2, 3))
RTC_LINE = re.compile(r"^(ok|not ok) \d+ - rtc (set|update-ended|alarm|periodic|bcd) |^rtc-(set|irq) done$")


def rtc_lines(g):
    return [line for line in g.lines if RTC_LINE.search(line)]


def next_tick(g, after):
    """The next `rtc <seconds>` line at or after index `after`: (guest RTC
    minus host time when the line arrived, index of the following line)."""
    while True:
        g.wait_line(r"^rtc \d+$", timeout=5, start=after)
        now = time.time()
        for i in range(after, len(g.lines)):
            m = re.match(r"^rtc (\d+)$", g.lines[i])
            if m:
                return int(m.group(1)) - now, i + 1


def rtc_set_boot(launch, binary, testguest, sockdir, *extra):
    """Boots plan=rtc-set; returns what a user sees of it: the guest's lines,
    the two RTC_CHANGE events, when they arrived and what host time said."""
    launched = time.time()
    g, sock = start_vm(launch, binary, testguest, sockdir, *extra, plan="rtc-set",
                       name=binary.rsplit("/", 1)[-1])
    q = Qmp(sock, proc=g.proc)
    q.cmd("cont")
    first = q.wait_event("RTC_CHANGE", timeout=30)
    t_first = time.time()
    second = q.wait_event("RTC_CHANGE", timeout=5, start=q.events.index(first) + 1)
    t_second = time.time()
    g.wait_line("^rtc-set done$", timeout=5)
    return {"g": g, "q": q, "launched": launched, "events": (first, second),
            "arrived": (t_first, t_second)}


def pause_drift(g, q, seconds=2.5):
    """How far the guest's RTC fell behind host time across stop/cont."""
    before, at = next_tick(g, len(g.lines))
    q.cmd("stop")
    time.sleep(seconds)
    q.cmd("cont")
    # The first tick after cont may be one that came while paused.
    _, at = next_tick(g, len(g.lines))
    after, _ = next_tick(g, at)
    return before - after


def check_rtc_set(run, base=0):
    """RTC_CHANGE: offset = the date set minus (host UTC + the -rtc base
    offset), qom-path the RTC's; the second within the second is held."""
    (first, second), (t1, t2) = run["events"], run["arrived"]
    # Both sets happen within milliseconds, before the first event arrives.
    for ev, date in ((first, FIRST), (second, SECOND)):
        assert ev["data"]["qom-path"] == "/machine/unattached/device[9]", ev
        assert abs(ev["data"]["offset"] - (date - base - t1)) <= 2.5, (ev, t1)
    assert t2 - t1 >= 0.8, f"second RTC_CHANGE not held by the rate limit ({t2 - t1:.2f}s)"
    assert t2 - t1 <= 1.5, f"second RTC_CHANGE held too long ({t2 - t1:.2f}s)"
    stamp = lambda e: e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
    assert stamp(second) - stamp(first) < 0.5, "a held event keeps its own timestamp"


def test_rtc_set_change_event_and_host_clock(ferrovm, qemu, testguest, sockdir, launch):
    seen = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        run = rtc_set_boot(launch, binary, testguest, sockdir)
        check_rtc_set(run)
        q, g = run["q"], run["g"]
        assert q.cmd("rtc-reset-reinjection") == {}
        drift = pause_drift(g, q)
        assert abs(drift) < 0.5, f"{name}: clock=host keeps host time across stop/cont ({drift:.2f}s)"
        seen[name] = rtc_lines(g)
        q.close()
        g.kill()
    assert seen["ferrovm"] == [
        "ok 6 - rtc set (bcd 24h 2030-06-15 12:34:56 wday 7 regs 56 34 12 07 15 06 30 20)",
        "ok 7 - rtc set (binary 12h 2031-01-02 13:02:03 wday 5 regs 03 02 81 05 02 01 1f 14)",
        "rtc-set done",
    ], seen["ferrovm"]
    assert seen["qemu"] == seen["ferrovm"]


def test_rtc_clock_vm_stands_while_paused_and_base_date(ferrovm, qemu, testguest, sockdir, launch):
    base = calendar.timegm((2020, 1, 1, 0, 0, 0))
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        run = rtc_set_boot(launch, binary, testguest, sockdir,
                           "-rtc", "base=2020-01-01T00:00:00,clock=vm")
        # The base is date + host time since start-up: offsets measured
        # against it lie between "started at launch" and "started just now".
        (first, _), (t1, _) = run["events"], run["arrived"]
        offset = first["data"]["offset"]
        assert FIRST - base - (t1 - run["launched"]) - 2 <= offset <= FIRST - base + 1, (name, offset)
        drift = pause_drift(run["g"], run["q"], 2.5)
        assert 2.0 <= drift <= 3.2, f"{name}: clock=vm stands while paused (drift {drift:.2f}s)"
        run["q"].close()
        run["g"].kill()


def test_rtc_interrupts(ferrovm, qemu, testguest, sockdir, launch):
    seen = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        g, sock = start_vm(launch, binary, testguest, sockdir, "-rtc", "driftfix=slew",
                           plan="rtc-irq", name=name)
        q = Qmp(sock, proc=g.proc)
        q.cmd("cont")
        assert q.cmd("rtc-reset-reinjection") == {}
        g.wait_line("^rtc-irq done$", timeout=30)
        seen[name] = rtc_lines(g)
        q.close()
        g.kill()
    assert seen["ferrovm"] == [
        "ok 6 - rtc update-ended irq (bcd 24h, C=0x90)",
        "ok 7 - rtc alarm irq (binary 12h, C=0xb0 at hour reg 0x81 13:23:52)",
        "ok 8 - rtc periodic irq (64 Hz, C=0xc0 without UF, 16-40 ticks in 500 ms)",
        "ok 9 - rtc bcd 12h read (hour reg 0x81)",
        "rtc-irq done",
    ], seen["ferrovm"]
    assert seen["qemu"] == seen["ferrovm"]
