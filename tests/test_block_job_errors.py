"""A job whose target fills up (a 16 MiB tmpfs under a 64 MiB copy): with
`on-target-error=report` the job fails with BLOCK_JOB_ERROR and ENOSPC in
BLOCK_JOB_COMPLETED, with `stop` (and `enospc`) it pauses with the error in
its io-status until cancelled. The source is untouched either way. The same
scenarios on QEMU 7.2 (`-S`) give the same replies and events (a mirror
may report one error per request in flight: repeats are folded)."""
import hashlib
import json
import os
import re

import pytest

from conftest import mounted_tmpfs
from qmp_util import Qmp
from test_virtio_blk import pattern

SIZE_MIB = 64


@pytest.fixture
def small_fs(tmp_path):
    for mnt in mounted_tmpfs(tmp_path / "full", "16m"):
        yield str(mnt)


def J(cmd, policy, extra=None):
    target_key = "on-target-error"
    args = {"device": "d0", "job-id": "j", "target": "%T/t.raw", "format": "raw",
            "sync": "full", target_key: policy, **(extra or {})}
    return cmd, args


SCENARIOS = {
    "mirror-report": [J("drive-mirror", "report"), ("wait", "BLOCK_JOB_COMPLETED")],
    "backup-report": [J("drive-backup", "report"), ("wait", "BLOCK_JOB_COMPLETED")],
    "mirror-stop": [J("drive-mirror", "stop"), ("wait", "BLOCK_JOB_ERROR"),
                    ("wait-paused", None), ("query-block-jobs", None),
                    ("block-job-cancel", {"device": "j", "force": True}),
                    ("wait", "BLOCK_JOB_CANCELLED")],
    "backup-enospc": [J("drive-backup", "enospc"), ("wait", "BLOCK_JOB_ERROR"),
                      ("wait-paused", None), ("query-block-jobs", None),
                      # Paused by the error policy is a user pause: a soft
                      # cancel is refused.
                      ("block-job-cancel", {"device": "j"}),
                      ("block-job-cancel", {"device": "j", "force": True}),
                      ("wait", "BLOCK_JOB_CANCELLED")],
}


def run(binary, src, full, sock, steps, launch):
    if os.path.exists(f"{full}/t.raw"):
        os.unlink(f"{full}/t.raw")
    g = launch([binary, "-nodefaults", "-M", "q35", "-S", "-display", "none",
                "-qmp", f"unix:{sock},server=on,wait=off",
                "-drive", f"file={src},format=raw,if=none,id=d0"])
    out = []
    with Qmp(sock, proc=g.proc) as q:
        for name, args in steps:
            if name == "wait":
                q.wait_event(args, timeout=60)
                continue
            if name == "wait-paused":
                # The job parks once its requests in flight are done.
                err = max(i for i, e in enumerate(q.events) if e["event"] == "BLOCK_JOB_ERROR")
                q.wait_event("JOB_STATUS_CHANGE", data={"id": "j", "status": "paused"},
                             timeout=30, start=err)
                continue
            args = json.loads(json.dumps(args).replace("%T", full)) if args else args
            try:
                r = q.cmd(name, args)
                if isinstance(r, list):
                    for j in r:
                        for k in ("offset", "len", "busy"):
                            j.pop(k, None)
                out.append((name, r))
            except Exception as e:  # noqa: BLE001 - the error is the answer
                out.append((name, getattr(e, "error_class", "?"), str(e)))
        q.wait_event("JOB_STATUS_CHANGE", data={"id": "j", "status": "null"}, timeout=30)
        q.cmd("quit")
        events = []
        for e in q.events:
            if e["event"] == "SHUTDOWN":
                continue
            data = {k: v for k, v in (e.get("data") or {}).items() if k not in ("offset", "len")}
            ev = (e["event"], data)
            if not (events and events[-1] == ev and e["event"] == "BLOCK_JOB_ERROR"):
                events.append(ev)
    g.wait_exit(30)
    return json.loads(re.sub(r"#block\d+", "#block", json.dumps([out, events]).replace(full, "@")))


@pytest.mark.parametrize("case", list(SCENARIOS))
def test_a_full_target_fails_the_job_as_qemus_does(ferrovm, qemu, launch, tmp_path, sockdir,
                                                   small_fs, case):
    src = str(tmp_path / "src.raw")
    data = pattern(0, SIZE_MIB * 2048, seed=9)
    with open(src, "wb") as f:
        f.write(data)
    digest = hashlib.sha256(data).hexdigest()
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        runs[name] = run(binary, src, small_fs, f"{sockdir}/{name}.sock", SCENARIOS[case],
                         launch)
        with open(src, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{name} changed the source"
    ours, theirs = runs["ferrovm"], runs["qemu"]
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<80} {y!s}" for x, y in zip(ours[1], theirs[1]))
    assert any(e[0] == "BLOCK_JOB_ERROR" for e in ours[1]), ours[1]
