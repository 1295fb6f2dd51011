"""QMP protocol and commands, as a management tool sees them: the greeting,
capabilities negotiation, `id`, out-of-band execution, the wire format, every
command ferrovm implements (through the real client library, qemu.qmp), and
malformed or hostile input (QEMU's tests/qtest/qmp-test.c and worse).
QEMU 7.2 is the reference; test_qmp_differential.py compares with it live."""
import json
import os
import random
import re
import threading
import time

import pytest

from qmp_util import COMMANDS, EVENTS, Qmp, Raw, error_of, rss_kib, start_vm, thread_ids

NAME = "fv-test"
UUID = "6a1c1f2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def vm(ferrovm, testguest, sockdir, launch):
    """ferrovm stopped at start-up (-S), 2 vCPUs, 128 MiB, a name and a UUID."""
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-name", NAME, "-uuid", UUID,
                       smp="2")
    g.sock = sock
    return g


def raw(vm):
    return Raw(vm.sock, proc=vm.proc)


# --- handshake -----------------------------------------------------------

def test_greeting_is_one_crlf_line_naming_qemu_7_2_and_ferrovm(vm):
    with raw(vm) as r:
        g = r.greet()
        line = r.lines[0]
    assert line.endswith(b"}\r\n") and line.count(b"\n") == 1, line
    assert list(g) == ["QMP"] and sorted(g["QMP"]) == ["capabilities", "version"], g
    assert g["QMP"]["capabilities"] == ["oob"], g
    v = g["QMP"]["version"]
    assert sorted(v) == ["package", "qemu"], v
    assert sorted(v["qemu"]) == ["major", "micro", "minor"], v
    assert (v["qemu"]["major"], v["qemu"]["minor"]) == (7, 2), v
    assert isinstance(v["qemu"]["micro"], int) and not isinstance(v["qemu"]["micro"], bool)
    assert re.fullmatch(r"ferrovm-\d+\.\d+\.\d+.*", v["package"]), v
    # The client library accepts it, and query-version says the same.
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.greeting == g
        assert q.cmd("query-version") == v


def test_commands_before_negotiation_are_refused(vm):
    with raw(vm) as r:
        r.greet()
        for cmd in ("query-version", "query-status", "stop", "quit"):
            assert error_of(r.execute(cmd)) == (
                "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"), cmd
        # quit was refused: the VM is still there.
        assert vm.proc.poll() is None
        assert r.execute("qmp_capabilities") == {"return": {}}
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
        assert error_of(r.execute("qmp_capabilities")) == (
            "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
        assert error_of(r.execute("qmp_capabilities", {"enable": ["oob"]}))[0] == "CommandNotFound"
        # No events reach a client before it negotiates; the second one is ignored.
        assert r.events == []


def test_failed_negotiation_leaves_the_client_in_negotiation_mode(vm):
    with raw(vm) as r:
        r.greet()
        cls, _ = error_of(r.execute("qmp_capabilities", {"enable": ["cap-does-not-exist"]}))
        assert cls == "GenericError"
        cls, desc = error_of(r.execute("qmp_capabilities", {"enable": "oob"}))
        assert (cls, desc) == ("GenericError", "Invalid parameter type for 'enable', expected: array")
        assert error_of(r.execute("query-status"))[0] == "CommandNotFound"
        assert r.execute("qmp_capabilities", {"enable": []}) == {"return": {}}
        assert r.execute("query-status")["return"]["status"] == "prelaunch"


def test_oob_capability_and_exec_oob(vm):
    # Without 'oob' negotiated, exec-oob is an unknown member.
    with raw(vm) as r:
        r.negotiate()
        assert error_of(r.cmd({"exec-oob": "query-status", "id": 1})) == (
            "GenericError", "QMP input member 'exec-oob' is unexpected")
    # With it, commands that do not support OOB say so, with the id.
    with raw(vm) as r:
        r.greet()
        assert r.execute("qmp_capabilities", {"enable": ["oob"]}) == {"return": {}}
        rep = r.cmd({"exec-oob": "query-cpus-fast", "id": "o1"})
        assert rep["id"] == "o1"
        assert error_of(rep) == ("GenericError", "The command query-cpus-fast does not support OOB")
        assert error_of(r.cmd({"exec-oob": "no-such-cmd"})) == (
            "CommandNotFound", "The command no-such-cmd has not been found")
        assert error_of(r.cmd({"exec-oob": "query-status", "execute": "query-status"})) == (
            "GenericError", "QMP input member 'execute' clashes with 'exec-oob'")
        assert error_of(r.cmd({"exec-oob": 7})) == (
            "GenericError", "QMP input member 'exec-oob' must be a string")
        # In-band commands work as before.
        assert r.execute("query-status", id=5) == {
            "return": {"status": "prelaunch", "singlestep": False, "running": False}, "id": 5}
    # The library negotiates oob when the server offers it and can still run commands.
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.cmd("query-status")["status"] == "prelaunch"


@pytest.mark.parametrize("ident", [
    "cookie#1", 2, 0, -7, 2.5, True, False, None, "", "\u00e9\u2603\U0001F600", "\u0000\n\t\"\\",
    [], [1, {"z": None}], {}, {"a": [1, 2.5, None, True], "b": {"c": "d"}},
], ids=repr)
def test_id_is_echoed_verbatim(vm, ident):
    with raw(vm) as r:
        r.negotiate()
        ok = r.execute("query-name", id=ident)
        assert ok == {"return": {"name": NAME}, "id": ident}
        assert json.dumps(ok["id"]) == json.dumps(ident)
        # Errors echo it too: a missing argument, an unknown command.
        bad = r.execute("human-monitor-command", id=ident)
        assert error_of(bad) == ("GenericError", "Parameter 'command-line' is missing")
        assert "id" in bad and json.dumps(bad["id"]) == json.dumps(ident)
        bad = r.execute("no-such-cmd", id=ident)
        assert error_of(bad)[0] == "CommandNotFound" and bad["id"] == ident


def test_large_id_is_echoed(vm):
    ident = "x" * (1 << 20)
    with raw(vm) as r:
        r.negotiate()
        assert r.execute("query-status", id=ident)["id"] == ident


def test_wire_format_one_crlf_line_per_message(vm):
    """Several requests in one write, one request split byte by byte: each
    reply and event is exactly one line ending in CRLF, in order."""
    with raw(vm) as r:
        r.negotiate()
        r.send('{"execute":"query-status","id":1}{"execute":"query-name","id":2}\n'
               '  {"execute":"cont","id":3}{"execute":"stop","id":4}')
        msgs = [r.recv() for _ in range(6)]
        assert [m.get("id", m.get("event")) for m in msgs] == [1, 2, "RESUME", 3, "STOP", 4], msgs
        req = b'{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}, "id": "split"}'
        for b in req:
            r.send(bytes([b]))
        rep = r.recv()
        assert rep == {"return": "VM status: paused\r\n", "id": "split"}
        # The CR LF inside the string is escaped, so the message is still one line.
        assert r.lines[-1] == (b'{"return": "VM status: paused\\r\\n", "id": "split"}\r\n')
        for m in msgs:
            if "event" in m:
                ts = m["timestamp"]
                assert sorted(ts) == ["microseconds", "seconds"], m
                assert 0 <= ts["microseconds"] < 1000000
                assert abs(ts["seconds"] - time.time()) < 60, m


# --- every command, through the client library --------------------------

def test_identity_commands(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.cmd("query-name") == {"name": NAME}
        assert q.cmd("query-uuid") == {"UUID": UUID}
        assert q.cmd("query-kvm") == {"enabled": True, "present": True}
        assert q.cmd("query-target") == {"arch": "x86_64"}
        assert q.cmd("query-memory-size-summary") == {"base-memory": 128 << 20, "plugged-memory": 0}
        cur = q.cmd("query-current-machine")
        assert list(cur) == ["wakeup-suspend-support"] and isinstance(cur["wakeup-suspend-support"], bool)
        assert q.cmd("query-iothreads") == []
        assert q.cmd("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}


def test_defaults_without_name_and_uuid(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir)
    with Qmp(sock, proc=g.proc) as q:
        assert q.cmd("query-name") == {}
        assert q.cmd("query-uuid") == {"UUID": "00000000-0000-0000-0000-000000000000"}
        assert q.hmp("info name") == ""


def test_query_machines_lists_q35(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        machines = q.cmd("query-machines")
    assert isinstance(machines, list) and machines
    for m in machines:
        for key, typ in (("name", str), ("cpu-max", int), ("hotpluggable-cpus", bool),
                         ("numa-mem-supported", bool), ("deprecated", bool)):
            assert isinstance(m.get(key), typ), (key, m)
        assert set(m) <= {"name", "alias", "is-default", "cpu-max", "hotpluggable-cpus",
                          "numa-mem-supported", "deprecated", "default-cpu-type",
                          "default-ram-id"}, m
    q35 = [m for m in machines if m.get("alias") == "q35"]
    assert len(q35) == 1 and q35[0]["name"] == "pc-q35-7.2", machines
    assert sum(1 for m in machines if m.get("is-default")) == 1
    assert "none" in [m["name"] for m in machines]


def test_cpus_are_real_vcpu_threads(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        cpus = q.cmd("query-cpus-fast")
        hot = q.cmd("query-hotpluggable-cpus")
        info = q.hmp("info cpus")
    assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
    tids = [c["thread-id"] for c in cpus]
    threads = thread_ids(vm.proc.pid)
    assert len(set(tids)) == 2 and set(tids) <= threads, (tids, threads)
    assert vm.proc.pid not in tids, "a vCPU's thread-id is the main thread"
    for c in cpus:
        assert sorted(c) == ["cpu-index", "props", "qom-path", "target", "thread-id"], c
        assert c["target"] == "x86_64"
        assert sorted(c["props"]) == ["core-id", "socket-id", "thread-id"], c
    assert cpus[0]["qom-path"] == "/machine/unattached/device[0]"
    assert info == f"* CPU #0: thread_id={tids[0]}\r\n  CPU #1: thread_id={tids[1]}\r\n"
    # One hot-pluggable slot per vCPU, present ones with their QOM path (QEMU lists them last first).
    assert len(hot) == 2, hot
    for h in hot:
        assert sorted(h) == ["props", "qom-path", "type", "vcpus-count"], h
        assert h["vcpus-count"] == 1 and h["type"] == "qemu64-x86_64-cpu"
    assert [h["qom-path"] for h in hot] == [c["qom-path"] for c in reversed(cpus)]
    assert [h["props"] for h in hot] == [c["props"] for c in reversed(cpus)]
    # The paths are real QOM objects.
    with Qmp(vm.sock, proc=vm.proc) as q:
        for c in cpus:
            assert q.cmd("qom-get", {"path": c["qom-path"], "property": "realized"}) is True
            assert q.cmd("qom-get", {"path": c["qom-path"], "property": "type"}) == "qemu64-x86_64-cpu"


def test_query_chardev_lists_the_monitor(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        chardevs = q.cmd("query-chardev")
    mon = [c for c in chardevs if c.get("label") == "compat_monitor0"]
    assert mon == [{"label": "compat_monitor0", "filename": f"unix:{vm.sock},server=on",
                    "frontend-open": True}], chardevs
    # -serial stdio is chardev serial0, as QEMU names it.
    assert {"label": "serial0", "filename": "stdio", "frontend-open": True} in chardevs, chardevs


def test_query_commands_lists_every_command(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        cmds = q.cmd("query-commands")
    assert all(sorted(c) == ["name"] for c in cmds), cmds[:5]
    names = [c["name"] for c in cmds]
    assert len(names) == len(set(names)), "query-commands lists a command twice"
    missing = [c for c in COMMANDS if c not in names]
    assert not missing, f"query-commands lacks {missing}"


def test_query_qmp_schema_describes_commands_and_events(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        schema = q.cmd("query-qmp-schema")
    assert isinstance(schema, list)
    by_name = {}
    for e in schema:
        assert isinstance(e.get("name"), str) and isinstance(e.get("meta-type"), str), e
        assert e["name"] not in by_name, f"duplicate schema entry {e['name']}"
        by_name[e["name"]] = e
    metas = {"builtin", "enum", "array", "object", "alternate", "command", "event"}
    assert {e["meta-type"] for e in schema} <= metas

    def typ(name):
        assert name in by_name, f"type {name!r} is referenced but not defined"
        return by_name[name]

    for c in COMMANDS:
        e = by_name.get(c)
        assert e and e["meta-type"] == "command", f"no command entry for {c}"
        assert typ(e["arg-type"])["meta-type"] == "object"
        typ(e["ret-type"])
    for ev in EVENTS:
        e = by_name.get(ev)
        assert e and e["meta-type"] == "event", f"no event entry for {ev}"
        assert typ(e["arg-type"])["meta-type"] == "object"
    # SHUTDOWN carries guest (bool) and reason (ShutdownCause).
    members = {m["name"]: m for m in typ(by_name["SHUTDOWN"]["arg-type"])["members"]}
    assert typ(members["guest"]["type"]) == {"name": "bool", "meta-type": "builtin", "json-type": "boolean"}
    reason = typ(members["reason"]["type"])
    assert reason["meta-type"] == "enum"
    for v in ("host-qmp-quit", "host-qmp-system-reset", "host-signal", "guest-shutdown",
              "guest-reset"):
        assert v in reason["values"], reason
    # qom-get takes path and property, both mandatory strings.
    args = {m["name"]: m for m in typ(by_name["qom-get"]["arg-type"])["members"]}
    assert sorted(args) == ["path", "property"]
    for m in args.values():
        assert "default" not in m and typ(m["type"])["json-type"] == "string"
    # Every type reference resolves (what libvirt's schema walker does).
    for e in schema:
        for key in ("arg-type", "ret-type", "element-type"):
            if key in e:
                typ(e[key])
        for m in e.get("members", []):
            if "type" in m:
                typ(m["type"])


def test_qom_list_and_get(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        root = q.cmd("qom-list", {"path": "/"})
        machine = q.cmd("qom-list", {"path": "/machine"})
        mtype = q.cmd("qom-get", {"path": "/machine", "property": "type"})
        assert q.error("qom-list", {"path": "/no/such"}) == ("DeviceNotFound", "Device '/no/such' not found")
        assert q.error("qom-get", {"path": "/no/such", "property": "type"}) == (
            "DeviceNotFound", "Device '/no/such' not found")
        assert q.error("qom-get", {"path": "/machine", "property": "nope"}) == (
            "GenericError", "Property 'pc-q35-7.2-machine.nope' not found")
        assert q.error("qom-get", {"path": "/machine"}) == (
            "GenericError", "Parameter 'property' is missing")
    for lst in (root, machine):
        assert all(sorted(p) == ["name", "type"] for p in lst), lst
    assert {"name": "machine", "type": "child<pc-q35-7.2-machine>"} in root, root
    assert {"name": "type", "type": "string"} in machine, machine
    for child in ("peripheral", "peripheral-anon", "unattached"):
        assert {"name": child, "type": "child<container>"} in machine, machine
    assert mtype == "pc-q35-7.2-machine"


def test_set_action(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.cmd("set-action", {"reboot": "shutdown", "shutdown": "pause", "panic": "pause",
                                    "watchdog": "debug"}) == {}
        assert q.cmd("set-action", {}) == {}
        assert q.error("set-action", {"shutdown": "explode"}) == (
            "GenericError", "Parameter 'shutdown' does not accept value 'explode'")
        assert q.error("set-action", {"reboot": 1}) == (
            "GenericError", "Invalid parameter type for 'reboot', expected: string")
        assert q.error("set-action", {"frob": "x"}) == ("GenericError", "Parameter 'frob' is unexpected")


def test_inject_nmi_and_system_wakeup(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.cmd("inject-nmi") == {}
        assert q.error("system_wakeup") == (
            "GenericError", "Unable to wake up: guest is not in suspended state")
        assert q.cmd("query-status")["status"] == "prelaunch"


def test_human_monitor_command(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        v = q.cmd("query-version")
        assert q.hmp("info status") == "VM status: paused (prelaunch)\r\n"
        assert q.hmp("info version") == \
            "{major}.{minor}.{micro}".format(**v["qemu"]) + v["package"] + "\r\n"
        assert q.hmp("info name") == f"{NAME}\r\n"
        assert q.hmp("frobnicate now") == "unknown command: 'frobnicate'\r\n"
        assert q.hmp("info frobnicate") == "unknown command: 'info frobnicate'\r\n"
        n = len(q.events)
        assert q.hmp("cont") == ""
        q.wait_event("RESUME", 10, start=n)
        assert q.hmp("info status") == "VM status: running\r\n"
        assert q.cmd("query-status")["running"] is True
        n = len(q.events)
        assert q.hmp("stop") == ""
        q.wait_event("STOP", 10, start=n)
        assert q.hmp("info status") == "VM status: paused\r\n"
        assert q.cmd("query-status") == {"status": "paused", "singlestep": False, "running": False}
        assert q.error("human-monitor-command", {"command-line": "info status", "cpu-index": 9}) == (
            "GenericError", "Parameter 'cpu-index' expects a CPU number")
        assert q.hmp("info cpus").startswith("* CPU #0: thread_id=")


def test_argument_errors(vm):
    with Qmp(vm.sock, proc=vm.proc) as q:
        for cmd in COMMANDS:
            # device_add is 'gen': false in QEMU's schema: its arguments are the
            # device's properties, checked by the device, not as unknown members.
            if cmd in ("qmp_capabilities", "device_add"):
                continue
            # Mandatory arguments are checked first, so give them.
            args = {"qom-list": {"path": "/"}, "qom-get": {"path": "/", "property": "type"},
                    "human-monitor-command": {"command-line": "info status"},
                    "block_resize": {"size": 512}, "device_del": {"id": "x"},
                    "set_link": {"name": "x", "up": True}, "netdev_del": {"id": "x"},
                    "netdev_add": {"type": "tap", "id": "x"}, "balloon": {"value": 1},
                    "qom-set": {"path": "/", "property": "type", "value": 1},
                    "announce-self": {"initial": 1, "max": 1, "rounds": 1, "step": 1},
                    "qom-list-properties": {"typename": "virtio-net-pci"},
                    "device-list-properties": {"typename": "virtio-net-pci"},
                    "query-cpu-model-expansion": {"type": "static", "model": {"name": "qemu64"}},
                    "watchdog-set-action": {"action": "none"},
                    "blockdev-add": {"driver": "file", "filename": "/nonexistent"},
                    "blockdev-del": {"node-name": "x"},
                    "blockdev-reopen": {"options": []},
                    **{c: {"id": "x"} for c in ("job-pause", "job-resume", "job-cancel",
                                                "job-complete", "job-dismiss", "job-finalize",
                                                "block-job-dismiss", "block-job-finalize")},
                    **{c: {"device": "x"} for c in ("block-job-cancel", "block-job-pause",
                                                    "block-job-resume", "block-job-complete",
                                                    "block-stream", "block-commit")},
                    "block-job-set-speed": {"device": "x", "speed": 1},
                    "blockdev-mirror": {"device": "x", "target": "y", "sync": "full"},
                    "drive-mirror": {"device": "x", "target": "/nonexistent", "sync": "full"},
                    "blockdev-backup": {"device": "x", "target": "y", "sync": "full"},
                    "blockdev-create": {"job-id": "x", "options": {"driver": "raw"}},
                    "transaction": {"actions": []},
                    "drive-backup": {"device": "x", "target": "/nonexistent", "sync": "full"},
                    **{c: {"node": "x", "name": "y"} for c in (
                        "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
                        "block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
                        "block-dirty-bitmap-disable")},
                    "block-dirty-bitmap-merge": {"node": "x", "target": "y", "bitmaps": []},
                    "query-stats": {"target": "vm"},
                    "migrate-set-capabilities": {"capabilities": []},
                    "object-add": {"qom-type": "throttle-group", "id": "x"},
                    "nbd-server-start": {"addr": {"type": "unix",
                                                  "data": {"path": "/nonexistent/n"}}},
                    "nbd-server-add": {"device": "x"},
                    "nbd-server-remove": {"name": "x"},
                    "object-del": {"id": "x"},
                    "change-backing-file": {"device": "x", "image-node-name": "y",
                                            "backing-file": "z"},
                    "blockdev-snapshot-sync": {"device": "x", "snapshot-file": "/nonexistent"},
                    "blockdev-snapshot": {"node": "x", "overlay": "y"},
                    "block_set_io_throttle": {"device": "x", "bps": 0, "bps_rd": 0, "bps_wr": 0,
                                              "iops": 0, "iops_rd": 0, "iops_wr": 0},
                    }.get(cmd, {})
            cls, desc = q.error(cmd, {**args, "no-such-arg": 1})
            assert (cls, desc) == ("GenericError", "Parameter 'no-such-arg' is unexpected"), cmd
        assert q.error("qom-list", {"no-such-arg": 1}) == ("GenericError", "Parameter 'path' is missing")
        assert q.error("qom-list", {"path": ["/"]}) == (
            "GenericError", "Invalid parameter type for 'path', expected: string")
        assert q.error("human-monitor-command", {"command-line": "info status", "cpu-index": "0"}) == (
            "GenericError", "Invalid parameter type for 'cpu-index', expected: integer")
        assert q.error("no-such-command") == ("CommandNotFound", "The command no-such-command has not been found")
        # None of these stopped or quit anything.
        assert q.cmd("query-status")["status"] == "prelaunch" and vm.proc.poll() is None


# --- malformed and hostile input ----------------------------------------

MALFORMED = [  # (bytes, what), as tests/qtest/qmp-test.c's test_malformed
    (b"{]\n", "syntax error"),
    (b"{\xff", "impossible byte outside string"),
    (b"{\x01", "control character outside string"),
    (b"{'bad \xff", "impossible byte in string"),
    (b"{'execute': 'nonexistent', 'id':'\n", "control character in string"),
    (b"%p", "interpolation"),
]
# Well-formed JSON that is not a valid request. As qtest, a newline follows:
# a bare keyword such as `null` only ends at the next character.
NOT_REQUESTS = [
    (b"null\n", "not a dictionary"),
    (b"{}", "no execute"),
    (b"{ 'execute': true }", "execute not a string"),
    (b"{ 'execute': 'no-such-cmd', 'arguments': [] }", "arguments not a dictionary"),
    (b"{ 'execute': 'no-such-cmd', 'extra': true }", "extra key"),
]


def assert_recovered(r, negotiated):
    rep = r.cmd("{ 'execute': 'no-such-cmd' }")
    want = "The command no-such-cmd has not been found" if negotiated else \
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    assert error_of(rep) == ("CommandNotFound", want), rep


def check_malformed(r, negotiated):
    for data, what in MALFORMED:
        r.send(data)
        rep = r.reply()
        assert error_of(rep)[0] == "GenericError", (what, rep)
        assert "id" not in rep
        assert_recovered(r, negotiated)
    for data, what in NOT_REQUESTS:
        rep = r.cmd(data)
        assert error_of(rep)[0] == "GenericError", (what, rep)
    assert_recovered(r, negotiated)


def test_malformed_input_before_and_after_negotiation(vm):
    with raw(vm) as r:
        r.greet()
        check_malformed(r, negotiated=False)
        assert r.execute("qmp_capabilities") == {"return": {}}
        check_malformed(r, negotiated=True)
        assert r.execute("query-status", id="after")["id"] == "after"


def test_error_descriptions_of_malformed_requests(vm):
    with raw(vm) as r:
        r.negotiate()
        cases = [
            (b"{]", "JSON parse error, expecting value"),
            (b"{\x01", "JSON parse error, stray '\x01'"),
            (b"null\n", "QMP input must be a JSON object"),
            (b"42 ", "QMP input must be a JSON object"),
            (b"[1]", "QMP input must be a JSON object"),
            (b"{}", "QMP input lacks member 'execute'"),
            (b"{'execute': true}", "QMP input member 'execute' must be a string"),
            (b"{'execute': 'query-status', 'arguments': []}",
             "QMP input member 'arguments' must be an object"),
            (b"{'execute': 'query-status', 'extra': true}", "QMP input member 'extra' is unexpected"),
        ]
        for data, desc in cases:
            assert error_of(r.cmd(data)) == ("GenericError", desc), data
            # After a lexical error QEMU's lexer skips to the next structural
            # character, so every case is followed by a request that starts with one.
            assert_recovered(r, True)


def recover_after_junk(r, timeout=60):
    """Sends 0xFF (resets QEMU's JSON lexer) and a marker; returns the
    replies before the marker's."""
    r.send(b"\xff{'execute': 'no-such-cmd', 'id': 'marker'}")
    out = []
    while True:
        m = r.reply(timeout)
        if m.get("id") == "marker":
            assert error_of(m)[0] == "CommandNotFound", m
            return out
        out.append(m)


def test_deep_nesting_is_limited_to_1024(vm):
    def nested(depth):  # `depth` levels including the two braces around arguments
        k = depth - 2
        return b'{"execute":"query-status","arguments":{"a":' + b"[" * k + b"]" * k + b"}}"
    with raw(vm) as r:
        r.negotiate()
        assert error_of(r.cmd(nested(1024))) == ("GenericError", "Parameter 'a' is unexpected")
        r.send(nested(1025))
        first = r.reply()
        assert error_of(first) == ("GenericError", "JSON nesting depth limit exceeded")
        rest = recover_after_junk(r)
        assert all(error_of(m)[0] == "GenericError" for m in rest)
        assert r.execute("query-status")["return"]["status"] == "prelaunch"


def test_70_mb_of_open_brackets(vm):
    """QEMU answers every 1025th '[' with a nesting error and stays usable;
    ferrovm must too, without hanging or growing without bound."""
    size = 70 << 20
    with raw(vm) as r:
        r.negotiate()
        t = Flooder(r.sock, b"[" * size)
        t.start()
        n = 0
        deadline = time.monotonic() + 60
        while n < size // 1025:
            m = r.reply(max(1, deadline - time.monotonic()))
            assert m == {"error": {"class": "GenericError",
                                   "desc": "JSON nesting depth limit exceeded"}}, (n, m)
            n += 1
        t.join(60)
        assert not t.is_alive() and t.error is None, t.error
        rest = recover_after_junk(r)
        # The 0xFF itself is the only other error.
        assert [error_of(m)[1] for m in rest] == ["JSON parse error, stray '\ufffd'"], rest[:3]
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
    assert rss_kib(vm.proc.pid) < 200 * 1024


def test_garbage_bytes_do_not_break_the_monitor(vm):
    rnd = random.Random(1234)
    with raw(vm) as r:
        r.negotiate()
        for _ in range(20):
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4000)))
            r.send(junk)
            for m in recover_after_junk(r):
                assert "error" in m and error_of(m)[0] in ("GenericError", "CommandNotFound"), m
            assert r.execute("query-name", id="ok") == {"return": {"name": NAME}, "id": "ok"}
    assert vm.proc.poll() is None


def test_client_disconnecting_mid_command(vm):
    for partial in (b'{"execute": "query-sta', b'{"execute": "qmp_capabilities"', b"[[[[",
                    b'{"execute":"query-status","id":"\\u00'):
        with raw(vm) as r:
            r.negotiate()
            r.send(partial)
        # The next client starts from scratch: new greeting, new negotiation,
        # and nothing of the previous client's bytes.
        with raw(vm) as r:
            r.greet()
            assert error_of(r.execute("query-status"))[0] == "CommandNotFound"
            assert r.execute("qmp_capabilities") == {"return": {}}
            assert r.execute("query-status", id=1) == {
                "return": {"status": "prelaunch", "singlestep": False, "running": False}, "id": 1}
    # Gone before the greeting is read.
    for _ in range(5):
        raw(vm).close()
    with Qmp(vm.sock, proc=vm.proc) as q:
        assert q.cmd("query-name") == {"name": NAME}


class Flooder(threading.Thread):
    """Sends `data` in chunks, counting what the kernel took."""

    def __init__(self, sock, data):
        super().__init__(daemon=True)
        self.sock, self.data, self.sent, self.error = sock, data, 0, None

    def run(self):
        try:
            while self.sent < len(self.data):
                self.sent += self.sock.send(self.data[self.sent:self.sent + 65536])
        except OSError as e:
            self.error = e

    def wait_stalled(self, quiet=0.5, timeout=20):
        """Waits until no byte has been taken for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return last
            time.sleep(0.05)
        raise AssertionError(f"ferrovm kept reading from a client that never reads "
                             f"({self.sent} of {len(self.data)} bytes)")


def test_client_that_never_reads(ferrovm, testguest, sockdir, launch):
    """A client floods requests whose replies it never reads: ferrovm stops
    reading it with its memory bounded, the other monitor keeps answering,
    and once the flooder leaves, its monitor serves a new client."""
    other = os.path.join(sockdir, "other")
    g, sock = start_vm(launch, ferrovm, testguest, sockdir,
                       "-qmp", f"unix:{other},server=on,wait=off")
    with Qmp(other, proc=g.proc) as watcher:
        rss0 = rss_kib(g.proc.pid)
        flooder = Raw(sock, proc=g.proc)
        flooder.negotiate()
        # query-qmp-schema answers ~100 KiB per 30-byte request: 2 GB of replies.
        f = Flooder(flooder.sock, b'{"execute":"query-qmp-schema"}' * 20000)
        f.start()
        f.wait_stalled()
        for _ in range(3):
            t0 = time.monotonic()
            assert watcher.cmd("query-status", timeout=10)["status"] == "prelaunch"
            assert time.monotonic() - t0 < 2, "the other monitor was slow while one client flooded"
        grown = rss_kib(g.proc.pid) - rss0
        assert grown < 64 * 1024, f"ferrovm grew by {grown} KiB for a client that does not read"
        flooder.close()
        f.join(10)
        with Qmp(sock, proc=g.proc, timeout=20) as q:
            assert q.cmd("query-status")["status"] == "prelaunch"
        assert watcher.cmd("query-name") == {}
    assert g.proc.poll() is None


def test_bursts_of_errors_with_oob_negotiated(vm):
    """With 'oob' on, one read that yields many requests or errors must queue
    them. (QEMU 7.2 aborts here: assertion `mon->qmp_requests->length <
    QMP_REQ_QUEUE_LEN_MAX' in monitor/qmp.c; a crash is not behaviour to copy.)"""
    rnd = random.Random(99)
    with raw(vm) as r:
        r.greet()
        assert r.execute("qmp_capabilities", {"enable": ["oob"]}) == {"return": {}}
        for _ in range(5):
            r.send(bytes(rnd.randrange(256) for _ in range(3000)))
            for m in recover_after_junk(r):
                assert "error" in m, m
        r.send(b"".join(b'{"execute":"query-name","id":%d}' % i for i in range(50)))
        assert [r.reply()["id"] for _ in range(50)] == list(range(50))
        assert r.execute("query-status")["return"]["status"] == "prelaunch"
    assert vm.proc.poll() is None
