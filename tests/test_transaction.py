"""`transaction`: libvirt's actions (bitmaps, external snapshots, backups)
all or nothing. The same sequence on ferrovm and QEMU 7.2 (`-S`, a disk
on a virtio-blk device) gives the same replies and errors, events, and
graph and bitmap state after each step, a failed transaction included."""
import json
import re

from qmp_util import Qmp
from test_qcow2 import qemu_img


def T(*actions, **props):
    args = {"actions": [{"type": t, "data": d} for t, d in actions]}
    if props:
        args["properties"] = props
    return ("transaction", args, None)


ADD = "block-dirty-bitmap-add"
Q = [("query-block", None, None), ("query-jobs", None, None)]

STEPS = [
    T((ADD, {"node": "d0", "name": "b1"}), ("abort", {})),
    *Q,
    T((ADD, {"node": "d0", "name": "b1"}), (ADD, {"node": "d0", "name": "b2",
                                                  "granularity": 4096})),
    *Q,
    # The second add fails: the first is undone.
    T((ADD, {"node": "d0", "name": "b3"}), (ADD, {"node": "d0", "name": "b1"})),
    T(("block-dirty-bitmap-disable", {"node": "d0", "name": "b2"}),
      ("block-dirty-bitmap-clear", {"node": "d0", "name": "b1"}),
      ("block-dirty-bitmap-remove", {"node": "d0", "name": "b1"}),
      ("blockdev-snapshot-sync", {"node-name": "d0", "snapshot-file": "@/s0.qcow2",
                                  "snapshot-node-name": "s0", "format": "qcow2"}),
      ("abort", {})),
    *Q,
    T((ADD, {"node": "d0", "name": "b4"}), **{"completion-mode": "grouped"}),
    # libvirt's snapshot of a disk with a new bitmap on the overlay.
    T(("blockdev-snapshot-sync", {"node-name": "d0", "snapshot-file": "@/s1.qcow2",
                                  "snapshot-node-name": "s1", "format": "qcow2"}),
      (ADD, {"node": "s1", "name": "b5"})),
    *Q,
    # A backup and an abort: no job, the device as before.
    T(("drive-backup", {"device": "s1", "job-id": "k", "target": "@/k.qcow2",
                        "sync": "full", "format": "qcow2"}), ("abort", {})),
    *Q,
    # libvirt's backup-begin: a bitmap for the next increment, and the backup.
    T((ADD, {"node": "s1", "name": "b6"}),
      ("drive-backup", {"device": "s1", "job-id": "f", "target": "@/f.qcow2",
                        "sync": "full", "format": "qcow2"})),
    ("query-block", None, "BLOCK_JOB_COMPLETED"),
    ("query-jobs", None, None),
]


def run(binary, d, sock, launch):
    disk = f"{d}/d0.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", disk, "32M")
    g = launch([binary, "-nodefaults", "-M", "q35", "-S", "-display", "none",
                "-qmp", f"unix:{sock},server=on,wait=off",
                "-blockdev", json.dumps({"driver": "file", "filename": disk, "node-name": "f0"}),
                "-blockdev", json.dumps({"driver": "qcow2", "file": "f0", "node-name": "d0"}),
                "-device", "virtio-blk-pci,drive=d0,id=vd0"])
    steps = json.loads(json.dumps(STEPS).replace("@/", d + "/"))
    out = []
    with Qmp(sock, proc=g.proc) as q:
        for name, args, wait in steps:
            if wait:
                q.wait_event(wait, timeout=60)
                q.wait_event("JOB_STATUS_CHANGE", data={"id": "f", "status": "null"},
                             timeout=10)
            try:
                out.append((name, q.cmd(name, args)))
            except Exception as e:  # noqa: BLE001 - the error is the answer
                out.append((name, getattr(e, "error_class", "?"), str(e)))
        q.cmd("quit")
        events = [(e["event"], {k: v for k, v in (e.get("data") or {}).items()
                                if k not in ("offset", "len")})
                  for e in q.events if e["event"] != "SHUTDOWN"]
    g.wait_exit(30)
    text = json.dumps([out, events]).replace(d, "@")
    text = re.sub(r"#block\d+", "#block", text)
    return json.loads(re.sub(r'"actual-size": \d+', '"actual-size": 0', text))


def test_transaction_equals_qemus(ferrovm, qemu, launch, tmp_path, sockdir):
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / name
        d.mkdir()
        runs[name] = run(binary, str(d), f"{sockdir}/{name}.sock", launch)
    ours, theirs = runs["ferrovm"], runs["qemu"]
    assert len(ours[0]) == len(theirs[0])
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<70} {y!s}" for x, y in zip(ours[1], theirs[1]))
    for name in ("ferrovm", "qemu"):
        d = tmp_path / name
        assert qemu_img("check", str(d / "f.qcow2"), check=False).returncode == 0, name
