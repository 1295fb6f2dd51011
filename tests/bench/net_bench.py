"""make bench, virtio-net part (issue 9): ferrovm against QEMU q35 in the same run, the
same test guest on both, both with a userspace TAP backend (vhost=off).

Throughput: plan=net-blast, guest to host (tx) and host to guest (rx), 1500- and 64-byte
frames (Ethernet header included, no FCS). The guest's own counters are the figure: for
tx the frames the device returned as used, cross-checked against the TAP's rx_packets;
for rx the IPv4 UDP frames to its IP it counted. The rx sender is tests/bench/net_blast.c
(an AF_PACKET raw socket on the TAP, sendmmsg, built here with cc -O2): it keeps the
TAP's queue to the VMM full, so the VMM's receive path, not the sender, sets the rate;
its "offered" rate (frames the TAP accepted) is printed beside the guest's.

Memory: RSS of the VMM beyond the guest RAM mapping with a virtio-blk, a virtio-net and a
virtio-balloon device attached (plan=net: the NIC's queues are live), split from
/proc/PID/smaps with bench.py's rule. The issue's target is <= 5 MiB for ferrovm.

Every emulator runs inside a private network namespace made here and deleted at the end,
so no frame leaves it. Needs root, iproute2 and cc. The machine is shared and noisy
(two cores: guest vCPU, VMM I/O and the sender compete; one VMM's figure swings by tens
of percent from one run to the next): each figure is the median of NET_BENCH_RUNS (3)
runs, interleaved ferrovm/QEMU per case, and the ratios are what to read.

QEMU's throughput boots use qboot (`-bios qboot.rom`, shipped with QEMU) when it is
installed: SeaBIOS runs in emulated ring 0 on this nested host and takes ~9 s per boot,
which would allow one run per figure; the firmware is gone once the guest runs, and the
virtio-net device and TAP backend are the same. The RSS boot keeps QEMU's default
firmware (SeaBIOS), as bench.py does."""
import json
import os
import statistics
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (MEM_MIB: the guest-RAM mapping rule of rss_beyond_guest)

MEM_MIB = bench.MEM_MIB
BLAST_SECS = int(os.environ.get("NET_BENCH_SECS", "2"))
RUNS = int(os.environ.get("NET_BENCH_RUNS", "3"))
HOST_IP = "10.0.2.1"
CASES = (("tx", 1500), ("tx", 64), ("rx", 1500), ("rx", 64))
# Whole lines only: serial output arrives in arbitrary chunks.
READY = re.compile(rb"^ok \d+ - net\r?\n", re.M)
MAC = re.compile(rb"^# net mac=([0-9a-f:]{17}) ", re.M)
RESULT = re.compile(rb"^# blast (tx|rx) frames=(\d+) bytes=(\d+) usecs=(\d+)\r?\n", re.M)


class Netns:
    """A private network namespace and the ifup script QEMU's script= protocol calls."""

    def __init__(self, work):
        self.name = "fvnb" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.exec(["ip", "link", "set", "lo", "up"])
        self.ifup = os.path.join(work, "ifup")
        with open(self.ifup, "w") as f:
            f.write(f"#!/bin/sh\nip addr add {HOST_IP}/24 dev \"$1\" && ip link set \"$1\" up\n")
        os.chmod(self.ifup, 0o755)

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def exec(self, cmd, **kw):
        return subprocess.run(self.prefix() + cmd, capture_output=True, text=True, check=True, timeout=30, **kw)

    def stat(self, ifname, counter):
        try:
            return int(self.exec(["cat", f"/sys/class/net/{ifname}/statistics/{counter}"]).stdout)
        except (subprocess.CalledProcessError, ValueError):
            return None

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


class Guest:
    """One emulator process in the namespace, its serial output collected as it comes."""

    def __init__(self, ns, argv):
        # `ip netns exec` execs the command, so p.pid is the emulator's pid (for smaps).
        self.p = subprocess.Popen(ns.prefix() + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        self.out = b""

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while True:
            m = pattern.search(self.out)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {pattern.pattern!r} within {timeout} s:\n{self.tail()}")
            r, _, _ = select.select([fd], [], [], min(left, 0.5))
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.p.wait()
                    raise RuntimeError(f"exited ({self.p.returncode}) before {pattern.pattern!r}:\n{self.tail()}")
                self.out += chunk

    def tail(self):
        err = b""
        if self.p.poll() is not None:
            err = self.p.stderr.read()
        return (self.out[-1500:] + b"\n" + err[-1000:]).decode(errors="replace")

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def qboot(qemu):
    """QEMU's qboot firmware if installed (QEMU finds it by name in its data directory)."""
    dirs = [os.path.join(os.path.dirname(os.path.realpath(qemu)), "..", "share", "qemu"),
            "/usr/share/qemu", "/usr/local/share/qemu"]
    return any(os.path.exists(os.path.join(d, "qboot.rom")) for d in dirs)


def vmm_argv(kind, binary, guest, tap, ifup, append, extra=(), fast_firmware=False):
    legacy = ",disable-legacy=on" if kind == "qemu" else ""
    argv = [binary, "-accel", "kvm", "-m", str(MEM_MIB), "-nodefaults", "-display", "none",
            "-serial", "stdio", "-kernel", guest, "-append", append]
    if kind == "qemu":
        argv[1:1] = ["-machine", "q35"] + (["-bios", "qboot.rom"] if fast_firmware and qboot(binary) else [])
    argv += list(extra)
    argv += ["-netdev", f"tap,id=n0,ifname={tap},script={ifup},downscript=no,vhost=off",
             "-device", f"virtio-net-pci,netdev=n0,romfile={legacy}"]
    return argv


def blast(ns, kind, binary, guest, sender, direction, size, tap):
    append = f"plan=net-blast blast_dir={direction} blast_size={size} blast_secs={BLAST_SECS}"
    argv = vmm_argv(kind, binary, guest, tap, ns.ifup, append, fast_firmware=True)
    g = Guest(ns, argv)
    s = None
    try:
        g.wait_for(READY, 90)  # QEMU's SeaBIOS alone takes ~9 s on this nested host
        mac = g.wait_for(MAC, 1).group(1).decode()
        extra = {}
        if direction == "rx":
            g.wait_for(re.compile(rb"^# blast rx: counting", re.M), 10)
            # The guest counts for BLAST_SECS from the first frame; keep sending past that.
            s = subprocess.Popen(ns.prefix() + [sender, tap, mac, str(size), str(BLAST_SECS + 1)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            m = g.wait_for(RESULT, BLAST_SECS + 15)
            s.terminate()  # it prints its count on SIGTERM
            so, se = s.communicate(timeout=30)
            sm = re.search(r"sent=(\d+) secs=([\d.]+) full=(\d+)", so)
            if not sm:
                raise RuntimeError(f"net_blast failed: {so} {se}")
            extra["offered_pps"] = int(sm.group(1)) / float(sm.group(2))
            extra["tap_full"] = int(sm.group(3))
        else:
            m = g.wait_for(RESULT, BLAST_SECS + 15)
            # Every frame the guest sent since the TAP came up: one ARP request and the blast.
            extra["tap_rx_packets"] = ns.stat(tap, "rx_packets")
        frames, nbytes, usecs = (int(x) for x in m.group(2, 3, 4))
        if not usecs:
            raise RuntimeError(f"guest counted no time:\n{g.tail()}")
        return {"frames": frames, "bytes": nbytes, "usecs": usecs, "pps": frames / usecs * 1e6,
                "mbps": nbytes * 8 / usecs, **extra}
    finally:
        if s and s.poll() is None:
            s.kill()
            s.wait()
        g.close()


def smaps_split(pid):
    """(total RSS, guest-RAM RSS) in MiB, by bench.rss_beyond_guest's rule: guest RAM is the
    one mapping of MEM_MIB to MEM_MIB + 4 MiB."""
    total = guest = size = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split()[0] if line.strip() else ""
            if line[0] in "0123456789abcdef" and "-" in first:
                lo, hi = (int(x, 16) for x in first.split("-"))
                size = hi - lo
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
                total += rss
                if MEM_MIB << 20 <= size <= (MEM_MIB << 20) + (4 << 20):
                    guest += rss
    return total / 1024, guest / 1024


def rss_with_devices(ns, kind, binary, guest, image, tap):
    legacy = ",disable-legacy=on" if kind == "qemu" else ""
    disk = ["-drive", f"file={image},format=raw,if=none,id=d0", "-device", f"virtio-blk-pci,drive=d0{legacy}",
            "-device", f"virtio-balloon-pci{legacy}"]
    argv = vmm_argv(kind, binary, guest, tap, ns.ifup, "plan=net", disk)
    g = Guest(ns, argv)
    try:
        g.wait_for(READY, 90)
        g.wait_for(re.compile(rb"^# net: answering", re.M), 5)  # after its ping: both paths used
        time.sleep(0.5)
        total, ram = smaps_split(g.p.pid)
        return {"rss_total_mib": total, "rss_guest_mib": ram, "rss_beyond_mib": total - ram}
    finally:
        g.close()


def build_sender(work):
    exe = os.path.join(work, "net_blast")
    subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "net_blast.c")], check=True)
    return exe


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def num(x, fmt="{:.1f}"):
    return "n/a" if x is None else fmt.format(x)


def run(ferrovm, guest, qemu):
    t_start = time.monotonic()
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("\nvirtio-net bench skipped: needs root and iproute2 (network namespaces, TAPs)")
        return None
    if not qemu:
        print("\nvirtio-net bench: qemu-system-x86_64 is missing, ferrovm's figures only")
    work = tempfile.mkdtemp(prefix="fvnetbench", dir="/var/tmp")
    ns = None
    vmms = [("ferrovm", "ferrovm", ferrovm)] + ([("qemu q35", "qemu", qemu)] if qemu else [])
    res = {name: {} for name, _, _ in vmms}
    try:
        sender = build_sender(work)
        ns = Netns(work)
        n = 0
        # Interleaved per case, so a noisy spell on the host hits both VMMs alike.
        runs = {name: {} for name in res}
        for direction, size in CASES:
            key = f"{direction}{size}"
            for _ in range(RUNS):
                for name, kind, binary in vmms:
                    n += 1
                    try:
                        r = blast(ns, kind, binary, guest, sender, direction, size, f"fvnb{n}")
                        runs[name].setdefault(key, []).append(r)
                    except (RuntimeError, subprocess.SubprocessError) as e:
                        print(f"{name} {key}: {e}", file=sys.stderr)
            for name in res:
                rs = runs[name].get(key, [])
                res[name][key] = {k: statistics.median(r[k] for r in rs) for k in rs[0]} if rs else None
                res[name][key + " runs"] = rs
        image = os.path.join(work, "disk.img")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        for name, kind, binary in vmms:
            n += 1
            try:
                res[name]["rss"] = rss_with_devices(ns, kind, binary, guest, image, f"fvnb{n}")
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                print(f"{name} rss: {e}", file=sys.stderr)
                res[name]["rss"] = None
    finally:
        if ns:
            ns.close()
        shutil.rmtree(work, ignore_errors=True)

    f, q = res["ferrovm"], res.get("qemu q35", {})
    print(f"\n| virtio-net, TAP vhost=off, {BLAST_SECS} s per blast | ferrovm | QEMU q35 | ferrovm/QEMU |")
    print("|---|---|---|---|")
    for direction, size in CASES:
        key = f"{direction}{size}"
        a, b = f.get(key) or {}, q.get(key) or {}
        label = f"{'guest->host (tx)' if direction == 'tx' else 'host->guest (rx)'} {size} B"
        print(f"| {label} Mbit/s | {num(a.get('mbps'))} | {num(b.get('mbps'))} | {ratio(a.get('mbps'), b.get('mbps'))} |")
        print(f"| {label} kpps | {num(a.get('pps') and a['pps'] / 1e3)} | {num(b.get('pps') and b['pps'] / 1e3)} "
              f"| {ratio(a.get('pps'), b.get('pps'))} |")
    a, b = f.get("rss") or {}, q.get("rss") or {}
    print(f"| RSS beyond guest RAM, blk+net+balloon (MiB; target <= 5) | {num(a.get('rss_beyond_mib'))} "
          f"| {num(b.get('rss_beyond_mib'))} | {ratio(a.get('rss_beyond_mib'), b.get('rss_beyond_mib'))} |")
    print(f"| RSS total / guest RAM touched (MiB) | {num(a.get('rss_total_mib'))} / {num(a.get('rss_guest_mib'))} "
          f"| {num(b.get('rss_total_mib'))} / {num(b.get('rss_guest_mib'))} | |")
    # The checks that say the figures mean what they claim.
    print(f"per run (median above of {RUNS}):")
    for name, r in res.items():
        for direction, size in CASES:
            for x in r.get(f"{direction}{size} runs") or []:
                if direction == "tx":
                    print(f"  {name} tx{size}: {x['pps'] / 1e3:.1f} kpps; guest counted {x['frames']} frames, "
                          f"TAP rx_packets {x['tap_rx_packets']} (its ARP request included)")
                else:
                    print(f"  {name} rx{size}: {x['pps'] / 1e3:.1f} kpps received by the guest; sender offered "
                          f"{x['offered_pps'] / 1e3:.1f} kpps (TAP queue full {x['tap_full']} times)")
    print(f"virtio-net bench: {time.monotonic() - t_start:.0f} s")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    run(os.environ.get("FERROVM", "target/release/ferrovm"), os.environ.get("TESTGUEST", "build/testguest.elf"),
        shutil.which("qemu-system-x86_64"))
