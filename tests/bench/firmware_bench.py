"""make bench, firmware part: SeaBIOS on q35 booting firmware/bootdisk from a
virtio-blk-pci disk, ferrovm against QEMU with the same command line. Timed: process
start to the boot sector's first serial byte ("b" of "bootdisk: mbr"), and where the
time goes, from when SeaBIOS's debug log lines (isa-debugcon, port 0x402, polled every
millisecond) appear. Runs alternate between the VMMs; medians. The machine is shared
and noisy: read the ratio."""
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bootdisk  # noqa: E402  (tests/bootdisk.py)

RUNS = 3
# SeaBIOS 1.16 debug lines that open a phase, in boot order (firmware/bootdisk/seabios-q35.log).
MILESTONES = (
    ("first debug byte", None),
    ("PCI probing", "=== PCI device probing ==="),
    ("VGA ROM scan", "Scan for VGA option rom"),
    ("option ROMs", "Scan for option roms"),
    # Printed at the end of prepareboot(); next come make_bios_readonly() (the PAM
    # registers lock the shadowed BIOS: "locking shadow ram" at debug level 3) and int 19h.
    ("e820 map (prepareboot)", "e820 map has"),
    ("Booting from", "Booting from Hard Disk"),
)


def argv(vmm, image, debuglog):
    return [vmm, "-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio",
            "-chardev", f"file,id=seabios,path={debuglog}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios",
            "-drive", f"if=none,id=d0,file={image},format=raw",
            "-device", "virtio-blk-pci,drive=d0,bootindex=1"]


def boot_once(vmm, image, debuglog, timeout=60):
    """Seconds from start to each milestone and to the first serial byte (None: never)."""
    if os.path.exists(debuglog):
        os.remove(debuglog)
    marks = {name: None for name, _ in MILESTONES}
    marks["first serial byte"] = None
    t0 = time.perf_counter()
    p = subprocess.Popen(argv(vmm, image, debuglog), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    log = b""
    try:
        fd = p.stdout.fileno()
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([fd], [], [], 0.001)
            now = time.perf_counter() - t0
            if r:
                byte = os.read(fd, 1)
                if not byte:
                    break
                if byte != b"b":
                    raise RuntimeError(f"{vmm}: first serial byte {byte!r}, expected b'b'")
                marks["first serial byte"] = now
                break
            try:
                with open(debuglog, "rb") as f:
                    f.seek(len(log))
                    log += f.read()
            except FileNotFoundError:
                pass
            for name, text in MILESTONES:
                if marks[name] is None and (log if text is None else text.encode() in log):
                    marks[name] = now
            if p.poll() is not None:
                break
    finally:
        p.kill()
        p.wait()
    return marks


def run(ferrovm, qemu, runs=RUNS):
    work = tempfile.mkdtemp(prefix="fvfwbench", dir="/var/tmp")
    try:
        image = bootdisk.compose(os.path.join(work, "boot.img"), "disk A")
    except (FileNotFoundError, ValueError) as e:
        print(f"\nfirmware boot: skipped ({e})")
        return None
    vmms = [("ferrovm", ferrovm)] + ([("qemu q35", qemu)] if qemu else [])
    per_vmm = {name: [] for name, _ in vmms}
    for _ in range(runs):                       # alternating, so drift hits both alike
        for name, path in vmms:
            per_vmm[name].append(boot_once(path, image, os.path.join(work, "seabios.log")))
    keys = [name for name, _ in MILESTONES] + ["first serial byte"]
    res = {}
    for name, rs in per_vmm.items():
        res[name] = {k: (statistics.median(v) if (v := [r[k] for r in rs if r[k] is not None])
                         else None) for k in keys}
        res[name + " runs"] = rs
    shutil.rmtree(work, ignore_errors=True)

    fmt = lambda x: "n/a" if x is None else f"{x * 1e3:.0f} ms"
    ratio = lambda a, b: "n/a" if a is None or not b else f"{a / b:.2f}"
    f, q = res["ferrovm"], res.get("qemu q35", {})
    print(f"\n| SeaBIOS boot, since process start (median of {runs}) | ferrovm | QEMU q35 | ferrovm/QEMU |")
    print("|---|---|---|---|")
    for k in keys:
        print(f"| {k} | {fmt(f[k])} | {fmt(q.get(k))} | {ratio(f[k], q.get(k))} |")
    print(f"firmware boot to the boot sector's first serial byte: ferrovm {fmt(f['first serial byte'])}, "
          f"QEMU q35 {fmt(q.get('first serial byte'))}, ratio {ratio(f['first serial byte'], q.get('first serial byte'))}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    run(os.environ.get("FERROVM", "target/release/ferrovm"), shutil.which("qemu-system-x86_64"),
        int(os.environ.get("BENCH_RUNS", RUNS)))
