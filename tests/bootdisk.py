"""Composes raw BIOS boot disks from firmware/bootdisk's two sectors
(build/bootdisk/mbr.bin and far.bin, built by `make build`).

An image is a sparse file: the MBR at LBA 0 with the far sector's LBA patched
into its Disk Address Packet, the far sector at that LBA with a per-disk label
patched in, holes everywhere else. Offsets: firmware/bootdisk/README.md."""
import os
import pathlib

SECTOR = 512
DAP_OFFSET = 0x1A8          # mbr.bin: the Disk Address Packet (EDD 3.0)
DAP_LBA_OFFSET = DAP_OFFSET + 8
FAR_MAGIC_OFFSET = 2        # far.bin: u16 0xB0D5, checked by the MBR
FAR_MAGIC = 0xB0D5
REBOOT_OFFSET = 0x1DF       # far.bin: u8, nonzero = reboot once (0xCF9), CMOS 0x7E marks it
LABEL_OFFSET = 0x1E0        # far.bin: NUL-terminated label
LABEL_MAX = 31
DEFAULT_FAR_LBA = 16384     # 8 MiB: far past what a BIOS reads by itself
DEFAULT_MIB = 16

_REPO = pathlib.Path(__file__).resolve().parent.parent


def artifacts_dir():
    """Where mbr.bin/far.bin are: $BOOTDISK, else build/bootdisk next to the
    test guest ($TESTGUEST, as `make test` passes it), else the repository's
    build/bootdisk."""
    if os.environ.get("BOOTDISK"):
        return pathlib.Path(os.environ["BOOTDISK"])
    guest = os.environ.get("TESTGUEST")
    if guest:
        d = pathlib.Path(guest).resolve().parent / "bootdisk"
        if d.exists():
            return d
    return _REPO / "build" / "bootdisk"


def load_sectors(directory=None):
    """(mbr, far) as bytes, checked against the layout this module patches."""
    d = pathlib.Path(directory) if directory else artifacts_dir()
    try:
        mbr = (d / "mbr.bin").read_bytes()
        far = (d / "far.bin").read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"bootdisk sectors missing ({e.filename}): build them with "
                                f"'make build' or 'make -C firmware/bootdisk OUT=build'") from e
    if len(mbr) != SECTOR or mbr[510:] != b"\x55\xaa" or mbr[DAP_OFFSET] != 0x10:
        raise ValueError(f"{d}/mbr.bin is not the bootdisk MBR (size, 55AA or DAP at 0x1A8)")
    if len(far) != SECTOR or int.from_bytes(far[2:4], "little") != FAR_MAGIC:
        raise ValueError(f"{d}/far.bin is not the bootdisk far sector (size or magic)")
    return mbr, far


def compose(path, label="disk A", far_lba=DEFAULT_FAR_LBA, mib=DEFAULT_MIB, directory=None,
            reboot_once=False):
    """Writes a bootable sparse image at `path`; returns its path. The far
    sector prints "bootdisk: far sector, <label>"; with `reboot_once` the first
    boot then prints "bootdisk: rebooting" and resets the machine, the next
    prints "bootdisk: rebooted"."""
    mbr, far = load_sectors(directory)
    raw = label.encode()
    if len(raw) > LABEL_MAX or b"\0" in raw:
        raise ValueError(f"label {label!r}: at most {LABEL_MAX} bytes, no NUL")
    if not 1 <= far_lba < (mib << 20) // SECTOR:
        raise ValueError(f"far LBA {far_lba} is outside a {mib} MiB image")
    mbr = bytearray(mbr)
    mbr[DAP_LBA_OFFSET:DAP_LBA_OFFSET + 8] = far_lba.to_bytes(8, "little")
    far = bytearray(far)
    far[LABEL_OFFSET:LABEL_OFFSET + LABEL_MAX + 1] = raw.ljust(LABEL_MAX + 1, b"\0")
    far[REBOOT_OFFSET] = 1 if reboot_once else 0
    path = pathlib.Path(path)
    with open(path, "wb") as f:
        f.truncate(mib << 20)
        f.write(mbr)
        f.seek(far_lba * SECTOR)
        f.write(far)
    return path
