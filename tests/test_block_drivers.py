"""The blkdebug, null-co and copy-on-read drivers and HMP `qemu-io` against
QEMU 7.2 (`-M none`, no guest): the same command lines and QMP
conversations give the same query-named-block-nodes (auto node names and
`json:` key order aside), the same blockdev-add errors, the same HMP
replies, and the same qemu-io output on the emulator's stdout and stderr
(timings aside). The data qemu-io wrote is read back with QEMU's qemu-io."""
import json
import re
import subprocess

import pytest

from qmp_util import ExecuteError, Qmp
from test_qcow2 import normalized


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def fix_json_names(v):
    """`json:{...}` file names compared as objects (QEMU's key order is its
    hash order)."""
    if isinstance(v, dict):
        return {k: fix_json_names(x) for k, x in v.items()}
    if isinstance(v, list):
        return [fix_json_names(x) for x in v]
    if isinstance(v, str) and v.startswith("json:"):
        return {"json:": json.loads(v[5:])}
    return v


def converse(binary, sockdir, args, steps):
    """Runs `steps` (command, arguments) on `binary` started with `args`;
    returns the replies (errors as their text), stdout and stderr."""
    sock = f"{sockdir}/d.sock"
    p = subprocess.Popen([binary, "-nodefaults", "-display", "none", "-M", "none",
                          "-qmp", f"unix:{sock},server=on,wait=off", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    try:
        q = Qmp(sock, proc=p)
        for c, a in steps:
            try:
                out.append(fix_json_names(normalized(q.cmd(c, a))))
            except ExecuteError as e:
                out.append(str(e))
        q.cmd("quit")
        q.close()
        so, se = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    return out, so, se


TIMES = re.compile(r"; \d+\.\d\d sec \([^)]*\)")


def both(ferrovm, qemu, sockdir, args, steps):
    f = converse(ferrovm, sockdir, args, steps)
    q = converse(qemu, sockdir, args, steps)
    return f, q


@pytest.fixture
def images(tmp_path):
    top = tmp_path / "t.qcow2"
    base = tmp_path / "b.raw"
    qemu_img("create", "-q", "-f", "raw", str(base), "1M")
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 0 1M", str(base)],
                   check=True, capture_output=True)
    conf = tmp_path / "b.conf"
    conf.write_text('[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "on"\n'
                    'sector = "0"\n\n[set-state]\nevent = "read_aio"\nnew_state = "2"\n')
    qemu_img("create", "-q", "-f", "qcow2", "-o",
             f"backing_file=blkdebug:{conf}:{base},backing_fmt=raw", str(top))
    return tmp_path, top, base, conf


NODES = ("query-named-block-nodes", {})
FLAT = ("query-named-block-nodes", {"flat": True})
BLOCK = ("query-block", {})


def test_query_shape_equals_qemus(ferrovm, qemu, sockdir, images):
    d, top, base, conf = images
    lines = [
        # blkdebug as qcow2's file, from the -drive filename.
        ["-drive", f"file=blkdebug::{top},if=none,id=drive0,format=qcow2"],
        # blkdebug in the backing chain, from the image header's name.
        ["-drive", f"file={top},if=none,id=drive0,format=qcow2"],
        # blkdebug over null-co at the top of a -drive (056).
        ["-drive", "file=blkdebug::null-co://,id=drive0,align=65536,driver=blkdebug,if=none"],
        # null-co: plain, with options (json: name), and under raw.
        ["-blockdev", "driver=null-co,node-name=n1",
         "-blockdev", "driver=null-co,node-name=n2,size=4096,read-zeroes=on",
         "-blockdev", "driver=null-aio,node-name=n3,latency-ns=5",
         "-drive", "file=null-co://,if=none,id=d0,format=raw"],
        # copy-on-read over copy-on-read over null-co (041 test_replace_filter).
        ["-blockdev", '{"driver": "copy-on-read", "node-name": "filter0", "file": '
                      '{"driver": "copy-on-read", "node-name": "filter1", "file": '
                      '{"driver": "null-co"}}}'],
    ]
    for args in lines:
        f, q = both(ferrovm, qemu, sockdir, args, [NODES, FLAT, BLOCK])
        assert f[0] == q[0], args


def test_blockdev_add_equals_qemus(ferrovm, qemu, sockdir, images):
    d, top, base, conf = images
    bad_conf = d / "bad.conf"
    bad_conf.write_text('[inject-error]\nevent = "read_aio"\nerrno = "x5"\n')
    f0 = {"driver": "file", "node-name": "f0", "filename": str(base)}
    steps = [("blockdev-add", f0)]
    for extra in [
        {"inject-error": [{"event": "nope"}]},
        {"inject-error": [{"event": "read_aio", "iotype": "flush", "sector": 3}],
         "set-state": [{"event": "write_aio", "new_state": 3}]},
        {"config": str(bad_conf)},
        {"config": str(d / "missing.conf")},
        {"align": 3}, {"align": 512, "max-transfer": 100},
        {"opt-discard": 4096, "max-discard": 6144},
    ]:
        steps.append(("blockdev-add", {"driver": "blkdebug", "node-name": "dbg",
                                       "image": "f0", **extra}))
        steps.append(NODES)
        steps.append(("blockdev-del", {"node-name": "dbg"}))
    steps += [
        ("blockdev-add", {"driver": "null-co", "node-name": "n", "latency-ns": -1}),
        ("blockdev-add", {"driver": "null-co", "node-name": "n", "size": 65536}),
        ("blockdev-add", {"driver": "copy-on-read", "node-name": "c", "file": "n",
                          "bottom": "nope"}),
        ("blockdev-add", {"driver": "copy-on-read", "node-name": "c", "file": "n"}),
        ("blockdev-add", {"driver": "copy-on-read", "node-name": "c2", "file": "c",
                          "bottom": "c"}),
        NODES,
    ]
    f, q = both(ferrovm, qemu, sockdir, [], steps)
    for i, (a, b) in enumerate(zip(f[0], q[0])):
        assert a == b, steps[i]


def hmp(line):
    return ("human-monitor-command", {"command-line": line})


def test_hmp_qemu_io_equals_qemus(ferrovm, qemu, sockdir, tmp_path):
    img = tmp_path / "t.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(img), "4M")
    args = ["-drive", f"file=blkdebug::{img},if=none,id=drive0,format=qcow2,node-name=fmt"]
    steps = [
        hmp('qemu-io drive0 "write -P 0x5e 0 512"'),
        hmp('qemu-io drive0 "aio_flush"'),
        hmp('qemu-io fmt "read -P 0x5e 0 512"'),
        hmp('qemu-io drive0 "read -P 0x5f 0 512"'),
        hmp('qemu-io drive0 "write -z 64k 64k"'),
        hmp('qemu-io drive0 "aio_write -P 7 1M 4k 4k"'),
        hmp('qemu-io drive0 "aio_flush"'),
        hmp('qemu-io drive0 "read -P 7 1M 8k"'),
        hmp('qemu-io drive0 "discard 1M 64k"'),
        hmp('qemu-io drive0 "flush"'),
        hmp('qemu-io drive0 "length"'),
        hmp('qemu-io drive0 "read 4M 512"'),
        hmp('qemu-io drive0 "read 0"'),
        hmp('qemu-io drive0 "read -x 0 512"'),
        hmp('qemu-io drive0 "write -P 300 0 512"'),
        hmp('qemu-io drive0 "write 0 12q"'),
        hmp('qemu-io drive0 "bogus"'),
        hmp('qemu-io drive0 "break read_aio bp_drive0"'),
        hmp('qemu-io drive0 "break bogus bp_drive0"'),
        hmp('qemu-io drive0 "resume bp_drive0"'),
        hmp('qemu-io drive0 "remove_break bp_drive0"'),
        hmp('qemu-io drive0 "remove_break bp_drive0"'),
        hmp('qemu-io nope "read 0 512"'),
        hmp('qemu-io -d drive0 "read 0 512"'),
        hmp('qemu-io -x drive0 "read 0 512"'),
        hmp('qemu-io drive0'),
        hmp('qemu-io'),
        hmp('qemu-io drive0 "read 0 512" extra'),
        hmp('qemu-io drive0 "unterminated'),
    ]
    (fr, fo, fe), (qr, qo, qe) = both(ferrovm, qemu, sockdir, args, steps)
    for i, (a, b) in enumerate(zip(fr, qr)):
        assert a == b, steps[i]
    # The blkdebug breakpoint messages only show outside qtest.
    assert TIMES.sub("; T", fo) == TIMES.sub("; T", qo)
    assert fe.splitlines() == [l for l in qe.splitlines() if not l.startswith("qemu-system")]
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x5e 0 512",
                    "-c", "read -P 0 64k 64k", "-c", "read -P 7 1M 8k", str(img)],
                   check=True, capture_output=True)


def test_breakpoint_holds_an_aio_write_until_removed(ferrovm, sockdir, tmp_path):
    """056's TestBeforeWriteNotifier pattern on qcow2 over blkdebug: the
    monitor answers while the request is suspended, and the write lands
    once the breakpoint goes."""
    img = tmp_path / "t.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(img), "4M")
    args = ["-drive", f"file=blkdebug::{img},if=none,id=drive0,format=qcow2"]
    steps = [
        hmp('qemu-io drive0 "break write_aio bp_drive0"'),
        hmp('qemu-io drive0 "aio_write -P 1 512512 512"'),
        hmp('qemu-io drive0 "wait_break bp_drive0"'),
        ("query-block", {}),
        hmp('qemu-io drive0 "remove_break bp_drive0"'),
        hmp('qemu-io drive0 "aio_flush"'),
        hmp('qemu-io drive0 "read -P 1 512512 512"'),
    ]
    r, out, err = converse(ferrovm, sockdir, args, steps)
    assert r[4] == "" and r[6] == "", r
    lines = TIMES.sub("; T", out).splitlines()
    assert lines == ["blkdebug: Suspended request 'bp_drive0'",
                     "blkdebug: Resuming request 'bp_drive0'",
                     "wrote 512/512 bytes at offset 512512", "512 bytes, 1 ops; T",
                     "read 512/512 bytes at offset 512512", "512 bytes, 1 ops; T"], out


def test_hmp_qemu_io_goes_through_a_jobs_filter(ferrovm, qemu, sockdir, tmp_path):
    """056's test_cancel_sync_none: qemu-io on a drive writes through the
    drive's BlockBackend, so a backup's copy-before-write filter saves the
    old data into the target first, on both emulators."""
    for binary in (ferrovm, qemu):
        img, tgt = tmp_path / "s.qcow2", tmp_path / "t.qcow2"
        for p in (img, tgt):
            if p.exists():
                p.unlink()
        qemu_img("create", "-q", "-f", "qcow2", str(img), "4M")
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 64k", str(img)],
                       check=True, capture_output=True)
        steps = [
            ("drive-backup", {"device": "drive0", "sync": "none", "target": str(tgt)}),
            hmp('qemu-io drive0 "write -P 0x5e 0 512"'),
            hmp('qemu-io drive0 "aio_flush"'),
            ("block-job-cancel", {"device": "drive0", "force": True}),
        ]
        r, _, err = converse(binary, sockdir, ["-drive", f"file={img},if=none,id=drive0"], steps)
        assert r[:3] == [{}, "", ""], (binary, r, err)
        old = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x41 0 512", str(tgt)],
                             capture_output=True, text=True)
        assert old.returncode == 0 and "verification failed" not in old.stdout, \
            (binary, old.stdout, old.stderr)

