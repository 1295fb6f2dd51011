"""virtio-blk-pci on raw images: the command line (-drive, -blockdev, -device) with QEMU's
messages, image locking against a second ferrovm and against QEMU, and the test guest
driving the disk on KVM (plans in firmware/testguest/README.md)."""
import os
import subprocess

import pytest

from conftest import Guest, guest_args, mounted_tmpfs, tap_results


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
    import tempfile
    from qmp_util import Qmp
    sock = tempfile.mkdtemp(prefix="fvl", dir="/tmp") + "/q.sock"
    holder = Guest([qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none",
                    "-S", "-qmp", f"unix:{sock},server=on,wait=off"] + disk_args(image))
    try:
        # Once QEMU's monitor answers, its devices are realized and hold their locks.
        with Qmp(sock, proc=holder.proc) as q:
            assert q.cmd("query-status")["status"] == "prelaunch"
        assert holder.proc.poll() is None, "QEMU holds the image"
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


# --- The test guest drives the disk (plans: firmware/testguest/README.md) ---

SECTOR = 512


def pattern(first_sector, count, seed=0):
    """The test guest's data pattern: byte i of sector s is (s*131 + i*7 + seed) & 0xff."""
    out = bytearray()
    for s in range(first_sector, first_sector + count):
        b = (s * 131 + seed) & 0xff
        out += bytes((b + 7 * i) & 0xff for i in range(SECTOR))
    return bytes(out)


def results(guest):
    return {name: ok for ok, _, name in tap_results(guest.output())}


def boot_plan(ferrovm, testguest, launch, image, append, *drive_opts, device="", mem="128",
              timeout=120):
    opts = ",".join([f"file={image}", "format=raw", "if=none", "id=d0", *drive_opts])
    g = launch(guest_args(ferrovm, testguest, append, "-m", mem, "-drive", opts,
                          "-device", "virtio-blk-pci,drive=d0,id=vd0" + device))
    rc = g.wait_exit(timeout)
    return g, rc


def test_a_pattern_the_guest_writes_is_in_the_host_file(ferrovm, testguest, image, launch):
    g, rc = boot_plan(ferrovm, testguest, launch, image, "plan=blk-write blk_sectors=2048 seed=5",
                      "cache=none")
    assert rc == 0, g.output()
    assert results(g).get("blk write sectors=0+2048 seed=5") is True, g.output()
    with open(image, "rb") as f:
        data = f.read(2048 * SECTOR)
    assert data == pattern(0, 2048, seed=5)


def test_the_guest_reads_back_what_the_host_wrote(ferrovm, testguest, image, launch):
    with open(image, "r+b") as f:
        f.seek(4096 * SECTOR)
        f.write(pattern(4096, 1024, seed=9))
    g, rc = boot_plan(ferrovm, testguest, launch, image,
                      "plan=blk-read blk_start=4096 blk_sectors=1024 seed=9")
    assert rc == 0, g.output()
    assert results(g).get("blk read sectors=4096+1024 seed=9") is True, g.output()
    # And a wrong seed is noticed: the check can fail.
    g, rc = boot_plan(ferrovm, testguest, launch, image,
                      "plan=blk-read blk_start=4096 blk_sectors=1024 seed=10")
    assert results(g).get("blk read sectors=4096+1024 seed=10") is False, g.output()


def test_readonly_drive_refuses_guest_writes(ferrovm, testguest, image, launch):
    with open(image, "r+b") as f:
        f.write(pattern(0, 1024))
    before = open(image, "rb").read()
    g, rc = boot_plan(ferrovm, testguest, launch, image, "plan=blk-ro", "readonly=on")
    assert rc == 0, g.output()
    r = results(g)
    assert r.get("blk ro feature offered") is True, g.output()
    assert r.get("blk ro write refused") is True, g.output()
    assert open(image, "rb").read() == before, "a read-only image is unchanged"


def test_guest_reset_in_the_middle_of_io_then_disk_io_works_again(ferrovm, testguest, image,
                                                                   launch):
    g, rc = boot_plan(ferrovm, testguest, launch, image, "plan=blk-reset")
    assert rc == 0, g.output()
    assert "ferrovm-testguest: boot 2" in g.output(), "the guest reset and booted again"
    assert any(n.startswith("blk reset recovery") and ok for n, ok in results(g).items()), g.output()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs: writes past it fail with a real ENOSPC."""
    yield from mounted_tmpfs(tmp_path / "small", "4M")


def qmp_guest(ferrovm, testguest, launch, sock, append, drive, device="virtio-blk-pci,drive=d0,id=vd0"):
    g = launch(guest_args(ferrovm, testguest, append, "-m", "128",
                          "-qmp", f"unix:{sock},server=on,wait=off", "-drive", drive,
                          "-device", device))
    from qmp_util import Qmp
    return g, Qmp(sock, proc=g.proc)


def test_werror_stop_on_enospc_pauses_in_io_error_and_cont_completes_the_write(
        ferrovm, testguest, launch, small_tmpfs, sockdir):
    image = small_tmpfs / "disk.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    g, q = qmp_guest(ferrovm, testguest, launch, f"{sockdir}/q.sock", "plan=blk-fill blk_mib=8",
                     f"file={image},format=raw,if=none,id=d0,werror=stop,rerror=report")
    with q:
        ev = q.wait_event("BLOCK_IO_ERROR", timeout=60)
        node = q.cmd("query-block")[0]["inserted"]["node-name"]
        assert ev["data"] == {"device": "d0", "node-name": node, "operation": "write",
                              "action": "stop", "nospace": True,
                              "reason": "No space left on device"}
        q.wait_event("STOP", timeout=10)
        assert q.cmd("query-status")["status"] == "io-error"
        blk = q.cmd("query-block")[0]
        assert blk["io-status"] == "nospace", blk
        assert not any(n.startswith("blk fill") for n in results(g)), "the write is held"
        # Free space, then cont retries the failed request and the fill completes.
        subprocess.run(["mount", "-o", "remount,size=64M", str(small_tmpfs)], check=True)
        q.cmd("cont")
        q.wait_event("RESUME", timeout=10)
        assert g.wait_exit(60) == 0, g.output()
    assert results(g).get("blk fill mib=8") is True, g.output()
    with open(image, "rb") as f:
        assert f.read(8 << 20) == pattern(0, 8 * 2048), "the retried writes landed"


def test_nothing_reaches_the_image_while_paused(ferrovm, testguest, launch, tmp_path, sockdir):
    import hashlib
    image = tmp_path / "big.img"
    with open(image, "wb") as f:
        f.truncate(768 << 20)
    g, q = qmp_guest(ferrovm, testguest, launch, f"{sockdir}/q.sock", "plan=blk-fill blk_mib=512",
                     f"file={image},format=raw,if=none,id=d0,cache=none")

    def digest():
        h = hashlib.sha1()
        with open(image, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
        return h.hexdigest()

    with q:
        g.wait_line(r"# blk-fill: writing", timeout=60)
        q.cmd("stop")
        assert q.cmd("query-status")["status"] == "paused"
        stats = q.cmd("query-blockstats")[0]["stats"]
        first = digest()
        import time
        time.sleep(0.5)
        assert digest() == first, "the image changed while the VM was paused"
        assert q.cmd("query-blockstats")[0]["stats"]["wr_operations"] == stats["wr_operations"]
        assert not any(n.startswith("blk fill") for n in results(g)), \
            "the fill finished before stop: the test proves nothing"
        q.cmd("cont")
        assert g.wait_exit(120) == 0, g.output()
    assert results(g).get("blk fill mib=512") is True, g.output()
