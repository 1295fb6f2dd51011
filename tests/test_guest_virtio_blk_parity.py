"""The test guest drives a modern-only virtio-blk-pci disk (device 1af4:1042)
under QEMU q35 and under ferrovm, with the same ELF and command line: what it writes lands in the host file with the pattern
firmware/testguest/README.md defines, what the host writes it reads back, a
read-only drive refuses writes, and a reset in the middle of I/O leaves a
device that works on the next boot.

QEMU is the oracle; the VMM command is one function (`vmm_argv`). Each q35
boot costs several seconds (SeaBIOS first), so QEMU boots five times in all."""
import hashlib
import os
import re
import shutil

import pytest

from conftest import Guest, tap_results, vmm_binary

SECTOR = 512


def pattern(start, count, seed):
    """Byte i of sector s is (s*131 + i*7 + seed) & 0xff (README: "Disk pattern")."""
    out = bytearray()
    for s in range(start, start + count):
        base = (s * 131 + seed) & 0xFF
        out += bytes((base + 7 * i) & 0xFF for i in range(SECTOR))
    return bytes(out)


@pytest.fixture(scope="module", params=["qemu", "ferrovm"])
def vmm(request):
    """Each check runs on QEMU q35 (the oracle) and on ferrovm, same ELF, same line."""
    return vmm_binary(request.param, "these tests boot the test guest on QEMU q35")


def vmm_argv(vmm, kernel, append, image, drive_opts="", device_opts="", fmt="raw"):
    """The command line that boots `kernel` with one virtio-blk disk on `image`."""
    return [vmm, "-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-kernel", kernel, "-append", append,
            "-drive", f"file={image},format={fmt},if=none,id=d0,cache=none{drive_opts}",
            "-device", f"virtio-blk-pci,drive=d0,disable-legacy=on{device_opts}"]


def boot(vmm, kernel, append, image, timeout=120, **opts):
    g = Guest(vmm_argv(vmm, kernel, append, image, **opts))
    try:
        rc = g.wait_exit(timeout)
    finally:
        g.kill()
    out = g.output()
    assert rc == 0, f"the VMM exited with {rc}:\n{out}"
    return out


def image(tmp_path, mib=16, name="disk.img"):
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    return path


def read_sectors(path, start, count):
    with open(path, "rb") as f:
        f.seek(start * SECTOR)
        return f.read(count * SECTOR)


def write_sectors(path, start, data):
    with open(path, "r+b") as f:
        f.seek(start * SECTOR)
        f.write(data)


def failures(out):
    return [r for r in tap_results(out) if not r[0]]


def test_blk_write_lands_in_the_host_file(vmm, testguest, tmp_path):
    img = image(tmp_path)
    write_sectors(img, 364, b"\xee" * 8 * SECTOR)           # write_zeroes must clear these
    out = boot(vmm, testguest, "plan=blk-write seed=7 blk_start=64 blk_sectors=300", img,
               device_opts=",serial=tgdisk0", drive_opts=",discard=unmap")
    assert not failures(out), out
    assert re.search(r"^ok \d+ - virtio-blk init 00:[0-9a-f]{2}\.\d \(capacity=32768\)$", out, re.M), out
    assert re.search(r"^# serial=tgdisk0$", out, re.M), out
    assert re.search(r"^ok \d+ - virtio-blk msix interrupt \(vector 0x41 count 1\)$", out, re.M), out
    assert re.search(r"^ok \d+ - blk write sectors=64\+300 seed=7$", out, re.M), out
    assert re.search(r"^ok \d+ - blk write_zeroes sectors=364\+8$", out, re.M), out
    assert "poweroff" in out.splitlines(), out
    got = read_sectors(img, 64, 300)
    want = pattern(64, 300, 7)
    bad = next((i for i in range(len(want)) if got[i] != want[i]), None)
    assert bad is None, f"host file differs at sector {64 + bad // SECTOR} byte {bad % SECTOR}"
    assert read_sectors(img, 0, 64) == bytes(64 * SECTOR), "the guest wrote before its region"
    assert read_sectors(img, 364, 8) == bytes(8 * SECTOR), "write_zeroes left data behind"


def test_blk_read_verifies_what_the_host_wrote(vmm, testguest, tmp_path):
    img = image(tmp_path)
    write_sectors(img, 10, pattern(10, 500, 3))
    out = boot(vmm, testguest, "plan=blk-read seed=3 blk_start=10 blk_sectors=500", img)
    assert not failures(out), out
    assert re.search(r"^ok \d+ - blk read sectors=10\+500 seed=3$", out, re.M), out


def test_blk_read_reports_the_first_mismatch(vmm, testguest, tmp_path):
    img = image(tmp_path)
    data = bytearray(pattern(0, 64, 0))
    data[40 * SECTOR + 17] ^= 0xFF                          # one flipped byte: sector 40, byte 17
    write_sectors(img, 0, bytes(data))
    out = boot(vmm, testguest, "plan=blk-read blk_start=0 blk_sectors=64", img)
    want = (40 * 131 + 17 * 7) & 0xFF
    line = (f"not ok 10 - blk read sectors=0+64 seed=0 (mismatch at sector 40 byte 17: "
            f"got 0x{want ^ 0xFF:02x} want 0x{want:02x})")
    assert line in out.splitlines(), out


def test_blk_ro_refuses_writes_and_reads(vmm, testguest, tmp_path):
    img = image(tmp_path)
    write_sectors(img, 0, pattern(0, 128, 11))
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    out = boot(vmm, testguest, "plan=blk-ro seed=11 blk_start=0 blk_sectors=128", img,
               drive_opts=",readonly=on")
    assert not failures(out), out
    assert re.search(r"^ok \d+ - blk ro feature offered$", out, re.M), out
    assert re.search(r"^ok \d+ - blk ro write refused \(status 1\)$", out, re.M), out
    assert re.search(r"^ok \d+ - blk ro read sectors=0\+128 seed=11$", out, re.M), out
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before, "a read-only disk changed"


def test_blk_reset_mid_io_then_the_disk_works_again(vmm, testguest, tmp_path):
    img = image(tmp_path)
    out = boot(vmm, testguest, "plan=blk-reset seed=9 blk_start=0 blk_sectors=2048", img)
    boots = out.split("ferrovm-testguest: boot 2 ")
    assert len(boots) == 2, f"expected exactly one reset:\n{out}"
    assert re.search(r"^ok 10 - blk reset writes in flight \(32\)$", boots[0], re.M), out
    assert re.search(r"^reset$", boots[0], re.M), out
    assert not failures(boots[1]), out
    assert re.search(r"^ok \d+ - blk reset recovery write\+read sectors=0\+2048 seed=9$", boots[1], re.M), out
    assert read_sectors(img, 0, 2048) == pattern(0, 2048, 9)


def transport_lines(out):
    """What the guest saw of the virtio-blk function: its config-space line (ids, class,
    BAR kinds and sizes, capability list), each virtio capability, the MSI-X layout,
    the features offered and the device configuration. BAR addresses are the
    firmware's choice on QEMU and ferrovm's own on direct boot: masked."""
    keep = [l for l in out.splitlines()
            if re.match(r"# 00:01\.0 |# virtio cap |# msix: |# virtio-blk: ", l)]
    return [re.sub(r"0x[0-9a-f]{5,}", "ADDR", l) for l in keep]


@pytest.fixture(scope="module")
def qemu_transport(testguest, tmp_path_factory):
    path = shutil.which("qemu-system-x86_64")
    if not path:
        pytest.fail("qemu-system-x86_64 is missing: the transport is compared with QEMU q35's")
    img = image(tmp_path_factory.mktemp("qt"))
    return transport_lines(boot(path, testguest, "disk=1", img, device_opts=",serial=tgdisk0"))


def test_the_guest_sees_the_same_virtio_pci_function_as_on_qemu(vmm, testguest, tmp_path,
                                                                  qemu_transport):
    """Same ELF, same -drive/-device line: identical PCI identity, BAR kinds and sizes,
    capability chain, virtio structures, MSI-X table, offered features and config."""
    out = boot(vmm, testguest, "disk=1", image(tmp_path), device_opts=",serial=tgdisk0")
    assert not failures(out), out
    lines = transport_lines(out)
    assert len(lines) >= 8, out
    assert lines == qemu_transport


def test_block_resize_reaches_the_guest_as_a_config_interrupt(vmm, testguest, tmp_path):
    """QMP block_resize grows the disk; the guest takes the configuration-change
    interrupt (its MSI-X config vector) and reads the new capacity."""
    from qmp_util import Qmp, short_tmpdir
    img = image(tmp_path)                                  # 16 MiB = 32768 sectors
    sock = short_tmpdir() + "/q.sock"
    g = Guest(vmm_argv(vmm, testguest, "plan=blk-resize", img)
              + ["-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        g.wait_line(r"# blk-resize: capacity 32768, waiting", timeout=120)
        with Qmp(sock, proc=g.proc) as q:
            q.cmd("block_resize", {"device": "d0", "size": 64 << 20})
            assert g.wait_exit(90) == 0, g.output()
    finally:
        g.kill()
    out = g.output()
    assert re.search(r"^ok \d+ - blk resize \(capacity 32768 -> 131072, [1-9]\d* config interrupt",
                     out, re.M), out
    assert os.path.getsize(img) == 64 << 20


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_block_resize_shrinking_reaches_the_guest_too(vmm, testguest, tmp_path, fmt):
    """A shrinking block_resize (QEMU: virtio_blk_resize for any new size) takes the same
    path: a configuration-change interrupt and the smaller capacity; a raw file is cut
    to the new size, a qcow2 image gets the new virtual size and stays clean."""
    import json
    import subprocess
    from qmp_util import Qmp, short_tmpdir
    img = image(tmp_path)                                  # 16 MiB = 32768 sectors
    if fmt == "qcow2":
        raw, img = img, tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(img)], check=True)
    sock = short_tmpdir() + "/q.sock"
    g = Guest(vmm_argv(vmm, testguest, "plan=blk-resize", img, fmt=fmt)
              + ["-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        g.wait_line(r"# blk-resize: capacity 32768, waiting", timeout=120)
        with Qmp(sock, proc=g.proc) as q:
            q.cmd("block_resize", {"device": "d0", "size": 4 << 20})
            assert g.wait_exit(90) == 0, g.output()
    finally:
        g.kill()
    out = g.output()
    assert re.search(r"^ok \d+ - blk resize \(capacity 32768 -> 8192, [1-9]\d* config interrupt",
                     out, re.M), out
    if fmt == "raw":
        assert os.path.getsize(img) == 4 << 20
        return
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(img)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 4 << 20
    subprocess.run(["qemu-img", "check", str(img)], check=True, capture_output=True)


@pytest.mark.parametrize("gsi,arrives", [(21, True), (22, False)])
def test_intx_without_msix_arrives_on_the_gsi_of_the_prt(vmm, testguest, tmp_path, gsi, arrives):
    """MSI-X left off, a completion raises INTA# of slot 1: on q35 that is GSI 21
    (QEMU's table, and the DSDT's _PRT), level, active high. A neighbouring GSI sees
    nothing, so the line is the one the _PRT names, not any."""
    out = boot(vmm, testguest, f"plan=blk-intx intx_gsi={gsi}", image(tmp_path)) \
        if arrives else None
    if not arrives:
        g = Guest(vmm_argv(vmm, testguest, f"plan=blk-intx intx_gsi={gsi}", image(tmp_path)))
        try:
            assert g.wait_exit(120) == 0, g.output()
        finally:
            g.kill()
        out = g.output()
    m = re.search(r"^(ok|not ok) \d+ - blk intx interrupt \(gsi (\d+) vector 0x42 count (\d+)", out, re.M)
    assert m, out
    assert (m.group(1) == "ok") == arrives, out
    assert (int(m.group(3)) > 0) == arrives, out
