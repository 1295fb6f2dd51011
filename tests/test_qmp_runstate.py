"""Run state and events with the test guest really running (plan=idle prints
`tick K` every 100 ms on COM1 and powers off on the ACPI power button):
-S and cont, stop that really stops the guest, reset, powerdown,
-no-shutdown, -no-reboot, quit, SIGTERM, set-action, and events on every
monitor, in QEMU 7.2's order relative to the command returns."""
import os
import signal
import time

import pytest

from qmp_util import Qmp, Raw, error_of, start_vm, ticks, wait_for


def cpu_ticks(pid, tid):
    """utime + stime of one thread, in clock ticks."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def event_then_return(r, request, event, data=None):
    """Sends `request` and checks the wire carries `event` and then the reply."""
    r.send(request)
    first = r.recv()
    assert first.get("event") == event, f"{request}: expected {event} before the return, got {first}"
    if data is not None:
        assert first.get("data") == data, first
    ts = first["timestamp"]
    assert abs(ts["seconds"] + ts["microseconds"] / 1e6 - time.time()) < 60, first
    second = r.recv()
    assert "return" in second, f"{request}: expected the return after {event}, got {second}"
    return second


def wait_new_tick(g, after, timeout=20):
    return wait_for(lambda: len(ticks(g)) > after, timeout, f"a new tick after {after} ticks")


def assert_no_new_ticks(g, seconds=0.6):
    # The last tick printed before the pause may still be in the pipe.
    time.sleep(0.15)
    n = len(ticks(g))
    time.sleep(seconds)
    assert len(ticks(g)) == n, f"the paused guest printed {ticks(g)[n:]}"


def test_prelaunch_holds_the_guest_until_cont(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        assert r.execute("query-status")["return"] == {
            "status": "prelaunch", "singlestep": False, "running": False}
        time.sleep(0.5)
        assert g.output() == "", f"the guest ran before cont:\n{g.output()}"
        rep = event_then_return(r, '{"execute": "cont", "id": "c"}', "RESUME")
        assert rep == {"return": {}, "id": "c"}
        g.wait_line(r"boot 1", 20)
        g.wait_line(r"tick 1\b", 20)
        assert r.execute("query-status")["return"] == {
            "status": "running", "singlestep": False, "running": True}
        # cont on a running VM: no event, just the return.
        assert r.execute("cont") == {"return": {}}
        r.expect_silence(0.2)


def test_stop_really_pauses_the_guest(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, paused=False, smp="2")
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 2\b", 20)
        tids = [c["thread-id"] for c in r.execute("query-cpus-fast")["return"]]
        assert event_then_return(r, '{"execute": "stop"}', "STOP") == {"return": {}}
        assert r.execute("query-status")["return"] == {
            "status": "paused", "singlestep": False, "running": False}
        before = [cpu_ticks(g.proc.pid, t) for t in tids]
        assert_no_new_ticks(g)
        after = [cpu_ticks(g.proc.pid, t) for t in tids]
        assert all(b - a <= 2 for a, b in zip(before, after)), \
            f"paused vCPU threads kept using CPU: {before} -> {after} clock ticks"
        # stop again: no event.
        assert r.execute("stop") == {"return": {}}
        r.expect_silence(0.2)
        n = len(ticks(g))
        assert event_then_return(r, '{"execute": "cont"}', "RESUME") == {"return": {}}
        wait_new_tick(g, n, 10)
        assert r.execute("query-status")["return"]["status"] == "running"
        # Pause again through HMP: same events, same effect.
        r.send('{"execute": "human-monitor-command", "arguments": {"command-line": "stop"}}')
        assert r.recv()["event"] == "STOP"
        assert r.recv() == {"return": ""}
        assert_no_new_ticks(g)
        assert r.execute("human-monitor-command", {"command-line": "info status"}) == {
            "return": "VM status: paused\r\n"}


def test_system_reset_reboots_the_guest(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 1\b", 20)
        assert event_then_return(r, '{"execute": "system_reset"}', "RESET",
                                 {"guest": False, "reason": "host-qmp-system-reset"}) == {"return": {}}
        g.wait_line(r"boot 2\b", 20)
        start = len(g.lines)
        g.wait_line(r"tick 1\b", 20, start=start)
        assert r.execute("query-status")["return"]["status"] == "running"
        assert "boot 3" not in g.output()


def test_system_reset_while_paused_comes_back_in_prelaunch(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 1\b", 20)
        event_then_return(r, '{"execute": "stop"}', "STOP")
        event_then_return(r, '{"execute": "system_reset"}', "RESET",
                          {"guest": False, "reason": "host-qmp-system-reset"})
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
        assert_no_new_ticks(g, 0.3)
        assert "boot 2" not in g.output()
        event_then_return(r, '{"execute": "cont"}', "RESUME")
        g.wait_line(r"boot 2\b", 20)


def test_system_powerdown_lets_the_guest_power_off(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        # A press before the guest enables the power button is lost (as on hardware).
        g.wait_line(r"tick 1\b", 20)
        assert event_then_return(r, '{"execute": "system_powerdown"}', "POWERDOWN") == {"return": {}}
        shutdown = r.recv(20)
        assert shutdown.get("event") == "SHUTDOWN", shutdown
        assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        g.wait_line(r"power button", 5)
        assert g.wait_exit(20) == 0, g.stderr.decode()
        out = g.output()
        assert out.index("power button") < out.index("poweroff"), out
        # The monitor goes away with the process: the client sees the end.
        try:
            extra = r.recv(5)
            raise AssertionError(f"message after SHUTDOWN: {extra}")
        except EOFError:
            pass


def test_no_shutdown_keeps_the_vm_until_reset(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-no-shutdown", paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 1\b", 20)
        event_then_return(r, '{"execute": "system_powerdown"}', "POWERDOWN")
        ev = r.recv(20)
        assert ev.get("event") == "SHUTDOWN" and ev["data"] == {"guest": True, "reason": "guest-shutdown"}, ev
        ev = r.recv(10)
        assert ev.get("event") == "STOP", f"-no-shutdown: expected STOP after SHUTDOWN, got {ev}"
        assert r.execute("query-status")["return"] == {
            "status": "shutdown", "singlestep": False, "running": False}
        assert g.proc.poll() is None, "-no-shutdown: the process exited"
        assert error_of(r.execute("cont")) == (
            "GenericError", "Resetting the Virtual Machine is required")
        assert r.execute("human-monitor-command", {"command-line": "info status"}) == {
            "return": "VM status: paused (shutdown)\r\n"}
        event_then_return(r, '{"execute": "system_reset"}', "RESET",
                          {"guest": False, "reason": "host-qmp-system-reset"})
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
        event_then_return(r, '{"execute": "cont"}', "RESUME")
        g.wait_line(r"boot 2\b", 20)
        start = len(g.lines)
        g.wait_line(r"tick 1\b", 20, start=start)
        # quit still quits.
        event_then_return(r, '{"execute": "quit"}', "SHUTDOWN",
                          {"guest": False, "reason": "host-qmp-quit"})
    assert g.wait_exit(20) == 0


def test_guest_reset_with_no_reboot_exits(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-no-reboot", plan="reset")
    with Qmp(sock, proc=g.proc) as q:
        q.cmd("cont")
        ev = q.wait_event("SHUTDOWN", 20)
        assert ev["data"] == {"guest": True, "reason": "guest-reset"}
        assert g.wait_exit(20) == 0
        assert "RESET" not in q.event_names()
    assert "boot 2" not in g.output()


def test_qmp_system_reset_with_no_reboot_exits(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-no-reboot", paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 1\b", 20)
        event_then_return(r, '{"execute": "system_reset"}', "SHUTDOWN",
                          {"guest": False, "reason": "host-qmp-system-reset"})
    assert g.wait_exit(20) == 0
    assert "boot 2" not in g.output()


def test_quit(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, paused=False)
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        g.wait_line(r"tick 1\b", 20)
        assert event_then_return(r, '{"execute": "quit", "id": 9}', "SHUTDOWN",
                                 {"guest": False, "reason": "host-qmp-quit"}) == {"return": {}, "id": 9}
        assert g.wait_exit(20) == 0
        try:
            extra = r.recv(5)
            raise AssertionError(f"message after quit's return: {extra}")
        except EOFError:
            pass
    assert not os.path.exists(sock), "the monitor's socket file outlived the process"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_reports_shutdown_host_signal(ferrovm, testguest, sockdir, launch, sig):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-no-shutdown", paused=False)
    with Qmp(sock, proc=g.proc) as q:
        g.wait_line(r"tick 1\b", 20)
        g.proc.send_signal(sig)
        # Even with -no-shutdown, a signal ends the process.
        ev = q.wait_event("SHUTDOWN", 10)
        assert ev["data"] == {"guest": False, "reason": "host-signal"}
        assert g.wait_exit(20) == 0


def test_action_option_shutdown_pause(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-action", "shutdown=pause",
                       plan="poweroff")
    with Qmp(sock, proc=g.proc) as q:
        q.cmd("cont")
        ev = q.wait_event("SHUTDOWN", 30)
        assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}
        q.wait_event("STOP", 10, start=q.events.index(ev))
        assert q.cmd("query-status")["status"] == "shutdown"
        assert g.proc.poll() is None


def test_action_option_reboot_shutdown(ferrovm, testguest, sockdir, launch):
    """-action reboot=shutdown is -no-reboot: a guest reset ends the process."""
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-action", "reboot=shutdown",
                       plan="reset")
    with Qmp(sock, proc=g.proc) as q:
        q.cmd("cont")
        ev = q.wait_event("SHUTDOWN", 20)
        assert ev["data"] == {"guest": True, "reason": "guest-reset"}
    assert g.wait_exit(20) == 0


def test_set_action_reboot_shutdown_at_run_time(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, plan="reboot:5")
    with Qmp(sock, proc=g.proc) as q:
        assert q.cmd("set-action", {"reboot": "shutdown"}) == {}
        q.cmd("cont")
        ev = q.wait_event("SHUTDOWN", 20)
        assert ev["data"] == {"guest": True, "reason": "guest-reset"}
        assert "RESET" not in q.event_names()
    assert g.wait_exit(20) == 0
    assert "boot 2" not in g.output()


def test_set_action_shutdown_pause(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, plan="poweroff")
    with Qmp(sock, proc=g.proc) as q:
        assert q.cmd("set-action", {"shutdown": "pause"}) == {}
        q.cmd("cont")
        ev = q.wait_event("SHUTDOWN", 30)
        assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}
        q.wait_event("STOP", 10, start=q.events.index(ev))
        assert q.cmd("query-status") == {"status": "shutdown", "singlestep": False, "running": False}
        assert g.proc.poll() is None, "shutdown=pause: the process exited"
        assert q.error("cont") == ("GenericError", "Resetting the Virtual Machine is required")
        assert "poweroff" in g.output()


def test_events_reach_every_negotiated_monitor(ferrovm, testguest, sockdir, launch):
    b_sock = os.path.join(sockdir, "b")
    c_sock = os.path.join(sockdir, "c")
    g, a_sock = start_vm(launch, ferrovm, testguest, sockdir,
                         "-qmp", f"unix:{b_sock},server=on,wait=off",
                         "-qmp", f"unix:{c_sock},server=on,wait=off")
    with Qmp(a_sock, proc=g.proc) as a, Qmp(b_sock, proc=g.proc) as b, \
            Raw(c_sock, proc=g.proc) as c:
        c.greet()  # connected, not negotiated: gets no events
        a.cmd("cont")
        g.wait_line(r"tick 1\b", 20)
        a.cmd("stop")
        a.cmd("system_reset")
        b.cmd("cont")
        for q in (a, b):
            q.wait_event("RESET", 10)
            wait_for(lambda: q.event_names() == ["RESUME", "STOP", "RESET", "RESUME"], 10,
                     f"RESUME STOP RESET RESUME on every monitor (have {q.event_names()})")
        c.expect_silence(0.2)
        assert c.execute("qmp_capabilities") == {"return": {}}
        a.cmd("stop")
        ev = c.recv(10)
        assert ev.get("event") == "STOP", ev
        b.wait_event("STOP", 10, start=4)
        g.proc.terminate()
        for q in (a, b):
            q.wait_event("SHUTDOWN", 10, data={"guest": False, "reason": "host-signal"})
    assert g.wait_exit(20) == 0


def test_guest_error_enters_internal_error_until_reset(ferrovm, testguest, sockdir, launch):
    # plan=crash jumps into the PCI hole, which KVM cannot execute: QEMU stops
    # the VM in internal-error (STOP) and waits for management.
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, plan="crash")
    with Raw(sock, proc=g.proc) as r:
        r.negotiate()
        event_then_return(r, '{"execute": "cont"}', "RESUME")
        ev = r.recv(20)
        assert ev.get("event") == "STOP", f"expected STOP after the guest error, got {ev}"
        assert r.execute("query-status")["return"] == {
            "status": "internal-error", "singlestep": False, "running": False}
        assert g.proc.poll() is None, "with a monitor the process waits for management"
        assert error_of(r.execute("cont")) == (
            "GenericError", "Resetting the Virtual Machine is required")
        event_then_return(r, '{"execute": "system_reset"}', "RESET",
                          {"guest": False, "reason": "host-qmp-system-reset"})
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
        event_then_return(r, '{"execute": "cont"}', "RESUME")
        g.wait_line(r"boot 2\b", 20)
