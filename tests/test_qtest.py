"""`-accel qtest` as QEMU's iotests launch it (python/qemu/machine's
QEMUQtestMachine): the test listens on a QMP socket and on a qtest socket, and
the emulator connects to both (`-chardev socket,path=` without `server=on`,
`-mon mode=control`, `-qtest unix:path=`). Under qtest no guest runs; ferrovm's
board is then its device tree, whose drives are attached to their devices.

Where QEMU 7.2 runs the same command line, the answers are compared. Debian's
QEMU has no qtest accelerator, so it gets `-accel tcg -S` in front: QEMU uses the
first -accel that initializes (vl.c configure_accelerators), so the `-accel qtest`
after it is never looked at, and -S keeps the guest from running. That builds the
same q35 board, whose QOM numbering without KVM is the one qtest has. One QEMU
boot serves the whole module."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from qmp_util import ExecuteError, Qmp


class QtestMachine:
    """The emulator launched as iotests' VM launches it."""

    def __init__(self, binary, extra, sockdir, prefix=()):
        self.mon = os.path.join(sockdir, "mon.sock")
        self.qt = os.path.join(sockdir, "qtest.sock")
        self.qmp = Qmp.listen(self.mon)
        self.qsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.qsock.bind(self.qt)
        self.qsock.listen(1)
        self.argv = [binary, *prefix, "-display", "none", "-vga", "none",
                     "-chardev", f"socket,id=mon,path={self.mon}",
                     "-mon", "chardev=mon,mode=control",
                     "-qtest", f"unix:path={self.qt}", "-accel", "qtest",
                     "-nodefaults", "-display", "none", "-accel", "qtest", *extra]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.qmp.accept(20)
            self.qsock.settimeout(20)
            self.qconn, _ = self.qsock.accept()
        except BaseException:
            self.kill()
            raise AssertionError(f"{self.argv} did not connect: {self.output()}")
        self.qfile = self.qconn.makefile("r")

    def qtest(self, line):
        self.qconn.sendall((line + "\n").encode())
        return self.qfile.readline()

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def quit(self):
        self.qmp.cmd("quit")
        rc = self.proc.wait(20)
        self.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def close(self):
        self.qmp.close()
        self.qsock.close()
        if hasattr(self, "qconn"):
            self.qconn.close()


def error(q, name, args=None):
    try:
        q.cmd(name, args)
    except ExecuteError as e:
        return e.error_class, str(e)
    return None


def block_shape(entries):
    """query-block: what must be equal (the auto-named nodes and sizes on
    disk are each run's own)."""
    out = []
    for b in entries:
        e = {k: v for k, v in b.items() if k != "inserted"}
        if "inserted" in b:
            ins = b["inserted"]
            e["inserted"] = {"keys": sorted(ins), "drv": ins["drv"], "ro": ins["ro"],
                             "file": ins["file"], "image-keys": sorted(ins["image"])}
        out.append(e)
    return sorted(out, key=lambda e: e["device"])


@pytest.fixture(scope="module")
def images():
    d = tempfile.mkdtemp(prefix="fvqt")
    paths = {}
    for name in ("a", "b", "c"):
        paths[name] = os.path.join(d, f"{name}.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", paths[name], "1M"], check=True)
    yield paths
    shutil.rmtree(d, ignore_errors=True)


def board_args(images):
    return ["-M", "q35",
            "-drive", f"if=virtio,id=drive0,file={images['a']},format=qcow2,cache=writeback,"
                      "aio=threads,node-name=top",
            "-drive", "if=ide,id=drive1,media=cdrom",
            "-device", "virtio-scsi-pci,id=vio-scsi",
            "-drive", f"if=none,id=drive2,file={images['b']},format=qcow2,cache=writeback,aio=threads",
            "-device", "scsi-hd,id=scsi0,drive=drive2"]


def exercise(m, images):
    """The same requests to either emulator; what they answered."""
    q = m.qmp
    r = {"block": block_shape(q.cmd("query-block")),
         "unknown": m.qtest("frobnicate 1"),
         "in-use": error(q, "blockdev-del", {"node-name": "top"})}
    n = len(q.events)
    assert q.cmd("device_del", {"id": "scsi0"}) == {}
    r["deleted"] = q.wait_event("DEVICE_DELETED", 10, start=n)["data"]
    r["block-after-del"] = block_shape(q.cmd("query-block"))
    q.cmd("blockdev-add", {"node-name": "n1", "driver": "file", "filename": images["c"]})
    r["add"] = q.cmd("device_add", {"driver": "scsi-hd", "id": "virtio", "bus": "vio-scsi.0",
                                    "drive": "n1"})
    r["block-after-add"] = block_shape(q.cmd("query-block"))
    r["n1-in-use"] = error(q, "blockdev-del", {"node-name": "n1"})
    r["no-bus"] = error(q, "device_add", {"driver": "scsi-hd", "id": "x", "bus": "nope.0",
                                          "drive": "n1"})
    r["controller-hotplug"] = error(q, "device_add", {"driver": "virtio-scsi-pci", "id": "y"})
    r["peripherals"] = sorted((p["name"], p["type"])
                              for p in q.cmd("qom-list", {"path": "/machine/peripheral"}))
    # QEMU keeps running when the peer of a client-mode monitor goes away
    # (no reconnect=): qtest still answers; SIGTERM then ends it.
    q.close()
    r["alive-after-monitor-left"] = m.qtest("frobnicate 2")
    m.proc.send_signal(signal.SIGTERM)
    r["exit"] = m.proc.wait(20)
    m.close()
    return r


@pytest.fixture(scope="module")
def qemu_answers(qemu, images):
    d = tempfile.mkdtemp(prefix="fvq", dir="/tmp")
    try:
        m = QtestMachine(qemu, board_args(images), d, prefix=("-accel", "tcg", "-S"))
        try:
            return exercise(m, images)
        finally:
            m.kill()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_board_answers_as_qemus(ferrovm, qemu_answers, images, sockdir):
    m = QtestMachine(ferrovm, board_args(images), sockdir)
    try:
        ours = exercise(m, images)
    finally:
        m.kill()
    for key, theirs in qemu_answers.items():
        assert ours[key] == theirs, f"{key}:\n ferrovm: {json.dumps(ours[key])}\n qemu:    {json.dumps(theirs)}"
    # What the comparison stands on.
    qdevs = {b["device"]: b.get("qdev") for b in ours["block"]}
    assert qdevs == {"drive0": "/machine/peripheral-anon/device[0]/virtio-backend",
                     "drive1": "/machine/unattached/device[16]", "drive2": "scsi0"}
    cd = next(b for b in ours["block"] if b["device"] == "drive1")
    assert (cd["removable"], cd["tray_open"], "inserted" in cd) == (True, False, False)
    assert ours["deleted"] == {"device": "scsi0", "path": "/machine/peripheral/scsi0"}
    assert "drive2" not in [b["device"] for b in ours["block-after-del"]]
    assert ours["in-use"] == ("GenericError", "Node top is in use")
    assert ours["unknown"] == "FAIL Unknown command 'frobnicate'\n"


def test_qtest_clock_and_log(ferrovm, sockdir):
    m = QtestMachine(ferrovm, [], sockdir)
    try:
        assert m.qtest("clock_step") == "OK 0\n"  # no timer: no deadline to go to
        assert m.qtest("clock_step 100") == "OK 100\n"
        assert m.qtest("clock_step 0x100") == "OK 356\n"
        assert m.qtest("clock_set 50") == "OK 356\n"  # never backwards
        assert m.qtest("clock_set 1000000") == "OK 1000000\n"
        assert m.qtest("endianness") == "OK little\n"
        assert m.qtest("readl 0x1000").startswith("FAIL 'readl' needs guest memory")
        assert m.quit() == 0
    finally:
        m.kill()
    # QEMU logs the protocol on stderr without -qtest-log.
    log = m.output()
    assert "] OPENED" in log and "[R +" in log and "] clock_step 100\n" in log, log
    assert "] OK 1000000\n" in log, log
    # At exit the chardev closes the connection (char_socket_finalize), so
    # the log ends with CLOSED, as QEMU 7.2's (-accel tcg) does.
    assert re.search(r"\[I \+\d+\.\d+\] CLOSED\n$", log), log


def test_qtest_log_none_and_machine_none(ferrovm, sockdir):
    """`-M none -accel qtest` (the probes' machine) serves QMP and qtest too."""
    m = QtestMachine(ferrovm, ["-M", "none", "-qtest-log", "none"], sockdir)
    try:
        assert m.qmp.cmd("query-status")["status"] == "running"
        assert m.qtest("clock_step 5") == "OK 5\n"
        assert m.quit() == 0
    finally:
        m.kill()
    assert "OPENED" not in m.output()


def test_monitor_over_client_chardev_runs_and_stops(ferrovm, images, sockdir):
    m = QtestMachine(ferrovm, board_args(images), sockdir)
    q = m.qmp
    try:
        assert q.greeting["QMP"]["version"]["qemu"]["major"] == 7
        assert q.cmd("query-status") == {"status": "running", "singlestep": False,
                                         "running": True}
        n = len(q.events)
        q.cmd("stop")
        assert q.event_names()[n:] == ["STOP"]
        assert q.cmd("query-status")["status"] == "paused"
        q.cmd("cont")
        assert q.event_names()[n:] == ["STOP", "RESUME"]
        assert q.cmd("query-status")["status"] == "running"
        # No KVM VM under qtest: KVM is not in use (QEMU's kvm_enabled()),
        # no vCPU exists.
        assert q.cmd("query-kvm") == {"enabled": False, "present": True}
        assert q.cmd("query-cpus-fast") == []
        kinds = {p["name"]: p["type"] for p in q.cmd("qom-list", {"path": "/machine/peripheral"})}
        assert kinds["vio-scsi"] == "child<virtio-scsi-pci>" and kinds["scsi0"] == "child<scsi-hd>"
        q.cmd("quit")
        q.wait_event("SHUTDOWN", 10, data={"guest": False, "reason": "host-qmp-quit"})
        assert m.proc.wait(20) == 0
    finally:
        m.kill()


def run(binary, *args):
    p = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def machine_lines(text):
    """-machine help: {name: (description suffixes)} and the order of names."""
    lines = text.splitlines()
    marks = {}
    for line in lines[1:]:
        name, rest = line[:20].rstrip(), line[21:]
        assert line[20] == " " and name and " " not in name, line
        tags = tuple(t for t in (" (default)", " (deprecated)") if rest.endswith(t))
        alias = rest.rsplit(" (alias of ", 1)[1].rstrip(")") if " (alias of " in rest else None
        marks[name] = (tags, alias)
    return lines[0], marks, [line[:20].rstrip() for line in lines[1:]]


def test_machine_help_has_qemus_format(ferrovm, qemu):
    rc, out, err = run(ferrovm, "-machine", "help")
    assert rc == 0 and not err
    qrc, qout, _ = run(qemu, "-machine", "help")
    assert qrc == 0
    head, ours, order = machine_lines(out)
    qhead, theirs, qorder = machine_lines(qout)
    assert head == qhead == "Supported machines are:"
    # Every type ferrovm lists is QEMU's, with QEMU's default, alias and
    # deprecation markers (ferrovm's own "ferrovm" type aside), in QEMU's order.
    for name, mark in ours.items():
        if name != "ferrovm":
            assert theirs.get(name) == mark, (name, mark, theirs.get(name))
    common = [n for n in qorder if n in ours]
    assert [n for n in order if n in theirs] == common
    # iotests' testenv.get_default_machine finds the same default machine.
    default = next(n for n, (t, _) in ours.items() if " (default)" in t)
    assert default == "pc-i440fx-7.2" and ours["pc"][1] == default
    # And query-machines agrees: the same table.
    assert {"q35", "pc", "pc-q35-2.4", "pc-i440fx-1.4", "none"} <= set(ours)


def test_accel_and_format_help(ferrovm, qemu):
    rc, out, _ = run(ferrovm, "-accel", "help")
    qrc, qout, _ = run(qemu, "-accel", "help")
    assert rc == qrc == 0
    assert out.splitlines()[0] == qout.splitlines()[0] == "Accelerators supported in QEMU binary:"
    assert set(out.splitlines()[1:]) <= set(qout.splitlines()[1:]), (out, qout)
    # iotests.supported_formats: the second word on of each line.
    opts = ["-nodefaults", "-display", "none", "-accel", "qtest", "-drive", "format=help"]
    rc, out, err = run(ferrovm, *opts)
    qrc, qout, _ = run(qemu, *opts[:4], "tcg", *opts[5:])
    assert rc == qrc == 0 and not err, err
    lines, qlines = out.splitlines(), qout.splitlines()
    assert len(lines) == len(qlines) == 2
    for ours, theirs in zip(lines, qlines):
        assert ours.split(":")[0] == theirs.split(":")[0]
        formats = ours.split(":")[1].split()
        assert formats == sorted(formats) and {"file", "raw", "qcow2"} <= set(formats)
        assert set(formats) <= set(theirs.split(":")[1].split()), (ours, theirs)


@pytest.mark.parametrize("args, what", [
    (["-drive", "if=ide,media=cdrom"], "interface 'if=ide'"),
    (["-drive", "if=none,id=c,media=cdrom"], "'media=cdrom'"),
    (["-device", "virtio-scsi-pci"], "'virtio-scsi-pci'"),
    (["-device", "scsi-hd,drive=d"], "'scsi-hd'"),
])
def test_devices_without_a_model_need_qtest(ferrovm, args, what):
    rc, out, err = run(ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", *args)
    assert rc == 1 and not out
    assert f"{what} has no register model in ferrovm (accepted only under -accel qtest" in err, err
