"""Differential test: the same QMP conversation with QEMU 7.2 (the oracle)
and with ferrovm, started with the same arguments, compared step by step:
events (name, data, order relative to the returns), reply shapes (keys and
JSON types, recursively), values where they are determined, and error
classes and descriptions for bad arguments, unknown commands and malformed
input. Where values differ by design, the normaliser below says why."""
import glob
import json
import os
import random
import re

import pytest

from qmp_util import COMMANDS, Raw, running, shape, shape_diff, vm_argv

NAME = "diff"
UUID = "0b9ec4c4-7d2f-4c9f-b3a3-5d0c5a6c8e21"


def req(cmd, args=None, **extra):
    r = {"execute": cmd, **extra}
    if args is not None:
        r["arguments"] = args
    return json.dumps(r).encode()


# Mandatory arguments, so that argument checks reach the one under test.
THROTTLE_ZERO = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
VALID_ARGS = {
    "qom-list": {"path": "/machine"},
    "qom-get": {"path": "/machine", "property": "type"},
    "human-monitor-command": {"command-line": "info name"},
    "block_resize": {"device": "nope", "size": 512},
    "device_del": {"id": "nope"},
    "set_link": {"name": "nope", "up": False},
    "netdev_add": {"type": "tap", "id": "n0", "fd": "nope"},
    "netdev_del": {"id": "nope"},
    "balloon": {"value": 1 << 20},
    "qom-set": {"path": "/machine", "property": "type", "value": "x"},
    "blockdev-add": {"driver": "file", "filename": "/nonexistent"},
    "blockdev-del": {"node-name": "x"},
    "blockdev-reopen": {"options": [{"driver": "file", "node-name": "nope", "filename": "/x"}]},
    "change-backing-file": {"device": "nope", "image-node-name": "x", "backing-file": "y"},
    "blockdev-snapshot-sync": {"device": "nope", "snapshot-file": "/nonexistent/s"},
    "blockdev-snapshot": {"node": "nope", "overlay": "x"},
    "block_set_io_throttle": {"device": "nope", **THROTTLE_ZERO},
    "object-add": {"qom-type": "throttle-group", "id": "nope"},
    "object-del": {"id": "nope"},
    **{c: {"id": "nope"} for c in ("job-pause", "job-resume", "job-cancel", "job-complete",
                                   "job-dismiss", "job-finalize", "block-job-dismiss",
                                   "block-job-finalize")},
    **{c: {"device": "nope"} for c in ("block-job-cancel", "block-job-pause",
                                       "block-job-resume", "block-job-complete",
                                       "block-stream", "block-commit")},
    "block-job-set-speed": {"device": "nope", "speed": 1},
    "blockdev-mirror": {"device": "nope", "target": "x", "sync": "full"},
    "drive-mirror": {"device": "nope", "target": "/nonexistent/m", "sync": "full"},
    "blockdev-backup": {"device": "nope", "target": "x", "sync": "full"},
    "blockdev-create": {"job-id": "nope", "options": {"driver": "raw"}},
    "transaction": {"actions": []},
    "drive-backup": {"device": "nope", "target": "/nonexistent/b", "sync": "full"},
    **{c: {"node": "nope", "name": "b"} for c in (
        "block-dirty-bitmap-add", "block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
        "block-dirty-bitmap-enable", "block-dirty-bitmap-disable")},
    "block-dirty-bitmap-merge": {"node": "nope", "target": "b", "bitmaps": ["c"]},
    "nbd-server-start": {"addr": {"type": "unix", "data": {"path": "/nonexistent/n"}}},
    "nbd-server-add": {"device": "nope"},
    "nbd-server-remove": {"name": "nope"},
}

MALFORMED = [  # tests/qtest/qmp-test.c test_malformed, and more
    b"{]\n", b"{\xff", b"{\x01", b"{'bad \xff", b"{'execute': 'nonexistent', 'id':'\n", b"%p",
    b"null\n", b"{}", b"{ 'execute': true }", b"{ 'execute': 'no-such-cmd', 'arguments': [] }",
    b"{ 'execute': 'no-such-cmd', 'extra': true }", b"[1]", b"42 ", b"'str'", b"]", b"}", b"\x00",
    b"{'execute': 'query-status', 'arguments': null}",
    b"{'execute': 'query-status', 'control': 1}",
    b"{'id': 'no-execute'}",
    b"{'execute': 'query-status', 'execute': 'query-name'}",
    b'{"execute": "query-name", "id": "\\ud800"}',
    b'{"execute": "query-name", "id": "\\x41"}',
    b'{"execute": "query-name", "id": "\xc0\xaf"}',
    b'{"execute": "query-name", "id": "\xf0\x9f\x98\x80 \xe2\x98\x83"}',
    b'{"execute": "query-name", "id": "\\u00e9\\u0000\\"\\\\\\/\\b\\f\\n\\r\\t"}',
    b'{"execute": "query-name", "id": 1e400}',
    b'{"execute": "query-name", "id": 18446744073709551616}',
    b'{"execute": "query-name", "id": 9223372036854775807}',
    b'{"execute": "query-name", "id": -9223372036854775808}',
    b'{"execute": "query-name", "id": -0}',
    b'{"execute": "query-name", "id": 0.1}',
    b'{"execute": "query-name", "id": 1.5e-7}',
    b'{"execute": "query-name", "id": 01}',
    b'{"execute": "query-name", "id": tru}',
    b'{"execute": "query-name", "id": [1, 2,]}',
    b'{"execute": "query-name", "id": {"a": 1,}}',
    b'{"execute": "query-name" "id": 1}',
    b'{"execute": "query-name", "id": "a"}{"execute": "query-name", "id": "b"}',
    b'{"execute"\n:\n"query-name",\t"id":\r"ws"}',
    b'{"execute": "query-status", "arguments": {"a": ' + b"[" * 1022 + b"]" * 1022 + b"}}",
    b'{"execute": "query-status", "arguments": {"a": ' + b"[" * 1023 + b"]" * 1023 + b"}}",
    b"[" * 100000 + b"\xff",
    b"{'execute': 'query-name', 'id': '" + b"x" * 70000 + b"'}",
]


# Numbers as ids: compared as printed (QEMU prints integers that overflow
# int64 as doubles, and a double that overflows as `inf`, which is not JSON).
NUMBER_IDS = [m for m in MALFORMED if re.search(rb'"id": [-0-9]', m)]


def garbage(seed, n):
    rnd = random.Random(seed)
    return bytes(rnd.randrange(256) for _ in range(n)) + b"\xff"


def steps_before_negotiation():
    s = [req("query-status"), req("query-version", id=1), req("quit", id="q")]
    s += MALFORMED[:12]
    s += [req("qmp_capabilities", {"enable": ["cap-does-not-exist"]}),
          req("qmp_capabilities", {"enable": "oob"}),
          req("qmp_capabilities", {"enable": [], "extra": 1}),
          req("qmp_capabilities", {"enable": None}),
          json.dumps({"exec-oob": "qmp_capabilities"}).encode(),
          req("qmp_capabilities", id="neg"),
          req("qmp_capabilities", id="again")]
    return s


RECONNECT = None  # a step: the client leaves and a new one connects

OOB_REQUESTS = [
    json.dumps({"exec-oob": "query-status"}).encode(),
    json.dumps({"exec-oob": "query-status", "id": "o"}).encode(),
    json.dumps({"exec-oob": "no-such", "id": "o"}).encode(),
    json.dumps({"exec-oob": "qmp_capabilities"}).encode(),
    json.dumps({"exec-oob": 1}).encode(),
    json.dumps({"exec-oob": "query-status", "execute": "query-status"}).encode(),
    json.dumps({"exec-oob": "query-status", "arguments": {"x": 1}}).encode(),
    json.dumps({"exec-oob": "query-status", "id": "o", "control": {}}).encode(),
]


def steps_with_oob():
    """A second client that negotiates 'oob'. (Not with floods of errors:
    QEMU 7.2 aborts on an assertion when one read yields more than 8
    requests or errors while 'oob' is on, monitor/qmp.c handle_qmp_command.)"""
    return [RECONNECT, req("query-status"), req("qmp_capabilities", {"enable": ["oob"]}),
            *OOB_REQUESTS, *MALFORMED[:12], req("query-status", id="oob-on")]


def steps_after_negotiation():
    s = []
    # Every command without arguments that leaves the run state alone.
    for cmd in ("query-status", "query-name", "query-uuid", "query-version", "query-kvm",
                "query-target", "query-machines", "query-current-machine", "query-cpus-fast",
                "query-hotpluggable-cpus", "query-memory-size-summary", "query-chardev",
                "query-iothreads", "query-commands", "query-qmp-schema", "system_wakeup",
                "query-block", "query-blockstats", "query-named-block-nodes", "query-pci",
                "query-rx-filter", "query-balloon", "announce-self", "x-debug-query-block-graph"):
        s.append(req(cmd))
    # Bad arguments of every command.
    for cmd in COMMANDS:
        s.append(req(cmd, {**VALID_ARGS.get(cmd, {}), "no-such-arg": 1}, id=f"extra-{cmd}"))
        s.append(req(cmd, []))
        s.append(req(cmd, "x"))
    s += probe_steps()  # issue 13, see the block at the end
    s += stats_steps()  # see the block at the end
    s += object_steps()  # see the block at the end
    s += nbd_steps()  # see the block at the end
    s += [
        req("qom-list", {}), req("qom-list", {"path": 1}), req("qom-list", {"path": None}),
        req("qom-list", {"path": "/"}), req("qom-list", {"path": "/machine"}),
        req("qom-list", {"path": "/machine/unattached"}), req("qom-list", {"path": "/nope"}),
        req("qom-list", {"path": "/machine/unattached/device[0]"}),
        req("qom-list", {"path": "machine"}), req("qom-list", {"path": ""}),
        req("qom-list", {"path": "unattached"}), req("qom-list", {"path": "/machine/"}),
        req("qom-get", {"path": "machine", "property": "type"}),
        req("qom-get", {"path": "/machine"}), req("qom-get", {"property": "type"}),
        req("qom-get", {"path": "/machine", "property": 1}),
        req("qom-get", {"path": "/machine", "property": "type"}),
        req("qom-get", {"path": "/machine", "property": "nope"}),
        req("qom-get", {"path": "/nope", "property": "type"}),
        req("qom-get", {"path": "/machine/unattached/device[0]", "property": "realized"}),
        req("qom-get", {"path": "/machine/unattached/device[0]", "property": "type"}),
        req("qom-get", {"path": "/machine/peripheral", "property": "type"}),
        req("qom-get", {"path": "/", "property": "type"}),
        req("query-blockstats", {"query-nodes": True}), req("query-blockstats", {"query-nodes": 1}),
        req("query-named-block-nodes", {"flat": True}),
        req("block_resize", {"device": "nope", "size": 512}),
        req("block_resize", {"node-name": "nope", "size": 512}),
        req("block_resize", {"device": "a", "node-name": "b", "size": 512}),
        req("block_resize", {"size": "x"}), req("block_resize", {"device": "nope"}),
        req("device_add", {"driver": "virtio-blk-pci", "drive": "nope"}),
        req("device_add", {"driver": "nosuch"}), req("device_add", {"driver": 5}),
        req("device_add", {}), req("device_del", {"id": "nope"}),
        req("device_del", {"id": "/machine/peripheral/nope"}),
        req("qom-set", {"path": "/machine", "property": "type", "value": "x"}),
        req("qom-set", {"path": "/machine", "property": "nope", "value": 1}),
        req("qom-set", {"path": "/nope", "property": "type", "value": 1}),
        req("qom-set", {"path": "/machine", "property": "type"}),
        req("set_link", {"name": "nope", "up": True}), req("set_link", {"name": "nope"}),
        req("netdev_add", {"type": "tap", "id": "n0", "fd": "nope"}),
        req("netdev_add", {"type": "tap", "id": "n0", "fd": "nope", "ifname": "x"}),
        req("netdev_add", {"type": "tap"}), req("netdev_add", {"type": "bogus", "id": "n0"}),
        req("netdev_add", {"id": "n0"}), req("netdev_add", {"type": "tap", "id": "n0", "queues": "x"}),
        req("netdev_add", {"type": "tap", "id": "n0", "queues": 5000000000}),
        req("netdev_add", {"type": "tap", "id": "n0", "queues": 1.5}),
        req("netdev_add", {"type": "tap", "id": "n0", "sndbuf": "x"}),
        req("netdev_add", {"type": "tap", "id": "n0", "poll-us": -1, "fd": "x"}),
        req("netdev_del", {"id": "nope"}), req("netdev_del", {}),
        req("query-rx-filter", {"name": "nope"}), req("query-rx-filter", {"name": 1}),
        req("balloon", {"value": 1 << 20}), req("balloon", {"value": "x"}), req("balloon", {}),
        req("announce-self", {"initial": 50, "max": 550, "rounds": 1, "step": 50}),
        req("announce-self", {"initial": 50, "max": 550, "rounds": 1, "step": 50,
                              "interfaces": ["nope"], "id": "a1"}),
        req("announce-self", {"initial": "x"}),
        req("set-action", {"shutdown": "bogus"}), req("set-action", {"reboot": 5}),
        req("set-action", {"panic": "exit-failure", "watchdog": "inject-nmi"}),
        req("set-action", {"reboot": "reset", "shutdown": "poweroff", "panic": "shutdown",
                           "watchdog": "reset"}),
        req("set-action", {}),
        req("watchdog-set-action", {"action": "pause"}), req("watchdog-set-action", {}),
        req("blockdev-add", {"driver": "file", "filename": "/nonexistent/x", "node-name": "n1"}),
        req("blockdev-add", {"driver": "file", "filename": os.path.abspath(__file__),
                             "node-name": "n0", "read-only": True}),
        req("blockdev-add", {"driver": "raw", "file": "n0", "node-name": "r0", "read-only": True}),
        req("blockdev-reopen", {"options": [{"driver": "raw", "file": "n0", "node-name": "r0",
                                             "read-only": True}]}),
        req("blockdev-reopen", {"options": [{"driver": "raw", "file": "n0", "node-name": "r0"}]}),
        req("blockdev-reopen", {"options": [{"driver": "file", "node-name": "r0",
                                             "filename": "/x"}]}),
        req("blockdev-reopen", {"options": [{"driver": "raw", "file": "n0"}]}),
        # (QEMU 7.2 aborts on an empty list: not asked.)
        req("blockdev-reopen", {}),
        req("change-backing-file", {"device": "r0", "image-node-name": "r0",
                                    "backing-file": "y"}),
        req("change-backing-file", {"device": "nope", "image-node-name": "x",
                                    "backing-file": "y"}),
        req("change-backing-file", {"device": "r0"}),
        # issue 12: block jobs (no job exists; r0 is a read-only raw node).
        req("query-jobs"), req("query-block-jobs"),
        *[req(c, {"id": "nope"}) for c in ("job-pause", "job-resume", "job-cancel",
                                            "job-complete", "job-dismiss", "job-finalize")],
        *[req(c, {"device": "nope"}) for c in ("block-job-cancel", "block-job-pause",
                                                "block-job-resume", "block-job-complete")],
        req("block-job-set-speed", {"device": "nope", "speed": 1}),
        req("block-job-dismiss", {"id": "nope"}), req("block-job-finalize", {"id": "nope"}),
        req("block-stream", {"device": "nope"}), req("block-stream", {"device": "r0"}),
        req("block-commit", {"device": "nope"}), req("block-commit", {"device": "r0"}),
        req("blockdev-mirror", {"device": "nope", "target": "r0", "sync": "full"}),
        req("blockdev-mirror", {"device": "r0", "target": "r0", "sync": "full"}),
        req("drive-mirror", {"device": "nope", "target": "/nonexistent/m", "sync": "full"}),
        req("blockdev-backup", {"device": "nope", "target": "r0", "sync": "full"}),
        req("blockdev-backup", {"device": "r0", "target": "r0", "sync": "full"}),
        req("drive-backup", {"device": "nope", "target": "/nonexistent/b", "sync": "full"}),
        req("blockdev-create", {"job-id": "nope", "options": {"driver": "raw"}}),
        req("transaction", {"actions": []}),
        req("transaction", {"actions": [{"type": "abort", "data": {}}]}),
        # Dirty bitmaps (r0 is a read-only raw node over n0).
        req("block-dirty-bitmap-add", {"node": "nope", "name": "b"}),
        req("block-dirty-bitmap-add", {"node": "r0", "name": "b", "granularity": 4096}),
        req("block-dirty-bitmap-add", {"node": "r0", "name": "b"}),
        req("block-dirty-bitmap-add", {"node": "r0", "name": "b", "granularity": 4097}),
        req("block-dirty-bitmap-add", {"node": "r0", "name": "p", "persistent": True}),
        req("block-dirty-bitmap-add", {"node": "n0", "name": "c", "disabled": True}),
        req("block-dirty-bitmap-add", {"node": "r0", "name": "c", "disabled": True}),
        req("block-dirty-bitmap-merge", {"node": "r0", "target": "c",
                                         "bitmaps": ["b", {"node": "r0", "name": "b"}]}),
        req("block-dirty-bitmap-merge", {"node": "r0", "target": "c",
                                         "bitmaps": [{"node": "n0", "name": "c"}]}),
        req("block-dirty-bitmap-merge", {"node": "r0", "target": "c", "bitmaps": ["nope"]}),
        req("block-dirty-bitmap-merge", {"node": "r0", "target": "c", "bitmaps": [{}]}),
        req("block-dirty-bitmap-enable", {"node": "r0", "name": "c"}),
        req("block-dirty-bitmap-disable", {"node": "r0", "name": "b"}),
        req("block-dirty-bitmap-clear", {"node": "r0", "name": "b"}),
        req("block-dirty-bitmap-clear", {"node": "nope", "name": "b"}),
        req("query-named-block-nodes"),
        req("block-dirty-bitmap-remove", {"node": "r0", "name": "b"}),
        req("block-dirty-bitmap-remove", {"node": "r0", "name": "b"}),
        req("block-dirty-bitmap-remove", {"node": "r0", "name": "c"}),
        req("block-dirty-bitmap-remove", {"node": "n0", "name": "c"}),
        req("blockdev-del", {"node-name": "n0"}),
        req("blockdev-del", {"node-name": "r0"}), req("blockdev-del", {"node-name": "n0"}),
        req("blockdev-add", {"driver": "qcow2", "node-name": "n2", "file": "nosuch"}),
        req("blockdev-add", {"driver": "bogus", "node-name": "n3"}),
        req("blockdev-add", {"driver": "raw", "node-name": "n4", "file": {"driver": "file"}}),
        req("blockdev-add", {"driver": "raw"}),
        req("blockdev-add", {"node-name": "n5"}),
        req("blockdev-del", {"node-name": "nosuch"}), req("blockdev-del", {}),
        req("blockdev-snapshot-sync", {"device": "nope", "snapshot-file": "/nonexistent/s"}),
        req("blockdev-snapshot-sync", {"node-name": "nope", "snapshot-file": "/nonexistent/s"}),
        req("blockdev-snapshot-sync", {"snapshot-file": "/nonexistent/s", "mode": "bogus"}),
        req("blockdev-snapshot-sync", {}),
        req("blockdev-snapshot", {"node": "nope", "overlay": "x"}), req("blockdev-snapshot", {}),
        req("block_set_io_throttle", {"device": "nope", **THROTTLE_ZERO}),
        req("block_set_io_throttle", {"id": "nope", **THROTTLE_ZERO}),
        req("block_set_io_throttle", THROTTLE_ZERO),
        req("block_set_io_throttle", {"device": "nope", **THROTTLE_ZERO, "bps": "x"}),
        req("block_set_io_throttle", {"device": "nope"}),
        req("watchdog-set-action", {"action": "bogus"}), req("watchdog-set-action", {"action": 1}),
        req("human-monitor-command", {}), req("human-monitor-command", {"command-line": 1}),
        req("human-monitor-command", {"command-line": "info status", "cpu-index": 9}),
        req("human-monitor-command", {"command-line": "info status", "cpu-index": -1}),
        req("human-monitor-command", {"command-line": "info status", "cpu-index": "0"}),
        req("no-such-command"), req("no-such-command", {"a": 1}, id=["x"]),
        req("query-status", id=None), req("query-status", id=True), req("query-status", id=[]),
        req("query-status", id={"k": [1, 2.5, None, False, "s"]}), req("query-status", id=-3),
        *OOB_REQUESTS,  # 'oob' not negotiated: exec-oob is an unknown member
    ]
    for line in ("info status", "info name", "info uuid", "info kvm", "info cpus",
                 "info chardev", "info iothreads", "info memory_size_summary", "info version",
                 "info", "help", "help info", "help stop", "help info status", "help nope", "nope", "nope arg",
                 "info nope", "", "   ", "info status extra", "stop x", "system_wakeup"):
        s.append(req("human-monitor-command", {"command-line": line}))
    s += MALFORMED
    s += [garbage(seed, 3000) for seed in range(5)]
    s += steps_with_oob()
    # The run-state machine.
    s += [req("stop"), req("cont"), req("cont"), req("query-status"), req("stop"), req("stop"),
          req("query-status"), req("system_reset"), req("query-status"), req("cont"),
          req("human-monitor-command", {"command-line": "stop"}),
          req("human-monitor-command", {"command-line": "info status"}),
          req("human-monitor-command", {"command-line": "c"}),
          req("human-monitor-command", {"command-line": "s"}),
          req("system_reset"), req("query-status"),
          req("human-monitor-command", {"command-line": "system_reset"}),
          req("system_wakeup"), req("system_powerdown"), req("query-status"),
          req("human-monitor-command", {"command-line": "system_powerdown"}),
          req("inject-nmi"), req("query-status")]
    return s


# --- normalisation ------------------------------------------------------

def norm_return(cmd, args, value):
    """What of a return value must be equal. By-design differences:
    - query-version, info version: ferrovm reports 7.2.0 and package
      'ferrovm-X.Y.Z'; the oracle is a distribution build (7.2.N, Debian).
    - thread ids are the processes' own.
    - query-machines: ferrovm offers pc-q35-7.2, pc-i440fx-7.2, ferrovm and
      none; QEMU dozens. Compared: shapes of the entries, and the common
      machines' names and aliases.
    - query-current-machine: ferrovm has no S3 support, so its
      wakeup-suspend-support is false (q35 says true).
    - qom-list: ferrovm has the paths and properties management tools read,
      a subset of QEMU's: every entry it lists must be in QEMU's list.
    - query-commands, query-qmp-schema: ferrovm implements a subset; its
      entries must be QEMU's (the schema is compared as resolved types,
      since both number their type names).
    """
    if cmd in PROBE_NORMS:  # issue 13, see the block at the end
        return PROBE_NORMS[cmd](args, value)
    if cmd == "query-version":
        return shape(value), value["qemu"]["major"], value["qemu"]["minor"]
    if cmd == "query-cpus-fast":
        return [{**c, "thread-id": "TID"} for c in value]
    if cmd == "human-monitor-command":
        line = args["command-line"].strip()
        if line in HMP_LISTINGS:
            return value.split("\r\n")
        if line == "info version":
            return re.fullmatch(r"7\.2\.\d+.*\r\n", value) is not None
        return re.sub(r"thread_id=\d+", "thread_id=TID", value)
    if cmd == "query-machines":
        common = {m["name"]: m.get("alias") for m in value if m["name"] in ("pc-q35-7.2", "none")}
        return shape(value)[1:], common
    if cmd == "query-current-machine":
        return shape(value)
    if cmd == "query-pci":
        # q35's chipset functions are not modelled (docs/known-gaps.md): each
        # function ferrovm lists must be at QEMU's address with QEMU's class.
        return [(b["bus"], d["slot"], d["function"], d["class_info"])
                for b in value for d in b["devices"]]
    if cmd in ("qom-list", "query-commands", "query-qmp-schema"):
        return value  # compared as subsets below
    return value


SUBSET_RETURNS = ("qom-list", "query-commands", "query-qmp-schema", "query-machines", "query-pci")
# HMP's command listings: ferrovm has a subset of QEMU's commands, so its
# lines must be QEMU's lines, in QEMU's order.
HMP_LISTINGS = ("info", "help", "help info")


def canon_schema(schema):
    by = {e["name"]: e for e in schema}

    def canon(name, seen=()):
        e = by[name]
        if name in seen:
            return "<recursive>"
        seen += (name,)
        m = e["meta-type"]
        if m == "builtin":
            return e["json-type"] if name != "any" else "any"
        if m == "enum":
            return ["enum", sorted(e["values"])]
        if m == "array":
            return ["array", canon(e["element-type"], seen)]
        if m == "alternate":
            return ["alternate", sorted(json.dumps(canon(x["type"], seen)) for x in e["members"])]
        if m == "object":
            r = {"members": {x["name"]: ["default" in x, canon(x["type"], seen),
                                         x.get("features", [])] for x in e["members"]}}
            if "tag" in e:
                r["tag"] = e["tag"]
                r["variants"] = {v["case"]: canon(v["type"], seen) for v in e["variants"]}
            return ["object", r, e.get("features", [])]
        out = {k: v for k, v in e.items() if k not in ("name", "arg-type", "ret-type")}
        out["arg"] = canon(e["arg-type"], seen)
        if "ret-type" in e:
            out["ret"] = canon(e["ret-type"], seen)
        return out
    return {e["name"]: canon(e["name"]) for e in schema if e["meta-type"] in ("command", "event")}


def message_key(msg, cmd=None):
    """One message, without what differs by nature (timestamps). Returns
    that may legitimately list less than QEMU's are compared by
    norm_return/compare, not here."""
    if "<raw>" in msg:
        return ["not JSON", msg["<raw>"]]
    msg = {k: v for k, v in msg.items() if k != "<line>"}
    if "event" in msg:
        ts = msg.get("timestamp", {})
        assert sorted(ts) == ["microseconds", "seconds"], msg
        return ["event", msg["event"], msg.get("data")]
    if "error" in msg:
        return ["error", msg.get("id", "<none>"), msg["error"]["class"], msg["error"]["desc"],
                sorted(msg)]
    ret = msg["return"]
    if cmd in SUBSET_RETURNS:
        ret = ret[:0] if isinstance(ret, list) else probe_key_return(cmd, ret)
    return ["return", msg.get("id", "<none>"), shape(ret), sorted(msg)]


def converse(binary, testguest, sock, steps, machine):
    """Runs the conversation; returns, per step, the messages it produced."""
    if machine == "none":  # no guest, no vCPU
        argv = vm_argv(binary, None, "-S", "-name", NAME, "-uuid", UUID,
                       "-qmp", f"unix:{sock},server=on,wait=off", serial="none", machine="none")
    elif machine == "libvirt-probe":  # libvirt's capability probe, exactly (no -m)
        argv = [binary, "-S", "-no-user-config", "-nodefaults", "-nographic",
                "-machine", "none,accel=kvm", "-qmp", f"unix:{sock},server=on,wait=off"]
    else:
        argv = vm_argv(binary, testguest, "-S", "-name", NAME, "-uuid", UUID,
                       "-qmp", f"unix:{sock},server=on,wait=off", smp="2", serial="none")
    out = []
    with running(argv) as g:
        r = Raw(sock, proc=g.proc)
        out.append([r.greet()])
        for i, data in enumerate(steps):
            if data is RECONNECT:
                r.close()
                r = Raw(sock, proc=g.proc)
                out.append([r.greet()])
                continue
            marker = f"@@{i}"
            r.send(data)
            r.send(req("query-name", id=marker))
            msgs = []
            while True:
                m = r.recv(60, lenient=True)
                if m.get("id") == marker:
                    break
                # The line as printed: number formatting is compared as text.
                m["<line>"] = r.lines[-1]
                msgs.append(m)
            out.append(msgs)
        r.send(req("quit", id="bye"))
        msgs = []
        try:
            while True:
                msgs.append(r.recv(20))
        except EOFError:
            pass
        out.append(msgs)
        rc = g.wait_exit(20)
        r.close()
    return out, rc


def request_of(data):
    if data is RECONNECT:
        return None, {}
    try:
        d = json.loads(data)
        return d.get("execute"), d.get("arguments") or {}
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None, {}


def compare(steps, qemu_out, ferro_out):
    diffs = []
    d = shape_diff(shape(qemu_out[0][0]), shape(ferro_out[0][0]))
    if d:
        diffs.append(f"greeting: {d}")
    requests = [(data, request_of(data)) for data in steps] + [(b"quit", ("quit", {}))]
    for (data, (cmd, args)), qm, fm in zip(requests, qemu_out[1:], ferro_out[1:]):
        if data is RECONNECT:
            d = shape_diff(shape(qm[0]), shape(fm[0]))
            if d:
                diffs.append(f"greeting of the second client: {d}")
            continue
        label = data[:150]
        qk = [message_key(m, cmd) for m in qm]
        fk = [message_key(m, cmd) for m in fm]
        if data in NUMBER_IDS:
            qk += [m.get("<line>") for m in qm]
            fk += [m.get("<line>") for m in fm]
        if qk != fk:
            diffs.append(f"{label!r}:\n   qemu:    {json.dumps(qk)[:700]}\n"
                         f"   ferrovm: {json.dumps(fk)[:700]}")
            continue
        for a, b in zip(qm, fm):
            if "return" not in a or not cmd:
                continue
            va, vb = norm_return(cmd, args, a["return"]), norm_return(cmd, args, b["return"])
            subset = cmd in SUBSET_RETURNS or (
                cmd == "human-monitor-command" and args.get("command-line", "").strip() in HMP_LISTINGS)
            if subset:
                if cmd == "query-qmp-schema":
                    ca, cb = canon_schema(a["return"]), canon_schema(b["return"])
                    bad = {k: (ca.get(k), v) for k, v in cb.items() if ca.get(k) != v}
                elif cmd == "human-monitor-command":
                    bad = [x for x in vb if x not in va]
                    if [x for x in va if x in vb] != vb:
                        bad.append("(order differs)")
                elif cmd == "query-machines":
                    bad = [x for x in vb[0] if x not in va[0]]
                    if va[1] != vb[1]:
                        bad.append(("machines", va[1], vb[1]))
                else:
                    bad = [x for x in vb if x not in va]
                if bad:
                    diffs.append(f"{label!r}: ferrovm has what QEMU has not: {json.dumps(bad)[:700]}")
            elif va != vb:
                diffs.append(f"{label!r}: values differ\n   qemu:    {json.dumps(va)[:500]}\n"
                             f"   ferrovm: {json.dumps(vb)[:500]}")
    return diffs


@pytest.fixture(scope="module", params=["q35", "none", "libvirt-probe"])
def conversations(request, ferrovm, testguest, qemu):
    machine = request.param
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="fvd", dir="/tmp")
    sock = os.path.join(d, "m")  # the same path for both: query-chardev names it
    steps = steps_before_negotiation() + steps_after_negotiation()
    try:
        qemu_out, qemu_rc = converse(qemu, testguest, sock, steps, machine)
        ferro_out, ferro_rc = converse(ferrovm, testguest, sock, steps, machine)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return steps, (qemu_out, qemu_rc), (ferro_out, ferro_rc)


def test_same_conversation_as_qemu(conversations):
    steps, (qemu_out, qemu_rc), (ferro_out, ferro_rc) = conversations
    assert len(qemu_out) == len(ferro_out) == len(steps) + 2
    diffs = compare(steps, qemu_out, ferro_out)
    assert not diffs, f"{len(diffs)} of {len(steps) + 2} steps differ from QEMU 7.2:\n" + \
        "\n".join(diffs)


def test_quit_ends_both_the_same_way(conversations):
    steps, (qemu_out, qemu_rc), (ferro_out, ferro_rc) = conversations
    assert qemu_rc == 0 and ferro_rc == 0, (qemu_rc, ferro_rc)
    for out in (qemu_out, ferro_out):
        assert [message_key(m)[:3] for m in out[-1]] == [
            ["event", "SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}],
            ["return", "bye", {}]], out[-1]


def schema_commands():
    """The commands crates/qmp/schema/*.json declares (QAPI syntax): the
    source the binary's query-commands is generated from."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "qmp", "schema")
    names = set()
    for f in sorted(glob.glob(os.path.join(root, "*.json"))):
        with open(f) as fh:
            names |= set(re.findall(r"\{\s*'command'\s*:\s*'([^']+)'", fh.read()))
    assert names, f"no commands found in {root}"
    return names


def returned(msgs):
    return any("return" in m for m in msgs)


def error_descs(msgs):
    return {m["error"]["desc"] for m in msgs if "error" in m}


# Commands that cannot succeed in some of the conversations: for them, QEMU's
# refusal (its words, taken from QEMU 7.2's answers) is what both must give in
# at least one step, with arguments that pass the argument checks.
CANNOT_SUCCEED = {
    # No guest here is ever suspended: ferrovm has no S3 (q35's
    # wakeup-suspend-support is false, see norm_return), machine none has no guest.
    "system_wakeup": {"wake-up from suspend is not supported by this guest",
                      "Unable to wake up: guest is not in suspended state"},
    # Machine none has no CPU to take an NMI (q35 compares its return).
    "inject-nmi": {"this feature or command is not currently supported"},
    # q35's pcie.0 has no hotplug, and machine none no PCI bus at all.
    "device_add": {"Bus 'pcie.0' does not support hotplugging",
                   "No 'PCI' bus found for device 'virtio-blk-pci'"},
    # The conversations' machines have no -device with an id.
    "device_del": {"Device 'nope' not found"},
    # They have no netdev or NIC either (a TAP here would leave the test's
    # network namespace), and no balloon.
    "set_link": {"Device 'nope' not found"},
    "netdev_del": {"Device 'nope' not found"},
    "netdev_add": {"File descriptor named 'nope' has not been found"},
    "balloon": {"No balloon device has been activated"},
    "query-balloon": {"No balloon device has been activated"},
    # Nothing writable in these machines' QOM trees.
    "qom-set": {"Property 'pc-q35-7.2-machine.type' is not writable",
                "Property 'none-machine.type' is not writable"},
    # ... nor a drive to snapshot.
    "blockdev-snapshot-sync": {"Cannot find device='nope' nor node-name=''"},
    "blockdev-snapshot": {"Cannot find device='nope' nor node-name='nope'"},
    "change-backing-file": {"Cannot find device='nope' nor node-name='nope'"},
    # No job exists in the conversations, and no device to start one on.
    **{c: {"Job not found"} for c in ("job-pause", "job-resume", "job-cancel", "job-complete",
                                      "job-dismiss", "job-finalize")},
    **{c: {"Block job 'nope' not found"} for c in (
        "block-job-cancel", "block-job-pause", "block-job-resume", "block-job-complete",
        "block-job-set-speed", "block-job-dismiss", "block-job-finalize")},
    **{c: {"Cannot find device='nope' nor node-name='nope'"} for c in (
        "block-stream", "blockdev-mirror", "drive-mirror", "blockdev-backup", "drive-backup")},
    "block-commit": {"Device 'nope' not found"},
    # blockdev-create itself is compared in tests/test_blockdev_create.py.
    "blockdev-create": {"Driver does not support blockdev-create"},
    "block_set_io_throttle": {"Device 'nope' not found"},
    # These conversations have no drive to resize.
    "block_resize": {"Cannot find device='nope' nor node-name=''"},
    # Machine none has no CPU hotplug (q35 compares its return).
    "query-hotpluggable-cpus": {"The feature 'query-hotpluggable-cpus' is not enabled"},
}


def test_every_implemented_command_was_compared(conversations):
    """Every command the running ferrovm advertises (query-commands, which is
    what crates/qmp/schema declares) was executed in this conversation with
    both QEMU and ferrovm, and both returned: its values were compared. Not
    the list the conversation is built from (qmp_util.COMMANDS)."""
    steps, (qemu_out, _), (ferro_out, _) = conversations
    i = steps.index(req("query-commands")) + 1
    advertised = {c["name"] for m in ferro_out[i] if "return" in m for c in m["return"]}
    assert advertised == schema_commands(), (
        "the binary's query-commands is not crates/qmp/schema's (rebuild?): "
        f"{sorted(advertised ^ schema_commands())}")
    # The last step is the quit that ends the conversation (see converse).
    requests = [request_of(s)[0] for s in steps] + ["quit"]
    answers = list(zip(requests, qemu_out[1:], ferro_out[1:]))
    assert len(answers) == len(requests)
    compared = {cmd for cmd, q, f in answers if cmd and returned(q) and returned(f)}
    refused_alike = {cmd for cmd, q, f in answers
                     if cmd in CANNOT_SUCCEED and error_descs(q) & error_descs(f) & CANNOT_SUCCEED[cmd]}
    missing = advertised - compared - refused_alike
    assert not missing, f"advertised but never compared with QEMU: {sorted(missing)}"


def test_schema_entries_match_qemu(conversations):
    """ferrovm's query-qmp-schema: every command and event as QEMU declares it."""
    steps, (qemu_out, _), (ferro_out, _) = conversations
    i = steps.index(req("query-qmp-schema")) + 1
    qs, fs = qemu_out[i][0]["return"], ferro_out[i][0]["return"]
    cq, cf = canon_schema(qs), canon_schema(fs)
    assert set(COMMANDS) <= set(cf), set(COMMANDS) - set(cf)
    wrong = sorted(k for k in cf if cq.get(k) != cf[k])
    assert not wrong, f"declared differently from QEMU: {wrong}"


# --- issue 13: libvirt's capability probe ----------------------------------
# What `virsh domcapabilities` sends (QEMU 7.2 recorded). ferrovm lists only
# the types, properties, options and CPU models it has, so for the listings
# every entry it gives must be QEMU's own entry (a subset, compared exactly);
# errors are compared as usual.

PROBE_TYPES = ("virtio-blk-pci", "virtio-net-pci", "virtio-balloon-pci", "i6300esb",
               "pvpanic-pci")


def probe_steps():
    s = [req("qom-list-types"), req("qom-list-types", {"abstract": True}),
         req("qom-list-types", {"implements": "virtio-pci"}),
         req("qom-list-types", {"implements": "virtio-pci", "abstract": True}),
         req("qom-list-types", {"implements": "x86_64-cpu", "abstract": False}),
         req("qom-list-types", {"implements": "nosuch"}),
         req("qom-list-types", {"implements": 1}),
         req("device-list-properties", {"typename": "nosuch"}),
         req("device-list-properties", {"typename": "virtio-pci"}),
         req("device-list-properties", {"typename": "device"}),
         req("device-list-properties", {"typename": "virtio-net-ccw"}),
         req("device-list-properties", {"typename": "none-machine"}),
         req("device-list-properties", {}),
         req("qom-list-properties", {"typename": "nosuch"}),
         req("qom-list-properties", {"typename": "none-machine"}),
         req("qom-list-properties", {"typename": "pc-q35-7.2-machine"}),
         req("qom-list-properties", {"typename": "max-x86_64-cpu"}),
         req("qom-list-properties", {"typename": "host-x86_64-cpu"}),
         req("qom-list-properties", {"typename": "memory-backend-file"}),
         req("query-tpm-models"), req("query-tpm-types"),
         req("query-command-line-options"), req("query-command-line-options", {"option": "drive"}),
         req("query-command-line-options", {"option": "nosuch"}),
         req("query-command-line-options", {"option": "m"}),
         req("query-migrate-capabilities"),
         # libvirt's first command after qmp_capabilities on a domain start.
         req("migrate-set-capabilities",
             {"capabilities": [{"capability": "events", "state": True}]}),
         req("query-migrate-capabilities"),
         req("migrate-set-capabilities",
             {"capabilities": [{"capability": "nosuch", "state": True}]}),
         req("migrate-set-capabilities", {"capabilities": [{"capability": "events"}]}),
         req("migrate-set-capabilities",
             {"capabilities": [{"capability": "events", "state": False}]}),
         req("query-migrate-capabilities"),
         req("query-sev-capabilities"), req("query-sgx-capabilities"),
         req("rtc-reset-reinjection"),
         req("query-cpu-definitions"),
         req("query-cpu-model-expansion", {"type": "static", "model": {"name": "host"}}),
         req("query-cpu-model-expansion",
             {"type": "static", "model": {"name": "host", "props": {"migratable": False}}}),
         req("query-cpu-model-expansion",
             {"type": "full", "model": {"name": "host",
                                        "props": {"migratable": False, "hv-passthrough": True}}}),
         req("query-cpu-model-expansion", {"type": "static", "model": {"name": "max"}}),
         req("query-cpu-model-expansion", {"type": "static", "model": {"name": "nosuch"}}),
         req("query-cpu-model-expansion",
             {"type": "static", "model": {"name": "host", "props": {"nosuch": True}}}),
         req("query-cpu-model-expansion",
             {"type": "full", "model": {"name": "base", "props": {"sse2": True, "lm": True}}}),
         req("query-cpu-model-expansion",
             {"type": "full", "model": {"name": "base", "props": {"nosuch": True}}}),
         req("query-cpu-model-expansion", {"type": "bogus", "model": {"name": "host"}}),
         req("query-cpu-model-expansion", {"type": "static"})]
    s += [req("device-list-properties", {"typename": t}) for t in PROBE_TYPES]
    return s


def _entries(args, value):
    return value


def _cmdline_options(args, value):
    # ferrovm keeps no help texts and accepts its own keys: the options
    # (QemuOpts groups) must be QEMU's.
    return [o["option"] for o in value]


def _cpu_definitions(args, value):
    # unavailable-features is each one's own truth on this host; ferrovm
    # has no versioned models (qemu64-v1) for qemu64 to be an alias of.
    # (-sandbox is left out of query-command-line-options on purpose: no
    # seccomp filter; the CLI's unit tests check that.)
    return [{k: v for k, v in d.items() if k not in ("unavailable-features", "alias-of")}
            for d in value]


def _expansion(args, value):
    # The model and which properties exist; their values are compared for
    # the features below, which any x86-64 host running both has alike.
    props = value["model"]["props"]
    base = {f: props.get(f) for f in ("fpu", "sse2", "lm", "nx", "syscall", "cmov")}
    return [value["model"]["name"], base] + [("prop", k) for k in props]


def _types(args, value):
    # ferrovm's own machine type is not QEMU's.
    return [t for t in value if t["name"] != "ferrovm-machine"]


def probe_key_return(cmd, ret):
    """A listing that is a dict (a CPU model's expansion): its keys are
    compared by _expansion, not as a shape."""
    if cmd == "query-cpu-model-expansion":
        return {"model": {"name": ret["model"]["name"]}}
    return ret


PROBE_NORMS = {
    "qom-list-types": _types,
    "device-list-properties": _entries,
    "qom-list-properties": _entries,
    "query-tpm-models": _entries,
    "query-tpm-types": _entries,
    "query-migrate-capabilities": _entries,
    "query-command-line-options": _cmdline_options,
    "query-cpu-definitions": _cpu_definitions,
    "query-cpu-model-expansion": _expansion,
}
SUBSET_RETURNS += tuple(c for c in PROBE_NORMS)
VALID_ARGS.update({
    "device-list-properties": {"typename": "virtio-blk-pci"},
    "qom-list-properties": {"typename": "none-machine"},
    "query-cpu-model-expansion": {"type": "static", "model": {"name": "host"}},
    "migrate-set-capabilities": {"capabilities": [{"capability": "events", "state": True}]},
})
CANNOT_SUCCEED.update({
    # ferrovm offers neither; QEMU's words on this host's KVM.
    "query-sev-capabilities": {"SEV is not enabled in KVM"},
    "query-sgx-capabilities": {"SGX is not enabled in KVM"},
})


# --- KVM statistics (libvirt's `virsh domstats`) -----------------------------
# Values move from run to run: query-stats is compared as, per result, its
# QOM path, stat names and each value's JSON type; the schemas (the same
# kernel's descriptors) and query-dirty-rate exactly.

HALT_POLL = {"provider": "kvm", "names": ["halt_poll_success_ns", "halt_poll_fail_ns"]}


def stats_steps():
    return [
        req("query-stats-schemas"), req("query-stats-schemas", {"provider": "kvm"}),
        req("query-stats-schemas", {"provider": "nosuch"}),
        req("query-stats", {"target": "vcpu", "providers": [HALT_POLL]}),
        req("query-stats", {"target": "vcpu"}), req("query-stats", {"target": "vm"}),
        req("query-stats", {"target": "vm", "providers": [HALT_POLL, {"provider": "kvm"}]}),
        req("query-stats", {"target": "vm", "providers": []}),
        req("query-stats", {"target": "vm", "providers": [{"provider": "kvm", "names": []}]}),
        req("query-stats", {"target": "vcpu", "vcpus": ["/machine/unattached/device[2]"]}),
        req("query-stats", {"target": "vcpu", "vcpus": []}),
        req("query-stats", {"target": "vm", "vcpus": []}),
        req("query-stats", {"target": "cryptodev"}),
        req("query-stats", {"target": "vm", "providers": [{"provider": "nosuch"}]}),
        req("query-stats", {"target": "vm", "providers": [{"names": ["x"]}]}),
        req("query-stats", {"target": "vm", "providers": [{"provider": "kvm", "names": "x"}]}),
        req("query-stats", {}),
        req("query-dirty-rate"), req("query-dirty-rate", {"x": 1}),
    ]


def _stats(args, value):
    kind = lambda v: type(v).__name__
    return [(r.get("qom-path"), r["provider"], [(s["name"], kind(s["value"])) for s in r["stats"]])
            for r in value]


PROBE_NORMS["query-stats"] = _stats
VALID_ARGS.update({"query-stats": {"target": "vm"}})


# --- user-creatable objects: throttle groups ---------------------------------
# Created, read, refused and deleted as QEMU 7.2 does; a throttle filter node
# holds its group (object-del refuses), and leaves no trace for later steps.

TG = {"qom-type": "throttle-group", "id": "tgd"}


def object_steps():
    return [
        req("object-add", {**TG, "limits": {"bps-total": 4096, "iops-total": 10}}),
        req("object-add", TG),
        req("object-add", {"qom-type": "nosuch", "id": "x"}),
        req("object-add", {"qom-type": "throttle-group"}),
        req("object-add", {"qom-type": "throttle-group", "id": "1bad"}),
        req("object-add", {"qom-type": "throttle-group", "id": "t2",
                           "limits": {"bps-total": 1, "bps-read": 1}}),
        req("object-add", {"qom-type": "throttle-group", "id": "t2", "x-bps-total": -1}),
        req("object-add", {"qom-type": "throttle-group", "id": "t2", "x-bps-total": "1"}),
        req("object-add", {"qom-type": "throttle-group", "id": "t2",
                           "limits": {"iops-size": 5}}),
        req("object-add", {"qom-type": "throttle-group", "id": "t2", "x-iops-read": 7}),
        req("qom-get", {"path": "/objects/tgd", "property": "limits"}),
        req("qom-get", {"path": "/objects/t2", "property": "x-iops-read"}),
        req("qom-get", {"path": "/objects/t2", "property": "type"}),
        req("qom-list", {"path": "/objects"}),
        req("qom-list", {"path": "/objects/tgd"}),
        req("qom-set", {"path": "/objects/t2", "property": "x-iops-read", "value": 1}),
        req("qom-set", {"path": "/objects/t2", "property": "limits",
                        "value": {"iops-total": 3}}),
        req("qom-get", {"path": "/objects/t2", "property": "limits"}),
        req("blockdev-add", {"driver": "null-co", "node-name": "tgnull"}),
        req("blockdev-add", {"driver": "throttle", "node-name": "tgf", "file": "tgnull"}),
        req("blockdev-add", {"driver": "throttle", "node-name": "tgf", "file": "tgnull",
                             "throttle-group": "nosuch"}),
        req("blockdev-add", {"driver": "throttle", "node-name": "tgf", "file": "tgnull",
                             "throttle-group": "tgd"}),
        req("query-named-block-nodes", {"flat": True}),
        req("object-del", {"id": "tgd"}),
        req("blockdev-del", {"node-name": "tgf"}),
        req("blockdev-del", {"node-name": "tgnull"}),
        req("object-del", {"id": "tgd"}),
        req("object-del", {"id": "tgd"}),
        req("object-del", {"id": "t2"}),
    ]


# --- the NBD server ---------------------------------------------------------------
# Started, refused, exporting a null-co node and stopped as QEMU 7.2 does
# (tests/test_nbd_server.py serves images to qemu-img and qemu-io). The
# socket's path is the same for both emulators, which run one after the
# other; each removes it when it stops.

NBD_SOCK = f"/tmp/fvnbd-{os.getpid()}.sock"


def nbd_steps():
    unix = {"type": "unix", "data": {"path": NBD_SOCK}}
    return [
        req("nbd-server-stop"), req("nbd-server-add", {"device": "nope"}),
        req("nbd-server-remove", {"name": "nope"}),
        req("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "/nonexistent/n"}}}),
        req("nbd-server-start", {"addr": unix, "tls-creds": "nope"}),
        req("nbd-server-start", {"addr": {"type": "fd", "data": {"str": "nope"}}}),
        req("nbd-server-start", {"addr": {"type": "vsock", "data": {"cid": "x", "port": "1"}}}),
        req("nbd-server-start", {"addr": {"type": "bogus", "data": {}}}),
        req("nbd-server-start", {"addr": unix, "max-connections": -1}),
        req("nbd-server-start", {}),
        req("nbd-server-start", {"addr": unix}), req("nbd-server-start", {"addr": unix}),
        req("blockdev-add", {"driver": "null-co", "node-name": "nbdnull"}),
        req("nbd-server-add", {"device": "nbdnull", "name": "1bad"}),
        req("nbd-server-add", {"device": "nbdnull", "bitmap": "nope"}),
        req("nbd-server-add", {"device": "nbdnull"}),
        req("nbd-server-add", {"device": "nbdnull"}),
        req("nbd-server-add", {"device": "nbdnull", "name": "w", "writable": True,
                               "description": "d"}),
        req("query-block-exports"),
        req("block_resize", {"node-name": "nbdnull", "size": 512}),
        req("blockdev-del", {"node-name": "nbdnull"}),
        req("nbd-server-remove", {"name": "nbdnull", "mode": "bogus"}),
        req("nbd-server-remove", {"name": "nbdnull"}),
        req("nbd-server-remove", {"name": "nbdnull"}),
        req("nbd-server-stop"), req("nbd-server-stop"), req("query-block-exports"),
        req("blockdev-del", {"node-name": "nbdnull"}),
    ]
