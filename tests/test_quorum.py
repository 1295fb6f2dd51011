"""The quorum driver and mirror `replaces` against QEMU 7.2 (`-M none`, no
guest; one boot of each per module): the same conversation gives the same
blockdev-add errors, x-debug-query-block-graph and query-named-block-nodes
(auto node names and `json:` key order aside), the same QUORUM_REPORT_BAD and
QUORUM_FAILURE events for children corrupted on disk, the same qemu-io output,
the same drive-mirror refusals, and a mirror into a quorum child that swaps
the child's edge for the target (041 TestRepairQuorum's repair)."""
import json
import os
import re
import subprocess
import time

import pytest

from qmp_util import ExecuteError, Qmp
from test_block_drivers import TIMES, fix_json_names
from test_qcow2 import normalized

SIZE = 1 << 20


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_images(d):
    for i in range(3):
        qemu_img("create", "-q", "-f", "raw", f"{d}/img{i}.raw", str(SIZE))
        qemu_img("create", "-q", "-f", "qcow2", f"{d}/c{i}.qcow2", str(SIZE))
        qemu_img("create", "-q", "-f", "raw", f"{d}/c{i}.raw", str(SIZE))
    for f in ("repair.raw",):
        if os.path.exists(f"{d}/{f}"):
            os.unlink(f"{d}/{f}")


def corrupt(path, off, data):
    """Changes a child's data behind the emulator's back (a raw image)."""
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def args(d):
    a = []
    for i in range(3):
        a += ["-blockdev", f"driver=raw,node-name=img{i},file.driver=file,"
                           f"file.filename={d}/img{i}.raw"]
    # 030 TestQuorum's -drive: a child without a driver (probed), and raw
    # ones to corrupt.
    kids = ",".join([f"children.0.file.filename={d}/c0.qcow2,children.0.node-name=c0"] +
                    [f"children.{i}.driver=raw,children.{i}.file.filename={d}/c{i}.raw,"
                     f"children.{i}.node-name=c{i}" for i in (1, 2)])
    a += ["-drive", f"if=none,id=qd,driver=quorum,vote-threshold=2,{kids}"]
    return a


def graph_shape(g):
    """x-debug-query-block-graph with ids replaced by node names."""
    names = {n["id"]: (n["type"], n["name"]) for n in g["nodes"]}
    return normalized({
        "nodes": [names[n["id"]] for n in g["nodes"]],
        "edges": [(names[e["parent"]], e["name"], names[e["child"]], e["perm"],
                   e["shared-perm"]) for e in g["edges"]],
    })


def quorum_nodes(nodes):
    """query-named-block-nodes' quorum entries (the file sizes on the host
    change while both emulators run)."""
    out = []
    for n in nodes:
        if n["drv"] != "quorum":
            continue
        n = dict(n)
        n["image"] = {k: v for k, v in n["image"].items() if k != "actual-size"}
        out.append(fix_json_names(normalized(n)))
    return out


def conversation(binary, d, sockdir):
    """Runs the module's steps on `binary`; returns what was seen."""
    make_images(d)
    sock = f"{sockdir}/q.sock"
    p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-M", "none",
                          "-qmp", f"unix:{sock},server=on,wait=off", *args(d)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {}
    try:
        q = Qmp(sock, proc=p)

        def err(c, a):
            try:
                return q.cmd(c, a)
            except ExecuteError as e:
                return str(e)

        base = {"driver": "quorum", "node-name": "quorum0"}
        kids = ["img0", "img1", "img2"]
        seen["add_errors"] = [
            err("blockdev-add", {**base, "vote-threshold": 0, "children": kids}),
            err("blockdev-add", {**base, "vote-threshold": 4, "children": kids}),
            err("blockdev-add", {**base, "vote-threshold": 1, "children": []}),
            err("blockdev-add", {**base, "vote-threshold": 2, "children": kids,
                                 "blkverify": True}),
            err("blockdev-add", {**base, "vote-threshold": 2, "children": ["img0", "nope"]}),
        ]
        seen["add"] = q.cmd("blockdev-add", {**base, "vote-threshold": 2, "children": kids})
        seen["graph"] = graph_shape(q.cmd("x-debug-query-block-graph"))
        seen["nodes"] = quorum_nodes(q.cmd("query-named-block-nodes", {"flat": True}))

        hmp = lambda line: TIMES.sub("", q.hmp(line))
        out = [hmp('qemu-io quorum0 "write -P 0x11 0 64k"')]
        # One child outvoted: the read works, img1 is reported bad.
        corrupt(f"{d}/img1.raw", 512, b"\x22" * 512)
        out.append(hmp('qemu-io quorum0 "read -P 0x11 0 4k"'))
        # Two children each their own way: no quorum.
        corrupt(f"{d}/img1.raw", 8192, b"\x33" * 512)
        corrupt(f"{d}/img2.raw", 8192, b"\x44" * 512)
        out.append(hmp('qemu-io quorum0 "read -P 0x11 8k 512"'))
        # The -drive quorum: its failure names the drive.
        corrupt(f"{d}/c1.raw", 0, b"\x55" * 512)
        corrupt(f"{d}/c2.raw", 0, b"\x66" * 512)
        out.append(hmp('qemu-io qd "read -P 0 0 512"'))
        seen["qemu_io"] = out
        # The monitor lets one event per node (and one QUORUM_FAILURE) out
        # per second: wait for the held ones.
        time.sleep(1.5)
        seen["events"] = [(e["event"], e["data"]) for e in q.events
                          if e["event"].startswith("QUORUM_")]

        target = f"{d}/repair.raw"
        mirror = {"job-id": "job0", "device": "quorum0", "sync": "full",
                  "target": target, "format": "raw"}
        seen["mirror_errors"] = [
            err("drive-mirror", {**mirror, "replaces": "img1"}),
            err("drive-mirror", {**mirror, "node-name": "repair0", "replaces": "img77"}),
            err("blockdev-add", {"driver": "raw", "node-name": "other", "file": "img2"}),
            err("drive-mirror", {**mirror, "node-name": "repair0", "replaces": "img2"}),
            err("drive-mirror", {**mirror, "node-name": "repair0", "replaces": "c1"}),
        ]
        # Consistent again, so that the mirror's reads all work.
        out.append(hmp('qemu-io quorum0 "write -P 0x11 0 64k"'))
        seen["mirror"] = q.cmd("drive-mirror", {**mirror, "node-name": "repair0",
                                                "replaces": "img1"})
        q.wait_event("BLOCK_JOB_READY", data=None)
        q.cmd("job-complete", {"id": "job0"})
        done = q.wait_event("BLOCK_JOB_COMPLETED")
        seen["completed"] = {k: v for k, v in done["data"].items() if k in ("device", "type")}
        seen["graph_after"] = graph_shape(q.cmd("x-debug-query-block-graph"))
        seen["read_after"] = hmp('qemu-io quorum0 "read -P 0x11 0 64k"')
        q.cmd("quit")
        q.close()
        so, se = p.communicate(timeout=30)
        # drive-mirror's "Formatting ..." lines (QEMU's bdrv_img_create)
        # are compared too.
        seen["stdout"] = TIMES.sub("", so)
    finally:
        p.kill()
        p.wait()
    return json.loads(json.dumps(seen).replace(d, "<dir>"))


@pytest.fixture(scope="module")
def runs(ferrovm, qemu, tmp_path_factory):
    import shutil
    import tempfile
    out = {}
    for name, binary in (("qemu", qemu), ("ferrovm", ferrovm)):
        d = str(tmp_path_factory.mktemp(name))
        sockdir = tempfile.mkdtemp(prefix="fvq", dir="/tmp")
        try:
            out[name] = conversation(binary, d, sockdir)
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)
    return out


def test_blockdev_add_errors_are_qemus(runs):
    assert runs["ferrovm"]["add_errors"] == runs["qemu"]["add_errors"]
    assert runs["qemu"]["add"] == {}


def test_graph_shows_children_edges_as_qemu(runs):
    f, q = runs["ferrovm"], runs["qemu"]
    assert ["block-driver", "quorum0"] in q["graph"]["nodes"]
    assert f["graph"] == q["graph"]
    assert f["nodes"] == q["nodes"]


def test_votes_raise_qemus_events_and_qemu_io_output(runs):
    f, q = runs["ferrovm"], runs["qemu"]
    assert any(e[0] == "QUORUM_REPORT_BAD" for e in q["events"])
    assert any(e[0] == "QUORUM_FAILURE" for e in q["events"])
    assert f["qemu_io"] == q["qemu_io"]
    assert f["events"] == q["events"]


def test_mirror_replaces_refusals_are_qemus(runs):
    assert runs["ferrovm"]["mirror_errors"] == runs["qemu"]["mirror_errors"]


def test_mirror_into_a_quorum_child_swaps_the_edge(runs):
    f, q = runs["ferrovm"], runs["qemu"]
    assert q["mirror"] == {} and f["mirror"] == {}
    assert f["completed"] == q["completed"]
    edge = [e for e in q["graph_after"]["edges"]
            if e[0] == ["block-driver", "quorum0"] and e[1] == "children.1"]
    assert edge and edge[0][2] == ["block-driver", "repair0"]
    assert f["graph_after"] == q["graph_after"]
    assert f["read_after"] == q["read_after"]
    assert f["stdout"] == q["stdout"]

