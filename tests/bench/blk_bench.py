"""make bench, virtio-blk part: the same test guest (plan=blk-bench) on ferrovm and on
QEMU q35, against the same image file with cache=none on both, and the host's own speed
on that file (fio, O_DIRECT) as the ceiling. Also start-up to the first serial byte with a
virtio disk attached, against a bare-KVM floor (tests/bench/kvm_floor.c) built here.

The guest polls the used ring with interrupts suppressed on both VMMs alike (every guest
interrupt runs its handler in emulated ring 0 on these hosts) and reports interrupt-driven
QD1 latency separately. The machine is shared and noisy: read the ratios."""
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FIELDS = ("seq_read_mbps", "seq_write_mbps", "rand4k_qd1_iops", "rand4k_qd32_iops", "irq_qd1_lat_us")
IMAGE_MIB = 256
BENCH_APPEND = "plan=blk-bench bench_mib=64 bench_secs=2"
BENCH_RUNS = 3


def drive(image, legacy_off):
    dev = "virtio-blk-pci,drive=d0" + (",disable-legacy=on" if legacy_off else "")
    return ["-drive", f"file={image},format=raw,if=none,id=d0,cache=none", "-device", dev]


def guest_bench(argv, timeout=600):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    m = re.search(r"^bench (.*)$", p.stdout, re.M)
    if not m:
        raise RuntimeError(f"{argv[0]}: no bench line (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(1))}


def fio(image, rw, bs, depth, secs=3):
    out = subprocess.run(
        ["fio", "--name=host", f"--filename={image}", "--direct=1", "--ioengine=io_uring",
         f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}", f"--runtime={secs}", "--time_based",
         "--size=64M", "--output-format=json"],
        capture_output=True, text=True, timeout=120)
    job = json.loads(out.stdout)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["bw_bytes"] / 1e6, side["iops"]


def host_ceiling(image):
    if not shutil.which("fio"):
        raise RuntimeError("fio is missing (scripts/deps.sh installs it)")
    return {
        # The guest's sequential phases: 128 KiB requests, 8 in flight.
        "seq_read_mbps": fio(image, "read", "128k", 8)[0],
        "seq_write_mbps": fio(image, "write", "128k", 8)[0],
        "rand4k_qd1_iops": fio(image, "randread", "4k", 1)[1],
        "rand4k_qd32_iops": fio(image, "randread", "4k", 32)[1],
    }


def first_byte(argv, timeout=60):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        r, _, _ = select.select([p.stdout.fileno()], [], [], timeout)
        if r and os.read(p.stdout.fileno(), 1):
            return time.perf_counter() - t0
        return None
    finally:
        p.kill()
        p.wait()


def build_floor(workdir):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kvm_floor.c")
    exe = os.path.join(workdir, "kvm_floor")
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def run(ferrovm, guest, qemu, runs=15):
    work = tempfile.mkdtemp(prefix="fvbench", dir="/var/tmp")
    image = os.path.join(work, "bench.img")
    with open(image, "wb") as f:
        # Written, not sparse, so reads hit the disk rather than holes.
        chunk = os.urandom(1 << 20)
        for _ in range(IMAGE_MIB):
            f.write(chunk)
    common = ["-m", "256", "-nodefaults", "-display", "none", "-serial", "stdio", "-kernel", guest]
    res = {"host": host_ceiling(image)}
    # Each VMM twice, alternating, and the median per figure: this host's
    # I/O figures swing by tens of percent from one run to the next.
    per_vmm = {"ferrovm": [], "qemu q35": []}
    for _ in range(BENCH_RUNS):
        per_vmm["ferrovm"].append(guest_bench([ferrovm, "-accel", "kvm"] + common + ["-append", BENCH_APPEND]
                                           + drive(image, False)))
        if qemu:
            per_vmm["qemu q35"].append(guest_bench([qemu, "-accel", "kvm", "-machine", "q35"] + common
                                                + ["-append", BENCH_APPEND] + drive(image, True)))
    for name, rs in per_vmm.items():
        if rs:
            res[name] = {k: statistics.median(r[k] for r in rs if k in r) for k in FIELDS}
            res[name + " runs"] = rs
    print("\n| virtio-blk | ferrovm | QEMU q35 | host (fio) | ferrovm/QEMU | ferrovm/host |")
    print("|---|---|---|---|---|---|")
    for k in FIELDS:
        f, q, h = res["ferrovm"].get(k), res.get("qemu q35", {}).get(k), res["host"].get(k)
        ratio = lambda a, b: "n/a" if a is None or not b else f"{a / b:.2f}"
        if k == "irq_qd1_lat_us":  # lower is better: QEMU/ferrovm keeps "higher is better"
            qr = "n/a" if f is None or q is None or not f else f"{q / f:.2f}"
        else:
            qr = ratio(f, q)
        print(f"| {k} | {f} | {q} | {'n/a' if h is None else round(h, 1)} | {qr} | {ratio(f, h) if k != 'irq_qd1_lat_us' else 'n/a'} |")

    floor = build_floor(work)
    floor_t = statistics.median(t for t in (first_byte([floor]) for _ in range(runs)) if t)
    bare = [ferrovm, "-accel", "kvm"] + common + ["-append", "plan=poweroff"]
    no_disk = statistics.median(t for t in (first_byte(bare) for _ in range(runs)) if t)
    disk = statistics.median(t for t in (first_byte(bare + drive(image, False)) for _ in range(runs)) if t)
    res["startup"] = {"floor_ms": floor_t * 1e3, "ferrovm_ms": no_disk * 1e3, "ferrovm_disk_ms": disk * 1e3}
    print(f"\nstart-up to first serial byte (median of {runs}): bare-KVM floor {floor_t * 1e3:.2f} ms, "
          f"ferrovm {no_disk * 1e3:.2f} ms ({no_disk / floor_t:.2f}x floor), "
          f"ferrovm + virtio disk {disk * 1e3:.2f} ms ({disk / floor_t:.2f}x floor, "
          f"{(disk / no_disk - 1) * 100:+.1f}% for the disk)")
    print(json.dumps(res))
    shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    run(os.environ.get("FERROVM", "target/release/ferrovm"), os.environ.get("TESTGUEST", "build/testguest.elf"),
        shutil.which("qemu-system-x86_64"))
