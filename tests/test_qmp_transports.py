"""Monitor transports as management tools use them: -qmp unix/tcp in both
spellings, -chardev socket + -mon, sockets inherited by fd (libvirt hands a
listening one, QEMU's Python QEMUMachine a connected one), client mode
(server=off), several monitors, one client per monitor, wait=on, and
libvirt's `-machine none` capability probe."""
import os
import socket
import subprocess

import pytest

from qmp_util import Qmp, Raw, running, start_vm, vm_argv, wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_monitor(q, status="prelaunch"):
    assert q.greeting["QMP"]["version"]["qemu"]["major"] == 7
    assert q.cmd("query-status")["status"] == status


@pytest.mark.parametrize("opts", ["server=on,wait=off", "server,nowait", "wait=off,server=on"])
def test_qmp_unix(ferrovm, testguest, sockdir, launch, opts):
    path = os.path.join(sockdir, "m")
    g = launch(vm_argv(ferrovm, testguest, "-S", "-qmp", f"unix:{path},{opts}"))
    with Qmp(path, proc=g.proc) as q:
        check_monitor(q)
        q.cmd("quit")
    assert g.wait_exit(20) == 0
    assert not os.path.exists(path), "the socket file outlived the process"


def test_qmp_tcp(ferrovm, testguest, launch):
    port = free_port()
    g = launch(vm_argv(ferrovm, testguest, "-S", "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"))
    with Qmp(("127.0.0.1", port), proc=g.proc) as q:
        check_monitor(q)
        q.cmd("cont")
        g.wait_line(r"tick 1\b", 20)
        check_monitor(q, "running")


def test_chardev_socket_with_mon(ferrovm, testguest, sockdir, launch):
    path = os.path.join(sockdir, "m")
    g = launch(vm_argv(ferrovm, testguest, "-S",
                       "-chardev", f"socket,id=mon0,path={path},server=on,wait=off",
                       "-mon", "chardev=mon0,mode=control"))
    with Qmp(path, proc=g.proc) as q:
        check_monitor(q)
        labels = [c["label"] for c in q.cmd("query-chardev")]
        assert "mon0" in labels, labels


def test_inherited_listening_socket_as_libvirt(ferrovm, testguest, sockdir):
    path = os.path.join(sockdir, "monitor.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)
    fd = lsock.fileno()
    argv = vm_argv(ferrovm, testguest, "-S",
                   "-chardev", f"socket,id=charmonitor,fd={fd},server=on,wait=off",
                   "-mon", "chardev=charmonitor,id=monitor,mode=control")
    with running(argv, pass_fds=[fd]) as g:
        lsock.close()  # only ferrovm holds it now
        with Qmp(path, proc=g.proc) as q:
            check_monitor(q)
        # A listening monitor takes the next client after this one left.
        with Qmp(path, proc=g.proc) as q:
            check_monitor(q)
            q.cmd("quit")
        assert g.wait_exit(20) == 0


def test_inherited_connected_socket_as_qemu_machine(ferrovm, testguest):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.fileno()
    argv = vm_argv(ferrovm, testguest, "-S", "-chardev", f"socket,id=mon,fd={fd}",
                   "-mon", "chardev=mon,mode=control")
    with running(argv, pass_fds=[fd]) as g:
        theirs.close()
        with Qmp(ours, proc=g.proc) as q:
            check_monitor(q)
            q.cmd("cont")
            g.wait_line(r"tick 1\b", 20)
            check_monitor(q, "running")
            q.cmd("quit")
            q.wait_event("SHUTDOWN", 10, data={"guest": False, "reason": "host-qmp-quit"})
        assert g.wait_exit(20) == 0


def test_client_mode_connects_to_a_listening_client(ferrovm, testguest, sockdir):
    """server=off: ferrovm connects out (qmp-shell-wrap works this way)."""
    path = os.path.join(sockdir, "listen")
    q = Qmp.listen(path)
    try:
        with running(vm_argv(ferrovm, testguest, "-S", "-qmp", f"unix:{path}")) as g:
            q.accept(20)
            check_monitor(q)
            q.cmd("cont")
            g.wait_line(r"tick 1\b", 20)
            q.cmd("quit")
            assert g.wait_exit(20) == 0
    finally:
        q.close()


def test_client_mode_tcp(ferrovm, testguest):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    with lsock, running(vm_argv(ferrovm, testguest, "-S",
                                "-qmp", f"tcp:127.0.0.1:{port},server=off")) as g:
        lsock.settimeout(20)
        conn, _ = lsock.accept()
        with Raw(None, sock=conn) as r:
            r.negotiate()
            assert r.execute("query-status")["return"]["status"] == "prelaunch"


def test_client_mode_without_a_listener_fails_at_start_up(ferrovm, testguest, sockdir):
    path = os.path.join(sockdir, "nobody")
    r = subprocess.run(vm_argv(ferrovm, testguest, "-S", "-qmp", f"unix:{path},server=off"),
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert path in r.stderr, r.stderr


def test_several_monitors_at_once(ferrovm, testguest, sockdir, launch):
    a = os.path.join(sockdir, "a")
    c = os.path.join(sockdir, "c")
    port = free_port()
    g = launch(vm_argv(ferrovm, testguest, "-S",
                       "-qmp", f"unix:{a},server=on,wait=off",
                       "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off",
                       "-chardev", f"socket,id=mon2,path={c},server=on,wait=off",
                       "-mon", "chardev=mon2,mode=control"))
    with Qmp(a, proc=g.proc) as qa, Qmp(("127.0.0.1", port), proc=g.proc) as qb, \
            Qmp(c, proc=g.proc) as qc:
        for q in (qa, qb, qc):
            check_monitor(q)
        qb.cmd("cont")
        for q in (qa, qb, qc):
            q.wait_event("RESUME", 10)
        chardevs = {x["label"]: x for x in qc.cmd("query-chardev")}
        local = qb.client._writer.get_extra_info("sockname")
        assert chardevs.get("compat_monitor0", {}).get("filename") == f"unix:{a},server=on", chardevs
        assert chardevs.get("compat_monitor1", {}).get("filename") == \
            f"tcp:127.0.0.1:{port},server=on <-> 127.0.0.1:{local[1]}", chardevs
        assert chardevs.get("mon2", {}).get("filename") == f"unix:{c},server=on", chardevs
        assert all(x["frontend-open"] is True for x in chardevs.values())


def test_one_client_per_monitor(ferrovm, testguest, sockdir, launch):
    g, path = start_vm(launch, ferrovm, testguest, sockdir)
    first = Raw(path, proc=g.proc)
    first.negotiate()
    second = Raw(path, proc=g.proc)  # the connect succeeds: it waits in the backlog
    try:
        second.expect_silence(0.5)
        assert first.execute("query-status")["return"]["status"] == "prelaunch"
        second.expect_silence(0.1)
        first.close()
        second.greet(10)
        assert second.execute("qmp_capabilities") == {"return": {}}
        assert second.execute("query-status")["return"]["status"] == "prelaunch"
    finally:
        first.close()
        second.close()


def test_wait_on_holds_start_up_until_a_client_connects(ferrovm, testguest, sockdir, launch):
    other = os.path.join(sockdir, "other")
    waiting = os.path.join(sockdir, "waiting")
    # No -S: once start-up completes the guest prints on the serial console.
    g = launch(vm_argv(ferrovm, testguest, "-qmp", f"unix:{other},server=on,wait=off",
                       "-qmp", f"unix:{waiting},server=on,wait=on"))
    wait_for(lambda: os.path.exists(waiting), 10, f"{waiting} to appear")
    with Raw(other, proc=g.proc) as early:
        early.expect_silence(0.5)  # no greeting: the monitors are not served yet
        assert g.output() == "", f"the guest started before wait=on was satisfied:\n{g.output()}"
        with Qmp(waiting, proc=g.proc) as q:
            early.greet(10)
            g.wait_line(r"boot 1\b", 20)
            check_monitor(q, "running")
            assert early.execute("qmp_capabilities") == {"return": {}}
            assert early.execute("query-status")["return"]["status"] == "running"


LIBVIRT_PROBE = ["-S", "-no-user-config", "-nodefaults", "-nographic",
                 "-machine", "none,accel=kvm"]


def check_probe(q):
    assert q.cmd("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}
    assert q.cmd("query-cpus-fast") == []
    assert q.cmd("query-kvm") == {"enabled": True, "present": True}
    assert q.cmd("qom-get", {"path": "/machine", "property": "type"}) == "none-machine"
    # QEMU 7.2 (checked live): machine none's default RAM size is 0, so
    # without -m base-memory is 0; with -m N it is N (the differential test
    # covers both).
    assert q.cmd("query-memory-size-summary") == {"base-memory": 0, "plugged-memory": 0}
    assert any(m["name"] == "pc-q35-7.2" for m in q.cmd("query-machines"))
    assert any(e["meta-type"] == "command" for e in q.cmd("query-qmp-schema"))
    assert q.cmd("query-target") == {"arch": "x86_64"}
    assert q.error("query-hotpluggable-cpus")[0] == "GenericError"
    assert q.cmd("cont") == {}
    q.wait_event("RESUME", 10)
    assert q.cmd("query-status")["status"] == "running"
    assert q.cmd("stop") == {}
    q.wait_event("STOP", 10)
    assert q.cmd("query-status")["status"] == "paused"
    assert q.hmp("info status") == "VM status: paused\r\n"
    q.cmd("quit")
    q.wait_event("SHUTDOWN", 10, data={"guest": False, "reason": "host-qmp-quit"})


def test_machine_none_probe_as_libvirt(ferrovm, sockdir):
    path = os.path.join(sockdir, "probe")
    with running([ferrovm, *LIBVIRT_PROBE, "-qmp", f"unix:{path},server=on,wait=off"]) as g:
        with Qmp(path, proc=g.proc) as q:
            check_probe(q)
        assert g.wait_exit(20) == 0


def test_machine_none_probe_daemonized(ferrovm, sockdir):
    """libvirt's probe also adds -daemonize and -pidfile: the launching process
    exits 0 once the monitor is ready; the daemon's pid is in the pidfile."""
    path = os.path.join(sockdir, "probe")
    pidfile = os.path.join(sockdir, "probe.pid")
    r = subprocess.run([ferrovm, *LIBVIRT_PROBE, "-qmp", f"unix:{path},server=on,wait=off",
                        "-pidfile", pidfile, "-daemonize"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    pid = None
    try:
        assert r.returncode == 0, r.stderr
        with open(pidfile) as f:
            pid = int(f.read().strip())
        assert os.path.exists(f"/proc/{pid}")
        with Qmp(path) as q:
            check_probe(q)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 20, "the daemon to exit")
        pid = None
    finally:
        if pid is not None:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
