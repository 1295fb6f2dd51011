"""make bench, block jobs: mirror and backup of a 1 GiB raw image full of
data (no holes, so nothing is skipped), ferrovm against QEMU q35 in the same
run and against the raw copy speed of the disk (dd bs=1M conv=fdatasync),
reported as ratios. Each VMM runs stopped (-S, no guest I/O) with the same
-drive; the job's time is from the command to BLOCK_JOB_READY (mirror,
which has flushed the target by then) or BLOCK_JOB_COMPLETED (backup). The
source is read once before, so every run reads it from the page cache."""
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

RUNS = int(os.environ.get("JOB_BENCH_RUNS", "3"))
SIZE_MIB = 1024


class Monitor:
    def __init__(self, path, proc, timeout=30):
        t0 = time.monotonic()
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.s.close()
                if proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"no monitor at {path}")
                time.sleep(0.02)
        self.f = self.s.makefile("rwb")
        self.events = []
        self._next()                        # greeting
        self.cmd("qmp_capabilities")

    def _next(self):
        m = json.loads(self.f.readline())
        if "event" in m:
            self.events.append(m)
        return m

    def cmd(self, name, args=None):
        self.f.write(json.dumps({"execute": name, "arguments": args or {}}).encode() + b"\n")
        self.f.flush()
        while True:
            r = self._next()
            if "event" not in r:
                break
        if "error" in r:
            raise RuntimeError(f"{name}: {r['error']}")
        return r["return"]

    def wait(self, name, timeout=300):
        deadline = time.monotonic() + timeout
        while not any(e["event"] == name for e in self.events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {name}: {[e['event'] for e in self.events]}")
            self._next()
        return next(e for e in self.events if e["event"] == name)


def one_job(argv, src, kind, work):
    tgt = os.path.join(work, "tgt.raw")
    if os.path.exists(tgt):
        os.unlink(tgt)
    sock = os.path.join(work, "m.sock")
    p = subprocess.Popen(argv + ["-S", "-qmp", f"unix:{sock},server=on,wait=off",
                                 "-drive", f"file={src},format=raw,if=none,id=d0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        m = Monitor(sock, p)
        args = {"device": "d0", "target": tgt, "format": "raw", "sync": "full"}
        t0 = time.monotonic()
        if kind == "mirror":
            m.cmd("drive-mirror", args)
            m.wait("BLOCK_JOB_READY")
            t = time.monotonic() - t0
            m.cmd("block-job-cancel", {"device": "d0"})
            m.wait("BLOCK_JOB_COMPLETED")
        else:
            m.cmd("drive-backup", args)
            ev = m.wait("BLOCK_JOB_COMPLETED")
            t = time.monotonic() - t0
            if "error" in ev["data"]:
                raise RuntimeError(f"backup failed: {ev}")
        m.cmd("quit")
        p.wait(30)
        return (SIZE_MIB << 20) / t / 1e6
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def dd_copy(src, work):
    tgt = os.path.join(work, "dd.raw")
    t0 = time.monotonic()
    subprocess.run(["dd", f"if={src}", f"of={tgt}", "bs=1M", "conv=fdatasync"],
                   check=True, capture_output=True)
    t = time.monotonic() - t0
    os.unlink(tgt)
    return (SIZE_MIB << 20) / t / 1e6


def run(ferrovm, qemu):
    if not qemu:
        print("\njob bench: needs qemu-system-x86_64")
        return
    work = tempfile.mkdtemp(dir="/var/tmp")
    src = os.path.join(work, "src.raw")
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={SIZE_MIB}"],
                   check=True, capture_output=True)
    with open(src, "rb") as f:
        while f.read(16 << 20):
            pass
    vmms = {"ferrovm": [ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none"],
            "qemu q35": [qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults",
                         "-display", "none"]}
    runs = {k: {"mirror": [], "backup": []} for k in vmms}
    raw = []
    try:
        for _ in range(RUNS):
            raw.append(dd_copy(src, work))
            for name, argv in vmms.items():
                for kind in ("mirror", "backup"):
                    runs[name][kind].append(one_job(argv, src, kind, work))
    finally:
        subprocess.run(["rm", "-rf", work])
    med = {k: {j: statistics.median(v) for j, v in r.items()} for k, r in runs.items()}
    dd = statistics.median(raw)
    print(f"\n| 1 GiB raw -> raw, MB/s | ferrovm | QEMU q35 | dd | ferrovm/QEMU | ferrovm/dd |")
    print("|---|---|---|---|---|---|")
    for kind in ("mirror", "backup"):
        f, q = med["ferrovm"][kind], med["qemu q35"][kind]
        print(f"| {kind} | {f:.0f} | {q:.0f} | {dd:.0f} | {f / q:.2f} | {f / dd:.2f} |")
    print(json.dumps({"jobs": med, "dd_mbps": dd, "job runs": runs, "dd runs": raw}))


if __name__ == "__main__":
    import shutil
    import sys
    run(sys.argv[1] if len(sys.argv) > 1 else "target/release/ferrovm",
        shutil.which("qemu-system-x86_64"))
