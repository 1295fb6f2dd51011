"""Shared fixtures for ferrovm's integration tests: they boot the real binary
on /dev/kvm with the bundled test guest and read its serial console."""
import os
import re
import subprocess
import threading
import time

import pytest

FERROVM = os.environ.get("FERROVM", "")
TESTGUEST = os.environ.get("TESTGUEST", "")


def require(path, what):
    if not path or not os.path.exists(path):
        pytest.fail(f"{what} not found at '{path}': run the tests through 'make test'")


def vmm_binary(name, why):
    """The binary of `name` ("qemu" or "ferrovm") for a test that runs on both;
    `why` says what QEMU is needed for, in the failure when it is missing."""
    import shutil
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.fail("/dev/kvm is missing or not accessible: these tests boot guests on KVM")
    if name == "ferrovm":
        require(FERROVM, "ferrovm binary (FERROVM)")
        return FERROVM
    path = shutil.which("qemu-system-x86_64")
    if not path:
        pytest.fail(f"qemu-system-x86_64 is missing: {why} (Debian's qemu-system-x86)")
    return path


@pytest.fixture(scope="session")
def ferrovm():
    require(FERROVM, "ferrovm binary (FERROVM)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.fail("/dev/kvm is missing or not accessible: these tests boot guests on KVM")
    return FERROVM


@pytest.fixture(scope="session")
def testguest():
    require(TESTGUEST, "test guest ELF (TESTGUEST)")
    return TESTGUEST


class Guest:
    """A running emulator whose stdout is the guest's serial console."""

    def __init__(self, argv, env=None, pass_fds=()):
        self.argv = argv
        # pass_fds: descriptors the child inherits, as libvirt and QEMUMachine hand them.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, pass_fds=pass_fds)
        self.lines = []
        self.stderr = b""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def wait_line(self, pattern, timeout=30, start=0):
        """Waits for a serial line matching `pattern` (regex); returns its match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no serial line matching {pattern!r} within {timeout}s; "
                        f"exit={self.proc.poll()} output:\n" + "\n".join(self.lines[-40:])
                        + f"\nstderr: {self.stderr.decode(errors='replace')[-2000:]}")
                self._cond.wait(min(left, 0.2))

    def wait_exit(self, timeout=30):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv[0]} did not exit within {timeout}s; output:\n"
                                 + "\n".join(self.lines[-40:]))
        self._reader.join(5)
        self._err_reader.join(5)
        return rc

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def launch():
    started = []

    def _launch(argv, env=None):
        g = Guest(argv, env)
        started.append(g)
        return g

    yield _launch
    for g in started:
        g.kill()


def mounted_tmpfs(path, size):
    """Mounts a tmpfs of `size` (mount's syntax: 4M, 16m) on the new
    directory `path` and yields it, unmounted after: writes past it fail
    with a real ENOSPC. Mounting needs root; without it the test fails."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {r.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def guest_args(ferrovm, testguest, append, *extra):
    return [ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-serial", "stdio",
            "-kernel", testguest, "-append", append, *extra]


def tap_results(text):
    """The TAP `ok`/`not ok` lines the test guest printed, as (ok, number, name)."""
    out = []
    for m in re.finditer(r"^(not ok|ok) (\d+) - ([^(\n]*)", text, re.M):
        out.append((m.group(1) == "ok", int(m.group(2)), m.group(3).strip()))
    return out


# --- QMP tests (tests/test_qmp_*.py, helpers in tests/qmp_util.py) ---

@pytest.fixture
def sockdir():
    """A short-named directory for unix sockets, removed afterwards."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="fvq", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def qemu():
    """qemu-system-x86_64 (QEMU 7.2), the oracle of the QMP tests."""
    import shutil
    path = shutil.which("qemu-system-x86_64")
    if not path:
        pytest.fail("qemu-system-x86_64 is missing: QEMU 7.2 is the oracle of the QMP tests "
                    "(Debian's qemu-system-x86)")
    r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if not re.match(r"QEMU emulator version 7\.2\.", r.stdout):
        pytest.fail(f"{path} is not QEMU 7.2: {r.stdout.splitlines()[:1]}")
    return path
