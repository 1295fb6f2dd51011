"""block-commit, intermediate (block/commit.c) and active layer (a mirror
onto the base), while the guest writes: afterwards `qemu-img compare` and
`check` judge the images, and the same command sequences on QEMU 7.2 (`-S`,
no guest) give the same replies, errors and events as on ferrovm."""
import json
import os
import re
import subprocess

import pytest

from qmp_util import Qmp
from test_block_jobs import MIB, filling_guest, fix_paths, flat, scenario, slow_down, statuses
from test_qcow2 import fill_pattern, qemu_img
from test_virtio_blk import SECTOR, pattern, results

DISK = 256 << 20


def qemu_io(img, fmt, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run([*args, img], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"qemu-io {cmds}: {r.stdout}{r.stderr}"


def qcow2_base(path, data):
    """A qcow2 image of DISK bytes holding `data` at 192 MiB (past what the
    guest fills)."""
    raw = path + ".src"
    with open(raw, "wb") as f:
        f.truncate(DISK)
        f.seek(MIB << 20)
        f.write(data)
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", raw, path)
    os.unlink(raw)


def check(*imgs):
    for i in imgs:
        r = qemu_img("check", i, check=False)
        assert r.returncode == 0, f"qemu-img check {i}: {r.stdout}{r.stderr}"


def compare(a, b, fa="qcow2", fb="qcow2"):
    r = qemu_img("compare", "-f", fa, "-F", fb, a, b, check=False)
    assert r.returncode == 0, f"qemu-img compare {a} {b}: {r.stdout}{r.stderr}"


def test_intermediate_commit_while_the_guest_writes(ferrovm, testguest, launch, tmp_path,
                                                    sockdir):
    """base <- mid <- top, the guest filling top: committing mid puts mid's
    data into the base, top's header then names the base, and mid leaves
    the chain. The base equals what mid showed before; the guest's writes
    are all in top."""
    base, mid, top = (str(tmp_path / n) for n in ("base.qcow2", "mid.qcow2", "top.qcow2"))
    qcow2_base(base, pattern(0, 16 * 2048, seed=3))
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid)
    # mid's own data: under the guest's fill, and past it over the base's.
    qemu_io(mid, "qcow2", "write -P 0x5a 0 4M", "write -P 0x33 200M 8M", "write -P 0x44 240M 1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    mid_view = str(tmp_path / "mid.raw")
    qemu_img("convert", "-O", "raw", mid, mid_view)
    sock = f"{sockdir}/i.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-drive", f"file={top},format=qcow2,if=none,id=d0")
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("block-commit", {"device": "d0", "top": mid, "base": base})
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=90)
        assert done["data"]["type"] == "commit" and "error" not in done["data"], done
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "d0", "status": "null"}, timeout=10)
        assert statuses(q, "d0") == ["created", "running", "waiting", "pending", "concluded",
                                     "null"], q.events
        committed_while_writing = not results(g).get(f"blk fill mib={MIB}")
        blk = q.cmd("query-block")[0]["inserted"]
        assert blk["backing_file_depth"] == 1 and blk["backing_file"] == base, blk
        assert blk["image"]["backing-image"]["filename"] == base, blk
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    assert committed_while_writing, "the guest had finished before the commit"
    check(top, mid, base)
    info = json.loads(qemu_img("info", "--output=json", top).stdout)
    assert info["backing-filename"] == base and info["backing-filename-format"] == "qcow2", info
    compare(mid_view, base, fa="raw")
    data = flat(top, tmp_path, "top.raw")
    assert data[:MIB << 20] == fill_pattern(MIB * 2048), "a guest write was lost"
    with open(mid_view, "rb") as f:
        f.seek(MIB << 20)
        assert data[MIB << 20:] == f.read(), "the chain lost mid's data"


def active_chain(tmp_path):
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    qcow2_base(base, pattern(0, 16 * 2048, seed=4))
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    return base, top


def test_active_commit_pivots_onto_the_base_while_the_guest_writes(ferrovm, testguest, launch,
                                                                   tmp_path, sockdir):
    """Committing the active layer while the guest fills it: READY, then
    job-complete moves the device onto the base; every write, before and
    after the pivot, is in the base, and top still reads as the base."""
    base, top = active_chain(tmp_path)
    sock = f"{sockdir}/a.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-drive", f"file={top},format=qcow2,if=none,id=d0")
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("block-commit", {"device": "d0"})
        ready = q.wait_event("BLOCK_JOB_READY", timeout=90)
        assert ready["data"]["type"] == "commit", ready
        q.cmd("job-complete", {"id": "d0"})
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        assert "error" not in done["data"], done
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "d0", "status": "null"}, timeout=10)
        assert statuses(q, "d0") == ["created", "running", "ready", "waiting", "pending",
                                     "concluded", "null"], q.events
        pivoted_while_writing = not results(g).get(f"blk fill mib={MIB}")
        blk = q.cmd("query-block")[0]["inserted"]
        assert blk["file"] == base and blk["backing_file_depth"] == 0 and not blk["ro"], blk
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    assert pivoted_while_writing, "the guest had finished before the pivot"
    check(base, top)
    compare(top, base)
    data = flat(base, tmp_path, "base.raw")
    assert data[:MIB << 20] == fill_pattern(MIB * 2048), "the base lost a write"
    assert data[MIB << 20:(MIB << 20) + (16 << 20)] == pattern(0, 16 * 2048, seed=4)


def test_active_commit_cancelled_when_ready_keeps_the_device_on_top(ferrovm, testguest, launch,
                                                                    tmp_path, sockdir):
    """A soft cancel of a READY active commit ends it COMPLETED, as QEMU's:
    the device stays on top, and the base holds top as it was at the
    cancel: the guest's fill up to some sector, the base's zeros after."""
    base, top = active_chain(tmp_path)
    sock = f"{sockdir}/c.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-drive", f"file={top},format=qcow2,if=none,id=d0")
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("block-commit", {"device": "d0", "job-id": "c"})
        q.wait_event("BLOCK_JOB_READY", timeout=90)
        q.cmd("block-job-cancel", {"device": "c"})
        q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        assert "BLOCK_JOB_CANCELLED" not in q.event_names()
        blk = q.cmd("query-block")[0]["inserted"]
        assert blk["file"] == top and blk["backing_file_depth"] == 1, blk
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    check(base, top)
    assert flat(top, tmp_path, "top.raw")[:MIB << 20] == fill_pattern(MIB * 2048)
    copy = flat(base, tmp_path, "base.raw")[:MIB << 20]
    want = fill_pattern(MIB * 2048)
    n = 0
    while n < MIB * 2048 and copy[n * SECTOR:(n + 1) * SECTOR] == want[n * SECTOR:(n + 1) * SECTOR]:
        n += 1
    assert n > 0, "nothing was committed"
    assert copy[n * SECTOR:].count(0) == len(copy) - n * SECTOR, \
        f"the base is not a moment of top: sector {n} differs and is not zero"


# --- The same command sequences on QEMU 7.2 ----------------------------------------------------

def commit_chain(d):
    """base.img (raw) <- mid.qcow2 (with data of its own) <- top.qcow2."""
    base = os.path.join(d, "base.img")
    with open(base, "wb") as f:
        f.write(pattern(0, 8 * 2048, seed=5))
        f.truncate(64 << 20)
    mid, top = os.path.join(d, "mid.qcow2"), os.path.join(d, "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", mid)
    qemu_io(mid, "qcow2", "write -P 0x11 0 1M", "write -P 0x22 4M 1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    qemu_io(top, "qcow2", "write -P 0x33 512k 1M")
    return base, mid, top


COMMIT_INTERMEDIATE = [
    ("block-commit", {"device": "nope"}, None),
    ("block-commit", {"device": "d0", "top": "@/nope.qcow2"}, None),
    ("block-commit", {"device": "d0", "top-node": "a", "top": "b"}, None),
    ("block-commit", {"device": "d0", "base-node": "a", "base": "b"}, None),
    ("block-commit", {"device": "d0", "top-node": "nope"}, None),
    ("block-commit", {"device": "d0", "base-node": "nope"}, None),
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2", "base": "@/nope.img"}, None),
    ("block-commit", {"device": "d0", "top": "@/base.img"}, None),
    ("block-commit", {"device": "d0", "top": "@/top.qcow2", "backing-file": "x"}, None),
    ("block-commit", {"device": "d0", "backing-file": "x"}, None),
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2", "job-id": "1bad"}, None),
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2", "speed": -1}, None),
    # 64 KiB/s: still running when it is paused.
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2", "job-id": "c", "speed": 65536,
                      "backing-file": "base.img", "auto-finalize": False,
                      "auto-dismiss": False}, None),
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2"}, None),
    ("block-stream", {"device": "d0"}, None),
    ("job-pause", {"id": "c"}, "JOB_STATUS_CHANGE"),
    ("query-block-jobs", None, None),
    ("block-job-complete", {"device": "c"}, None),
    ("block-job-set-speed", {"device": "c", "speed": 0}, None),
    ("job-resume", {"id": "c"}, "BLOCK_JOB_PENDING"),
    ("query-jobs", None, None),
    ("job-finalize", {"id": "c"}, None),
    ("job-dismiss", {"id": "c"}, None),
    ("query-block", None, None),
    ("query-named-block-nodes", None, None),
]

COMMIT_ACTIVE = [
    # `top` naming the active layer: an active commit.
    ("block-commit", {"device": "d0", "top": "@/top.qcow2", "job-id": "a"}, "BLOCK_JOB_READY"),
    ("block-commit", {"device": "d0", "top": "@/mid.qcow2"}, None),
    ("query-block-jobs", None, None),
    ("job-finalize", {"id": "a"}, None),
    # A soft cancel of a ready commit completes it, the device stays on top.
    ("block-job-cancel", {"device": "a"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
    ("block-commit", {"device": "d0", "job-id": "b", "base": "@/mid.qcow2",
                      "auto-dismiss": False}, "BLOCK_JOB_READY"),
    ("job-complete", {"id": "b"}, "BLOCK_JOB_COMPLETED"),
    ("query-jobs", None, None),
    ("job-dismiss", {"id": "b"}, None),
    ("query-block", None, None),
    ("query-named-block-nodes", None, None),
]


def node(name, drv, path, **more):
    """-blockdev for a format node `name` over a file node."""
    return ["-blockdev", json.dumps({"driver": drv, "node-name": name,
                                     "file": {"driver": "file", "filename": path}, **more})]


def blockdev_chain(d):
    """-blockdev nodes b (raw, read-only) <- m <- m2 (read-only) <- t, and
    o over b: commits named by node, and nodes shared between chains."""
    base, mid, top = commit_chain(d)
    mid2, other = os.path.join(d, "mid2.qcow2"), os.path.join(d, "other.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", mid2)
    # Inside clusters mid has already: what a cancelled commit of mid2 copies
    # before it stops (timing) does not change mid's size.
    qemu_io(mid2, "qcow2", "write -P 0x44 256k 512k")
    qemu_img("rebase", "-u", "-b", mid2, "-F", "qcow2", top)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", other)
    qemu_io(other, "qcow2", "write -P 0x55 1M 1M")
    return base, mid, [*node("b", "raw", base, **{"read-only": True}),
                       *node("m", "qcow2", mid, backing="b", **{"read-only": True}),
                       *node("m2", "qcow2", mid2, backing="m", **{"read-only": True}),
                       *node("t", "qcow2", top, backing="m2"),
                       *node("o", "qcow2", other, backing="b")]


COMMIT_NODES = [
    ("block-commit", {"device": "m"}, None),
    ("block-commit", {"device": "t", "top-node": "m"}, None),
    ("block-commit", {"device": "t", "top-node": "m", "base-node": "t", "job-id": "x"}, None),
    ("block-commit", {"device": "t", "top-node": "b", "job-id": "x"}, None),
    ("block-commit", {"device": "t", "top-node": "m", "base-node": "m", "job-id": "x"}, None),
    ("block-commit", {"device": "t", "top-node": "o", "job-id": "x"}, None),
    ("block-commit", {"device": "t", "top": "@/mid.qcow2", "base-node": "o", "job-id": "x"},
     None),
    # A cancelled commit leaves the chain as it was, the base read-only again.
    ("block-commit", {"device": "t", "top-node": "m2", "base-node": "m", "job-id": "cc",
                      "speed": 65536}, None),
    ("block-job-cancel", {"device": "cc"}, "BLOCK_JOB_CANCELLED"),
    ("query-named-block-nodes", None, None),
    # The overlay m2 is read-only: it is writable while its header changes.
    ("block-commit", {"device": "t", "top-node": "m", "base-node": "b", "job-id": "ic",
                      "speed": 65536}, None),
    ("query-jobs", None, None),
    ("job-pause", {"id": "ic"}, "JOB_STATUS_CHANGE"),
    ("query-block-jobs", None, None),
    ("block-job-set-speed", {"device": "ic", "speed": 0}, None),
    ("job-resume", {"id": "ic"}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", None, None),
    # o's active commit writes b, which m2's chain also reads.
    ("block-commit", {"device": "o", "job-id": "ac"}, "BLOCK_JOB_READY"),
    ("block-commit", {"device": "t", "top-node": "m2", "job-id": "x"}, None),
    ("block-stream", {"device": "t", "job-id": "x"}, None),
    ("block-job-cancel", {"device": "ac", "force": True}, "BLOCK_JOB_CANCELLED"),
    ("block-commit", {"device": "t", "top-node": "t", "base-node": "m2", "job-id": "tc"},
     "BLOCK_JOB_READY"),
    ("job-complete", {"id": "tc"}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", None, None),
]


def readonly_chain(d):
    """commit_chain's images, the drive read-only."""
    base, mid, top = commit_chain(d)
    return base, mid, ["-drive", f"file={top},if=none,id=d0,readonly=on"]


COMMIT_READONLY = [
    # The base is writable for the job, and read-only again as the device.
    ("block-commit", {"device": "d0", "job-id": "a", "base": "@/mid.qcow2"},
     "BLOCK_JOB_READY"),
    ("job-complete", {"id": "a"}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", None, None),
    ("query-block", None, None),
]


def writer_chain(d):
    """b <- m <- t as nodes, a device writing m: a `top` with a writer."""
    base, mid, top = commit_chain(d)
    return base, mid, [*node("b", "raw", base, **{"read-only": True}),
                       *node("m", "qcow2", mid, backing="b"),
                       *node("t", "qcow2", top, backing="m"),
                       "-device", "virtio-blk-pci,drive=m,id=v"]


COMMIT_WRITER = [
    ("block-commit", {"device": "t", "top-node": "m", "backing-file": "x", "job-id": "j"}, None),
    # A top with a writer takes an active commit; the pivot moves m's device.
    ("block-commit", {"device": "t", "top-node": "m", "job-id": "j"}, "BLOCK_JOB_READY"),
    ("query-block-jobs", None, None),
    ("job-complete", {"id": "j"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
]


def filtered_chain(d):
    """b <- m <- t as nodes under a throttle filter tf with no device on it
    (040 TestCommitWithFilters): t is the active layer seen through tf."""
    base, mid, top = commit_chain(d)
    return base, mid, ["-object", "throttle-group,id=tg",
                       *node("b", "raw", base, **{"read-only": True}),
                       *node("m", "qcow2", mid, backing="b"),
                       *node("t", "qcow2", top, backing="m"),
                       "-blockdev", json.dumps({"driver": "throttle", "node-name": "tf",
                                                "throttle-group": "tg", "file": "t"})]


COMMIT_FILTERED = [
    ("block-commit", {"device": "tf", "top-node": "t", "backing-file": "x", "job-id": "j"},
     None),
    # bdrv_skip_filters(tf) is t: an active commit; its pivot puts m under tf.
    ("block-commit", {"device": "tf", "top-node": "t", "base-node": "m", "job-id": "j"},
     "BLOCK_JOB_READY"),
    ("query-block-jobs", None, None),
    ("job-complete", {"id": "j"}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", None, None),
]


def normalized(out, d):
    text = json.dumps(out).replace(str(d), "@")
    text = re.sub(r"#block\d+", "#block", text)
    # actual-size counts the host blocks of a file, which ext4's delayed
    # allocation can leave a block apart between two runs of the same
    # writes: it is not compared.
    return json.loads(re.sub(r'"actual-size": \d+', '"actual-size": 0', text))


@pytest.mark.parametrize("steps,make_chain", [(COMMIT_INTERMEDIATE, commit_chain),
                                              (COMMIT_ACTIVE, commit_chain),
                                              (COMMIT_NODES, blockdev_chain),
                                              (COMMIT_READONLY, readonly_chain),
                                              (COMMIT_WRITER, writer_chain),
                                              (COMMIT_FILTERED, filtered_chain)],
                         ids=["intermediate", "active", "nodes", "readonly", "writer",
                              "filtered"])
def test_commit_commands_and_events_equal_qemus(ferrovm, qemu, launch, tmp_path, sockdir, steps,
                                                make_chain):
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / name
        d.mkdir()
        runs[name] = normalized(scenario(binary, str(d), f"{sockdir}/{name}.sock",
                                         fix_paths(steps, str(d)), launch, make_chain), d)
    ours, theirs = runs["ferrovm"], runs["qemu"]
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<90} {y!s}" for x, y in zip(ours[1], theirs[1]))
