"""qmp-shell and qmp-shell-wrap (installed by PyPI qemu.qmp) against
ferrovm, driven through a stdin pipe as a user would type."""
import importlib.util
import os
import signal
import socket
import subprocess
import sys

import pytest

from qmp_util import connect_socket, start_vm, vm_argv


def shell_command(script, entry):
    """The console script next to this Python, else the module it runs."""
    path = os.path.join(os.path.dirname(sys.executable), script)
    if os.access(path, os.X_OK):
        return [path]
    if importlib.util.find_spec("qemu.qmp.qmp_shell") is None:
        pytest.fail(f"neither {path} nor the module qemu.qmp.qmp_shell is installed "
                    "(PyPI qemu.qmp provides both; 'make build' installs it in build/venv)")
    return [sys.executable, "-c", f"from qemu.qmp.qmp_shell import {entry}; {entry}()"]


def run_shell(argv, lines, timeout=30, cwd=None):
    """Runs a shell in its own process group, which is killed afterwards."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True)
    try:
        out, err = p.communicate("".join(f"{l}\n" for l in lines), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"{argv[0]} did not finish within {timeout}s:\n{out}\n{err}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return p.returncode, out, err


def test_qmp_shell_connects_and_runs_commands(ferrovm, testguest, sockdir, launch):
    g, sock = start_vm(launch, ferrovm, testguest, sockdir, "-name", "shelltest")
    rc, out, err = run_shell(shell_command("qmp-shell", "main") + [sock], [
        "query-status",
        "query-name",
        "qom-get path=/machine property=type",
        "qom-get path=/nope property=type",
        "cont",
        "",  # an empty line shows the events received
        "query-status",
    ])
    assert rc == 0, err
    assert "Welcome to the QMP low-level shell!" in out, out
    assert "Connected to QEMU 7.2." in out, out
    assert '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}' in out, out
    assert '{"return": {"name": "shelltest"}}' in out, out
    assert '{"return": "pc-q35-7.2-machine"}' in out, out
    assert '{"error": {"class": "DeviceNotFound", "desc": "Device \'/nope\' not found"}}' in out, out
    assert "'event': 'RESUME'" in out, out
    assert '{"return": {"status": "running", "singlestep": false, "running": true}}' in out, out
    assert g.proc.poll() is None, "the VM went away when the shell left"


def test_qmp_shell_over_tcp_in_hmp_mode(ferrovm, testguest, launch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = launch(vm_argv(ferrovm, testguest, "-S", "-name", "hmpshell",
                       "-qmp", f"tcp:127.0.0.1:{port},server=on,wait=off"))
    # Wait until the monitor listens (qmp-shell does not retry).
    connect_socket(("127.0.0.1", port), 10, g.proc).close()
    rc, out, err = run_shell(shell_command("qmp-shell", "main") + ["-H", f"127.0.0.1:{port}"],
                             ["info status", "info name", "nosuchcommand"])
    assert rc == 0, err
    assert "VM status: paused (prelaunch)" in out, out
    assert "hmpshell" in out, out
    assert "unknown command: 'nosuchcommand'" in out, out


def test_qmp_shell_wrap_starts_ferrovm_in_client_mode(ferrovm, testguest, sockdir):
    """qmp-shell-wrap listens and appends `-qmp unix:SOCK` (server=off) to the
    command line; ferrovm connects to it."""
    argv = shell_command("qmp-shell-wrap", "main_wrap") + ["--"] + \
        vm_argv(ferrovm, testguest, "-S", "-name", "wrapped", serial="none")
    rc, out, err = run_shell(argv, ["query-name", "query-status", "quit"], cwd=sockdir)
    assert rc == 0, err
    assert '{"return": {"name": "wrapped"}}' in out, out
    assert '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}' in out, out
    assert not [f for f in os.listdir(sockdir) if f.startswith("qmp-shell-wrap")], \
        "the wrap socket was left behind"
