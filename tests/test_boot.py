"""The machine boots the test guest on KVM: power events, SMP/memory as the
guest sees them through firmware tables, reboots, and command-line errors."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import guest_args, tap_results


def now():
    return str(int(time.time()))


def assert_all_ok(text):
    results = tap_results(text)
    assert results, f"the guest printed no TAP results:\n{text}"
    failed = [r for r in results if not r[0]]
    assert not failed, f"guest checks failed: {failed}\n{text}"
    plan = re.search(r"^1\.\.(\d+)$", text, re.M)
    assert plan and int(plan.group(1)) == len(results), f"TAP plan does not match results:\n{text}"


def test_poweroff_exits_zero_after_all_checks_pass(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, f"plan=poweroff host_time={now()}", "-m", "128"))
    assert g.wait_exit(30) == 0, g.stderr.decode()
    out = g.output()
    assert "boot 1" in out
    assert_all_ok(out)
    assert "poweroff" in out


@pytest.mark.parametrize("off", [["-no-acpi"], ["-machine", "q35,acpi=off"]])
def test_without_acpi_the_guest_finds_no_tables_and_no_pm_block(ferrovm, testguest, launch, off):
    """libvirt passes -no-acpi for a domain without <features><acpi/>. On direct
    boot ferrovm is the firmware: no RSDP (start_info says 0, no scan finds one),
    no PM timer, and with no FADT the guest has no way to power off."""
    g = launch(guest_args(ferrovm, testguest, "plan=poweroff", "-m", "128", *off))
    g.wait_line(r"not ok - poweroff did not happen")
    out = g.output()
    assert re.search(r"^not ok 2 - acpi tables \(cpus=0, no RSDP\)$", out, re.M), out
    assert "no pm timer" in out, out
    assert "(no PM1a_CNT_BLK)" in out, out
    # The other checks are unaffected; PCI is then found through the ports.
    assert re.search(r"^ok 5 - pci host bridge 00:00\.0 8086:29c0$", out, re.M), out
    assert "pci config via ports" in out, out


def test_smp_and_memory_are_what_the_guest_reports(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, f"plan=poweroff host_time={now()}",
                          "-smp", "2", "-m", "256"))
    assert g.wait_exit(30) == 0
    out = g.output()
    assert re.search(r"\bcpus=2\b", out), out
    assert re.search(r"\bmem_mib=256\b", out), out


def test_large_memory_spans_the_pci_hole(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, "plan=poweroff", "-smp", "4,sockets=1,cores=2,threads=2",
                          "-m", "4G"))
    assert g.wait_exit(30) == 0
    out = g.output()
    assert re.search(r"\bcpus=4\b", out), out
    assert re.search(r"\bmem_mib=4096\b", out), out


def test_reboot_boots_the_guest_again(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, "plan=reboot:2"))
    assert g.wait_exit(60) == 0
    boots = re.findall(r"boot (\d+)", g.output())
    assert boots == ["1", "2", "3"], g.output()


def test_every_reset_method_reboots(ferrovm, testguest, launch):
    for method in ("acpi", "kbd", "triple"):
        g = launch(guest_args(ferrovm, testguest, f"plan=reboot:1 reset={method}"))
        assert g.wait_exit(60) == 0, method
        assert re.findall(r"boot (\d+)", g.output()) == ["1", "2"], (method, g.output())


def test_no_reboot_turns_reset_into_exit(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, "plan=reset", "-no-reboot"))
    assert g.wait_exit(30) == 0
    assert re.findall(r"boot (\d+)", g.output()) == ["1"], g.output()


def run_cli(ferrovm, *args):
    return subprocess.run([ferrovm, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_malformed_options_exit_nonzero_naming_them(ferrovm, testguest):
    cases = [
        (["-frobnicate"], "-frobnicate"),
        (["-m", "lots"], "-m"),
        (["-smp", "2,bogus=1"], "bogus"),
        (["-machine", "q35,nonsense=on"], "nonsense"),
        (["-kernel"], "-kernel"),
    ]
    for args, needle in cases:
        r = run_cli(ferrovm, *args)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, f"{args}: want one line, got {r.stderr!r}"
        assert needle in lines[0], f"{args}: {lines[0]!r} does not name {needle}"


def test_missing_kernel_file_is_a_clear_error(ferrovm):
    r = run_cli(ferrovm, "-kernel", "/nonexistent/vmlinuz", "-display", "none")
    assert r.returncode != 0
    assert "/nonexistent/vmlinuz" in r.stderr


def test_garbage_kernel_is_refused(ferrovm, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    r = run_cli(ferrovm, "-kernel", str(junk), "-display", "none")
    assert r.returncode != 0
    assert "kernel" in r.stderr.lower(), r.stderr


def test_version_and_help(ferrovm):
    r = run_cli(ferrovm, "-version")
    assert r.returncode == 0
    assert re.match(r"QEMU emulator version 7\.2\.\d+", r.stdout), r.stdout
    assert "ferrovm" in r.stdout
    r = run_cli(ferrovm, "-h")
    assert r.returncode == 0 and "-kernel" in r.stdout and "-smp" in r.stdout


def test_sigterm_ends_a_running_guest(ferrovm, testguest, launch):
    g = launch(guest_args(ferrovm, testguest, "plan=idle"))
    g.wait_line(r"tick \d+", 30)
    g.proc.terminate()
    assert g.wait_exit(10) == 0


def test_daemonize_detaches_writes_pidfile_and_serial_file(ferrovm, testguest, tmp_path):
    pidfile, serial = tmp_path / "vm.pid", tmp_path / "serial.log"
    r = subprocess.run([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
                        "-daemonize", "-pidfile", str(pidfile), "-serial", f"file:{serial}",
                        "-kernel", testguest, "-append", "plan=idle"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) == pid, "the daemon leads its own session (setsid)"
        deadline = time.time() + 20
        while "tick 2" not in serial.read_text() and time.time() < deadline:
            time.sleep(0.05)
        assert "tick 2" in serial.read_text(), serial.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists(), "the pid file is removed at exit"


def test_daemonize_with_stdio_is_refused(ferrovm, testguest):
    r = run_cli(ferrovm, "-daemonize", "-serial", "stdio", "-kernel", testguest, "-display", "none")
    assert r.returncode != 0
    assert "daemonize" in r.stderr


def test_garbage_kernel_with_S_still_fails_with_a_clear_error(ferrovm, tmp_path):
    # Under -S the machine is built while the monitors start; a bad kernel
    # must still end the process with the loader's message.
    junk = tmp_path / "junk"
    junk.write_bytes(b"MZ" + bytes(4096))
    sock = tmp_path / "q.sock"
    r = subprocess.run([ferrovm, "-S", "-display", "none", "-kernel", str(junk),
                        "-qmp", f"unix:{sock},server=on,wait=off"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert "kernel" in r.stderr.lower() and str(junk) in r.stderr, r.stderr


def test_guest_error_ends_with_one_clear_message_and_exit_1(ferrovm, testguest, launch):
    # plan=crash jumps into the PCI hole: KVM cannot fetch instructions there.
    g = launch(guest_args(ferrovm, testguest, "plan=crash"))
    assert g.wait_exit(30) == 1
    err = g.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "vCPU 0" in err[0] and "KVM internal error" in err[0], err
    assert "rip=0xd0000000" in err[0], err


def test_console_terminal_is_raw_while_running_and_restored_after(ferrovm, testguest, tmp_path):
    import pty
    import termios
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ECHO and before[3] & termios.ICANON
    p = subprocess.Popen([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
                          "-serial", "stdio", "-kernel", testguest, "-append", "plan=idle"],
                         stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        lflag = before[3]
        while time.time() < deadline:
            lflag = termios.tcgetattr(slave)[3]
            if not lflag & termios.ECHO:
                break
            time.sleep(0.02)
        assert not lflag & (termios.ECHO | termios.ICANON), "keystrokes go to the guest unprocessed"
        assert lflag & termios.ISIG, "Ctrl-C still signals ferrovm (signal=on, QEMU's default)"
    finally:
        p.terminate()
        p.wait(10)
    assert termios.tcgetattr(slave) == before, "the terminal is restored at exit"
    os.close(master)
    os.close(slave)


def test_rtc_base_date_sets_the_guest_clock(ferrovm, testguest, launch):
    # 2020-01-01T00:00:00 UTC; the guest checks its CMOS clock against host_time.
    g = launch(guest_args(ferrovm, testguest, "plan=poweroff host_time=1577836800",
                          "-rtc", "base=2020-01-01T00:00:00"))
    assert g.wait_exit(30) == 0
    assert re.search(r"^ok \d+ - rtc \(2020-01-01 00:00:0\d", g.output(), re.M), g.output()


def test_device_isa_serial_is_com1(ferrovm, testguest, launch, tmp_path):
    # libvirt's spelling: a chardev plus -device isa-serial (JSON), instead of -serial.
    log = tmp_path / "console.log"
    g = launch([ferrovm, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults",
                "-chardev", f"file,id=charserial0,path={log}",
                "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
                "-kernel", testguest, "-append", "plan=poweroff"])
    assert g.wait_exit(30) == 0
    assert "ok 1 - serial" in log.read_text(), log.read_text()


def test_two_serial_ports_are_refused_by_name(ferrovm, testguest):
    r = run_cli(ferrovm, "-display", "none", "-serial", "null", "-chardev", "null,id=c1",
                "-device", "isa-serial,chardev=c1", "-kernel", testguest)
    assert r.returncode != 0 and "serial" in r.stderr, r.stderr
