"""virtio-blk-pci on raw images: the command line (-drive, -blockdev, -device) with QEMU's
messages, image locking against a second ferrovm and against QEMU, and the test guest
driving the disk on KVM (plans in firmware/testguest/README.md)."""
import os
import subprocess

import pytest

from conftest import Guest, guest_args, tap_results


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    return str(path)


def run(argv, timeout=20):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def message(stderr, program):
    """The error line, without the program-name prefix and QEMU's host warnings."""
    lines = [l for l in stderr.splitlines() if "warning:" not in l and l.strip()]
    assert lines, f"{program}: no error on stderr"
    first = lines[0]
    for prefix in ("ferrovm: ", "qemu-system-x86_64: "):
        if first.startswith(prefix):
            first = first[len(prefix):]
    return "\n".join([first] + lines[1:])


# -device arguments QEMU 7.2 refuses at start-up, with a -drive d0 on the same line.
BAD_DEVICES = [
    "virtio-blk-pci,drive=d0,foo=1",
    "virtio-blk-pci,drive=nope",
    "virtio-blk-pci",
    "virtio-blk-pci,drive=d0,num-queues=x",
    "virtio-blk-pci,drive=d0,addr=0x40",
    "virtio-blk-pci,drive=d0,write-cache=maybe",
    "virtio-blk-pci,drive=d0,logical_block_size=1000",
    "virtio-blk-pci,drive=d0,queue-size=3",
    "virtio-blk-pci,drive=d0,bus=pci.0",
    "virtio-blk-pci,drive=d0,num-queues=0",
    "virtio-blk-pci,drive=d0,physical_block_size=512,logical_block_size=4096",
]


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_bad_device_properties_fail_as_qemu_does(ferrovm, testguest, qemu, image, device):
    drive = ["-drive", f"file={image},format=raw,if=none,id=d0", "-device", device]
    ours = run([ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-S",
                "-kernel", testguest] + drive)
    theirs = run([qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none",
                  "-S"] + drive)
    assert theirs.returncode == 1, theirs.stderr
    assert ours.returncode == 1, ours.stderr
    assert message(ours.stderr, "ferrovm") == message(theirs.stderr, "qemu")


def disk_args(image, *extra_drive):
    opts = ",".join([f"file={image}", "format=raw", "if=none", "id=d0", *extra_drive])
    return ["-drive", opts, "-device", "virtio-blk-pci,drive=d0,id=vd0"]


def test_guest_finds_and_drives_the_disk_with_msix(ferrovm, testguest, image, launch):
    g = launch(guest_args(ferrovm, testguest, "disk=1", "-m", "128", *disk_args(image)))
    assert g.wait_exit(60) == 0, g.output()
    results = {name: ok for ok, _, name in tap_results(g.output())}
    assert any(n.startswith("virtio-blk init 00:01.0") for n in results), g.output()
    assert all(results.values()), g.output()
    assert "virtio-blk msix interrupt" in " ".join(results), g.output()


def test_image_lock_refuses_a_second_writer(ferrovm, testguest, qemu, image, launch):
    lock_msg = f'Failed to get "write" lock\nIs another process using the image [{image}]?'
    first = launch(guest_args(ferrovm, testguest, "plan=idle", "-m", "64", *disk_args(image)))
    first.wait_line(r"tick 1", timeout=30)
    second = run([ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-S",
                  "-kernel", testguest] + disk_args(image))
    assert second.returncode == 1
    assert message(second.stderr, "ferrovm").endswith(lock_msg), second.stderr
    q = run([qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none", "-S"]
            + disk_args(image))
    assert q.returncode == 1
    assert message(q.stderr, "qemu").endswith(lock_msg), q.stderr
    assert first.proc.poll() is None, "the first instance is unaffected"
    first.kill()
    # And the other way round: QEMU holds the image, ferrovm refuses.
    holder = Guest([qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none",
                    "-S", "-qmp", "stdio"] + disk_args(image))
    try:
        import time
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any('"QMP"' in l for l in holder.lines):
            time.sleep(0.05)
        ours = run([ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-S",
                    "-kernel", testguest] + disk_args(image))
        assert ours.returncode == 1
        assert message(ours.stderr, "ferrovm").endswith(lock_msg), ours.stderr
        # A read-only drive on a shared image still opens.
        ro = run([ferrovm, "-accel", "kvm", "-nodefaults", "-display", "none", "-m", "64",
                  "-kernel", testguest, "-append", "plan=poweroff",
                  "-drive", f"file={image},format=raw,if=none,id=d0,readonly=on,file.locking=off",
                  "-device", "virtio-blk-pci,drive=d0"])
        assert ro.returncode == 0, ro.stderr
    finally:
        holder.kill()
