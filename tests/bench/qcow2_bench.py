"""make bench, qcow2: the test guest on ferrovm and on QEMU q35 against the
same kind of fresh images, cache=none on both, reported as ferrovm/QEMU:
- 4 KiB random writes into unallocated clusters (plan=blk-randw: each write
  lands in a 64 KiB cluster not written before, so each allocates), QD1 and
  QD32, on a fresh 2 GiB qcow2 image;
- sequential reads (128 KiB x 8) through a 3-deep backing chain, raw base <-
  qcow2 <- qcow2 <- qcow2 top, with data in the base and the two middle
  layers (plan=blk-seqread), the top and the chain made anew for each run.
Each VMM runs alternately, the median of the runs per figure."""
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile

RUNS = 3
CHAIN_MIB = 128


def img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=120)


def qemu_io(image, fmt, cmd):
    subprocess.run(["qemu-io", "-f", fmt, "-c", cmd, image], check=True, capture_output=True,
                   timeout=120)


def guest(argv, append, image, fmt):
    p = subprocess.run(argv + ["-append", append, "-drive",
                               f"file={image},format={fmt},if=none,id=d0,cache=none",
                               "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    m = re.search(r"^bench (.*)$", p.stdout, re.M)
    if not m or "not ok" in p.stdout:
        raise RuntimeError(f"{argv[0]}: {append}: exit {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-1000:]}")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(1))}


def chain(d):
    base = os.path.join(d, "base.raw")
    with open(base, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(CHAIN_MIB):
            f.write(chunk)
    prev, prev_fmt = base, "raw"
    for i, name in enumerate(("l1.qcow2", "l2.qcow2", "top.qcow2")):
        path = os.path.join(d, name)
        img("create", "-q", "-f", "qcow2", "-b", prev, "-F", prev_fmt, path)
        if i < 2:
            # A quarter of the disk in each middle layer, at different places.
            qemu_io(path, "qcow2", f"write -P 0x{0x11 * (i + 1):x} {i * CHAIN_MIB // 2}M {CHAIN_MIB // 4}M")
        prev, prev_fmt = path, "qcow2"
    return prev


def run(ferrovm, testguest, qemu):
    if not qemu or not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        print("\nqcow2 bench: needs qemu-system-x86_64, qemu-img and qemu-io")
        return None
    work = tempfile.mkdtemp(prefix="fvq2", dir="/var/tmp")
    common = ["-m", "256", "-nodefaults", "-display", "none", "-serial", "stdio", "-kernel", testguest]
    vmms = {"ferrovm": [ferrovm, "-accel", "kvm"] + common,
            "qemu q35": [qemu, "-accel", "kvm", "-machine", "q35"] + common}
    runs = {k: [] for k in vmms}
    for _ in range(RUNS):
        for name, argv in vmms.items():
            fresh = os.path.join(work, "w.qcow2")
            img("create", "-q", "-f", "qcow2", fresh, "2G")
            r = guest(argv, "plan=blk-randw bench_mib=2048 bench_secs=2", fresh, "qcow2")
            d = tempfile.mkdtemp(dir=work)
            r.update(guest(argv, f"plan=blk-seqread bench_mib={CHAIN_MIB}", chain(d), "qcow2"))
            shutil.rmtree(d)
            os.remove(fresh)
            runs[name].append(r)
    fields = ("randw4k_qd1_iops", "randw4k_qd32_iops", "seq_read_mbps")
    res = {name: {k: statistics.median(r[k] for r in rs) for k in fields} for name, rs in runs.items()}
    print("\n| qcow2 | ferrovm | QEMU q35 | ferrovm/QEMU |")
    print("|---|---|---|---|")
    labels = {"randw4k_qd1_iops": "4 KiB random writes, new clusters, QD1 (IOPS)",
              "randw4k_qd32_iops": "4 KiB random writes, new clusters, QD32 (IOPS)",
              "seq_read_mbps": f"sequential read through raw<-qcow2<-qcow2<-qcow2 (MB/s)"}
    for k in fields:
        f, q = res["ferrovm"][k], res["qemu q35"][k]
        print(f"| {labels[k]} | {f:.1f} | {q:.1f} | {f / q:.2f} |")
    print(json.dumps({"qcow2": res, "qcow2 runs": runs}))
    shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    run(os.environ.get("FERROVM", "target/release/ferrovm"), os.environ.get("TESTGUEST", "build/testguest.elf"),
        shutil.which("qemu-system-x86_64"))
