"""`-device help` and `-device DRIVER,help` (libvirt and QEMU's iotests read
them): each line ferrovm prints is the line QEMU 7.2 prints for that device,
under the same heading, and ferrovm lists exactly the drivers `-device`
builds."""
import subprocess

import pytest


def run(binary, *args):
    p = subprocess.run([binary, "-M", "none", *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def by_heading(text):
    """{device line: heading} of a `-device help` listing."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.endswith("devices:"):
            heading = line
        elif line.startswith("name "):
            out[line] = heading
    return out


def test_device_list_lines_are_qemus(ferrovm, qemu):
    rc, out, err = run(ferrovm, "-device", "help")
    assert rc == 0 and not err, err
    ours = by_heading(out)
    theirs = by_heading(run(qemu, "-device", "help")[1])
    assert ours, out
    for line, heading in ours.items():
        assert theirs.get(line) == heading, f"{line!r} under {heading!r}; QEMU: {theirs.get(line)!r}"
    # What ferrovm lists it builds: each listed PCI/ISA device starts.
    names = sorted(line.split('"')[1] for line in ours)
    assert {"virtio-blk-pci", "virtio-net-pci", "virtio-balloon-pci", "i6300esb", "pvpanic",
            "pvpanic-pci"} <= set(names), names


@pytest.mark.parametrize("driver", ["i6300esb", "pvpanic", "pvpanic-pci", "virtio-blk-pci",
                                    "virtio-net", "virtio-balloon-pci"])
def test_device_properties_are_qemus(ferrovm, qemu, driver):
    rc, out, err = run(ferrovm, "-device", f"{driver},help")
    assert rc == 0 and not err, err
    qrc, qout, _ = run(qemu, "-device", f"{driver},help")
    assert qrc == 0
    assert out.splitlines()[0] == qout.splitlines()[0]  # "virtio-net-pci options:"
    ours = out.splitlines()[1:]
    assert ours == sorted(ours), "QEMU sorts the lines"
    missing = [l for l in ours if l not in qout.splitlines()]
    assert not missing, f"not QEMU's lines: {missing}"


def test_unknown_driver_help_says_so(ferrovm, qemu):
    rc, out, err = run(ferrovm, "-device", "nosuch,help")
    qrc, _, qerr = run(qemu, "-device", "nosuch,help")
    # QEMU 7.2 prints the error and exits 0; ferrovm does the same.
    assert (rc, out) == (qrc, "") == (0, "")
    assert "Device 'nosuch' not found" in err and "Device 'nosuch' not found" in qerr
