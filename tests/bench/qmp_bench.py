"""The QMP half of `make bench`: start-up to greeting, round-trip latency and
RSS while paused with 128 MiB of guest RAM, ferrovm against QEMU q35."""
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rtt_tool():
    out = os.path.join(tempfile.gettempdir(), "ferrovm_qmp_rtt")
    src = os.path.join(HERE, "qmp_rtt.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        subprocess.run(["cc", "-O2", "-o", out, src], check=True)
    return out


def probe(argv, rounds=2000, pin=None):
    """`pin`: run emulator and client on this one CPU, which takes the host's
    cross-CPU wake-up (an IPI, expensive under nested KVM) out of the round trip."""
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "qmp.sock")
    taskset = ["taskset", "-c", str(pin)] if pin is not None else []
    cmd = taskset + argv + ["-S", "-display", "none", "-nodefaults", "-qmp", f"unix:{sock},server=on,wait=off"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    while True:
        try:
            s.connect(sock)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if p.poll() is not None:
                raise SystemExit(f"{argv[0]} exited: {p.stderr.read().decode()[-500:]}")
            if time.perf_counter() - t0 > 30:
                p.kill()
                raise SystemExit(f"{argv[0]}: no QMP socket within 30 s")
            time.sleep(0.0002)
    f = s.makefile("rwb", buffering=0)
    f.readline()
    greeting = time.perf_counter() - t0
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    with open(f"/proc/{p.pid}/status") as st:
        rss_kb = next(int(l.split()[1]) for l in st if l.startswith("VmRSS:"))
    f.close()
    s.close()  # one client per monitor at a time, as QEMU
    out = subprocess.run(taskset + [rtt_tool(), sock, str(rounds)], capture_output=True, text=True, timeout=120)
    med, p99 = (int(x) / 1000 for x in out.stdout.split())
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    f = s.makefile("rwb", buffering=0)
    f.readline()
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    t = time.perf_counter()
    f.write(b'{"execute":"quit"}\n')
    try:
        while f.readline():
            pass
    except OSError:
        pass
    p.wait(20)
    return {"greeting_ms": greeting * 1000, "rtt_us": med, "rtt_p99_us": p99, "rss_mib": rss_kb / 1024,
            "quit_ms": (time.perf_counter() - t) * 1000}


def sigterm_exit(argv):
    """SIGTERM (libvirt's `virsh destroy`) to process exit, paused with a monitor
    client connected, in ms."""
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "qmp.sock")
    p = subprocess.Popen(argv + ["-S", "-display", "none", "-nodefaults", "-qmp",
                                 f"unix:{sock},server=on,wait=off"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    deadline = time.perf_counter() + 30
    while True:
        try:
            s.connect(sock)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if p.poll() is not None or time.perf_counter() > deadline:
                p.kill()
                raise SystemExit(f"{argv[0]}: no QMP socket")
            time.sleep(0.0002)
    f = s.makefile("rwb", buffering=0)
    f.readline()
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.readline()
    f.write(b'{"execute":"query-status"}\n')     # the machine is built by now
    f.readline()
    t = time.perf_counter()
    p.terminate()
    p.wait(20)
    ms = (time.perf_counter() - t) * 1000
    s.close()
    return ms


def run(ferrovm, qemu, repeats=5):
    rows = {}
    for name, argv in (("ferrovm", [ferrovm, "-accel", "kvm", "-m", "128"]),
                       ("qemu q35", [qemu, "-accel", "kvm", "-machine", "q35", "-m", "128"] if qemu else None)):
        if argv is None:
            continue
        runs = [probe(argv, rounds=1000) for _ in range(repeats)]
        rows[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        pinned = [probe(argv, rounds=1000, pin=0) for _ in range(repeats)]
        rows[name]["rtt_same_cpu_us"] = statistics.median(r["rtt_us"] for r in pinned)
        rows[name]["sigterm_ms"] = statistics.median(sigterm_exit(argv) for _ in range(repeats))
    f, q = rows["ferrovm"], rows.get("qemu q35")
    print("\n| QMP metric | ferrovm | QEMU q35 | ratio | target |")
    print("|---|---|---|---|---|")
    for key, label, unit, target in (("greeting_ms", "start-up to greeting", "ms", "<= 0.1"),
                                     ("rtt_us", "round trip (median)", "us", "<= 0.2"),
                                     ("rtt_p99_us", "round trip (p99)", "us", ""),
                                     ("rtt_same_cpu_us", "round trip, client and VMM on one CPU", "us", ""),
                                     ("rss_mib", "RSS paused, 128 MiB guest", "MiB", "<= 5 MiB"),
                                     ("quit_ms", "quit to exit", "ms", "<= 0.1"),
                                     ("sigterm_ms", "SIGTERM to exit", "ms", "<= 0.1")):
        qv = f"{q[key]:.1f} {unit}" if q else "n/a"
        ratio = f"{f[key] / q[key]:.3f}" if q else "n/a"
        print(f"| {label} | {f[key]:.1f} {unit} | {qv} | {ratio} | {target} |")
    print(json.dumps(rows))
    return rows
