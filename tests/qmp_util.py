"""Helpers for the QMP tests: start ferrovm or QEMU with monitors, talk to them
through the real client library (`qemu.qmp.QMPClient`, wrapped for
synchronous tests) or through a raw socket where the library hides what is
tested (greeting bytes, CRLF, malformed input, event order on the wire)."""
import asyncio
import contextlib
import json
import os
import re
import select
import socket
import subprocess
import tempfile
import threading
import time

from qemu.qmp import ExecuteError, QMPClient

from conftest import Guest

# The commands issue 3 lists; every one must be served (query-commands).
COMMANDS = [
    "qmp_capabilities", "query-status", "stop", "cont", "system_reset", "system_powerdown",
    "system_wakeup", "quit", "inject-nmi", "set-action", "query-name", "query-uuid",
    "query-version", "query-kvm", "query-target", "query-machines", "query-current-machine",
    "query-cpus-fast", "query-hotpluggable-cpus", "query-memory-size-summary", "query-chardev",
    "query-iothreads", "query-commands", "query-qmp-schema", "qom-list", "qom-get",
    "human-monitor-command", "query-block", "query-blockstats", "query-named-block-nodes",
    "block_resize", "query-pci", "device_add", "device_del",
    # issue 9: net and balloon
    "set_link", "netdev_add", "netdev_del", "query-rx-filter", "announce-self", "balloon",
    "query-balloon", "qom-set",
    # issue 13: libvirt's capability probe
    "qom-list-types", "qom-list-properties", "device-list-properties", "query-tpm-models",
    "query-tpm-types", "query-command-line-options", "query-migrate-capabilities",
    "migrate-set-capabilities",
    # libvirt's `virsh domstats`
    "query-stats", "query-stats-schemas", "query-dirty-rate",
    "query-sev-capabilities", "query-sgx-capabilities", "query-cpu-definitions",
    "query-cpu-model-expansion",
    # issue 10: watchdog
    "watchdog-set-action",
    # issue 11: the node graph
    "blockdev-add", "blockdev-del", "blockdev-snapshot-sync", "blockdev-snapshot",
    "block_set_io_throttle",
    # issue 11: reopening nodes
    "blockdev-reopen", "change-backing-file",
    # issue 10: the RTC
    "rtc-reset-reinjection",
    # issue 12: block jobs
    "job-pause", "job-resume", "job-cancel", "job-complete", "job-dismiss", "job-finalize",
    "query-jobs", "query-block-jobs", "block-stream", "block-job-set-speed", "block-job-cancel",
    "block-job-pause", "block-job-resume", "block-job-complete", "block-job-dismiss",
    "block-job-finalize", "drive-mirror", "blockdev-mirror", "drive-backup", "blockdev-backup",
    "block-commit", "blockdev-create", "transaction",
    # dirty bitmaps
    "block-dirty-bitmap-add", "block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
    "block-dirty-bitmap-enable", "block-dirty-bitmap-disable", "block-dirty-bitmap-merge",
    # throttle groups
    "object-add", "object-del",
    # quorum and mirror `replaces`: the graph's edges
    "x-debug-query-block-graph",
    # issue 14: the NBD server
    "nbd-server-start", "nbd-server-add", "nbd-server-remove", "nbd-server-stop",
    "query-block-exports",
]
EVENTS = ["SHUTDOWN", "POWERDOWN", "RESET", "STOP", "RESUME"]


def wait_for(pred, timeout, what):
    """Polls `pred` until it returns a true value; fails naming `what`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def short_tmpdir():
    """A short directory for unix sockets (sun_path holds only 107 bytes)."""
    return tempfile.mkdtemp(prefix="fvq", dir="/tmp")


def vm_argv(binary, testguest=None, *extra, plan="idle", mem="128", smp="1", serial="stdio",
            machine="q35"):
    """Common arguments for ferrovm and QEMU: q35, KVM, no default devices."""
    argv = [binary, "-accel", "kvm", "-machine", machine, "-m", mem, "-smp", smp,
            "-nodefaults", "-display", "none"]
    if serial:
        argv += ["-serial", serial]
    if testguest:
        argv += ["-kernel", testguest, "-append", f"plan={plan}"]
    return argv + list(extra)


# conftest's Guest (serial console on stdout) takes pass_fds itself.
Vmm = Guest


@contextlib.contextmanager
def running(argv, env=None, pass_fds=()):
    """A Vmm killed at the end whatever happens."""
    g = Vmm(argv, env, pass_fds)
    try:
        yield g
    finally:
        g.kill()


def connect_socket(address, timeout=10, proc=None):
    """Connects to a unix path or (host, port), retrying while the VMM starts."""
    deadline = time.monotonic() + timeout
    while True:
        if isinstance(address, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(address)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the VMM exited ({proc.returncode}) before its monitor "
                                     f"at {address} accepted a connection")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing accepts connections at {address} after {timeout}s")
            time.sleep(0.01)


# ---------------------------------------------------------------------------
# QMPClient, synchronously

class _Loop:
    """One asyncio loop in a daemon thread, shared by every Qmp."""
    _lock = threading.Lock()
    _loop = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="qmp-loop").start()
                cls._loop = loop
            return cls._loop


def run_async(coro, timeout=30):
    fut = asyncio.run_coroutine_threadsafe(coro, _Loop.get())
    try:
        return fut.result(timeout)
    except TimeoutError:
        fut.cancel()
        raise AssertionError(f"QMP operation did not finish within {timeout}s")


class Qmp:
    """A `qemu.qmp.QMPClient` driven from synchronous test code. Every event
    it receives is appended to `events` (in arrival order)."""

    def __init__(self, address=None, timeout=10, negotiate=True, proc=None, name="test"):
        self.client = QMPClient(name)
        self.client.await_greeting = True
        self.client.negotiate = negotiate
        self.events = []
        self._cond = threading.Condition()
        self._pump = None
        if address is None:
            return
        sock = address if isinstance(address, socket.socket) else \
            connect_socket(address, timeout, proc)
        run_async(self.client.connect(sock), timeout)
        self._start_pump()

    @classmethod
    def listen(cls, address, name="test"):
        """A client that listens (for `server=off` monitors); call accept()."""
        q = cls(name=name)
        run_async(q.client.start_server(address), 10)
        return q

    def accept(self, timeout=10):
        run_async(self.client.accept(), timeout)
        self._start_pump()
        return self

    def _start_pump(self):
        self._pump = asyncio.run_coroutine_threadsafe(self._pump_events(), _Loop.get())

    async def _pump_events(self):
        async for ev in self.client.events:
            with self._cond:
                self.events.append(dict(ev))
                self._cond.notify_all()

    @property
    def greeting(self):
        return json.loads(bytes(self.client.greeting._raw))

    def cmd(self, name, args=None, timeout=30):
        """Runs a command; returns its `return` value, raises ExecuteError on error."""
        return run_async(self.client.execute(name, args), timeout)

    def error(self, name, args=None, timeout=30):
        """Runs a command that must fail; returns (class, desc)."""
        try:
            r = self.cmd(name, args, timeout)
        except ExecuteError as e:
            return e.error_class, str(e)
        raise AssertionError(f"{name} {args} succeeded ({r!r}); an error was expected")

    def hmp(self, line):
        return self.cmd("human-monitor-command", {"command-line": line})

    def wait_event(self, name, timeout=30, start=0, data=None):
        """The first event `name` at or after index `start` (matching `data`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[start:]:
                    if ev["event"] == name and (data is None or ev.get("data") == data):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} event {data or ''} within {timeout}s; "
                                         f"events: {[e['event'] for e in self.events]}")
                self._cond.wait(min(left, 0.1))

    def event_names(self):
        with self._cond:
            return [e["event"] for e in self.events]

    def close(self):
        if self._pump is not None:
            self._pump.cancel()
        with contextlib.suppress(Exception):
            run_async(self.client.disconnect(), 10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Raw sockets

class Raw:
    """A QMP connection over a plain socket: every received line is checked
    to be one JSON object ending in CRLF."""

    def __init__(self, address, timeout=10, proc=None, sock=None):
        self.sock = sock if sock is not None else connect_socket(address, timeout, proc)
        self.buf = b""
        self.events = []
        self.lines = []

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv_line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no complete message within {timeout}s; have {self.buf[:200]!r}")
            # select, not a socket timeout: another thread may be sending.
            if not select.select([self.sock], [], [], left)[0]:
                continue
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf[:200]!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        line += b"\n"
        self.lines.append(line)
        return line

    def recv(self, timeout=10, lenient=False):
        """The next message (event or reply). `lenient`: a line that is not
        JSON (QEMU prints a double that overflowed as `inf`) comes back as
        {"<raw>": text} instead of failing."""
        line = self.recv_line(timeout)
        assert line.endswith(b"\r\n"), f"message does not end in CRLF: {line[-80:]!r}"
        body = line[:-2]
        assert b"\r" not in body and b"\n" not in body, f"message spans lines: {line!r}"
        try:
            msg = json.loads(body)
        except ValueError:
            if not lenient:
                raise
            return {"<raw>": body.decode(errors="replace")}
        assert isinstance(msg, dict), line
        return msg

    def reply(self, timeout=10):
        """The next reply; events before it go to `events`."""
        while True:
            msg = self.recv(timeout)
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def cmd(self, request, timeout=10):
        """Sends a request (dict or raw text) and returns its reply."""
        self.send(json.dumps(request) if isinstance(request, dict) else request)
        return self.reply(timeout)

    def execute(self, name, args=None, **extra):
        req = {"execute": name, **extra}
        if args is not None:
            req["arguments"] = args
        return self.cmd(req)

    def greet(self, timeout=10):
        self.greeting = self.recv(timeout)
        return self.greeting

    def negotiate(self, timeout=10):
        """Reads the greeting and negotiates; returns self."""
        self.greet(timeout)
        r = self.execute("qmp_capabilities")
        assert r == {"return": {}}, r
        return self

    def expect_silence(self, seconds):
        """Asserts nothing arrives for `seconds`."""
        if self.buf:
            raise AssertionError(f"unexpected data: {self.buf[:200]!r}")
        if not select.select([self.sock], [], [], seconds)[0]:
            return
        chunk = self.sock.recv(1 << 16)
        raise AssertionError(f"unexpected data: {chunk[:200]!r}")

    def close(self):
        # shutdown() first: it ends the connection even while another thread
        # is blocked sending on this socket (close() alone would not).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def error_of(reply):
    assert "error" in reply, f"expected an error reply, got {reply}"
    return reply["error"]["class"], reply["error"]["desc"]


# ---------------------------------------------------------------------------
# Serial console and processes

def ticks(guest):
    """The `tick K` numbers the idle test guest printed so far."""
    with guest._cond:
        return [int(m.group(1)) for line in guest.lines
                for m in [re.search(r"\btick (\d+)", line)] if m]


def thread_ids(pid):
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# ---------------------------------------------------------------------------
# Shapes, for comparing replies of QEMU and ferrovm

def json_type(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "str"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "list"
    return "dict"


def shape(v):
    """Keys and JSON types, recursively. A list becomes the sorted set of its
    element shapes, so lengths (and duplicates) do not matter."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        seen = []
        for x in v:
            s = shape(x)
            if s not in seen:
                seen.append(s)
        return ["list"] + sorted(seen, key=lambda s: json.dumps(s, sort_keys=True))
    return json_type(v)


def shape_diff(a, b, path="$"):
    """Human-readable differences between two shapes (empty if equal)."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}.{k}: only in the second ({b[k]})")
            elif k not in b:
                out.append(f"{path}.{k}: only in the first ({a[k]})")
            else:
                out += shape_diff(a[k], b[k], f"{path}.{k}")
        return out
    return [f"{path}: {json.dumps(a)} != {json.dumps(b)}"]


def start_vm(launch, binary, testguest, sockdir, *extra, paused=True, plan="idle", smp="1",
             mem="128", serial="stdio", name="q"):
    """Starts `binary` with one `-qmp unix:` monitor through conftest's
    `launch` (killed at the end of the test); returns (guest, socket path)."""
    sock = os.path.join(sockdir, name)
    argv = vm_argv(binary, testguest, *(["-S"] if paused else []),
                   "-qmp", f"unix:{sock},server=on,wait=off", *extra,
                   plan=plan, smp=smp, mem=mem, serial=serial)
    return launch(argv), sock
