"""qcow2 images and backing chains under virtio-blk: the test guest reads
through a chain and writes into its top, and `qemu-img` (QEMU 7.2's own
checker) judges the images: `check` finds them clean, `compare` finds the
same content as QEMU produces from the same guest plan on the same chain,
the backing files stay untouched, and a `kill -9` in the middle of writes
leaves at most leaked clusters. `query-block` and `query-named-block-nodes`
on the same command lines equal QEMU's."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import guest_args
from test_virtio_blk import SECTOR, pattern, results


def qemu_img(*args, check=True):
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing (apt-get install qemu-utils)")
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"qemu-img {' '.join(args)}: rc {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def chain(d):
    """base.raw (a host-written pattern) <- mid.qcow2 (v2) <- top.qcow2 (v3)."""
    base = os.path.join(d, "base.raw")
    with open(base, "wb") as f:
        f.write(pattern(0, 4096, seed=3))
        f.truncate(16 << 20)
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw",
             os.path.join(d, "mid.qcow2"))
    top = os.path.join(d, "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "mid.qcow2",
             "-F", "qcow2", top)
    return base, top


def boot(launch, binary, testguest, image, append, timeout=120):
    g = launch(guest_args(binary, testguest, append, "-M", "q35", "-m", "128", "-drive",
                          f"file={image},format=qcow2,if=none,id=d0",
                          # modern-only, the device the guest drives (ferrovm's only kind)
                          "-device", "virtio-blk-pci,drive=d0,id=vd0,disable-legacy=on"))
    rc = g.wait_exit(timeout)
    assert rc == 0, g.output()
    return results(g)


WRITE = "plan=blk-write blk_start=1000 blk_sectors=2048 seed=7"


def test_guest_reads_and_writes_through_a_chain_as_on_qemu(ferrovm, qemu, testguest, launch,
                                                           tmp_path):
    ours, theirs = tmp_path / "f", tmp_path / "q"
    ours.mkdir()
    theirs.mkdir()
    base, top = chain(str(ours))
    base_sum = sha(base)
    # The pattern the host wrote into the raw base reaches the guest
    # through two qcow2 layers that allocate nothing.
    r = boot(launch, ferrovm, testguest, top, "plan=blk-read blk_start=0 blk_sectors=4096 seed=3")
    assert r.get("blk read sectors=0+4096 seed=3") is True, r
    r = boot(launch, ferrovm, testguest, top, WRITE)
    assert r.get("blk write sectors=1000+2048 seed=7") is True, r
    # ... and what it wrote reads back through the chain on the next boot.
    r = boot(launch, ferrovm, testguest, top, "plan=blk-read blk_start=1000 blk_sectors=2048 seed=7")
    assert r.get("blk read sectors=1000+2048 seed=7") is True, r
    assert sha(base) == base_sum, "the backing file was written"
    check = json.loads(qemu_img("check", "--output=json", top).stdout)
    assert check.get("corruptions", 0) == 0 and check.get("leaks", 0) == 0, check
    # QEMU runs the same write plan on the same chain: the guest-visible
    # content of both tops is the same.
    qbase, qtop = chain(str(theirs))
    r = boot(launch, qemu, testguest, qtop, WRITE, timeout=180)
    assert r.get("blk write sectors=1000+2048 seed=7") is True, r
    assert sha(qbase) == base_sum
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", top, qtop)
    # And it is what the plan wrote over the base's pattern.
    raw = tmp_path / "expected.raw"
    qemu_img("convert", "-O", "raw", qtop, str(raw))
    with open(raw, "rb") as f:
        got = f.read(4096 * SECTOR)
    assert got[1000 * SECTOR:3048 * SECTOR] == pattern(1000, 2048, seed=7)
    assert got[:1000 * SECTOR] == pattern(0, 1000, seed=3)
    # Only the written clusters were allocated in ferrovm's top.
    m = json.loads(qemu_img("map", "--output=json", top).stdout)
    top_data = [e for e in m if e["depth"] == 0 and e["data"]]
    assert top_data and all(1000 * SECTOR // 4096 * 4096 <= e["start"] and
                            e["start"] + e["length"] <= (3048 + 8) * SECTOR // 4096 * 4096 + 4096
                            for e in top_data), m


@pytest.mark.parametrize("lazy", ["off", "on"])
def test_kill_during_writes_leaves_at_most_leaks(ferrovm, testguest, launch, tmp_path, lazy):
    img = str(tmp_path / "disk.qcow2")
    # Big enough that the fill (about 100 MiB/s here) is still running at the kill.
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"lazy_refcounts={lazy},cluster_size=4096",
             img, "1G")
    g = launch(guest_args(ferrovm, testguest, "plan=blk-fill blk_mib=960", "-m", "128", "-drive",
                          f"file={img},format=qcow2,if=none,id=d0",
                          "-device", "virtio-blk-pci,drive=d0,id=vd0"))
    g.wait_line(r"# blk-fill: writing", timeout=60)
    time.sleep(0.4)
    g.proc.send_signal(signal.SIGKILL)
    assert "blk fill" not in g.output(), "the guest finished writing before the kill"
    g.wait_exit(10)
    r = qemu_img("check", img, check=False)
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    if lazy == "off":
        # QEMU's promise without lazy refcounts: leaks (exit 3) at worst.
        assert r.returncode in (0, 3), r.stdout + r.stderr
        assert not info["dirty-flag"]
    else:
        assert info["dirty-flag"], "lazy refcounts: the image stays marked dirty"
        # ferrovm's next read-write open repairs it, as QEMU's does.
        boot(launch, ferrovm, testguest, img, "plan=blk-read blk_start=0 blk_sectors=8 seed=0")
        r = qemu_img("check", img, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not json.loads(qemu_img("info", "--output=json", img).stdout)["dirty-flag"]


def normalized(out):
    # Automatic node names end in two random digits.
    return json.loads(re.sub(r'#block(\d+)\d\d\b', r'#block\1XX', json.dumps(out)))


def test_queries_equal_qemus(ferrovm, qemu, tmp_path, sockdir):
    from qmp_util import Qmp
    _, top = chain(str(tmp_path))
    lines = [
        ["-drive", f"if=none,id=d0,file={top},format=qcow2"],
        ["-blockdev", f"driver=file,filename={top},node-name=f0",
         "-blockdev", '{"driver": "qcow2", "file": "f0", "node-name": "q0", "backing": null}',
         "-device", "virtio-blk-pci,drive=q0,id=vd0"],
        # A backing given by node name, and the dotted syntax's "no backing".
        ["-blockdev", f"driver=file,filename={tmp_path}/mid.qcow2,node-name=mf,read-only=on",
         "-blockdev", "driver=qcow2,file=mf,node-name=mq,backing=,read-only=on",
         "-blockdev", f"driver=file,filename={top},node-name=tf",
         "-blockdev", "driver=qcow2,file=tf,node-name=tq,backing=mq",
         "-device", "virtio-blk-pci,drive=tq,id=vd0"],
        # Options for the header's backing files, without their driver
        # (iotests name chains so): the files and formats come from the
        # headers, the names from the options, and the filenames turn json.
        ["-drive", f"if=none,id=d0,file={top},backing.node-name=mid,"
         "backing.backing.node-name=base,backing.backing.read-only=on"],
    ]
    queries = [("query-block", {}), ("query-named-block-nodes", {}),
               ("query-named-block-nodes", {"flat": True}),
               ("human-monitor-command", {"command-line": "info block"}),
               ("human-monitor-command", {"command-line": "info block -n"}),
               ("query-blockstats", {}), ("query-blockstats", {"query-nodes": True})]
    for extra in lines:
        got = {}
        for binary in (ferrovm, qemu):
            sock = f"{sockdir}/b.sock"
            p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-S", "-M", "q35",
                                  "-accel", "kvm", "-qmp", f"unix:{sock},server=on,wait=off",
                                  *extra], stderr=subprocess.PIPE)
            try:
                q = Qmp(sock, proc=p)
                got[binary] = [normalized(q.cmd(c, a)) for c, a in queries]
                q.close()
            finally:
                p.kill()
                p.wait()
        assert got[ferrovm] == got[qemu], extra


def fill_pattern(sectors):
    """pattern(0, sectors, seed=0), fast: a sector's bytes depend only on
    (sector * 131) & 0xff."""
    kinds = [bytes((b + 7 * i) & 0xff for i in range(SECTOR)) for b in range(256)]
    return b"".join(kinds[(s * 131) & 0xff] for s in range(sectors))


def test_snapshots_while_the_guest_writes(ferrovm, testguest, launch, tmp_path, sockdir):
    """libvirt's two ways to take an external snapshot of a running disk,
    while the guest fills it: blockdev-snapshot-sync (ferrovm creates the
    overlay), then blockdev-add of an overlay qemu-img made plus
    blockdev-snapshot. The device moves live; nothing the guest wrote is
    lost; the chain reads as what it wrote."""
    from qmp_util import Qmp
    mib = 192
    base = str(tmp_path / "base.raw")
    with open(base, "wb") as f:
        f.truncate(256 << 20)
    ov1, ov2 = str(tmp_path / "ov1.qcow2"), str(tmp_path / "ov2.qcow2")
    sock = f"{sockdir}/s.sock"
    g = launch(guest_args(
        ferrovm, testguest, f"plan=blk-fill blk_mib={mib}", "-m", "128",
        "-qmp", f"unix:{sock},server=on,wait=off",
        "-blockdev", json.dumps({"driver": "file", "filename": base, "node-name": "s0"}),
        "-blockdev", json.dumps({"driver": "raw", "file": "s0", "node-name": "f0"}),
        "-device", "virtio-blk-pci,drive=f0,id=vd0"))
    with Qmp(sock, proc=g.proc) as q:
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("blockdev-snapshot-sync", {"node-name": "f0", "snapshot-file": ov1,
                                         "snapshot-node-name": "ov1", "format": "qcow2"})
        qemu_img("create", "-q", "-f", "qcow2", "-b", ov1, "-F", "qcow2", ov2, "256M")
        q.cmd("blockdev-add", {"driver": "file", "filename": ov2, "node-name": "ov2f"})
        q.cmd("blockdev-add", {"driver": "qcow2", "file": "ov2f", "node-name": "ov2",
                               "backing": None})
        q.cmd("blockdev-snapshot", {"node": "ov1", "overlay": "ov2"})
        blk = q.cmd("query-block")[0]["inserted"]
        assert (blk["node-name"], blk["backing_file_depth"]) == ("ov2", 2), blk
        assert blk["image"]["backing-image"]["filename"] == ov1, blk
        assert blk["image"]["backing-image"]["backing-image"]["filename"] == base, blk
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get(f"blk fill mib={mib}") is True, g.output()
    for img in (ov1, ov2):
        r = qemu_img("check", img, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    # The chain holds every write, in order.
    flat = str(tmp_path / "flat.raw")
    qemu_img("convert", "-O", "raw", ov2, flat)
    with open(flat, "rb") as f:
        assert f.read(mib << 20) == fill_pattern(mib * 2048), "a write was lost"
    # The writes went where the device was at the time: some into each layer.
    for img in (ov1, ov2):
        m = json.loads(qemu_img("map", "--output=json", img).stdout)
        assert any(e["depth"] == 0 and e["data"] for e in m), (img, m)


def test_throttling_bounds_what_the_guest_writes(ferrovm, testguest, launch, tmp_path, sockdir):
    """block_set_io_throttle (libvirt's blkdeviotune) really limits the disk:
    the bytes the guest wrote stay within limit x time + the burst QEMU's
    leaky bucket allows (avg/10). Accuracy is a bench figure, not asserted."""
    from qmp_util import Qmp
    img = str(tmp_path / "t.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "64M")
    sock = f"{sockdir}/t.sock"
    mib, limit = 6, 3 << 20
    g = launch(guest_args(ferrovm, testguest, f"plan=blk-fill blk_mib={mib}", "-m", "128", "-S",
                          "-qmp", f"unix:{sock},server=on,wait=off",
                          "-drive", f"file={img},format=qcow2,if=none,id=d0",
                          "-device", "virtio-blk-pci,drive=d0,id=vd0"))
    with Qmp(sock, proc=g.proc) as q:
        zero = {"bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
        q.cmd("block_set_io_throttle", {"id": "/machine/peripheral/vd0/virtio-backend",
                                        "bps": limit, **zero})
        inserted = q.cmd("query-block")[0]["inserted"]
        assert (inserted["bps"], inserted["group"]) == (limit, "/machine/peripheral/vd0/virtio-backend")
        start = time.monotonic()
        q.cmd("cont")
        assert g.wait_exit(60) == 0, g.output()
        elapsed = time.monotonic() - start
    assert results(g).get(f"blk fill mib={mib}") is True, g.output()
    written = mib << 20
    assert written <= limit * elapsed + limit / 10 + (1 << 20), (written, elapsed)


def test_block_resize_grows_a_qcow2_image(ferrovm, tmp_path, sockdir):
    """block_resize on a qcow2 drive: the image grows (its L1 table too),
    query-block and qemu-img agree, and the image stays clean."""
    from qmp_util import Qmp
    img = str(tmp_path / "r.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    sock = f"{sockdir}/r.sock"
    p = subprocess.Popen([ferrovm, "-nodefaults", "-display", "none", "-S", "-qmp",
                          f"unix:{sock},server=on,wait=off",
                          "-drive", f"file={img},format=qcow2,if=none,id=d0"],
                         stderr=subprocess.PIPE)
    try:
        with Qmp(sock, proc=p) as q:
            q.cmd("block_resize", {"device": "d0", "size": 3 << 30})
            image = q.cmd("query-block")[0]["inserted"]["image"]
            assert image["virtual-size"] == 3 << 30, image
            q.cmd("quit")
        p.wait(10)
    finally:
        p.kill()
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    assert info["virtual-size"] == 3 << 30
    qemu_img("check", img)


def shrink_steps(d):
    """block_resize steps that shrink (and refuse to) on qcow2 nodes over
    images made in `d`; each binary gets fresh copies."""
    def node(name, img, **more):
        return ("blockdev-add", {"driver": "qcow2", "node-name": name,
                                 "file": {"driver": "file", "filename": f"{d}/{img}"}, **more})
    return [
        node("q0", "data.qcow2"),
        ("block_resize", {"node-name": "q0", "size": (5 << 20) + 512}),
        ("block_resize", {"node-name": "q0", "size": 1000}),
        ("block_resize", {"node-name": "q0", "size": 64 << 20}),
        node("q1", "empty.qcow2"),
        ("block_resize", {"node-name": "q1", "size": 0}),
        node("q2", "snap.qcow2"),
        ("block_resize", {"node-name": "q2", "size": 1 << 20}),
        node("q3", "v2snap.qcow2"),
        ("block_resize", {"node-name": "q3", "size": 1 << 20}),
        # The file under a qcow2 node: the qcow2 node does not let others
        # resize it, even without a device on it.
        ("blockdev-add", {"driver": "file", "node-name": "f4", "filename": f"{d}/file.qcow2"}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q4", "file": "f4"}),
        ("block_resize", {"node-name": "f4", "size": 65536}),
        ("block_resize", {"node-name": "q4", "size": 1 << 20}),
        node("q5", "ro.qcow2", **{"read-only": True}),
        ("block_resize", {"node-name": "q5", "size": 1 << 20}),
    ]


def shrink_images(d):
    def make(name, opts, size, *writes):
        path = f"{d}/{name}"
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, path, size)
        for w in writes:
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", w, path], check=True,
                           capture_output=True)
        return path
    make("data.qcow2", "cluster_size=4096", "64M", "write -P 1 0 1M", "write -P 2 60M 2M",
         "write -P 3 5M 8k", "write -P 4 20M 64k", "write -P 5 4M 1M")
    make("empty.qcow2", "cluster_size=65536", "1M")
    for name, opts in (("snap.qcow2", "compat=1.1"), ("v2snap.qcow2", "compat=0.10")):
        make(name, opts, "4M", "write -P 1 0 1M", "write -P 2 3M 1M")
        qemu_img("snapshot", "-c", "s1", f"{d}/{name}")
    make("file.qcow2", "cluster_size=65536", "4M", "write -P 1 0 4M")
    make("ro.qcow2", "cluster_size=65536", "4M")


def test_block_resize_shrinks_qcow2_nodes_as_qemu_does(ferrovm, qemu, tmp_path, sockdir):
    """Shrinking block_resize on qcow2 nodes (QEMU's qcow2_co_truncate): the same answers
    and refusals as QEMU 7.2, and images that qemu-img finds clean, with QEMU's virtual
    sizes, file lengths, maps and contents (data below the new end kept, above it
    reading zeros once grown again)."""
    from qmp_util import Qmp
    got = {}
    for who, binary in (("qemu", qemu), ("ferrovm", ferrovm)):
        d = tmp_path / who
        d.mkdir()
        shrink_images(d)
        sock = f"{sockdir}/s.sock"
        p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-machine", "none",
                              "-qmp", f"unix:{sock},server=on,wait=off"],
                             stderr=subprocess.PIPE)
        try:
            with Qmp(sock, proc=p) as q:
                answers = []
                for cmd, args in shrink_steps(d):
                    try:
                        answers.append(["return", q.cmd(cmd, args)])
                    except Exception as e:
                        answers.append(["error", getattr(e, "error_class", "?"), str(e)])
                q.cmd("quit")
            p.wait(10)
        finally:
            p.kill()
        got[who] = answers
    assert got["ferrovm"] == got["qemu"]
    for img in ("data.qcow2", "empty.qcow2", "snap.qcow2", "v2snap.qcow2", "file.qcow2"):
        theirs, ours = str(tmp_path / "qemu" / img), str(tmp_path / "ferrovm" / img)
        qemu_img("check", ours)
        info = [json.loads(qemu_img("info", "--output=json", p).stdout) for p in (ours, theirs)]
        assert info[0]["virtual-size"] == info[1]["virtual-size"], img
        assert os.path.getsize(ours) == os.path.getsize(theirs), img
        maps = [qemu_img("map", "--output=json", p).stdout for p in (ours, theirs)]
        assert maps[0] == maps[1], img
        qemu_img("compare", ours, theirs)


@pytest.fixture
def loopdev(tmp_path):
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(32 << 20)
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"this test needs a loop device (root, util-linux losetup): {r.stderr.strip()}")
    dev = r.stdout.strip()
    yield dev, str(backing)
    subprocess.run(["losetup", "-d", dev])


def test_host_device_nodes(ferrovm, qemu, testguest, launch, sockdir, loopdev):
    """The `host_device` protocol on a block device: its node as QEMU shows
    it, QEMU's refusals of a regular file as host_device and of a device as
    `file`, `-drive file=/dev/...` picking host_device, and guest writes
    landing on the device."""
    from qmp_util import Qmp
    dev, backing = loopdev
    steps = [("query-named-block-nodes", {"flat": True}),
             ("blockdev-add", {"driver": "host_device", "filename": backing, "node-name": "x1"}),
             ("blockdev-add", {"driver": "file", "filename": dev, "node-name": "x2"}),
             ("query-block", {})]
    got = {}
    for binary in (ferrovm, qemu):
        sock = f"{sockdir}/h.sock"
        p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-S", "-M", "q35",
                              "-qmp", f"unix:{sock},server=on,wait=off",
                              "-blockdev", f"driver=host_device,filename={dev},node-name=h0",
                              "-drive", f"if=none,id=d1,file={dev},format=raw,file.locking=off"],
                             stderr=subprocess.PIPE)
        try:
            q = Qmp(sock, proc=p)
            out = []
            for c, a in steps:
                try:
                    out.append(normalized(q.cmd(c, a)))
                except Exception as e:  # the refusals: compare their words
                    out.append(str(e))
            got[binary] = out
            q.close()
        finally:
            p.kill()
            p.wait()
    assert got[ferrovm] == got[qemu]
    # -blockdev's node and the -drive's protocol node are both host_device.
    assert sorted(n["drv"] for n in got[ferrovm][0]) == ["host_device", "host_device", "raw"]
    g = launch(guest_args(ferrovm, testguest, "plan=blk-write blk_sectors=64 seed=4", "-m", "128",
                          "-drive", f"file={dev},format=raw,if=none,id=d0",
                          "-device", "virtio-blk-pci,drive=d0,id=vd0"))
    assert g.wait_exit(60) == 0, g.output()
    subprocess.run(["sync"])
    with open(backing, "rb") as f:
        assert f.read(64 * SECTOR) == pattern(0, 64, seed=4)
