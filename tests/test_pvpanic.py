"""`-device pvpanic` (QEMU's ISA pvpanic at port 0x505) and the `-action
panic=` policy, end to end: the test guest's `plan=panic` writes 1 to the
port (`plan=crashloaded` writes 2), and each policy's event, run state and
what the process then does are checked on ferrovm and on QEMU 7.2 booting
the same guest (softmmu/runstate.c `qemu_system_guest_panicked`)."""
import os

import pytest

from qmp_util import Qmp, start_vm, wait_for


def panic_boot(launch, binary, testguest, sockdir, plan, action):
    """Boots `plan` with `-device pvpanic -action panic=ACTION`; returns
    (the guest, the QMP client, the panic event) once the event arrived."""
    g, sock = start_vm(launch, binary, testguest, sockdir, "-device", "pvpanic",
                       "-action", f"panic={action}", plan=plan,
                       name=os.path.basename(binary))
    q = Qmp(sock, proc=g.proc)
    q.cmd("cont")
    name = "GUEST_PANICKED" if plan == "panic" else "GUEST_CRASHLOADED"
    ev = q.wait_event(name, timeout=30)
    return g, q, ev


def after_event(q, ev):
    return [e["event"] for e in q.events[q.events.index(ev) + 1:]]


def observe(launch, binary, testguest, sockdir, plan, action):
    """What a user sees: the event's data, then the run state or the exit."""
    g, q, ev = panic_boot(launch, binary, testguest, sockdir, plan, action)
    out = {"data": ev["data"]}
    if action in ("shutdown", "exit-failure"):
        out["exit"] = g.wait_exit(20)
        wait_for(lambda: "SHUTDOWN" in after_event(q, ev), 5, "SHUTDOWN")
        out["then"] = after_event(q, ev)
        out["shutdown"] = q.wait_event("SHUTDOWN")["data"]
    else:
        out["status"] = q.cmd("query-status")
        out["then"] = after_event(q, ev)
        out["alive"] = g.proc.poll() is None
    q.close()
    g.kill()
    return out


EXPECTED = {
    # QEMU's GuestPanicAction for each policy; pause stops in guest-panicked.
    "pause": {"data": {"action": "pause"}, "then": ["STOP"], "alive": True,
              "status": {"status": "guest-panicked", "singlestep": False, "running": False}},
    "none": {"data": {"action": "run"}, "then": [], "alive": True,
             "status": {"status": "running", "singlestep": False, "running": True}},
    # shutdown and exit-failure: SHUTDOWN with reason guest-panic (QEMU's main
    # loop serves the shutdown before the guest-panicked stop, so no STOP),
    # then the process exits (0, or 1 for exit-failure).
    "shutdown": {"data": {"action": "poweroff"}, "then": ["SHUTDOWN"], "exit": 0,
                 "shutdown": {"guest": True, "reason": "guest-panic"}},
    "exit-failure": {"data": {"action": "poweroff"}, "then": ["SHUTDOWN"], "exit": 1,
                     "shutdown": {"guest": True, "reason": "guest-panic"}},
}


@pytest.mark.parametrize("action", ["pause", "none", "shutdown", "exit-failure"])
def test_panic_policy(ferrovm, qemu, testguest, sockdir, launch, action):
    got = observe(launch, ferrovm, testguest, sockdir, "panic", action)
    assert got == EXPECTED[action], got
    oracle = observe(launch, qemu, testguest, sockdir, "panic", action)
    assert oracle == got, f"QEMU 7.2: {oracle}\nferrovm: {got}"


def test_crashloaded_reports_and_runs_on(ferrovm, qemu, testguest, sockdir, launch):
    got = observe(launch, ferrovm, testguest, sockdir, "crashloaded", "pause")
    assert got["data"] == {"action": "run"}, got
    assert got["status"]["status"] == "running" and got["alive"], got
    assert observe(launch, qemu, testguest, sockdir, "crashloaded", "pause") == got


def test_guest_reads_the_events_property(ferrovm, testguest, sockdir, launch):
    g, q, _ = panic_boot(launch, ferrovm, testguest, sockdir, "panic", "pause")
    g.wait_line(r"pvpanic port 0x505 reads 0x3; writing 0x1", 10)
    q.close()


def test_type_queries_match_qemu(ferrovm, qemu, sockdir, launch):
    """device-list-properties and qom-list-types for pvpanic, as QEMU 7.2
    answers them; QEMU's `pvpanic[0]` child<memory-region> (its I/O region
    as a QOM child) is not modelled."""
    seen = {}
    for binary in (ferrovm, qemu):
        g, sock = start_vm(launch, binary, None, sockdir, name=os.path.basename(binary))
        q = Qmp(sock, proc=g.proc)
        props = [p for p in q.cmd("device-list-properties", {"typename": "pvpanic"})
                 if not p["type"].startswith("child<")]
        types = sorted((t["name"], t.get("parent"), t.get("abstract", False))
                       for t in q.cmd("qom-list-types", {"abstract": True})
                       if t["name"] in ("pvpanic", "isa-device"))
        seen[binary] = (props, types)
        q.close()
        g.kill()
    assert seen[ferrovm] == (
        [{"name": "ioport", "type": "uint16", "default-value": 0x505},
         {"name": "events", "type": "uint8", "default-value": 3}],
        [("isa-device", "device", True), ("pvpanic", "isa-device", False)])
    assert seen[qemu] == seen[ferrovm]


def test_set_action_changes_the_policy_before_the_panic(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-device", "pvpanic",
                       "-action", "panic=pause", plan="panic")
    q = Qmp(sock, proc=g.proc)
    q.cmd("set-action", {"panic": "none"})
    q.cmd("cont")
    assert q.wait_event("GUEST_PANICKED")["data"] == {"action": "run"}
    assert q.cmd("query-status")["status"] == "running"
    q.close()
