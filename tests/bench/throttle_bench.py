"""make bench, I/O throttling: how close the guest's write rate comes to a
`-drive bps=` limit (1 MiB/s, QEMU's leaky bucket with its default burst),
measured from the host as query-blockstats' wr_bytes over 5 s while the test
guest (plan=blk-fill) writes as fast as it may, ferrovm and QEMU q35 alike.
The first second is left out: the bucket lets avg/10 through at once."""
import json
import os
import socket
import subprocess
import tempfile
import time

LIMIT = 1 << 20
WINDOW = 5.0


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
        self._reply()                       # greeting
        self.cmd("qmp_capabilities")

    def _reply(self):
        while True:
            m = json.loads(self.f.readline())
            if "event" not in m:
                return m

    def cmd(self, name, args=None):
        self.f.write(json.dumps({"execute": name, "arguments": args or {}}).encode() + b"\n")
        self.f.flush()
        r = self._reply()
        if "error" in r:
            raise RuntimeError(f"{name}: {r['error']}")
        return r["return"]

    def wr_bytes(self):
        return self.cmd("query-blockstats")[0]["stats"]["wr_bytes"]


def measure(argv, image):
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "m.sock")
    p = subprocess.Popen(argv + ["-append", "plan=blk-fill blk_mib=32", "-qmp",
                                 f"unix:{sock},server=on,wait=off",
                                 "-drive", f"file={image},format=raw,if=none,id=d0,bps={LIMIT}",
                                 "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        m = Monitor(sock, p)
        t0 = time.monotonic()
        while m.wr_bytes() == 0 and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        time.sleep(1.0)
        a, ta = m.wr_bytes(), time.monotonic()
        time.sleep(WINDOW)
        b, tb = m.wr_bytes(), time.monotonic()
        return (b - a) / (tb - ta)
    finally:
        p.kill()
        p.wait()


def run(ferrovm, guest, qemu):
    work = tempfile.mkdtemp(prefix="fvthr", dir="/var/tmp")
    image = os.path.join(work, "t.img")
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    common = ["-m", "128", "-nodefaults", "-display", "none", "-serial", "stdio", "-kernel", guest]
    res = {"limit": LIMIT, "ferrovm": measure([ferrovm, "-accel", "kvm"] + common, image)}
    if qemu:
        res["qemu q35"] = measure([qemu, "-accel", "kvm", "-machine", "q35"] + common, image)
    print(f"\n| throttle (bps={LIMIT}, {WINDOW:.0f} s) | measured B/s | measured/limit |")
    print("|---|---|---|")
    for k in ("ferrovm", "qemu q35"):
        if k in res:
            print(f"| {k} | {res[k]:.0f} | {res[k] / LIMIT:.3f} |")
    print(json.dumps({"throttle": res}))
    os.remove(image)
    return res


if __name__ == "__main__":
    import shutil
    run(os.environ.get("FERROVM", "target/release/ferrovm"), os.environ.get("TESTGUEST", "build/testguest.elf"),
        shutil.which("qemu-system-x86_64"))
