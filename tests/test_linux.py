"""Debian's own kernel is the outside judge of the boot path and the ACPI
tables. On hosts whose KVM emulates guest ring 0 a full boot cannot finish in
CI time (see docs/known-gaps.md), so this smoke test asserts the early lines
that prove the boot path right, then stops the guest."""
import os
import re
import subprocess

from conftest import Guest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMDLINE = "console=ttyS0 earlyprintk=ttyS0 panic=-1 ferrovm_smoke=1"
# Measured here with QEMU: these lines arrive within ~75 s; leave headroom for a noisy machine.
BOUND_S = 240


def debian_kernel():
    r = subprocess.run([os.path.join(ROOT, "scripts", "fetch-kernel.sh")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"could not fetch Debian's kernel package: {r.stderr}"
    return r.stdout.strip().splitlines()[-1]


def test_debian_kernel_prints_banner_cmdline_e820_and_acpi(ferrovm):
    kernel = debian_kernel()
    g = Guest([ferrovm, "-accel", "kvm", "-m", "512", "-smp", "2", "-nodefaults", "-display",
               "none", "-serial", "stdio", "-kernel", kernel, "-append", CMDLINE])
    try:
        g.wait_line(r"Linux version \d+\.\d+", BOUND_S)
        g.wait_line(r"Command line: .*ferrovm_smoke=1", BOUND_S)
        g.wait_line(r"BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable", BOUND_S)
        for table in ("FACP", "DSDT", "APIC", "MCFG"):
            g.wait_line(rf"ACPI: {table} 0x[0-9A-F]+", BOUND_S)
    finally:
        g.kill()
    assert not re.search(r"Kernel panic", g.output()), g.output()
