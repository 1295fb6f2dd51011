"""Backup jobs (drive-backup, blockdev-backup): the target is the disk as it
was when the job started, though the guest overwrites it meanwhile (the
copy-before-write filter copies what a guest write is about to replace).
The same job scenario on QEMU 7.2 (`-S`, no guest) gives the same replies,
errors and event sequences as on ferrovm."""
import json

from conftest import guest_args
from qmp_util import Qmp
from test_block_jobs import fix_paths, flat, scenario, slow_down, statuses
from test_qcow2 import fill_pattern, qemu_img
from test_virtio_blk import pattern, results

DISK_MIB = 96
FILL_MIB = 64


def stopped_filling_guest(launch, ferrovm, testguest, sock, *drive, stay=False):
    """The guest fills FILL_MIB MiB once `cont` lets it run (-S), then
    powers off (with `stay`, the VM stops there and the jobs run on)."""
    more = ["-no-shutdown"] if stay else []
    return launch(guest_args(ferrovm, testguest, f"plan=blk-fill blk_mib={FILL_MIB}", "-m",
                             "128", "-S", *more, "-qmp", f"unix:{sock},server=on,wait=off",
                             *drive,
                             "-device", "virtio-blk-pci,drive=d0,id=vd0"))


def host_disk(path):
    data = pattern(0, DISK_MIB * 2048, seed=7)
    with open(path, "wb") as f:
        f.write(data)
    return data


def test_backup_is_the_disk_at_the_start_while_the_guest_overwrites(ferrovm, testguest, launch,
                                                                   tmp_path, sockdir):
    """drive-backup sync=full, slower than the guest: the guest overwrites
    clusters before the background copy reaches them, and the copy still
    holds the disk as it was when the job started."""
    src, tgt = str(tmp_path / "src.raw"), str(tmp_path / "bk.qcow2")
    old = host_disk(src)
    sock = f"{sockdir}/b.sock"
    g = stopped_filling_guest(launch, ferrovm, testguest, sock,
                              "-drive", f"file={src},format=raw,if=none,id=d0", stay=True)
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        q.cmd("drive-backup", {"device": "d0", "target": tgt, "format": "qcow2",
                               "sync": "full", "speed": 16 << 20})
        q.cmd("cont")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=90)
        assert "error" not in done["data"], done
        assert done["data"]["type"] == "backup"
        assert done["data"]["offset"] == done["data"]["len"] == DISK_MIB << 20, done
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "d0", "status": "null"}, timeout=10)
        # Started inside the command's drained section (QEMU's too).
        assert statuses(q, "d0") == ["created", "running", "paused", "running", "waiting",
                                     "pending", "concluded", "null"], q.events
        # The job's target is closed with the job: the device is as before.
        nodes = q.cmd("query-named-block-nodes")
        assert not any(n["file"] == tgt for n in nodes), nodes
        # The guest wrote all of its data while the job ran (the point of the test).
        names = [e["event"] for e in q.events]
        assert names.index("SHUTDOWN") < names.index("BLOCK_JOB_COMPLETED"), names
        q.cmd("quit")
        assert g.wait_exit(30) == 0, g.output()
    assert results(g).get(f"blk fill mib={FILL_MIB}") is True, g.output()
    assert qemu_img("check", tgt, check=False).returncode == 0
    assert flat(tgt, tmp_path, "bk.raw") == old, "the backup is not the disk at its start"
    with open(src, "rb") as f:
        now = f.read()
    assert now[:FILL_MIB << 20] == fill_pattern(FILL_MIB * 2048), "a guest write was lost"
    assert now[FILL_MIB << 20:] == old[FILL_MIB << 20:]


def test_fleecing_with_sync_none_keeps_the_old_data_in_the_overlay(ferrovm, testguest, launch,
                                                                  tmp_path, sockdir):
    """blockdev-backup sync=none into a qcow2 overlay of the disk (image
    fleecing, as libvirt's pull-mode backup): only clusters the guest
    overwrites are copied, and the overlay over the now changed disk reads
    as the disk did when the job started. The job runs until cancelled."""
    src, tgt = str(tmp_path / "src.raw"), str(tmp_path / "fleece.qcow2")
    old = host_disk(src)
    qemu_img("create", "-q", "-f", "qcow2", "-b", src, "-F", "raw", tgt)
    sock = f"{sockdir}/f.sock"
    g = stopped_filling_guest(launch, ferrovm, testguest, sock,
                              "-blockdev", json.dumps({"driver": "file", "filename": src,
                                                       "node-name": "s0"}),
                              "-blockdev", json.dumps({"driver": "raw", "file": "s0",
                                                       "node-name": "d0"}), stay=True)
    with Qmp(sock, proc=g.proc) as q:
        q.cmd("blockdev-add", {"driver": "qcow2", "node-name": "fl", "backing": "d0",
                               "file": {"driver": "file", "filename": tgt}})
        q.cmd("blockdev-backup", {"job-id": "f", "device": "d0", "target": "fl",
                                  "sync": "none"})
        q.cmd("cont")
        q.wait_event("SHUTDOWN", timeout=120)
        assert q.cmd("query-jobs")[0]["status"] == "running"
        q.cmd("block-job-cancel", {"device": "f"})
        ev = q.wait_event("BLOCK_JOB_CANCELLED", timeout=30)
        assert ev["data"]["type"] == "backup" and ev["data"]["offset"] > 0, ev
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "f", "status": "null"}, timeout=10)
        # created inside the drained section of the command: paused at once.
        assert statuses(q, "f") == ["created", "running", "paused", "running", "aborting",
                                    "concluded", "null"]
        q.cmd("blockdev-del", {"node-name": "fl"})
        q.cmd("quit")
        assert g.wait_exit(30) == 0, g.output()
    assert results(g).get(f"blk fill mib={FILL_MIB}") is True, g.output()
    assert qemu_img("check", tgt, check=False).returncode == 0
    m = json.loads(qemu_img("map", "--output=json", tgt).stdout)
    held = sum(e["length"] for e in m if e["depth"] == 0 and e["data"])
    assert 0 < held <= (FILL_MIB + 1) << 20, f"the overlay holds {held} bytes"
    assert flat(tgt, tmp_path, "fl.raw") == old, "the fleecing image changed"


def test_incremental_backup_copies_what_the_bitmap_recorded(ferrovm, testguest, launch,
                                                            tmp_path, sockdir):
    """libvirt's incremental backup: a full backup, a dirty bitmap recording
    the guest's writes after it, then `sync=incremental` onto an overlay of
    the full one. The overlay holds exactly the written clusters, the chain
    reads as the disk, and the bitmap is empty after the success."""
    src = str(tmp_path / "src.raw")
    full, inc = str(tmp_path / "full.qcow2"), str(tmp_path / "inc.qcow2")
    host_disk(src)
    sock = f"{sockdir}/i.sock"
    g = stopped_filling_guest(launch, ferrovm, testguest, sock,
                              "-drive", f"file={src},format=raw,if=none,id=d0", stay=True)

    def bitmap(q):
        return q.cmd("query-block")[0]["inserted"]["dirty-bitmaps"][0]

    with Qmp(sock, proc=g.proc) as q:
        q.cmd("block-dirty-bitmap-add", {"node": "d0", "name": "b0"})
        q.cmd("drive-backup", {"device": "d0", "target": full, "format": "qcow2",
                               "sync": "full", "job-id": "f"})
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "f", "status": "null"}, timeout=60)
        assert bitmap(q)["count"] == 0
        slow_down(q, device="d0")
        q.cmd("cont")
        q.wait_event("SHUTDOWN", timeout=120)
        assert bitmap(q)["count"] == FILL_MIB << 20, bitmap(q)
        qemu_img("create", "-q", "-f", "qcow2", "-b", full, "-F", "qcow2", inc)
        mark = len(q.events)
        q.cmd("drive-backup", {"device": "d0", "target": inc, "format": "qcow2",
                               "mode": "existing", "sync": "incremental", "bitmap": "b0",
                               "job-id": "i", "speed": 64 << 20})
        b = bitmap(q)
        assert b["busy"] is True and b["recording"] is True, b
        try:
            q.cmd("block-dirty-bitmap-remove", {"node": "d0", "name": "b0"})
            raise AssertionError("a busy bitmap was removed")
        except Exception as e:  # noqa: BLE001
            assert "is currently in use by another operation" in str(e), e
        done = q.wait_event("BLOCK_JOB_COMPLETED", timeout=60, start=mark)
        assert "error" not in done["data"], done
        assert done["data"]["len"] == done["data"]["offset"] == FILL_MIB << 20, done
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "i", "status": "null"}, timeout=10)
        b = bitmap(q)
        assert b["count"] == 0 and b["busy"] is False, b
        q.cmd("quit")
        assert g.wait_exit(30) == 0, g.output()
    assert results(g).get(f"blk fill mib={FILL_MIB}") is True, g.output()
    for img in (full, inc):
        assert qemu_img("check", img, check=False).returncode == 0, img
    m = json.loads(qemu_img("map", "--output=json", inc).stdout)
    held = sum(e["length"] for e in m if e["depth"] == 0 and e["data"])
    assert held == FILL_MIB << 20, f"the increment holds {held} bytes"
    assert qemu_img("compare", inc, src, check=False).returncode == 0, \
        "full + increment is not the disk"


# --- The same scenario on QEMU 7.2 --------------------------------------------------------------

BACKUP = [
    ("drive-backup", {"device": "nope", "target": "@/b.qcow2", "sync": "full"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "bitmap"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "incremental",
                      "bitmap": "b0", "bitmap-mode": "never"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "full",
                      "bitmap": "b0"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "full",
                      "bitmap-mode": "always"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "full",
                      "x-perf": {"max-workers": 0}}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "full",
                      "x-perf": {"max-chunk": 4096}}, None),
    ("blockdev-backup", {"device": "d0", "target": "d0", "sync": "full"}, None),
    ("drive-backup", {"device": "d0", "target": "@/b.qcow2", "sync": "full",
                      "job-id": "b"}, "BLOCK_JOB_COMPLETED"),
    ("drive-backup", {"device": "d0", "target": "@/t.qcow2", "sync": "top",
                      "job-id": "t"}, "BLOCK_JOB_COMPLETED"),
    # 64 KiB/s: still running when it is paused.
    ("drive-backup", {"device": "d0", "target": "@/s.qcow2", "sync": "full", "job-id": "s",
                      "speed": 65536, "auto-finalize": False}, None),
    ("drive-backup", {"device": "d0", "target": "@/s2.qcow2", "sync": "full"}, None),
    ("job-pause", {"id": "s"}, "JOB_STATUS_CHANGE"),
    ("query-block-jobs", None, None),
    ("job-complete", {"id": "s"}, None),
    ("job-resume", {"id": "s"}, "JOB_STATUS_CHANGE"),
    ("block-job-set-speed", {"device": "s", "speed": 0}, "BLOCK_JOB_PENDING"),
    ("job-finalize", {"id": "s"}, "BLOCK_JOB_COMPLETED"),
    ("drive-backup", {"device": "d0", "target": "@/n.qcow2", "sync": "none",
                      "job-id": "n"}, None),
    ("query-jobs", None, None),
    ("block-job-cancel", {"device": "n"}, "BLOCK_JOB_CANCELLED"),
    # With a dirty bitmap (nothing writes under -S: it stays empty).
    ("block-dirty-bitmap-add", {"node": "d0", "name": "b0"}, None),
    ("drive-backup", {"device": "d0", "target": "@/i.qcow2", "sync": "bitmap",
                      "bitmap": "b0"}, None),
    ("drive-backup", {"device": "d0", "target": "@/i.qcow2", "sync": "none",
                      "bitmap": "b0", "bitmap-mode": "always"}, None),
    ("drive-backup", {"device": "d0", "target": "@/i.qcow2", "sync": "full",
                      "bitmap": "b0", "bitmap-mode": "never"}, None),
    ("drive-backup", {"device": "d0", "target": "@/i.qcow2", "sync": "incremental",
                      "bitmap": "b0", "job-id": "i"}, "BLOCK_JOB_COMPLETED"),
    ("drive-backup", {"device": "d0", "target": "@/j.qcow2", "sync": "full", "job-id": "j",
                      "bitmap": "b0", "bitmap-mode": "on-success", "speed": 65536}, None),
    # Nothing that looks up "d0" while it runs: in QEMU that finds its
    # copy-before-write node above the disk (not yet in ferrovm's graph).
    ("block-job-cancel", {"device": "j"}, "BLOCK_JOB_CANCELLED"),
    ("query-block", None, None),
]


def test_backup_commands_and_events_equal_qemus(ferrovm, qemu, launch, tmp_path, sockdir):
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / name
        d.mkdir()
        out, events = scenario(binary, str(d), f"{sockdir}/{name}.sock",
                               fix_paths(BACKUP, str(d)), launch)
        text = json.dumps([out, events]).replace(str(d), "@")
        runs[name] = json.loads(__import__("re").sub(r"#block\d+", "#block", text))
        for img in ("b.qcow2", "t.qcow2", "s.qcow2"):
            assert qemu_img("check", str(d / img), check=False).returncode == 0, (name, img)
    ours, theirs = runs["ferrovm"], runs["qemu"]
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<90} {y!s}" for x, y in zip(ours[1], theirs[1]))
    # The full backup of the chain reads as the chain does.
    for name in ("ferrovm", "qemu"):
        d = tmp_path / name
        assert qemu_img("compare", str(d / "top.qcow2"), str(d / "b.qcow2"),
                        check=False).returncode == 0, name

