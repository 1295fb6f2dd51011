"""Block jobs (block-stream, drive-mirror, blockdev-mirror) on QEMU's job
state machine. The guest writes while each job runs; afterwards `qemu-img`
judges the images and the content is what the guest wrote. The same job
scenarios on QEMU 7.2 (`-S`, no guest) give the same replies, errors and
event sequences as on ferrovm."""
import json
import os
import subprocess

import pytest

from conftest import guest_args
from qmp_util import Qmp
from test_qcow2 import fill_pattern, qemu_img
from test_virtio_blk import SECTOR, pattern, results

MIB = 192


def statuses(q, job):
    """The job's status sequence, without the paused/running pair a STOP
    (the guest's shutdown under -no-shutdown) brings: `stop` drains, as
    QEMU's do_vm_stop does; the STOP scenario below checks that pair
    against QEMU, and here the guest's timing decides whether it falls
    inside the job."""
    out, skip = [], 0
    for e in q.events:
        if e["event"] == "STOP":
            skip = 2
        elif e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job:
            st = e["data"]["status"]
            if skip and st == ("paused" if skip == 2 else "running"):
                skip -= 1
                continue
            skip = 0
            out.append(st)
    return out


def flat(img, tmp_path, name):
    out = str(tmp_path / name)
    qemu_img("convert", "-O", "raw", img, out)
    with open(out, "rb") as f:
        return f.read()


def slow_down(q, **who):
    """Guest writes at 32 MiB/s (jobs are not throttled), so the guest
    still writes when a job has caught up."""
    q.cmd("block_set_io_throttle", {**who, "bps": 0, "bps_rd": 0, "bps_wr": 32 << 20,
                                    "iops": 0, "iops_rd": 0, "iops_wr": 0})


def filling_guest(launch, ferrovm, testguest, sock, *drive, stay=False, qemu=False):
    """The guest fills MIB MiB and powers off (with `stay`, the VM stops
    there and jobs run on until `quit`). With `qemu`, `ferrovm` is QEMU: a
    q35 machine, and a modern-only virtio-blk as the test guest expects
    (QEMU's is transitional by default)."""
    more = ["-no-shutdown"] if stay else []
    machine, dev = (["-machine", "q35"], ",disable-legacy=on") if qemu else ([], "")
    return launch(guest_args(ferrovm, testguest, f"plan=blk-fill blk_mib={MIB}", "-m", "128",
                             *machine, *more, "-qmp", f"unix:{sock},server=on,wait=off", *drive,
                             "-device", f"virtio-blk-pci,drive=d0,id=vd0{dev}"))


def test_mirror_pivots_onto_the_copy_while_the_guest_writes(ferrovm, testguest, launch,
                                                            tmp_path, sockdir):
    """drive-mirror sync=full while the guest fills its disk: READY once the
    copy has caught up, job-complete moves the device onto the copy live,
    and every write, before and after the pivot, is in the copy."""
    src, tgt = str(tmp_path / "src.raw"), str(tmp_path / "tgt.qcow2")
    with open(src, "wb") as f:
        f.truncate(256 << 20)
    sock = f"{sockdir}/m.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-drive", f"file={src},format=raw,if=none,id=d0")
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("drive-mirror", {"device": "d0", "target": tgt, "format": "qcow2",
                               "sync": "full"})
        q.wait_event("BLOCK_JOB_READY", timeout=90)
        q.cmd("block-job-complete", {"device": "d0"})
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        assert "error" not in done["data"], done
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "d0", "status": "null"}, timeout=10)
        blk = q.cmd("query-block")[0]["inserted"]
        assert blk["file"] == tgt and blk["drv"] == "qcow2", blk
        assert statuses(q, "d0") == ["created", "running", "ready", "waiting", "pending",
                                     "concluded", "null"], q.events
        assert q.cmd("query-block-jobs") == []
        pivoted_while_writing = not results(g).get(f"blk fill mib={MIB}")
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    assert qemu_img("check", tgt, check=False).returncode == 0
    assert flat(tgt, tmp_path, "t.raw")[:MIB << 20] == fill_pattern(MIB * 2048), \
        "the copy lost a write"
    # The pivot happened while the guest still wrote (the point of the test).
    assert pivoted_while_writing, "the guest had finished before the pivot"


def test_active_commit_under_a_filter_keeps_the_guests_writes(ferrovm, testguest, launch,
                                                             tmp_path, sockdir):
    """The device sits on a throttle filter over the active layer; an active
    commit of that layer while the guest fills its disk must see the writes
    that come through the filter (QEMU's implicit mirror_top node between
    the filter and the layer), or the base misses them after the pivot."""
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "256M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    node = {"driver": "qcow2", "file": {"driver": "file"}}
    sock = f"{sockdir}/ac.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-object", "throttle-group,id=tg0,x-bps-write=33554432",
                      "-blockdev", json.dumps({**node, "node-name": "base",
                                               "file": {"driver": "file", "filename": base}}),
                      "-blockdev", json.dumps({**node, "node-name": "top", "backing": "base",
                                               "file": {"driver": "file", "filename": top}}),
                      "-blockdev", json.dumps({"driver": "throttle", "node-name": "d0",
                                               "throttle-group": "tg0", "file": "top"}))
    with Qmp(sock, proc=g.proc) as q:
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("block-commit", {"job-id": "c", "device": "d0", "top-node": "top",
                               "base-node": "base"})
        q.wait_event("BLOCK_JOB_READY", timeout=90)
        q.cmd("job-complete", {"id": "c"})
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        assert "error" not in done["data"], done
        pivoted_while_writing = not results(g).get(f"blk fill mib={MIB}")
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    assert qemu_img("check", base, check=False).returncode == 0
    assert flat(base, tmp_path, "b.raw")[:MIB << 20] == fill_pattern(MIB * 2048), \
        "the base lost a write that came through the filter"
    assert pivoted_while_writing, "the guest had finished before the pivot"


def test_cancel_after_ready_leaves_a_consistent_copy(ferrovm, testguest, launch, tmp_path,
                                                     sockdir):
    """blockdev-mirror to a node of its own, cancelled (softly) once READY
    while the guest writes: the device stays on the source, the job ends
    COMPLETED as QEMU's does, and the copy is the source as it was at the
    cancel: the fill pattern up to some sector, zeros after."""
    src, tgt = str(tmp_path / "src.raw"), str(tmp_path / "tgt.raw")
    for p in (src, tgt):
        with open(p, "wb") as f:
            f.truncate(256 << 20)
    sock = f"{sockdir}/c.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-blockdev", json.dumps({"driver": "file", "filename": src,
                                               "node-name": "s0"}),
                      "-blockdev", json.dumps({"driver": "raw", "file": "s0", "node-name": "d0"}))
    with Qmp(sock, proc=g.proc) as q:
        q.cmd("blockdev-add", {"driver": "raw", "node-name": "t0",
                               "file": {"driver": "file", "filename": tgt}})
        slow_down(q, id="/machine/peripheral/vd0/virtio-backend")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("blockdev-mirror", {"job-id": "m", "device": "d0", "target": "t0",
                                  "sync": "full", "copy-mode": "write-blocking"})
        q.wait_event("BLOCK_JOB_READY", timeout=90)
        q.cmd("block-job-cancel", {"device": "m"})
        q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        assert "BLOCK_JOB_CANCELLED" not in q.event_names()
        assert q.cmd("query-block")[0]["inserted"]["node-name"] == "d0"
        q.cmd("blockdev-del", {"node-name": "t0"})
        assert g.wait_exit(120) == 0, g.output()
    with open(tgt, "rb") as f:
        copy = f.read(MIB << 20)
    want = fill_pattern(MIB * 2048)
    n = 0
    while n < MIB * 2048 and copy[n * SECTOR:(n + 1) * SECTOR] == want[n * SECTOR:(n + 1) * SECTOR]:
        n += 1
    assert n > 0, "nothing was copied"
    assert copy[n * SECTOR:].count(0) == len(copy) - n * SECTOR, \
        f"the copy is not a moment of the source: sector {n} differs and is not zero"


def test_stream_pulls_the_backing_data_while_the_guest_writes(ferrovm, testguest, launch,
                                                             tmp_path, sockdir):
    """block-stream of a whole chain while the guest writes into the top:
    the top ends with every byte (the guest's writes over the base's data),
    no backing file, and a clean check; the base is untouched."""
    base, top = str(tmp_path / "base.raw"), str(tmp_path / "top.qcow2")
    host = pattern(0, 256 * 2048, seed=3)
    with open(base, "wb") as f:
        f.write(host)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
    sock = f"{sockdir}/s.sock"
    g = filling_guest(launch, ferrovm, testguest, sock,
                      "-drive", f"file={top},format=qcow2,if=none,id=d0", stay=True)
    with Qmp(sock, proc=g.proc) as q:
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("block-stream", {"device": "d0"})
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=90)
        assert "error" not in done["data"], done
        # concluded and null follow the event (they may arrive a moment later).
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "d0", "status": "null"}, timeout=10)
        assert statuses(q, "d0") == ["created", "running", "waiting", "pending", "concluded",
                                     "null"], q.events
        blk = q.cmd("query-block")[0]["inserted"]
        assert blk["backing_file_depth"] == 0 and "backing_file" not in blk, blk
        q.wait_event("SHUTDOWN", timeout=120)
        q.cmd("quit")
        assert g.wait_exit(30) == 0, g.output()
    assert results(g).get(f"blk fill mib={MIB}") is True, g.output()
    assert qemu_img("check", top, check=False).returncode == 0
    info = json.loads(qemu_img("info", "--output=json", top).stdout)
    assert "backing-filename" not in info, info
    with open(base, "rb") as f:
        assert f.read() == host, "the base was written"
    os.rename(base, base + ".gone")  # the top must stand alone now
    data = flat(top, tmp_path, "top.raw")
    assert data[:MIB << 20] == fill_pattern(MIB * 2048), "a guest write was lost"
    assert data[MIB << 20:] == host[MIB << 20:], "backing data was not pulled in"


# --- The same scenarios on QEMU 7.2 -------------------------------------------------------------

def chain(d):
    base = os.path.join(d, "base.img")
    with open(base, "wb") as f:
        f.write(pattern(0, 8 * 2048, seed=5))
        f.truncate(64 << 20)
    mid, top = os.path.join(d, "mid.qcow2"), os.path.join(d, "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", mid)
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    return base, mid, top


def scenario(binary, d, sock, steps, launch, make_chain=None):
    """Runs `steps` (name, args, wait-for-event) on `binary -S` over a
    fresh chain in `d` (`make_chain(d)`, [`chain`] by default: its last
    image is drive d0, or it gives the command line options itself as a
    list); returns the replies (errors as (class, desc)) and the events,
    with what depends on timing (progress) left out."""
    made = (make_chain or chain)(d)
    top = made[-1]
    opts = top if isinstance(top, list) else ["-drive", f"file={top},if=none,id=d0"]
    g = launch([binary, "-nodefaults", "-M", "q35", "-S", "-display", "none",
                "-qmp", f"unix:{sock},server=on,wait=off", *opts])
    out = []
    with Qmp(sock, proc=g.proc) as q:
        for name, args, wait in steps:
            mark = len(q.events)
            try:
                r = q.cmd(name, args)
                if isinstance(r, list):
                    for j in r:
                        for k in ("offset", "len", "current-progress", "total-progress", "busy"):
                            j.pop(k, None)
                out.append((name, r))
            except Exception as e:  # noqa: BLE001 - the error is the answer
                out.append((name, getattr(e, "error_class", "?"), str(e)))
            if wait:
                q.wait_event(wait, timeout=60, start=mark)
        q.cmd("quit")
        events = []
        for e in q.events:
            data = dict(e.get("data") or {})
            for k in ("offset", "len"):
                data.pop(k, None)
            if e["event"] not in ("SHUTDOWN",):
                events.append((e["event"], data))
    g.wait_exit(30)
    return out, events


STREAM = [
    ("block-stream", {"device": "nope"}, None),
    ("block-stream", {"device": "d0", "base": "x.img"}, None),
    ("block-stream", {"device": "d0", "base": "b", "base-node": "x"}, None),
    ("block-stream", {"device": "d0", "speed": -1}, None),
    ("block-stream", {"device": "d0", "job-id": "1bad"}, None),
    ("block-stream", {"device": "d0", "backing-file": "foo"}, None),
    ("block-job-pause", {"device": "j"}, None),
    ("job-pause", {"id": "j"}, None),
    # 64 KiB/s: still running when it is paused.
    ("block-stream", {"device": "d0", "job-id": "j", "speed": 65536,
                      "auto-finalize": False, "auto-dismiss": False}, None),
    ("block-stream", {"device": "d0", "job-id": "j2"}, None),
    ("block-job-pause", {"device": "j"}, "JOB_STATUS_CHANGE"),
    ("block-job-pause", {"device": "j"}, None),
    ("query-block-jobs", None, None),
    ("block-job-cancel", {"device": "j"}, None),
    ("block-job-complete", {"device": "j"}, None),
    ("block-job-set-speed", {"device": "j", "speed": -5}, None),
    ("block-job-set-speed", {"device": "j", "speed": 0}, None),
    ("block-job-resume", {"device": "j"}, "BLOCK_JOB_PENDING"),
    ("block-job-resume", {"device": "j"}, None),
    ("query-jobs", None, None),
    ("block-job-dismiss", {"id": "j"}, None),
    ("job-finalize", {"id": "j"}, None),
    ("query-block-jobs", None, None),
    ("job-dismiss", {"id": "j"}, None),
    ("query-block-jobs", None, None),
]

MIRROR = [
    ("drive-mirror", {"device": "d0", "target": "@/t.qcow2", "sync": "full",
                      "granularity": 1000}, None),
    ("drive-mirror", {"device": "d0", "target": "@/t.qcow2", "sync": "bitmap"}, None),
    ("drive-mirror", {"device": "d0", "target": "@/t.qcow2", "sync": "full",
                      "buf-size": -1}, None),
    ("blockdev-mirror", {"device": "d0", "target": "d0", "sync": "full"}, None),
    ("drive-mirror", {"device": "d0", "target": "@/t.qcow2", "sync": "top",
                      "job-id": "m"}, "BLOCK_JOB_READY"),
    ("block-job-finalize", {"id": "m"}, None),
    ("block-stream", {"device": "d0"}, None),
    ("job-pause", {"id": "m"}, "JOB_STATUS_CHANGE"),
    ("query-block-jobs", None, None),
    # QEMU's job_enter runs the job before job-resume returns: the next
    # query sees it ready again, never standby.
    ("job-resume", {"id": "m"}, None),
    ("query-block-jobs", None, None),
    # A soft cancel of a ready mirror completes it without a pivot.
    ("block-job-cancel", {"device": "m"}, "BLOCK_JOB_COMPLETED"),
    ("drive-mirror", {"device": "d0", "target": "@/u.qcow2", "sync": "full",
                      "job-id": "n"}, "BLOCK_JOB_READY"),
    ("block-job-cancel", {"device": "n", "force": True}, "BLOCK_JOB_CANCELLED"),
    ("drive-mirror", {"device": "d0", "target": "@/v.qcow2", "sync": "none",
                      "job-id": "p"}, "BLOCK_JOB_READY"),
    ("job-complete", {"id": "p"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
]


# `stop` drains (do_vm_stop): a running job shows paused, then running.
STOP = [
    ("cont", None, None),
    ("block-stream", {"device": "d0", "job-id": "s", "speed": 65536}, None),
    ("stop", None, None),
    ("query-block-jobs", None, None),
    ("cont", None, None),
    ("block-job-cancel", {"device": "s"}, "BLOCK_JOB_CANCELLED"),
]


def existing_targets(d):
    """The chain on d0, a bare -blockdev qcow2 `src`, and two existing
    mirror targets: t1 over the chain's base, t2 standalone."""
    base, _, top = chain(d)
    src, t1, t2 = (os.path.join(d, n) for n in ("src.qcow2", "t1.qcow2", "t2.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", src, "8M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", t1)
    qemu_img("create", "-q", "-f", "qcow2", t2, "8M")
    return [["-drive", f"file={top},if=none,id=d0",
             "-blockdev", f"driver=qcow2,node-name=src,file.driver=file,file.filename={src}"]]


# drive-mirror mode=existing: the target gets the backing its own header
# names at the pivot (query-block shows it, with plain filenames); a
# target nothing holds after the pivot (the source had no device) closes.
MIRROR_EXISTING = [
    ("drive-mirror", {"device": "d0", "job-id": "a", "target": "@/t1.qcow2",
                      "mode": "existing", "sync": "top"}, "BLOCK_JOB_READY"),
    ("job-complete", {"id": "a"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
    ("drive-mirror", {"device": "src", "job-id": "b", "target": "@/t2.qcow2",
                      "mode": "existing", "sync": "full"}, "BLOCK_JOB_READY"),
    ("job-complete", {"id": "b"}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", {"flat": True}, None),
    ("blockdev-del", {"node-name": "src"}, None),
]


def named_chain(d):
    _, _, top = chain(d)
    qemu_img("create", "-q", "-f", "qcow2", os.path.join(d, "ro-top.qcow2"), "64M")
    return [["-drive", f"file={top},if=none,id=d0,backing.node-name=mid,"
             "backing.backing.node-name=base"]]


# block-stream into a read-only intermediate layer: stream_start reopens it
# read-write (unless its file was opened read-only by its own options) and
# stream_clean makes it read-only again. At 1 KiB/s the job
# sleeps for minutes after its first chunk: block-job-set-speed must wake it.
STREAM_INTERMEDIATE = [
    # A file child whose options say read-only keeps it: the reopen fails.
    ("blockdev-add", {"node-name": "ro-top", "driver": "qcow2", "read-only": True,
                      "file": {"driver": "file", "filename": "@/ro-top.qcow2", "read-only": True},
                      "backing": "mid"}, None),
    ("block-stream", {"job-id": "r", "device": "ro-top", "base-node": "base"}, None),
    ("blockdev-del", {"node-name": "ro-top"}, None),
    ("block-stream", {"device": "mid", "job-id": "s", "speed": 1024}, None),
    ("block-job-set-speed", {"device": "s", "speed": 0}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", {"flat": True}, None),
]


def relative_chain(d):
    """dir1/backing.img <- dir2/mid.img <- dir2/dir3/test.img, each header
    naming the layer below relative to its own directory (040's
    TestRelativePaths)."""
    for sub in ("dir1", "dir2/dir3"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    base, mid, top = (os.path.join(d, p) for p in ("dir1/backing.img", "dir2/mid.img",
                                                    "dir2/dir3/test.img"))
    with open(base, "wb") as f:
        f.write(pattern(0, 1024, seed=9))
        f.truncate(1 << 20)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", mid)
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    qemu_img("rebase", "-q", "-u", "-b", "../dir1/backing.img", "-F", "raw", mid)
    qemu_img("rebase", "-q", "-u", "-b", "../mid.img", "-F", "qcow2", top)
    return [["-drive", f"file={top},if=none,id=d0"]]


# block-commit's top and base named as the headers name them: relative to
# each overlay's directory, not the emulator's working directory.
COMMIT_RELATIVE = [
    ("block-commit", {"device": "d0", "top": "../mid.img", "base": "../mid.img"}, None),
    ("block-commit", {"device": "d0", "top": "badfile", "base": "../dir1/backing.img"}, None),
    ("block-commit", {"device": "d0", "top": "../dir1/backing.img", "base": "../mid.img"}, None),
    ("block-commit", {"device": "d0", "job-id": "c", "top": "../mid.img",
                      "base": "../dir1/backing.img"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
]


def blkdebug_target(d):
    """A 2 MiB qcow2 over a raw backing on d0, an existing 2 MiB qcow2
    target, and a blkdebug config that fails the first write at 1 MiB with
    EIO (041's TestWriteErrors)."""
    base, top, target = (os.path.join(d, n) for n in ("b.img", "top.qcow2", "t.qcow2"))
    with open(base, "wb") as f:
        f.write(pattern(0, 4096, seed=3))
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
    qemu_img("create", "-q", "-f", "qcow2", target, "2M")
    with open(os.path.join(d, "bd.conf"), "w") as f:
        f.write('[inject-error]\nstate = "1"\nevent = "write_aio"\nerrno = "5"\n'
                'immediately = "off"\nonce = "on"\nsector = "2048"\n\n'
                '[set-state]\nstate = "1"\nevent = "write_aio"\nnew_state = "2"\n\n'
                '[set-state]\nstate = "2"\nevent = "write_aio"\nnew_state = "1"\n')
    return base, top


# drive-mirror onto a `blkdebug:CONFIG:IMAGE` target: the format is probed
# through blkdebug (qcow2, not the raw size of the file), and the injected
# write error is the job's, ignored by on-target-error.
MIRROR_BLKDEBUG = [
    ("drive-mirror", {"device": "d0", "mode": "existing", "sync": "full",
                      "target": "blkdebug:@/bd.conf:@/t.qcow2",
                      "on-target-error": "ignore"}, "BLOCK_JOB_READY"),
    ("block-job-complete", {"device": "d0"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
]


def named_chain_blockdev(d):
    """base <- mid as -blockdev nodes, top over them as drive d0 (node
    names base, mid, top), and a mirror target node `tgt`."""
    base, mid, top = chain(d)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 1M", mid],
                   check=True, capture_output=True)
    tgt = os.path.join(d, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, "64M")
    node = "driver=qcow2,node-name={n},file.driver=file,file.filename={f}"
    return [["-blockdev", f"driver=raw,node-name=base,file.driver=file,file.filename={base}",
             "-blockdev", node.format(n="mid", f=mid) + ",backing=base",
             "-blockdev", node.format(n="tgt", f=tgt) + ",backing=",
             "-drive", f"if=none,id=d0,file={top},node-name=top,backing=mid"]]


# filter-node-name: the job's filter is a node under that name while the
# job runs (query-block shows it as the device's node, it is busy for other
# jobs, a stream cannot freeze the link to a commit's filter), and it is
# gone when the job ends.
JOB_FILTERS = [
    ("block-commit", {"device": "d0", "job-id": "c", "top-node": "mid", "base-node": "base",
                      "filter-node-name": "cf", "speed": 1024}, None),
    ("block-stream", {"device": "top", "job-id": "s", "base-node": "mid"}, None),
    ("block-stream", {"device": "top", "job-id": "s", "base-node": "cf",
                      "filter-node-name": "mid"}, None),
    ("block-job-set-speed", {"device": "c", "speed": 0}, "BLOCK_JOB_COMPLETED"),
    ("query-named-block-nodes", {"flat": True}, None),
    ("block-stream", {"device": "top", "job-id": "s", "filter-node-name": "sf",
                      "speed": 1024}, None),
    ("block-commit", {"device": "d0", "job-id": "c2", "top-node": "top",
                      "base-node": "base"}, None),
    ("block-job-set-speed", {"device": "s", "speed": 0}, "BLOCK_JOB_COMPLETED"),
    ("blockdev-mirror", {"device": "top", "job-id": "m", "target": "tgt", "sync": "full",
                         "filter-node-name": "mf"}, "BLOCK_JOB_READY"),
    ("query-block", None, None),
    ("block-commit", {"device": "d0", "job-id": "c3", "filter-node-name": "mf"}, None),
    ("job-complete", {"id": "m"}, "BLOCK_JOB_COMPLETED"),
    ("query-block", None, None),
]


def fix_paths(steps, d):
    return [(n, json.loads(json.dumps(a).replace("@/", d + "/")) if a else a, w)
            for n, a, w in steps]


@pytest.mark.parametrize("steps,make_chain",
                         [(STREAM, None), (MIRROR, None), (STOP, None),
                          (MIRROR_EXISTING, existing_targets),
                          (STREAM_INTERMEDIATE, named_chain),
                          (COMMIT_RELATIVE, relative_chain),
                          (MIRROR_BLKDEBUG, blkdebug_target),
                          (JOB_FILTERS, named_chain_blockdev)],
                         ids=["stream", "mirror", "stop", "mirror-existing",
                              "stream-intermediate", "commit-relative",
                              "mirror-blkdebug", "job-filters"])
def test_job_commands_and_events_equal_qemus(ferrovm, qemu, launch, tmp_path, sockdir, steps,
                                             make_chain):
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / name
        d.mkdir()
        out, events = scenario(binary, str(d), f"{sockdir}/{name}.sock",
                               fix_paths(steps, str(d)), launch, make_chain)
        text = json.dumps([out, events]).replace(str(d), "@")
        text = __import__("re").sub(r"#block\d+", "#block", text)
        # How many host blocks an image file occupies is the file system's
        # choice: after the same copy it has differed by 4 KiB between runs.
        runs[name] = json.loads(__import__("re").sub(r'"actual-size": \d+', '"actual-size": 0', text))
    ours, theirs = runs["ferrovm"], runs["qemu"]
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<90} {y!s}" for x, y in zip(ours[1], theirs[1]))


def test_mirror_onto_an_existing_target_with_larger_clusters_copies_whole_clusters(
        ferrovm, launch, tmp_path, sockdir):
    """drive-mirror `mode=existing`, `sync=top` onto a target whose clusters
    (128 KiB) are larger than the job's chunks (64 KiB) and whose backing is
    not open until the pivot (QEMU's mirror_cow_align): a chunk the source
    wrote into half a target cluster must bring the other half along from
    the source's backing, or that half reads as zeros after the pivot."""
    d = str(tmp_path)
    base, top, target = (os.path.join(d, n) for n in ("base.img", "top.qcow2", "t.qcow2"))
    with open(base, "wb") as f:
        f.write(pattern(0, 4096, seed=11))  # 2 MiB of data the top does not hold
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {(1 << 20) + 65536} 512", top],
                   check=True, capture_output=True)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=131072", "-b", base,
             "-F", "raw", target)
    g = launch([ferrovm, "-nodefaults", "-M", "q35", "-S", "-display", "none",
                "-qmp", f"unix:{sockdir}/m.sock,server=on,wait=off",
                "-drive", f"file={top},if=none,id=d0"])
    with Qmp(f"{sockdir}/m.sock", proc=g.proc) as q:
        q.cmd("drive-mirror", {"device": "d0", "target": target, "mode": "existing",
                               "sync": "top"})
        q.wait_event("BLOCK_JOB_READY", timeout=60)
        q.cmd("block-job-complete", {"device": "d0"})
        q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        q.cmd("quit")
    g.wait_exit(30)
    assert flat(target, tmp_path, "t.raw") == flat(top, tmp_path, "top.raw"), \
        "the mirror target differs from its source after the pivot"
