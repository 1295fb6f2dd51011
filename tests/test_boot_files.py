"""-kernel and -initrd files that cannot be a boot image: a character device,
a FIFO, a directory, a file larger than guest RAM. QEMU 7.2 hangs on some of
these (a FIFO; /dev/zero read whole grew ferrovm's RSS without end): ferrovm
must end at once with exit 1 and one line naming the file."""
import os
import subprocess
import time

import pytest

RAM_MIB = 128
# A regression (reading /dev/zero, blocking on a FIFO) must fail the test, not hang it.
TIMEOUT = 15
# Refusing is a stat and a message: far below a second; generous for a loaded machine.
QUICK = 5.0


def bad_file(kind, tmp_path):
    if kind == "chardev":
        return "/dev/zero"
    if kind == "fifo":
        p = tmp_path / "fifo"
        os.mkfifo(p)
        return str(p)
    if kind == "directory":
        p = tmp_path / "dir"
        p.mkdir()
        return str(p)
    if kind == "larger-than-ram":
        p = tmp_path / "big"
        with open(p, "wb") as f:
            f.truncate((RAM_MIB + 1) << 20)  # sparse: costs no disk
        return str(p)
    raise AssertionError(kind)


# The reason each kind is refused with (after "could not load <role> '<path>': ").
REASON = {
    "chardev": "not a regular file (character device)",
    "fifo": "not a regular file (FIFO)",
    "directory": "Is a directory",  # QEMU's wording
    "larger-than-ram": "too large",
}


def run(ferrovm, args):
    start = time.monotonic()
    try:
        r = subprocess.run([ferrovm, "-accel", "kvm", "-m", str(RAM_MIB), "-nodefaults",
                            "-display", "none", *args],
                           capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ferrovm {args} did not exit within {TIMEOUT}s")
    return r, time.monotonic() - start


@pytest.mark.parametrize("start_paused", [False, True], ids=["running", "-S"])
@pytest.mark.parametrize("role", ["kernel", "initrd"])
@pytest.mark.parametrize("kind", list(REASON))
def test_unloadable_file_exits_1_quickly_with_one_line_naming_it(
        ferrovm, testguest, tmp_path, kind, role, start_paused):
    path = bad_file(kind, tmp_path)
    args = ["-kernel", path] if role == "kernel" else ["-kernel", testguest, "-initrd", path]
    if start_paused:
        # Under -S the machine is built after the monitor greets: the file is
        # still checked before anything listens.
        args += ["-S", "-qmp", f"unix:{tmp_path / 'q.sock'},server=on,wait=off"]
    r, took = run(ferrovm, args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert took < QUICK, f"took {took:.1f}s"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"want one line, got {r.stderr!r}"
    line = lines[0]
    assert line.startswith(f"ferrovm: could not load {role} '{path}': "), line
    assert REASON[kind] in line, line


def test_too_large_names_both_sizes(ferrovm, testguest, tmp_path):
    path = bad_file("larger-than-ram", tmp_path)
    r, _ = run(ferrovm, ["-kernel", testguest, "-initrd", path])
    assert r.returncode == 1
    assert f"need {(RAM_MIB + 1) << 20}" in r.stderr, r.stderr
    assert f"max: {RAM_MIB << 20} bytes" in r.stderr, r.stderr


def test_a_fitting_initrd_still_boots(ferrovm, testguest, tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(1 << 20))
    r, _ = run(ferrovm, ["-serial", "stdio", "-kernel", testguest, "-initrd", str(initrd),
                         "-append", "plan=poweroff"])
    assert r.returncode == 0, r.stderr
    assert "poweroff" in r.stdout, r.stdout
