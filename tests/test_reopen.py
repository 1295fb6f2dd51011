"""`blockdev-reopen` and `change-backing-file` as libvirt uses them around a
block-commit, on ferrovm and on QEMU 7.2 with the same `-blockdev` lines
(libvirt's style: a `file` node with auto-read-only under each format node,
the backing format node read-only): the backing node goes read-write and
back, `query-named-block-nodes` and the image locks on the backing file
follow, QEMU's refusals come in QEMU's words, a failing entry leaves the
whole list undone; `change-backing-file` rewrites a header as QEMU does,
judged by `qemu-img info`."""
import json
import os
import subprocess

from qemu.qmp import ExecuteError

from test_qcow2 import normalized, qemu_img


def images(d):
    """base.qcow2 <- mid.qcow2 <- top.qcow2, and other.qcow2 on its own."""
    for f in ("base", "mid", "top", "other"):
        p = os.path.join(d, f"{f}.qcow2")
        if os.path.exists(p):
            os.unlink(p)
    qemu_img("create", "-q", "-f", "qcow2", os.path.join(d, "base.qcow2"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             os.path.join(d, "mid.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
             os.path.join(d, "top.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", os.path.join(d, "other.qcow2"), "16M")


def blockdevs(d):
    def storage(name, f):
        return ["-blockdev", json.dumps({"driver": "file", "filename": f"{d}/{f}.qcow2",
                                         "node-name": name, "auto-read-only": True,
                                         "discard": "unmap"})]

    def fmt(name, file, backing, ro):
        return ["-blockdev", json.dumps({"node-name": name, "read-only": ro, "driver": "qcow2",
                                         "file": file, "backing": backing})]
    return [*storage("bs", "base"), *fmt("bf", "bs", None, True),
            *storage("ms", "mid"), *fmt("mf", "ms", "bf", True),
            *storage("ts", "top"), *fmt("tf", "ts", "mf", False),
            *storage("os", "other"), *fmt("of", "os", None, True),
            "-device", "virtio-blk-pci,drive=tf,id=vd0"]


def locks_on(path):
    """The byte ranges locked on `path` (only one emulator runs at a time)."""
    ino = os.stat(path).st_ino
    out = []
    with open("/proc/locks") as f:
        for line in f:
            p = line.split()
            if p[1] == "OFDLCK" and p[5].split(":")[-1] == str(ino):
                out.append((p[3], int(p[6])))
    return sorted(out)


def run(binary, d, sockdir, steps):
    from qmp_util import Qmp
    sock = f"{sockdir}/r.sock"
    p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-S", "-M", "q35",
                          "-qmp", f"unix:{sock},server=on,wait=off", *blockdevs(d)],
                         stderr=subprocess.PIPE)
    out = []
    try:
        q = Qmp(sock, proc=p)
        for c, a in steps:
            if c == "locks":
                out.append(locks_on(f"{d}/{a}"))
                continue
            try:
                r = q.cmd(c, a)
                if c == "query-named-block-nodes" and a.get("flat"):
                    r = {n["node-name"]: n["ro"] for n in r}
                out.append(normalized(r))
            except ExecuteError as e:
                out.append(str(e))
        q.close()
    finally:
        p.kill()
        p.wait()
    return out


def reopen(*entries):
    return ("blockdev-reopen", {"options": list(entries)})


def mf(**kw):
    return {"node-name": "mf", "driver": "qcow2", "file": "ms", "backing": "bf", **kw}


NODES = ("query-named-block-nodes", {"flat": True})

SEQUENCE = [
    NODES, ("locks", "mid.qcow2"),
    # libvirt before a block-commit into mid: read-write ...
    reopen(mf(**{"read-only": False})), NODES, ("locks", "mid.qcow2"),
    # ... and read-only again after it.
    reopen(mf(**{"read-only": True})), NODES, ("locks", "mid.qcow2"),
    # Refusals.
    reopen({"node-name": "nope", "driver": "qcow2", "file": "ms"}),
    reopen({"driver": "qcow2", "file": "ms"}),
    reopen(mf(driver="raw", **{"read-only": True})),
    reopen({"node-name": "bf", "driver": "raw", "file": "bs", "read-only": True}),
    reopen({"node-name": "mf", "driver": "qcow2", "file": "ms", "read-only": True}),
    reopen({"node-name": "tf", "driver": "qcow2", "file": "ts", "backing": "mf",
            "read-only": True}),
    reopen(mf(backing="tf", **{"read-only": True})),
    reopen(mf(file={"driver": "file", "filename": f"{{d}}/mid.qcow2"}, **{"read-only": True})),
    reopen({"node-name": "ms", "driver": "file", "filename": "/nonexistent"}),
    reopen({"node-name": "ms", "driver": "file", "filename": "{d}/mid.qcow2", "locking": "off"}),
    # All or nothing: the first entry would succeed, the second fails.
    reopen(mf(**{"read-only": False}), {"node-name": "nope", "driver": "qcow2", "file": "ms"}),
    reopen(mf(**{"read-only": False}), {"node-name": "bf", "driver": "raw", "file": "bs"}),
    NODES, ("locks", "mid.qcow2"),
    # A protocol node made read-only; then its format node cannot be written.
    reopen({"node-name": "bs", "driver": "file", "filename": "{d}/base.qcow2",
            "read-only": True}),
    reopen({"node-name": "bf", "driver": "qcow2", "file": "bs", "backing": None}),
    reopen({"node-name": "bs", "driver": "file", "filename": "{d}/base.qcow2",
            "auto-read-only": True, "discard": "unmap"}),
    NODES,
    # The backing child replaced, dropped, and given back.
    reopen(mf(backing="of", **{"read-only": True})), ("query-named-block-nodes", {}),
    reopen(mf(backing=None, **{"read-only": True})), ("query-named-block-nodes", {}),
    reopen(mf(**{"read-only": True})), ("query-named-block-nodes", {}), ("query-block", {}),
]


def expand(steps, d):
    return json.loads(json.dumps(steps).replace("{d}", str(d)))


def test_reopen_as_libvirt_does_equals_qemu(ferrovm, qemu, tmp_path, sockdir):
    got = {}
    for binary in (ferrovm, qemu):
        images(tmp_path)
        got[binary] = run(binary, tmp_path, sockdir, expand(SEQUENCE, tmp_path))
    for i, (a, b) in enumerate(zip(got[ferrovm], got[qemu])):
        assert a == b, (SEQUENCE[i] if i < len(SEQUENCE) else i, a, b)
    # The flips happened: mid read-write in between, read-only at the end,
    # with a write lock on its file while it was writable.
    ours = got[ferrovm]
    assert ours[0]["mf"] is True and ours[3]["mf"] is False and ours[6]["mf"] is True
    assert ours[4] != ours[1] and ours[7] == ours[1]


def info(path):
    r = qemu_img("info", "-U", "--output=json", path)
    v = json.loads(r.stdout)
    v.pop("actual-size", None)
    return v


CHANGE = [
    # mid is read-only: made writable for the rewrite, read-only after.
    ("change-backing-file", {"device": "tf", "image-node-name": "mf",
                             "backing-file": "renamed-base.qcow2"}),
    NODES,
    ("change-backing-file", {"device": "tf", "image-node-name": "tf",
                             "backing-file": "mid.qcow2"}),
    ("change-backing-file", {"device": "tf", "image-node-name": "bf",
                             "backing-file": "x"}),
    ("change-backing-file", {"device": "tf", "image-node-name": "of",
                             "backing-file": "x"}),
    ("change-backing-file", {"device": "nope", "image-node-name": "mf",
                             "backing-file": "x"}),
    ("change-backing-file", {"device": "mf", "image-node-name": "mf",
                             "backing-file": "x"}),
    ("change-backing-file", {"device": "tf", "image-node-name": "nope",
                             "backing-file": "x"}),
    ("change-backing-file", {"device": "tf", "image-node-name": "mf",
                             "backing-file": "x" * 1024}),
]


def test_change_backing_file_writes_what_qemu_writes(ferrovm, qemu, tmp_path, sockdir):
    got, written = {}, {}
    for binary in (ferrovm, qemu):
        images(tmp_path)
        got[binary] = run(binary, tmp_path, sockdir, CHANGE)
        written[binary] = [info(tmp_path / f) for f in ("mid.qcow2", "top.qcow2")]
    assert got[ferrovm] == got[qemu]
    assert written[ferrovm] == written[qemu]
    mid = written[ferrovm][0]
    assert mid["backing-filename"] == "renamed-base.qcow2"
    assert mid["backing-filename-format"] == "qcow2"
    assert got[ferrovm][1]["mf"] is True
