"""`throttle-group` objects and the `throttle` filter against QEMU 7.2
(`-M none`, no guest; one conversation per emulator for the module): the
same object-add/object-del/qom replies and errors, the same blockdev-add
errors and query-named-block-nodes for a filter node, and I/O through the
filter (HMP qemu-io on a -blockdev filter node) that moves no more bytes than the
group's limit times the time taken plus the bucket's burst."""
import subprocess
import time

import pytest

from qmp_util import ExecuteError, Qmp
from test_block_drivers import fix_json_names
from test_qcow2 import normalized

BPS = 512 << 10
REQ = 64 << 10
NREQ = 12


def hmp(line):
    return ("human-monitor-command", {"command-line": line})


TG = {"qom-type": "throttle-group", "id": "tg"}
STEPS = [
    ("object-add", {**TG, "x-bps-total": 1000}),
    ("object-add", TG),
    ("object-add", {"qom-type": "nosuch", "id": "x"}),
    ("object-add", {"qom-type": "throttle-group"}),
    ("object-add", {"qom-type": "throttle-group", "id": "1bad"}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2", "bogus": 1}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2",
                    "limits": {"bps-total": 100, "bps-read": 5}}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2", "x-bps-total": -1}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2", "x-bps-total": "1"}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2", "limits": {"iops-size": 5}}),
    ("object-add", {"qom-type": "throttle-group", "id": "t2",
                    "limits": {"iops-total": 5, "iops-total-max": 10,
                               "iops-total-max-length": 4}}),
    ("qom-get", {"path": "/objects/tg", "property": "limits"}),
    ("qom-get", {"path": "/objects/tg", "property": "x-bps-total"}),
    ("qom-get", {"path": "/objects/t2", "property": "limits"}),
    ("qom-set", {"path": "/objects/t2", "property": "x-iops-total", "value": 1}),
    ("object-add", {"qom-type": "throttle-group", "id": "dg"}),
    ("blockdev-add", {"driver": "null-co", "node-name": "n"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "f", "file": "n"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "f", "file": "n",
                      "throttle-group": "zz"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "f", "file": "n",
                      "throttle-group": "tg"}),
    ("blockdev-add", {"driver": "throttle", "node-name": "g", "throttle-group": "tg",
                      "file": {"driver": "null-co", "node-name": "m", "size": 4096}}),
    ("query-named-block-nodes", {}),
    ("query-named-block-nodes", {"flat": True}),
    ("object-del", {"id": "tg"}),
    ("object-del", {"id": "nosuch"}),
    ("blockdev-del", {"node-name": "f"}),
    ("object-del", {"id": "tg"}),
    ("blockdev-del", {"node-name": "g"}),
    ("object-del", {"id": "tg"}),
    ("object-del", {"id": "tg"}),
    ("object-del", {"id": "t2"}),
]


def converse(binary, sockdir):
    """The STEPS, then NREQ writes of REQ bytes through the limited
    filter node `d0`, each timed. Returns the replies and the seconds the writes took."""
    sock = f"{sockdir}/t.sock"
    args = ["-object", f"throttle-group,id=lim,x-bps-total={BPS}",
            # Only the JSON form nests (limits.x=... is refused by QEMU).
            "-object", '{"qom-type": "throttle-group", "id": "lim2",'
            ' "limits": {"iops-total": 5}}',
            "-blockdev", "driver=throttle,node-name=d0,throttle-group=lim,"
            "file.driver=null-co,file.size=16777216"]
    p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-M", "none",
                          "-qmp", f"unix:{sock},server=on,wait=off", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    try:
        q = Qmp(sock, proc=p)
        for c, a in STEPS + [("qom-get", {"path": "/objects/lim2", "property": "limits"}),
                             ("object-del", {"id": "lim"})]:
            try:
                out.append(fix_json_names(normalized(q.cmd(c, a))))
            except ExecuteError as e:
                out.append(str(e))
        # Let the bucket empty, then time the writes.
        time.sleep(0.3)
        start = time.monotonic()
        for i in range(NREQ):
            q.cmd(*hmp(f"qemu-io d0 \"write {i * REQ} {REQ}\""))
        took = time.monotonic() - start
        q.cmd("quit")
        q.close()
        p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    return out, took


@pytest.fixture(scope="module")
def runs(ferrovm, qemu, tmp_path_factory):
    d = tmp_path_factory.mktemp("thr")
    return converse(ferrovm, d), converse(qemu, d)


def test_object_and_filter_replies_equal_qemus(runs):
    (f, _), (q, _) = runs
    for step, a, b in zip(STEPS + ["lim2", "del lim"], f, q):
        assert a == b, step
    assert len(f) == len(q) == len(STEPS) + 2


def test_writes_through_the_filter_keep_to_the_limit(runs):
    """bytes <= limit x time + burst (QEMU's bucket: avg / 10) + the one
    request that may go as the bucket drains; and the limit is a rate, not
    a stop (at most twice the time the limit asks for)."""
    nbytes = NREQ * REQ
    for name, (_, took) in zip(("ferrovm", "qemu"), runs):
        assert nbytes <= BPS * took + BPS / 10 + REQ, (name, took)
        assert took < 2 * nbytes / BPS, (name, took)
