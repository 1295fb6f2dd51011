"""COM1 on a socket chardev (`-chardev socket,...,server=on -serial chardev:ID`):
the connected client sees the guest's console, as with QEMU."""
import os
import socket
import subprocess
import time

from conftest import Guest


def read_until(sock, needle, timeout=20):
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while needle not in data and time.time() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def connect_unix(path, timeout=10):
    deadline = time.time() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def test_wait_on_holds_the_guest_until_a_console_client_connects(ferrovm, testguest, tmp_path):
    path = str(tmp_path / "console.sock")
    g = Guest([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
               "-chardev", f"socket,id=con0,path={path},server=on,wait=on",
               "-serial", "chardev:con0", "-kernel", testguest, "-append", "plan=poweroff"])
    try:
        deadline = time.time() + 10
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert g.proc.poll() is None, "the guest ran (and powered off) before a console client connected"
        s = connect_unix(path)
        text = read_until(s, b"\npoweroff")
        assert "ok 1 - serial" in text and "\npoweroff" in text, text
        assert g.wait_exit(30) == 0
    finally:
        g.kill()


def test_console_on_an_inherited_listening_socket_serves_one_client_at_a_time(ferrovm, testguest, tmp_path):
    path = str(tmp_path / "inherited.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    fd = listener.fileno()
    p = subprocess.Popen([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
                          "-chardev", f"socket,id=con0,fd={fd},server=on,wait=off",
                          "-serial", "chardev:con0", "-kernel", testguest, "-append", "plan=idle"],
                         pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    listener.close()
    try:
        first = connect_unix(path)
        assert "tick" in read_until(first, b"tick 2")
        second = connect_unix(path)
        second.settimeout(0.5)
        try:
            early = second.recv(100)
        except socket.timeout:
            early = b""
        assert early == b"", "a second client is served only when the first leaves"
        first.close()
        assert "tick" in read_until(second, b"tick")
        second.close()
    finally:
        p.terminate()
        assert p.wait(10) == 0, p.stderr.read().decode()


def test_console_on_an_inherited_connected_socket_as_qemumachine_passes_it(ferrovm, testguest):
    # QEMU's Python QEMUMachine: -chardev socket,id=console,fd=N -serial chardev:console,
    # with N one end of a socketpair.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.fileno()
    p = subprocess.Popen([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-vga", "none",
                          "-chardev", f"socket,id=console,fd={fd}", "-serial", "chardev:console",
                          "-kernel", testguest, "-append", "plan=poweroff"],
                         pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    theirs.close()
    try:
        text = read_until(ours, b"\npoweroff")
        assert "ok 1 - serial" in text and "\npoweroff" in text, text
        assert p.wait(30) == 0, p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
        ours.close()


def test_console_on_a_pty_as_libvirt_uses_it(ferrovm, testguest, tmp_path):
    # libvirt's default console: -chardev pty; it finds the path in query-chardev
    # (older versions in QEMU's "char device redirected to" line).
    import re
    from qmp_util import Qmp
    sock = str(tmp_path / "qmp.sock")
    g = Guest([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults", "-S",
               "-chardev", "pty,id=charserial0",
               "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0"}',
               "-qmp", f"unix:{sock},server=on,wait=off",
               "-kernel", testguest, "-append", "plan=idle"])
    try:
        with Qmp(sock, proc=g.proc) as q:
            chardevs = {c["label"]: c["filename"] for c in q.cmd("query-chardev")}
            assert chardevs.get("charserial0", "").startswith("pty:/dev/pts/"), chardevs
            path = chardevs["charserial0"][len("pty:"):]
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                q.cmd("cont")
                data = b""
                deadline = time.time() + 20
                while b"tick 2" not in data and time.time() < deadline:
                    try:
                        data += os.read(fd, 4096)
                    except BlockingIOError:
                        time.sleep(0.02)
                assert b"ok 1 - serial" in data and b"tick 2" in data, data[-500:]
            finally:
                os.close(fd)
            q.cmd("quit")
        assert g.wait_exit(20) == 0
        assert re.search(r"char device redirected to /dev/pts/\d+ \(label charserial0\)",
                         g.stderr.decode()), g.stderr.decode()
    finally:
        g.kill()
