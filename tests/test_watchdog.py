"""`-device i6300esb` and the watchdog action, and `-device pvpanic-pci`,
end to end on ferrovm and on QEMU 7.2 booting the same test guest.

The guest (firmware/testguest/watchdog.c) programs the watchdog as Linux's
drivers/watchdog/i6300esb.c does, with stages of 200 units at 1 kHz (~197 ms
each, so it fires ~393 ms after the last pet), pets it `pets=N` times every
100 ms and then idles, printing `# watchdog fired K` when it sees the
timeout flag (RELOAD reads 0x1200) and `# nmi N` when its NMI counter moves.
`plan=watchdog-loop` re-arms 1.2 s after taking each expiry, so one boot sees
several; the spacing also keeps QEMU's 1 s WATCHDOG event rate limit
(monitor/monitor.c monitor_qapi_event_conf) out of the way. After a reset the
guest's boot 2 reports the flag, clears it and does not arm again.

What each action does is QEMU 7.2's hw/watchdog/watchdog.c
`watchdog_perform_action`; the tables below are what QEMU 7.2 showed for
this guest, and every test checks ferrovm against the table and against
QEMU itself."""
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import tap_results
from qmp_util import Qmp, start_vm, wait_for

WDT = ["-device", "i6300esb"]
RUNNING = {"status": "running", "singlestep": False, "running": True}


def boot(launch, binary, testguest, sockdir, *extra, plan):
    """Starts `binary` paused (-S) with `extra` and the guest's `plan`;
    returns (guest, QMP client) before `cont`."""
    g, sock = start_vm(launch, binary, testguest, sockdir, *extra, plan=plan,
                       name=os.path.basename(binary))
    return g, Qmp(sock, proc=g.proc)


def on_both(observe, ferrovm, qemu, *args):
    """(QEMU's, ferrovm's) result of `observe(binary, *args)`. QEMU is
    run in a thread beside ferrovm: booting through SeaBIOS takes it ~5 s a
    boot on the test host (ferrovm ~0.2 s), and overlapping keeps the file
    quick. Each VM has its own sockets and serial console."""
    with ThreadPoolExecutor(1) as pool:
        oracle = pool.submit(observe, qemu, *args)
        got = observe(ferrovm, *args)
        return oracle.result(), got


def since(q, ev):
    """(name, data) of the events after `ev`."""
    return [(e["event"], e.get("data")) for e in q.events[q.events.index(ev) + 1:]]


def watchdog_events(q):
    return [e for e in q.events if e["event"] == "WATCHDOG"]


def next_watchdog(q, n, timeout=15):
    """The n-th WATCHDOG event (1-based)."""
    wait_for(lambda: len(watchdog_events(q)) >= n, timeout, f"WATCHDOG event {n}")
    return watchdog_events(q)[n - 1]


def line_index(g, pattern, timeout=15, start=0):
    """Index of the first serial line at or after `start` matching `pattern`."""
    g.wait_line(pattern, timeout, start)
    rx = re.compile(pattern)
    return next(i for i, line in enumerate(g.lines) if i >= start and rx.search(line))


def drop_repeats(pairs):
    """QEMU boots the PVH guest through SeaBIOS, and every guest reset there
    is followed by SeaBIOS's own (its RAM copy restores the ROM and resets
    once more, src/fw/shadow.c qemu_reboot): a second, identical RESET that
    is the firmware's, not the watchdog's. ferrovm boots the guest directly."""
    out = []
    for p in pairs:
        if not out or out[-1] != p or p[0] != "RESET":
            out.append(p)
    return out


# --------------------------------------------------------------------------
# Actions that end the boot: one boot each

def observe_ending(binary, launch, testguest, sockdir, action):
    """`-watchdog-action ACTION` (reset-no-reboot: reset with -no-reboot),
    `plan=watchdog pets=3`: what follows the expiry."""
    extra = ["-watchdog-action", "reset" if action == "reset-no-reboot" else action]
    if action == "reset-no-reboot":
        extra.append("-no-reboot")
    g, q = boot(launch, binary, testguest, sockdir, *WDT, *extra, plan="watchdog pets=3")
    q.cmd("cont")
    ev = next_watchdog(q, 1, 30)
    out = {"data": ev["data"]}
    if action == "reset":
        b2 = line_index(g, r"ferrovm-testguest: boot 2 ", 60)
        out["boot2"] = [g.wait_line(r"^# watchdog timeout flag .*", 10, b2).group(0),
                        g.wait_line(r"^# watchdog boot 2: .*", 10, b2).group(0)]
        line_index(g, r"^# watchdog: idle", 10, b2)
        out["pets"] = [(ok, name) for ok, _, name in tap_results("\n".join(g.lines[:b2]))
                       if name.startswith("watchdog")]
        out["then"] = drop_repeats(since(q, ev))
        out["status"] = q.cmd("query-status")
    else:
        out["exit"] = g.wait_exit(20)
        out["then"] = since(q, ev)
        out["guest after"] = [line for line in g.lines if line in ("power button", "poweroff")]
        out["pets"] = [(ok, name) for ok, _, name in tap_results(g.output())
                       if name.startswith("watchdog")]
    q.close()
    g.kill()
    return out


PETS = [(True, "watchdog"), (True, "watchdog pet 1"), (True, "watchdog pet 2"),
        (True, "watchdog pet 3")]
EXPECTED_ENDING = {
    # qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET); the flag survives
    # the reset (previous_reboot_flag), boot 2 sees 0x1200 and clears it.
    "reset": {"pets": PETS, "data": {"action": "reset"},
              "then": [("RESET", {"guest": True, "reason": "guest-reset"})],
              "boot2": ["# watchdog timeout flag 1 (reload reads 0x1200)",
                        "# watchdog boot 2: flag cleared (reload reads 0x0), not arming"],
              "status": RUNNING},
    # With -no-reboot the same request shuts down (reason guest-reset), exit 0.
    "reset-no-reboot": {"pets": PETS, "data": {"action": "reset"},
                        "then": [("SHUTDOWN", {"guest": True, "reason": "guest-reset"})],
                        "exit": 0, "guest after": []},
    # qemu_system_powerdown_request: the ACPI power button. The guest armed
    # PWRBTN_EN, sees PWRBTN_STS and powers off through PM1a_CNT.
    "shutdown": {"pets": PETS, "data": {"action": "shutdown"},
                 "then": [("POWERDOWN", None),
                          ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})],
                 "exit": 0, "guest after": ["power button", "poweroff"]},
    # exit(0) right after the event: no SHUTDOWN, the guest does nothing more.
    "poweroff": {"pets": PETS, "data": {"action": "poweroff"}, "then": [], "exit": 0,
                 "guest after": []},
}


@pytest.mark.parametrize("action", ["reset", "reset-no-reboot", "shutdown", "poweroff"])
def test_action_ending_the_boot(ferrovm, qemu, testguest, sockdir, launch, action):
    oracle, got = on_both(observe_ending, ferrovm, qemu, launch, testguest, sockdir, action)
    assert oracle == EXPECTED_ENDING[action], f"QEMU 7.2 changed: {oracle}"
    assert got == oracle, f"QEMU 7.2: {oracle}\nferrovm: {got}"


# --------------------------------------------------------------------------
# query-pci

def pci_entry(q, vendor, device):
    """query-pci's entry for the function, less where it sits and the
    address its BARs got (ferrovm assigns them, QEMU leaves -1 until SeaBIOS)."""
    devs = [d for b in q.cmd("query-pci") for d in b["devices"]
            if d["id"]["vendor"] == vendor and d["id"]["device"] == device]
    assert len(devs) == 1, devs
    d = {k: v for k, v in devs[0].items() if k not in ("bus", "slot", "function")}
    d["regions"] = [{k: v for k, v in r.items() if k != "address"} for r in d["regions"]]
    return d


def guest_pci_line(g, ids):
    """The guest's enumeration line for the function, less bdf and address."""
    m = g.wait_line(rf"^# \S+ {ids} (\S+) bar0=(\w+):(0x[0-9a-f]+)@", 20)
    return m.groups()


# --------------------------------------------------------------------------
# Actions that leave the VM running: one boot, switched at run time

def observe_running_actions(binary, launch, testguest, sockdir):
    """`-action watchdog=none`, `plan=watchdog-loop pets=0`; between the
    expiries the action is switched with set-action and watchdog-set-action.
    Returns one record per step."""
    g, q = boot(launch, binary, testguest, sockdir, *WDT, "-action", "watchdog=none",
                plan="watchdog-loop pets=0")
    steps = {"bad action": [q.error("watchdog-set-action", {"action": "bogus"}),
                            q.error("set-action", {"watchdog": "bogus"})],
             "query-pci": pci_entry(q, 0x8086, 0x25ab)}
    q.cmd("cont")
    steps["guest pci"] = guest_pci_line(g, "8086:25ab")

    def step(n, *lines):
        ev = next_watchdog(q, n)
        seen = [g.wait_line(p, 10).group(0) for p in lines]
        return ev, {"data": ev["data"], "lines": seen, "status": q.cmd("query-status")}

    ev, steps["none"] = step(1, r"# watchdog fired 1\b.*")
    steps["none"]["then"] = since(q, ev)
    q.cmd("set-action", {"watchdog": "inject-nmi"})
    ev, steps["inject-nmi"] = step(2, r"# nmi 1$", r"# watchdog fired 2\b.*")
    steps["inject-nmi"]["then"] = since(q, ev)
    q.cmd("watchdog-set-action", {"action": "pause"})
    ev = next_watchdog(q, 3)
    wait_for(lambda: "STOP" in [e["event"] for e in q.events[q.events.index(ev):]], 5, "STOP")
    quiet_from = len(g.lines)
    rec = {"data": ev["data"], "status": q.cmd("query-status")}
    time.sleep(0.6)
    rec["lines while stopped"] = g.lines[quiet_from:]
    q.cmd("cont")
    rec["lines"] = [g.wait_line(r"# watchdog fired 3\b.*", 10).group(0)]
    rec["status after cont"] = q.cmd("query-status")
    rec["then"] = since(q, ev)
    steps["pause"] = rec
    q.cmd("watchdog-set-action", {"action": "debug"})
    ev, steps["debug"] = step(4, r"# watchdog fired 4\b.*")
    steps["debug"]["then"] = since(q, ev)
    # QMP inject-nmi reaches the same counter (through LINT1, as QEMU's).
    q.cmd("inject-nmi")
    steps["qmp inject-nmi"] = g.wait_line(r"# nmi 2$", 10).group(0)
    q.close()
    g.kill()
    g.wait_exit(10)
    steps["debug"]["stderr"] = "watchdog: timer fired" in g.stderr.decode(errors="replace")
    return steps


EXPECTED_RUNNING = {
    "bad action": [("GenericError", "Parameter 'action' does not accept value 'bogus'"),
                   ("GenericError", "Parameter 'watchdog' does not accept value 'bogus'")],
    "none": {"data": {"action": "none"}, "then": [], "status": RUNNING,
             "lines": ["# watchdog fired 1 (flag cleared, reload reads 0x0)"]},
    # nmi_monitor_handle: an NMI on every vCPU; the guest counts it and runs on.
    "inject-nmi": {"data": {"action": "inject-nmi"}, "then": [], "status": RUNNING,
                   "lines": ["# nmi 1", "# watchdog fired 2 (flag cleared, reload reads 0x0)"]},
    # qemu_system_vmstop_request(RUN_STATE_WATCHDOG): STOP, run state
    # "watchdog"; the guest runs again only after cont (RESUME).
    "pause": {"data": {"action": "pause"},
              "status": {"status": "watchdog", "singlestep": False, "running": False},
              "lines while stopped": [], "then": [("STOP", None), ("RESUME", None)],
              "lines": ["# watchdog fired 3 (flag cleared, reload reads 0x0)"],
              "status after cont": RUNNING},
    # "watchdog: timer fired" on stderr, nothing else.
    "debug": {"data": {"action": "debug"}, "then": [], "status": RUNNING, "stderr": True,
              "lines": ["# watchdog fired 4 (flag cleared, reload reads 0x0)"]},
    "qmp inject-nmi": "# nmi 2",
    "query-pci": {
        "irq_pin": 0, "qdev_id": "", "class_info": {"class": 0x0880},
        "id": {"vendor": 0x8086, "device": 0x25ab, "subsystem-vendor": 0x1af4, "subsystem": 0x1100},
        "regions": [{"bar": 0, "type": "memory", "size": 16, "prefetch": False,
                     "mem_type_64": False}]},
    "guest pci": ("088000", "mem32", "0x10"),
}


def test_actions_leaving_the_vm_running_and_query_pci(ferrovm, qemu, testguest, sockdir, launch):
    oracle, got = on_both(observe_running_actions, ferrovm, qemu, launch, testguest, sockdir)
    assert oracle == EXPECTED_RUNNING, f"QEMU 7.2 changed: {oracle}"
    assert got == oracle, f"QEMU 7.2: {oracle}\nferrovm: {got}"


# --------------------------------------------------------------------------

def observe_stopped_clock(binary, launch, testguest, sockdir):
    """The guest pets every 100 ms for 1.6 s; the VM is stopped for 1.6 s
    (four timeouts) in between. The watchdog counts virtual time, so it must not
    fire while stopped nor right after cont (the guest pets on), only ~393
    ms after the last pet."""
    g, q = boot(launch, binary, testguest, sockdir, *WDT, "-watchdog-action", "none",
                plan="watchdog pets=16")
    q.cmd("cont")
    g.wait_line(r"^ok \d+ - watchdog pet 3$", 20)
    q.cmd("stop")
    time.sleep(1.6)
    out = {"while stopped": [e["event"] for e in q.events], "status": q.cmd("query-status")}
    q.cmd("cont")
    g.wait_line(r"^ok \d+ - watchdog pet 16$", 20)
    out["by the last pet"] = [e["event"] for e in q.events]
    out["data"] = next_watchdog(q, 1)["data"]
    out["fired"] = g.wait_line(r"# watchdog fired \d+", 10).group(0)
    out["all pets ok"] = not any(re.match(r"not ok \d+ - watchdog", line) for line in g.lines)
    q.close()
    g.kill()
    return out


def test_stopped_vm_watchdog_does_not_fire(ferrovm, qemu, testguest, sockdir, launch):
    oracle, got = on_both(observe_stopped_clock, ferrovm, qemu, launch, testguest, sockdir)
    assert oracle == {
        "while stopped": ["RESUME", "STOP"],
        "status": {"status": "paused", "singlestep": False, "running": False},
        "by the last pet": ["RESUME", "STOP", "RESUME"],
        "data": {"action": "none"}, "fired": "# watchdog fired 1", "all pets ok": True,
    }, f"QEMU 7.2 changed: {oracle}"
    assert got == oracle, f"QEMU 7.2: {oracle}\nferrovm: {got}"


def observe_masked_lint1(binary, launch, testguest, sockdir):
    """`lint1=0`: the guest counts NMIs but leaves LVT LINT1 masked. QEMU
    delivers an external NMI only through an unmasked LINT1 in NMI mode
    (hw/i386/kvm/apic.c do_inject_external_nmi), for the inject-nmi action
    and QMP inject-nmi alike: both are dropped, the guest runs on."""
    g, q = boot(launch, binary, testguest, sockdir, *WDT, "-watchdog-action", "inject-nmi",
                plan="watchdog-loop pets=0 lint1=0")
    q.cmd("cont")
    lint1 = int(g.wait_line(r"^# vector 2 \(nmi\) counted; lvt lint1 (0x[0-9a-f]+)$", 20).group(1), 16)
    out = {"lint1 masked": bool(lint1 & 1 << 16), "data": next_watchdog(q, 1)["data"]}
    g.wait_line(r"# watchdog fired 1\b", 10)
    out["qmp"] = q.cmd("inject-nmi")
    g.wait_line(r"# watchdog armed 2\b", 10)      # 1.2 s on: any NMI was counted by now
    out["nmi lines"] = [line for line in g.lines if re.match(r"# nmi \d+$", line)]
    out["exceptions"] = [line for line in g.lines if "exception" in line]
    q.close()
    g.kill()
    return out


def test_nmi_dropped_while_lint1_is_masked(ferrovm, qemu, testguest, sockdir, launch):
    oracle, got = on_both(observe_masked_lint1, ferrovm, qemu, launch, testguest, sockdir)
    assert oracle == {"lint1 masked": True, "data": {"action": "inject-nmi"}, "qmp": {},
                      "nmi lines": [], "exceptions": []}, f"QEMU 7.2 changed: {oracle}"
    assert got == oracle, f"QEMU 7.2: {oracle}\nferrovm: {got}"


# --------------------------------------------------------------------------
# pvpanic-pci

def observe_pvpanic_pci(binary, launch, testguest, sockdir, plan, action):
    g, q = boot(launch, binary, testguest, sockdir, "-device", "pvpanic-pci",
                "-action", f"panic={action}", plan=plan)
    q.cmd("cont")
    ev = q.wait_event("GUEST_PANICKED" if plan == "panic-pci" else "GUEST_CRASHLOADED", 30)
    m = g.wait_line(r"^# pvpanic-pci \S+ bar0 0x[0-9a-f]+ (reads 0x\w+; writing 0x\w+)$", 10)
    out = {"data": ev["data"], "guest": m.group(1)}
    if action == "none" or plan == "crashloaded-pci":
        g.wait_line(r"^# idle: ", 10)      # the guest ran on past the write
        if action == "none":
            out["query-pci"] = pci_entry(q, 0x1b36, 0x0011)
            out["guest pci"] = guest_pci_line(g, "1b36:0011")
    else:
        wait_for(lambda: "STOP" in [e["event"] for e in q.events], 5, "STOP")
    out["then"] = since(q, ev)
    out["status"] = q.cmd("query-status")
    q.close()
    g.kill()
    return out


PVPANIC_PCI_ENTRY = {
    "irq_pin": 0, "qdev_id": "", "class_info": {"class": 0x0880},
    "id": {"vendor": 0x1b36, "device": 0x0011, "subsystem-vendor": 0x1af4, "subsystem": 0x1100},
    # The 2-byte region; the guest's BAR sizing finds 16 bytes (the smallest
    # memory BAR the register can express).
    "regions": [{"bar": 0, "type": "memory", "size": 2, "prefetch": False, "mem_type_64": False}],
}
EXPECTED_PVPANIC_PCI = {
    ("panic-pci", "pause"): {"data": {"action": "pause"}, "guest": "reads 0x3; writing 0x1",
                             "then": [("STOP", None)],
                             "status": {"status": "guest-panicked", "singlestep": False,
                                        "running": False}},
    ("panic-pci", "none"): {"data": {"action": "run"}, "guest": "reads 0x3; writing 0x1",
                            "then": [], "status": RUNNING, "query-pci": PVPANIC_PCI_ENTRY,
                            "guest pci": ("088000", "mem32", "0x10")},
    # crash-loaded never stops the VM, whatever the policy.
    ("crashloaded-pci", "pause"): {"data": {"action": "run"}, "guest": "reads 0x3; writing 0x2",
                                   "then": [], "status": RUNNING},
}


@pytest.mark.parametrize("plan,action", list(EXPECTED_PVPANIC_PCI))
def test_pvpanic_pci(ferrovm, qemu, testguest, sockdir, launch, plan, action):
    oracle, got = on_both(observe_pvpanic_pci, ferrovm, qemu, launch, testguest, sockdir, plan,
                          action)
    assert oracle == EXPECTED_PVPANIC_PCI[(plan, action)], f"QEMU 7.2 changed: {oracle}"
    assert got == oracle, f"QEMU 7.2: {oracle}\nferrovm: {got}"
