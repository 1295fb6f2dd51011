"""`kill -9` in the middle of each kind of block job while the guest
writes, on QEMU 7.2 and on ferrovm: afterwards `qemu-img check` finds no
corruption in any image the job touched (the mirror and backup source and
target, the stream top, the commit base and the image between). Leaked
clusters (exit 3) may appear in a ferrovm image only where QEMU's run left
them too: QEMU (lazy_refcounts=off) leaks clusters whose refcount reached the
disk before the L2 entry did, which only a metadata write-back during an
allocation can cause; and an image nothing writes must check clean on both."""
import os
import signal
import subprocess
import time

import pytest

from qmp_util import Qmp
from test_block_jobs import filling_guest, slow_down
from test_qcow2 import qemu_img


def chain3(d):
    """base.qcow2 <- mid.qcow2 <- top.qcow2, data in each layer."""
    base, mid, top = (os.path.join(d, f"{n}.qcow2") for n in ("base", "mid", "top"))
    qemu_img("create", "-q", "-f", "qcow2", base, "256M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", mid)
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
    for i, img in enumerate((base, mid)):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        f"write -P {0x40 + i} {(i * 32) + 192}M 32M", img],
                       check=True, capture_output=True)
    return base, mid, top


CASES = {
    # name: (job command builder, images to check)
    "mirror": (lambda d, imgs: ("drive-mirror", {"device": "d0", "sync": "full",
                                                 "format": "qcow2",
                                                 "target": os.path.join(d, "m.qcow2")}),
               ["base", "mid", "top", "m"]),
    "backup": (lambda d, imgs: ("drive-backup", {"device": "d0", "sync": "full",
                                                 "format": "qcow2", "speed": 32 << 20,
                                                 "target": os.path.join(d, "b.qcow2")}),
               ["base", "mid", "top", "b"]),
    "stream": (lambda d, imgs: ("block-stream", {"device": "d0", "speed": 32 << 20}),
               ["base", "mid", "top"]),
    "commit": (lambda d, imgs: ("block-commit", {"device": "d0", "speed": 8 << 20,
                                                 "top": imgs[1], "base": imgs[0]}),
               ["base", "mid", "top"]),
    "active-commit": (lambda d, imgs: ("block-commit", {"device": "d0"}),
                      ["base", "mid", "top"]),
}

# The images each case writes (the guest writes top; mirror and backup their
# target, stream its top, commit its base).
WRITTEN = {"mirror": {"top", "m"}, "backup": {"top", "b"}, "stream": {"top"},
           "commit": {"top", "base"}, "active-commit": {"top", "base"}}


def kill_during(binary, testguest, launch, d, sock, case):
    """Runs `case` on `binary` and kills it mid-job; `qemu-img check` of
    each image: {name: (exit code, output)}."""
    imgs = chain3(d)
    build, names = CASES[case]
    g = filling_guest(launch, binary, testguest, sock,
                      "-drive", f"file={imgs[2]},format=qcow2,if=none,id=d0", stay=True,
                      qemu="qemu" in os.path.basename(binary))
    with Qmp(sock, proc=g.proc) as q:
        slow_down(q, device="d0")
        g.wait_line(r"# blk-fill: writing", timeout=60)
        name, args = build(d, imgs)
        q.cmd(name, args)
        time.sleep(1.0)
        jobs = q.cmd("query-block-jobs")
        assert jobs and jobs[0]["offset"] > 0, f"the job did not copy before the kill: {jobs} {q.events}"
        assert "SHUTDOWN" not in q.event_names(), "the guest stopped writing before the kill"
        os.kill(g.proc.pid, signal.SIGKILL)
        g.proc.wait(10)
    out = {}
    for n in names:
        r = qemu_img("check", os.path.join(d, f"{n}.qcow2"), check=False)
        out[n] = (r.returncode, r.stdout + r.stderr)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_kill_during_a_job_leaves_no_corruption(ferrovm, qemu, testguest, launch, tmp_path,
                                                sockdir, case):
    leaked = {}
    for vmm, binary in (("qemu", qemu), ("ferrovm", ferrovm)):
        d = str(tmp_path / vmm)
        os.makedirs(d)
        for n, (rc, text) in kill_during(binary, testguest, launch, d, f"{sockdir}/{vmm}.sock",
                                         case).items():
            assert rc in (0, 3) and "ERROR" not in text, f"{vmm} {case}: {n}.qcow2 is corrupt:\n{text}"
            if n not in WRITTEN[case]:
                assert rc == 0, f"{vmm} {case}: {n}.qcow2 was not written, yet:\n{text}"
            if rc == 3:
                leaked.setdefault(vmm, set()).add(n)
    extra = leaked.get("ferrovm", set()) - leaked.get("qemu", set())
    assert not extra, f"{case}: ferrovm leaked clusters in {sorted(extra)}, QEMU did not"
