#!/usr/bin/env python3
"""make bench: ferrovm against QEMU in the same run, booting the same test guest.

Boot: time from process start to the guest's first serial byte, and to the
guest's ACPI poweroff (process exit). Memory: RSS of the VMM beyond the guest
RAM it touched (from /proc/PID/smaps: total RSS minus the RSS of the guest RAM
mappings). QEMU microvm has no ACPI PM block, so its poweroff is not timed.
The machine is shared and noisy: read the ratios, not the absolute times.
"""
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time

FERROVM = os.environ.get("FERROVM", "target/release/ferrovm")
GUEST = os.environ.get("TESTGUEST", "build/testguest.elf")
QEMU = shutil.which("qemu-system-x86_64")
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
MEM_MIB = 128

COMMON = ["-m", str(MEM_MIB), "-nodefaults", "-display", "none", "-serial", "stdio", "-kernel", GUEST]


def emulators():
    out = [("ferrovm", [FERROVM, "-accel", "kvm"] + COMMON, True)]
    if QEMU:
        out.append(("qemu q35", [QEMU, "-accel", "kvm", "-machine", "q35"] + COMMON, True))
        out.append(("qemu microvm", [QEMU, "-accel", "kvm", "-machine", "microvm"] + COMMON, False))
    return out


def boot_once(argv, wait_exit, timeout=120):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv + ["-append", "plan=poweroff"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = None
    buf = b""
    fd = p.stdout.fileno()
    while time.perf_counter() - t0 < timeout:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            if first is None:
                first = time.perf_counter() - t0
            buf += chunk
            if not wait_exit and b"\n1.." in buf:
                break
    done = None
    if wait_exit:
        try:
            p.wait(max(1, timeout - (time.perf_counter() - t0)))
            done = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        p.kill()
        p.wait()
    return first, done


def rss_beyond_guest(argv):
    """Boots plan=idle, waits for ticks, and splits RSS into guest RAM and the rest (MiB)."""
    p = subprocess.Popen(argv + ["-append", "plan=idle"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        seen = b""
        while b"tick 3" not in seen and time.time() < deadline:
            r, _, _ = select.select([p.stdout.fileno()], [], [], 0.5)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
        total = guest = 0
        size = rss = 0
        with open(f"/proc/{p.pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    size = hi - lo
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
                    total += rss
                    # Guest RAM is one anonymous mapping of at least the RAM size below 4 GiB.
                    if size >= MEM_MIB << 20 and size <= (MEM_MIB << 20) + (4 << 20):
                        guest += rss
        return total / 1024, guest / 1024
    finally:
        p.kill()
        p.wait()


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="ms", scale=1000):
    return "n/a" if x is None else f"{x * scale:.1f} {unit}"


def main():
    if not os.path.exists(FERROVM) or not os.path.exists(GUEST):
        sys.exit("bench: build first (make bench builds ferrovm and the test guest)")
    results = {}
    for name, argv, poweroff in emulators():
        runs = [boot_once(argv, poweroff) for _ in range(RUNS if name != "qemu q35" else max(1, RUNS // 3))]
        results[name] = {"first_byte": med([r[0] for r in runs]), "poweroff": med([r[1] for r in runs])}
        print(f"{name:14} first serial byte {fmt(results[name]['first_byte']):>12}   "
              f"poweroff {fmt(results[name]['poweroff']):>12}", flush=True)
    total, guest = rss_beyond_guest([FERROVM, "-accel", "kvm"] + COMMON)
    results["ferrovm"]["rss_total_mib"] = total
    results["ferrovm"]["rss_guest_mib"] = guest
    print(f"ferrovm RSS: {total:.1f} MiB total, {guest:.1f} MiB guest RAM touched, "
          f"{total - guest:.1f} MiB VMM beyond guest RAM (target <= 5 MiB)")
    f = results["ferrovm"]
    print("\n| metric | ferrovm | QEMU microvm | QEMU q35 | ferrovm/microvm | ferrovm/q35 |")
    print("|---|---|---|---|---|---|")
    for key, label in (("first_byte", "start-up to first serial byte"), ("poweroff", "start-up to guest poweroff")):
        mv = results.get("qemu microvm", {}).get(key)
        q = results.get("qemu q35", {}).get(key)
        ratio = lambda a, b: "n/a" if a is None or b is None else f"{a / b:.3f}"
        print(f"| {label} | {fmt(f[key])} | {fmt(mv)} | {fmt(q)} | {ratio(f[key], mv)} | {ratio(f[key], q)} |")
    print(f"| VMM RSS beyond touched guest RAM | {total - guest:.1f} MiB | | | | |")
    print("\n" + json.dumps(results))
    import qmp_bench
    qmp_bench.run(FERROVM, QEMU)
    import blk_bench
    blk_bench.run(FERROVM, GUEST, QEMU)
    import throttle_bench
    throttle_bench.run(FERROVM, GUEST, QEMU)
    import qcow2_bench
    qcow2_bench.run(FERROVM, GUEST, QEMU)
    import job_bench
    job_bench.run(FERROVM, QEMU)
    import firmware_bench
    firmware_bench.run(FERROVM, QEMU)
    import net_bench
    net_bench.run(FERROVM, GUEST, QEMU)


if __name__ == "__main__":
    main()
