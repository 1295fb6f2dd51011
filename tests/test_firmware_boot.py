"""Firmware boot: SeaBIOS (bios-256k.bin) on q35 boots firmware/bootdisk from a
virtio-blk disk, on QEMU (the oracle) and on ferrovm, with the same command line.

The boot disk prints on COM1 (tests/bootdisk.py composes it):
  "bootdisk: mbr"                        its MBR ran (the BIOS loaded LBA 0)
  "bootdisk: far sector, disk <L>"       INT 13h AH=42h read LBA 16384 (8 MiB) of
                                         the disk the BIOS booted, labelled <L>
  "bootdisk: rsdp oem <OEMID>"           the 6-byte OEM ID of the ACPI RSDP it found
SeaBIOS's own debug log (isa-debugcon, port 0x402) is kept in the test's tmp
dir and attached to every failure. Each q35 boot costs seconds (the firmware
runs largely emulated), so one boot serves the virtio-blk-pci, RSDP and
system_reset checks; QEMU runs five firmware boots in all."""
import os
import shutil
import subprocess
import time

import pytest

import bootdisk
from conftest import vmm_binary
from qmp_util import Qmp, short_tmpdir

BOOT_TIMEOUT = 30      # start (or reset) to the boot disk's lines
FIRMWARE_SIGN = 15     # start to the firmware's first debug or serial byte

MBR = "bootdisk: mbr"
REBOOTING = "bootdisk: rebooting"
REBOOTED = "bootdisk: rebooted"
FAR = "bootdisk: far sector, disk {}"
# QEMU's RSDP OEM ID is x86ms->oem_id, ACPI_BUILD_APPNAME6 "BOCHS " by default
# (qemu-7.2 include/hw/acpi/aml-build.h, hw/i386/x86.c; -machine oem-id=).
# SeaBIOS's own fallback tables (when the VMM hands it none, e.g. QEMU with
# acpi=off) also say "BOCHS "; SeaBIOS then logs this line (copy_acpi_rsdp,
# src/fw/biostables.c), which it never logs for tables from the fw_cfg loader.
SEABIOS_OWN_RSDP = "Copying ACPI RSDP from"
RSDP_OEM = {"qemu": "BOCHS ", "ferrovm": "FERROV"}


@pytest.fixture(scope="module", params=["qemu", "ferrovm"])
def vmm(request):
    """(name, binary): each check runs on QEMU q35 and on ferrovm, same line."""
    why = "QEMU q35 is the oracle of the firmware boot tests"
    return request.param, vmm_binary(request.param, why)


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class Machine:
    """One VMM booting firmware: COM1 into `serial`, SeaBIOS's debug port into
    `debuglog`, QMP on a unix socket. Every failure carries both logs."""

    def __init__(self, binary, workdir, disk_args):
        self.workdir = workdir
        self.serial = os.path.join(workdir, "serial.log")
        self.debuglog = os.path.join(workdir, "seabios.log")
        self.sockdir = short_tmpdir()
        self.qmp_path = os.path.join(self.sockdir, "qmp.sock")
        self.argv = firmware_argv(binary, self.serial, self.debuglog, self.qmp_path, disk_args)
        self.stderr = open(os.path.join(workdir, "stderr.log"), "w+b")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        self.qmp = None

    @staticmethod
    def _read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self):
        """COM1's complete lines so far (CR LF stripped, spaces kept: "BOCHS "
        ends in one); a line still being written is left for the next call."""
        return [ln.rstrip("\r") for ln in self._read(self.serial).split("\n")[:-1]]

    def debug_log(self):
        return self._read(self.debuglog)

    def report(self, why):
        self.stderr.flush()
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        log = self._read(self.debuglog).splitlines()
        return (f"{why}\ncommand: {' '.join(self.argv)}\nexit: {self.proc.poll()}\n"
                f"--- serial ({self.serial}):\n{self._read(self.serial)[-3000:]}\n"
                f"--- SeaBIOS debug log, last 40 of {len(log)} lines ({self.debuglog}):\n"
                + "\n".join(log[-40:]) + f"\n--- stderr:\n{err[-3000:]}")

    def wait_lines(self, want, what, timeout=BOOT_TIMEOUT):
        """Waits until `want(lines)` is true; fails fast when the VMM exits or
        the firmware shows no sign of life (no debug byte, no serial byte)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if want(lines):
                return lines
            if self.proc.poll() is not None:
                raise AssertionError(self.report(f"the VMM exited before {what}"))
            now = time.monotonic()
            if (now - self.t0 > FIRMWARE_SIGN and not file_size(self.debuglog)
                    and not file_size(self.serial)):
                raise AssertionError(self.report(
                    f"the firmware never ran: no SeaBIOS debug output (isa-debugcon 0x402) and "
                    f"no serial output within {FIRMWARE_SIGN}s of start (waiting for {what})"))
            if now > deadline:
                raise AssertionError(self.report(f"no {what} within {timeout}s"))
            time.sleep(0.05)

    def connect_qmp(self):
        if self.qmp is None:
            self.qmp = Qmp(self.qmp_path, timeout=10, proc=self.proc)
        return self.qmp

    def close(self):
        if self.qmp is not None:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stderr.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def firmware_argv(binary, serial, debuglog, qmp, disk_args):
    """The command line both VMMs get: no -kernel, so the firmware boots a disk."""
    return [binary, "-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", f"file:{serial}",
            "-chardev", f"file,id=seabios,path={debuglog}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios",
            "-qmp", f"unix:{qmp},server=on,wait=off", *disk_args]


def pci_disk(image, drive_id, bootindex=None, addr=None):
    dev = f"virtio-blk-pci,drive={drive_id}"
    if bootindex is not None:
        dev += f",bootindex={bootindex}"
    if addr is not None:
        dev += f",addr={addr}"
    return ["-drive", f"if=none,id={drive_id},file={image},format=raw", "-device", dev]


def index(lines, text, start=0):
    """Position of the first line equal to `text` at or after `start`, or None."""
    return next((i for i in range(start, len(lines)) if lines[i] == text), None)


def booted(label):
    """The predicate "the MBR line, then the far sector's line for `label`"."""
    def want(lines):
        m = index(lines, MBR)
        return m is not None and index(lines, FAR.format(label), m + 1) is not None
    return want


def boot_disk(vmm, tmp, disk_args, label, timeout=BOOT_TIMEOUT):
    """Boots, waits for the boot disk's RSDP line (its last), returns (Machine, lines)."""
    m = Machine(vmm[1], str(tmp), disk_args)
    try:
        lines = m.wait_lines(lambda ls: booted(label)(ls) and any(
            ln.startswith("bootdisk: rsdp ") for ln in ls),
            f"'{MBR}', then '{FAR.format(label)}', then a 'bootdisk: rsdp' line", timeout)
    except BaseException:
        m.close()
        raise
    return m, lines


@pytest.fixture(scope="module")
def pci_boot(vmm, tmp_path_factory):
    """One boot from a virtio-blk-pci disk with bootindex=1, shared by (a), (d), (c)."""
    tmp = tmp_path_factory.mktemp(f"fwboot-{vmm[0]}-pci")
    img = bootdisk.compose(tmp / "a.img", "disk A")
    m, lines = boot_disk(vmm, tmp, pci_disk(img, "d0", bootindex=1), "A")
    yield m, lines
    m.close()


def test_boots_virtio_blk_pci_disk_and_reads_a_sector_at_8_mib(pci_boot):
    m, lines = pci_boot
    first = index(lines, MBR)
    assert first is not None and index(lines, FAR.format("A"), first + 1) == first + 1, \
        m.report("the far sector's line must follow the MBR's directly")
    assert not any(ln.startswith("bootdisk: int13 error") for ln in lines), m.report("INT 13h failed")


def test_rsdp_oem_id_is_the_vmms(pci_boot, vmm):
    m, _ = pci_boot
    want = f"bootdisk: rsdp oem {RSDP_OEM[vmm[0]]}"
    # The line follows the far sector's, which is all the boot waited for.
    lines = m.wait_lines(lambda ls: any(ln.startswith("bootdisk: rsdp oem") for ln in ls),
                         "the RSDP line")
    assert want in lines, m.report(f"expected the line {want!r} (the RSDP's OEM ID, raw)")
    assert SEABIOS_OWN_RSDP not in m.debug_log(), m.report(
        "SeaBIOS built its own ACPI tables: the VMM's (fw_cfg etc/table-loader) did not arrive")


def test_system_reset_boots_the_disk_again(pci_boot):
    m, lines = pci_boot
    before = len(lines)
    m.connect_qmp().cmd("system_reset")

    def again(ls):
        second = index(ls, MBR, before - 1)
        return second is not None and index(ls, FAR.format("A"), second + 1) is not None
    after = m.wait_lines(again, f"'{MBR}' and '{FAR.format('A')}' again after system_reset")
    assert after.count(MBR) == 2, m.report("exactly one reboot was expected")


def test_boots_drive_if_virtio_and_again_after_the_guest_reboots(vmm, tmp_path):
    """-drive if=virtio (no bootindex); the boot disk then reboots the machine as
    an OS does (0xCF9) and the firmware boots it again: a RESET event with
    guest=true, then the lines a second time and the "rebooted" mark from CMOS."""
    img = bootdisk.compose(tmp_path / "v.img", "disk V", reboot_once=True)
    m = Machine(vmm[1], str(tmp_path), ["-drive", f"if=virtio,file={img},format=raw"])
    try:
        q = m.connect_qmp()   # before the reboot, to see its event
        lines = m.wait_lines(lambda ls: REBOOTED in ls, f"'{REBOOTED}' after the guest's reboot",
                             2 * BOOT_TIMEOUT)
        first = index(lines, MBR)
        reboot = index(lines, REBOOTING, first)
        second = index(lines, MBR, reboot or first + 1)
        assert None not in (reboot, second) and index(lines, FAR.format("V"), second) is not None \
            and lines.count(MBR) == 2, m.report("expected: boot, 'rebooting', boot, 'rebooted'")
        # QEMU 7.2 shows two: the guest's, then SeaBIOS's own. Its MCH keeps the
        # PAM registers across a reset (mch_reset), so the reset vector runs the
        # locked RAM copy of SeaBIOS, which restores the ROM image and resets
        # once more (SeaBIOS src/fw/shadow.c qemu_reboot).
        events = [e for e in q.events if e["event"] == "RESET"]
        assert [e["data"] for e in events] == [{"guest": True, "reason": "guest-reset"}] * 2, \
            m.report(f"two RESET events (guest-reset) expected: {events}")
    finally:
        m.close()


def test_no_acpi_leaves_the_tables_to_seabios(vmm, tmp_path):
    """-no-acpi (libvirt's line for a domain without <features><acpi/>): the VMM
    hands the firmware no ACPI tables, so SeaBIOS builds its own minimal ones
    and says so, on QEMU and on ferrovm alike."""
    img = bootdisk.compose(tmp_path / "n.img", "disk N")
    m, lines = boot_disk(vmm, tmp_path, pci_disk(img, "dn", bootindex=1) + ["-no-acpi"], "N")
    try:
        want = "bootdisk: rsdp oem BOCHS "
        assert want in lines, m.report(f"expected {want!r}: SeaBIOS's own RSDP")
        assert SEABIOS_OWN_RSDP in m.debug_log(), m.report(
            "SeaBIOS did not build its own tables: the VMM still gave it some")
    finally:
        m.close()


@pytest.mark.parametrize("first", ["A", "B"])
def test_bootindex_decides_which_disk_boots(vmm, tmp_path, first):
    """A sits in the higher slot, so a BIOS ignoring bootindex would boot B."""
    a = bootdisk.compose(tmp_path / "a.img", "disk A")
    b = bootdisk.compose(tmp_path / "b.img", "disk B")
    ia, ib = (1, 2) if first == "A" else (2, 1)
    args = pci_disk(b, "db", bootindex=ib, addr="4") + pci_disk(a, "da", bootindex=ia, addr="5")
    m, lines = boot_disk(vmm, tmp_path, args, first)
    other = "B" if first == "A" else "A"
    try:
        assert FAR.format(other) not in lines, m.report(f"disk {other} booted too")
    finally:
        m.close()


@pytest.mark.parametrize("bios", ["nosuch.bin", "short"])
def test_a_bad_firmware_file_is_one_clear_error(vmm, tmp_path, bios):
    """-bios that cannot be found, or whose size QEMU refuses (not a multiple of
    64 KiB): exit 1 at once, one line naming the file as QEMU names it."""
    name, binary = vmm
    if bios == "short":
        bios = str(tmp_path / "short.bin")
        with open(bios, "wb") as f:
            f.write(b"\xea" * 1000)
    argv = [binary, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none",
            "-bios", bios]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    # QEMU may warn about CPUID features first; the error is the other line.
    lines = [ln for ln in p.stderr.strip().splitlines() if ": warning: " not in ln]
    assert p.returncode == 1, (name, p.returncode, p.stderr)
    assert len(lines) == 1 and f"could not load PC BIOS '{bios}'" in lines[0], (name, p.stderr)
