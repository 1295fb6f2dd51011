"""-pidfile is locked as QEMU 7.2 locks it (fcntl write lock, held for the
process's life): a second instance with the same pidfile is refused with
QEMU's message and leaves the first alone; a pidfile left by a killed
instance does not block the next. libvirt relies on both."""
import os
import signal
import subprocess
import time

import pytest

# softmmu/vl.c + util/oslib-posix.c qemu_write_pidfile, strerror(EAGAIN); checked
# against the real QEMU in test_qemu_and_ferrovm_refuse_each_other_with_one_message.
REFUSAL = "cannot create PID file: Cannot lock pid file: Resource temporarily unavailable"
TIMEOUT = 30


def vm_args(ferrovm, testguest, pidfile, *extra):
    return [ferrovm, "-accel", "kvm", "-m", "128", "-nodefaults", "-display", "none",
            "-serial", "null", "-kernel", testguest, "-append", "plan=idle",
            "-pidfile", str(pidfile), *extra]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def wait_pid_in(pidfile, want=None, timeout=10):
    """The PID the file holds once it holds one (`want`, if given)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = pidfile.read_text()
        except FileNotFoundError:
            text = ""
        if text.endswith("\n") and text.strip().isdigit():
            pid = int(text)
            if want is None or pid == want:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"{pidfile} holds {text!r}, want {want or 'a PID'}")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid), f"process {pid} still runs"


def kill_intruder(pidfile, owner):
    """A regression could start a second daemon that took over the pidfile:
    end it, so a failing test leaves no process behind."""
    try:
        pid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return
    if pid != owner and alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def first(ferrovm, testguest, tmp_path):
    """A running instance holding tmp_path/vm.pid (not daemonized)."""
    pidfile = tmp_path / "vm.pid"
    p = subprocess.Popen(vm_args(ferrovm, testguest, pidfile), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_pid_in(pidfile, p.pid) == p.pid
        yield p, pidfile
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        p.stderr.close()


@pytest.mark.parametrize("daemonize", [False, True], ids=["foreground", "-daemonize"])
def test_second_instance_is_refused_and_the_first_runs_on(ferrovm, testguest, first, daemonize):
    p, pidfile = first
    extra = ["-daemonize"] if daemonize else []
    try:
        r = run(vm_args(ferrovm, testguest, pidfile, *extra))
    finally:
        kill_intruder(pidfile, p.pid)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [f"ferrovm: {REFUSAL}"], r.stderr
    time.sleep(0.3)
    assert p.poll() is None, "the first instance is unaffected"
    assert pidfile.read_text() == f"{p.pid}\n", "the pidfile still holds the first PID"
    # The lock is still held: a third try is refused too.
    assert run(vm_args(ferrovm, testguest, pidfile)).returncode == 1
    p.terminate()
    assert p.wait(10) == 0
    assert not pidfile.exists(), "the first instance removes its pidfile at exit"


def test_the_daemon_holds_the_lock(ferrovm, testguest, tmp_path):
    pidfile = tmp_path / "vm.pid"
    r = run(vm_args(ferrovm, testguest, pidfile, "-daemonize"))
    assert r.returncode == 0, r.stderr
    daemon = wait_pid_in(pidfile)
    try:
        # The launcher has exited: only the daemon can hold the lock now.
        r = run(vm_args(ferrovm, testguest, pidfile))
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [f"ferrovm: {REFUSAL}"], r.stderr
        assert pidfile.read_text() == f"{daemon}\n"
        assert alive(daemon)
    finally:
        os.kill(daemon, signal.SIGTERM)
    wait_gone(daemon)
    assert not pidfile.exists()


@pytest.mark.parametrize("daemonize", [False, True], ids=["foreground", "-daemonize"])
def test_a_pidfile_left_by_a_killed_instance_does_not_block_a_restart(
        ferrovm, testguest, first, daemonize):
    p, pidfile = first
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert pidfile.read_text() == f"{p.pid}\n", "SIGKILL leaves the stale pidfile behind"
    extra = ["-daemonize"] if daemonize else []
    q = subprocess.Popen(vm_args(ferrovm, testguest, pidfile, *extra), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    new = None
    try:
        if daemonize:
            assert q.wait(TIMEOUT) == 0, q.stderr.read()
            new = wait_pid_in(pidfile)
        else:
            new = wait_pid_in(pidfile, q.pid)
        assert new != p.pid and alive(new)
        assert pidfile.read_text() == f"{new}\n", "the stale content is replaced, not appended to"
    finally:
        if new:
            os.kill(new, signal.SIGTERM)
            wait_gone(new)
        if q.poll() is None:
            q.kill()
        q.wait(10)
        q.stderr.close()


def test_qemu_and_ferrovm_refuse_each_other_with_one_message(ferrovm, qemu, tmp_path):
    """Differential: the same lock (so each refuses the other) and the same words."""
    pidfile = tmp_path / "x.pid"
    base = ["-machine", "none", "-S", "-nodefaults", "-display", "none", "-pidfile", str(pidfile)]
    for holder, prog, other in ((qemu, "qemu-system-x86_64", ferrovm),
                                (ferrovm, "ferrovm", qemu)):
        h = subprocess.Popen([holder, *base], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_pid_in(pidfile, h.pid)
            same = run([holder, *base])
            cross = run([other, *base])
        finally:
            h.terminate()
            h.wait(10)
        assert same.returncode == 1 and cross.returncode == 1, (same.stderr, cross.stderr)
        assert same.stderr.strip().splitlines() == [f"{prog}: {REFUSAL}"], same.stderr
        other_prog = "ferrovm" if other == ferrovm else "qemu-system-x86_64"
        assert cross.stderr.strip().splitlines() == [f"{other_prog}: {REFUSAL}"], cross.stderr
        assert not pidfile.exists(), f"{prog} removes its pidfile at exit"
