"""User dirty bitmaps (`block-dirty-bitmap-*`): the test guest writes its
disk between two rounds of bitmap commands, on ferrovm and on QEMU 7.2 with
the same command line. The replies, the errors and the bitmaps in
`query-block` / `query-named-block-nodes` (count, granularity, recording,
persistent) are QEMU's. Persistent bitmaps on a qcow2 image are in the
image after the VM quits, as `qemu-img info` shows them for QEMU's image,
and `qemu-img check` finds the image clean; loaded again, they hold what
was stored."""
import json
import os
import re

from conftest import guest_args
from qmp_util import Qmp
from test_qcow2 import qemu_img

# Sectors 1000..3047 written, then 8 zeroed (and 8 discarded) at 3048.
WRITE = "plan=blk-write blk_start=1000 blk_sectors=2048 seed=7"
LONG = "x" * 1024

BEFORE = [
    ("block-dirty-bitmap-add", {"node": "nope", "name": "a"}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": ""}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "a", "granularity": 1000}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "a", "granularity": 256}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "a", "granularity": 0}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "a", "granularity": 1 << 32}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "huge", "granularity": 1 << 31}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": LONG}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "b0"}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "b0"}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "b1", "granularity": 512}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "b2", "disabled": True}),
    ("block-dirty-bitmap-add", {"node": "f0", "name": "fb", "granularity": 1 << 20}),
    ("block-dirty-bitmap-add", {"node": "f0", "name": "fp", "persistent": True}),
    ("block-dirty-bitmap-add", {"node": "drive0", "name": "x"}),
    ("block-dirty-bitmap-remove", {"node": "d0", "name": "huge"}),
    ("block-dirty-bitmap-remove", {"node": "nope", "name": "b0"}),
    ("block-dirty-bitmap-remove", {"node": "d0", "name": "nope"}),
    ("block-dirty-bitmap-clear", {"node": "nope", "name": "b0"}),
    ("block-dirty-bitmap-clear", {"node": "d0", "name": "nope"}),
    ("block-dirty-bitmap-enable", {"node": "d0", "name": "nope"}),
    ("block-dirty-bitmap-disable", {"node": "nope", "name": "b0"}),
    ("blockdev-add", {"driver": "raw", "node-name": "r0",
                      "file": {"driver": "file", "filename": "@/small.raw"}}),
    ("block-dirty-bitmap-add", {"node": "r0", "name": "rb"}),
    ("block-dirty-bitmap-add", {"node": "r0", "name": "rp", "persistent": True}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "nope", "bitmaps": ["b0"]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b2", "bitmaps": ["nope"]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b2",
                                  "bitmaps": [{"node": "nope", "name": "b0"}]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b2",
                                  "bitmaps": [{"node": "r0", "name": "rb"}]}),
    # QEMU 7.2 names the element 'null' here. (An empty list makes it
    # drop the connection, so that one is not asked.)
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b2", "bitmaps": [5]}),
    ("query-named-block-nodes", None),
]

AFTER = [
    ("query-block", None),
    ("query-named-block-nodes", None),
    # b2 (disabled, empty) gets b0 and b1: the union at b2's granularity.
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b2",
                                  "bitmaps": ["b0", {"node": "d0", "name": "b1"}]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b1", "bitmaps": ["b1", "fb"]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "b1",
                                  "bitmaps": [{"node": "f0", "name": "fb"}]}),
    ("block-dirty-bitmap-disable", {"node": "d0", "name": "b0"}),
    ("block-dirty-bitmap-clear", {"node": "d0", "name": "b1"}),
    ("block-dirty-bitmap-enable", {"node": "d0", "name": "b2"}),
    ("query-named-block-nodes", None),
    ("block-dirty-bitmap-remove", {"node": "d0", "name": "b1"}),
    ("block-dirty-bitmap-remove", {"node": "d0", "name": "b1"}),
    ("block-dirty-bitmap-remove", {"node": "r0", "name": "rb"}),
    ("query-block", None),
]


def keep(r):
    """What the bitmaps tests compare of a query: each node's name and its
    bitmaps, or the whole reply for anything else."""
    if isinstance(r, list) and r and "inserted" in r[0]:
        return [(b["device"], b["inserted"].get("dirty-bitmaps")) for b in r]
    if isinstance(r, list) and r and "node-name" in r[0]:
        return [(n["node-name"], n.get("dirty-bitmaps")) for n in r]
    return r


def run(binary, testguest, d, sock, launch, image, fmt, before, after, append=WRITE,
        extra=(), device=True):
    """Boots `binary` on `image` stopped (-S), runs `before`, lets the guest
    run its plan and power off (-no-shutdown keeps the monitor), runs
    `after`, quits. Returns every reply (errors as (class, desc))."""
    with open(os.path.join(d, "small.raw"), "wb") as f:
        f.truncate(1 << 20)
    blk = [
        "-blockdev", json.dumps({"driver": "file", "filename": image, "node-name": "f0"}),
        "-blockdev", json.dumps({"driver": fmt, "file": "f0", "node-name": "d0"}),
    ] + (["-device", "virtio-blk-pci,drive=d0,id=vd0,disable-legacy=on"] if device else [])
    g = launch(guest_args(binary, testguest, append, "-M", "q35", "-m", "128", "-S",
                          "-no-shutdown", "-qmp", f"unix:{sock},server=on,wait=off",
                          *blk, *extra))
    out = []

    def do(steps, q):
        for name, args in steps:
            args = json.loads(json.dumps(args).replace("@/", d + "/")) if args else args
            try:
                out.append((name, keep(q.cmd(name, args))))
            except Exception as e:  # noqa: BLE001 - the error is the answer
                out.append((name, getattr(e, "error_class", "?"), str(e)))

    with Qmp(sock, proc=g.proc) as q:
        do(before, q)
        q.cmd("cont")
        q.wait_event("SHUTDOWN", timeout=120)
        do(after, q)
        q.cmd("quit")
    assert g.wait_exit(60) == 0, g.output()
    assert "not ok" not in g.output(), g.output()
    return json.loads(re.sub(r"#block\d+", "#block", json.dumps(out).replace(d, "@")))


def compare(ours, theirs):
    for a, b in zip(ours, theirs):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert len(ours) == len(theirs)


def image(d, name, fmt):
    p = os.path.join(d, name)
    if fmt == "qcow2":
        qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", p, "16M")
    else:
        with open(p, "wb") as f:
            f.truncate(16 << 20)
    return p


def both(ferrovm, qemu, testguest, launch, tmp_path, sockdir, fmt, before, after, **kw):
    runs = {}
    for who, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / who
        d.mkdir(exist_ok=True)
        img = image(str(d), f"disk.{fmt}", fmt)
        runs[who] = (run(binary, testguest, str(d), f"{sockdir}/{who}.sock", launch, img, fmt,
                         before, after, **kw), img)
    return runs


def test_bitmap_commands_on_a_qcow2_node_equal_qemus(ferrovm, qemu, testguest, launch,
                                                     tmp_path, sockdir):
    """qcow2 (4 KiB clusters: the default granularity is 4 KiB) over its
    file node: the guest's writes mark d0's bitmaps at their own granularity,
    and the file node's bitmap marks what qcow2 wrote to the file."""
    runs = both(ferrovm, qemu, testguest, launch, tmp_path, sockdir, "qcow2", BEFORE, AFTER)
    compare(runs["ferrovm"][0], runs["qemu"][0])


def test_bitmap_commands_on_a_raw_node_equal_qemus(ferrovm, qemu, testguest, launch,
                                                   tmp_path, sockdir):
    """raw over file: both nodes' bitmaps see the guest's writes (the raw
    one through its linear mapping onto the file)."""
    runs = both(ferrovm, qemu, testguest, launch, tmp_path, sockdir, "raw", BEFORE, AFTER)
    compare(runs["ferrovm"][0], runs["qemu"][0])


PERSIST_BEFORE = [
    ("block-dirty-bitmap-add", {"node": "d0", "name": "p0", "persistent": True}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "p1", "persistent": True,
                                "granularity": 65536, "disabled": True}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "p0", "persistent": True}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "pl" + LONG, "persistent": True}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "t", "persistent": False}),
    ("query-named-block-nodes", None),
]
PERSIST_AFTER = [("query-named-block-nodes", None)]
RELOAD = [("query-named-block-nodes", None),
          ("block-dirty-bitmap-remove", {"node": "d0", "name": "p1"}),
          ("query-named-block-nodes", None)]


def info(img):
    i = json.loads(qemu_img("info", "--output=json", img).stdout)
    i.pop("filename", None)
    i.pop("actual-size", None)
    return i


def test_persistent_bitmaps_are_stored_in_the_image_as_qemus(ferrovm, qemu, testguest, launch,
                                                            tmp_path, sockdir):
    runs = both(ferrovm, qemu, testguest, launch, tmp_path, sockdir, "qcow2",
                PERSIST_BEFORE, PERSIST_AFTER)
    compare(runs["ferrovm"][0], runs["qemu"][0])
    ours, theirs = runs["ferrovm"][1], runs["qemu"][1]
    assert info(ours) == info(theirs)
    assert "bitmaps" in info(ours)["format-specific"]["data"], info(ours)
    r = qemu_img("check", ours, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # Each opens the other's image: the stored bits are there (QEMU reads
    # ferrovm's image, ferrovm QEMU's), and a persistent bitmap removed is
    # gone from the image after the exit.
    reload = {}
    for who, binary, img in (("ferrovm", ferrovm, theirs), ("qemu", qemu, ours)):
        d = str(tmp_path / who)
        reload[who] = run(binary, testguest, d, f"{sockdir}/{who}.sock", launch,
                          img, "qcow2", RELOAD, [], append="plan=poweroff")
    compare(reload["ferrovm"], reload["qemu"])
    assert info(ours) == info(theirs)
    assert [b["name"] for b in info(theirs)["format-specific"]["data"]["bitmaps"]] == ["p0"]
    for img in (ours, theirs):
        r = qemu_img("check", img, check=False)
        assert r.returncode == 0, r.stdout + r.stderr


def test_an_image_left_in_use_loads_its_bitmaps_inconsistent(ferrovm, qemu, testguest, launch,
                                                             tmp_path, sockdir):
    """A VM killed with a persistent bitmap in use leaves the IN_USE flag;
    the next open reports the bitmap inconsistent, refuses to use it, and
    lets it be removed, as QEMU does."""
    steps = [("query-named-block-nodes", None),
             ("block-dirty-bitmap-clear", {"node": "d0", "name": "p0"}),
             ("block-dirty-bitmap-enable", {"node": "d0", "name": "p0"}),
             ("block-dirty-bitmap-merge", {"node": "d0", "target": "p0", "bitmaps": ["p0"]}),
             ("block-dirty-bitmap-add", {"node": "d0", "name": "q", "granularity": 4096}),
             ("block-dirty-bitmap-merge", {"node": "d0", "target": "q", "bitmaps": ["p0"]}),
             ("block-dirty-bitmap-remove", {"node": "d0", "name": "p0"}),
             ("query-named-block-nodes", None)]
    out = {}
    for who, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = str(tmp_path / who)
        os.makedirs(d)
        img = image(d, "disk.qcow2", "qcow2")
        qemu_img("bitmap", "--add", img, "p0")
        # Opened read-write, the bitmap is in use until the image is closed.
        g = launch(guest_args(binary, testguest, "plan=poweroff", "-M", "q35", "-S",
                              "-qmp", f"unix:{sockdir}/{who}.sock,server=on,wait=off",
                              "-blockdev", json.dumps({"driver": "qcow2", "node-name": "d0",
                                                       "file": {"driver": "file",
                                                                "filename": img}})))
        with Qmp(f"{sockdir}/{who}.sock", proc=g.proc) as q:
            q.cmd("query-status")
            g.kill()
        flags = info(img)["format-specific"]["data"]["bitmaps"][0]["flags"]
        assert "in-use" in flags, flags
        out[who] = run(binary, testguest, d, f"{sockdir}/{who}.sock", launch, img, "qcow2",
                       steps, [], append="plan=poweroff")
        assert qemu_img("check", img, check=False).returncode == 0
    compare(out["ferrovm"], out["qemu"])
    assert re.search(r"inconsistent", json.dumps(out["ferrovm"][0]))


def reopen(ro):
    return ("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "d0", "file": "f0",
                                             "read-only": ro}]})


REOPEN = [
    ("block-dirty-bitmap-add", {"node": "d0", "name": "p0", "persistent": True}),
    ("block-dirty-bitmap-add", {"node": "d0", "name": "t"}),
    reopen(True),
    ("query-named-block-nodes", None),
    ("block-dirty-bitmap-clear", {"node": "d0", "name": "p0"}),
    ("block-dirty-bitmap-remove", {"node": "d0", "name": "p0"}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "p0", "bitmaps": ["t"]}),
    ("block-dirty-bitmap-merge", {"node": "d0", "target": "t", "bitmaps": ["p0"]}),
    ("block-dirty-bitmap-disable", {"node": "d0", "name": "p0"}),
    ("block-dirty-bitmap-clear", {"node": "d0", "name": "t"}),
    reopen(False),
    ("block-dirty-bitmap-clear", {"node": "d0", "name": "p0"}),
    ("query-named-block-nodes", None),
]


def test_a_read_only_reopen_stores_the_bitmaps_and_makes_them_read_only(
        ferrovm, qemu, testguest, launch, tmp_path, sockdir):
    """blockdev-reopen to read-only: the persistent bitmap is stored, can be
    enabled or disabled but not changed; back to read-write it can; at the
    exit it is in the image (disabled), as QEMU leaves it."""
    out, imgs = {}, {}
    for who, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = str(tmp_path / who)
        os.makedirs(d)
        imgs[who] = image(d, "disk.qcow2", "qcow2")
        out[who] = run(binary, testguest, d, f"{sockdir}/{who}.sock", launch, imgs[who],
                       "qcow2", REOPEN, [], append="plan=poweroff", device=False)
    compare(out["ferrovm"], out["qemu"])
    assert info(imgs["ferrovm"]) == info(imgs["qemu"])
    r = qemu_img("check", imgs["ferrovm"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
