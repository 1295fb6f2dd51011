"""libvirt 9.0 drives a domain's whole life with the emulator as `<emulator>`
(issue 13, part 2), on QEMU 7.2 (the reference: the same test must pass there)
and on ferrovm.

The test starts its own libvirtd and virtlogd (tests/libvirt_env.py) and stops
only those. The domain is libvirt's q35 layout (root ports, a pcie-pci-bridge,
qemu-xhci), a virtio disk, an i6300esb, a virtio balloon with a stats period
and COM1 in a file. It boots the test guest by `<kernel>` with
`<features><acpi/>` in its `balloon` plan: the guest follows the balloon
target, reports memory statistics, and ends on the ACPI power button, so each
libvirt step has an effect the guest shows. A second domain boots a disk
through SeaBIOS, without `<acpi/>` (libvirt then passes `-no-acpi`), its COM1 on
the pty `virsh console` uses. A third runs libvirt's block jobs on a qcow2 disk.

After each step the test checks the state libvirt reports and what the guest
saw (its serial lines)."""
import json
import os
import re
import time

import pytest

import bootdisk
from conftest import vmm_binary
from libvirt_env import Libvirt, require_libvirt

MIB_PAGES = 256                 # 4 KiB pages per MiB
MEM_MIB = 128


@pytest.fixture(scope="module")
def libvirt():
    require_libvirt()
    lv = Libvirt()
    try:
        lv.start()
        yield lv
    finally:
        lv.close()


def domain_xml(name, emulator, workdir, kernel=None, disk=None, acpi=True, fmt="raw",
               serial="file"):
    boot = (f"<kernel>{kernel}</kernel><cmdline>plan=balloon</cmdline>" if kernel else "")
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{MEM_MIB}</memory>
  <currentMemory unit='MiB'>{MEM_MIB}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>{boot}</os>
  {"<features><acpi/></features>" if acpi else ""}
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {serial_xml(serial, workdir)}
    <watchdog model='i6300esb' action='pause'/>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>"""


def serial_xml(kind, workdir):
    if kind == "pty":
        return "<serial type='pty'><target port='0'/></serial>"
    return f"<serial type='file'><source path='{workdir}/serial.log'/><target port='0'/></serial>"


class Domain:
    def __init__(self, lv, name, workdir):
        self.lv, self.name, self.workdir = lv, name, workdir

    def virsh(self, *args, timeout=60):
        return self.lv.ok(*args, timeout=timeout)

    def state(self):
        return self.virsh("domstate", self.name).strip()

    def serial(self):
        try:
            with open(os.path.join(self.workdir, "serial.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def context(self):
        return (f"\n--- serial ---\n{self.serial()[-3000:]}\n--- domain log ---\n"
                f"{self.lv.domain_log(self.name)[-3000:]}\n{self.lv.tail_log()}")

    def wait(self, what, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            got = pred()
            if got:
                return got
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: {what} did not happen within {timeout} s"
                            f"{self.context()}")
            time.sleep(0.2)

    def wait_serial(self, pattern, count=1, timeout=30):
        return self.wait(f"serial line /{pattern}/ (x{count})",
                         lambda: len(re.findall(pattern, self.serial(), re.M)) >= count,
                         timeout)

    def wait_state(self, want, timeout=30):
        self.wait(f"state '{want}'", lambda: self.state() == want, timeout)

    def memstat(self):
        out = self.virsh("dommemstat", self.name)
        return {k: int(v) for k, v in (l.split() for l in out.splitlines() if l.strip())}

    def stats(self):
        out = self.virsh("domstats", self.name)
        return dict(l.strip().split("=", 1) for l in out.splitlines() if "=" in l)

    def cpu_property(self, prop):
        """qom-get of vCPU 0's `prop`, through libvirt."""
        cmd = json.dumps({"execute": "qom-get", "arguments": {
            "path": "/machine/unattached/device[0]", "property": prop}})
        return json.loads(self.virsh("qemu-monitor-command", self.name, cmd))["return"]

    def monitor(self, command):
        return self.virsh("qemu-monitor-command", self.name, f'{{"execute":"{command}"}}')


class PtyReader:
    """The console side of a pty, raw, read on a thread."""

    def __init__(self, path):
        import termios
        import threading
        import tty
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)
        self.text = ""
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import select
        while not self.stop:
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    return
                self.text += data.decode(errors="replace").replace("\r", "")

    def read_until(self, needle, timeout):
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline:
                pytest.fail(f"the console never showed {needle!r}; it showed:\n{self.text}")
            time.sleep(0.1)
        time.sleep(0.3)     # the rest of that line
        return self.text

    def close(self):
        self.stop = True
        self.thread.join(2)
        os.close(self.fd)


def balloon_pages(mib):
    """The pages the guest holds in its balloon for a target of `mib`."""
    return (MEM_MIB - mib) * MIB_PAGES


@pytest.mark.parametrize("emu", ["qemu", "ferrovm"])
def test_domain_lifecycle(libvirt, emu, testguest, tmp_path):
    emulator = vmm_binary(emu, "it is the reference emulator of the libvirt test")
    name = f"fv-life-{emu}"
    workdir = str(tmp_path)
    disk = os.path.join(workdir, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    dom = Domain(libvirt, name, workdir)

    # The probe: libvirt asks the emulator what it has.
    caps = libvirt.ok("domcapabilities", "--emulatorbin", emulator, "--virttype", "kvm",
                      "--machine", "q35")
    assert "<machine>pc-q35-7.2</machine>" in caps

    xml = os.path.join(workdir, "domain.xml")
    with open(xml, "w") as f:
        f.write(domain_xml(name, emulator, workdir, kernel=testguest, disk=disk))
    libvirt.ok("define", xml)
    try:
        assert dom.state() == "shut off"

        # Start: the guest boots, finds the disk behind a root port, and
        # drives the balloon.
        dom.virsh("start", name)
        assert dom.state() == "running"
        dom.wait_serial(r"^1\.\.10$")
        out = dom.serial()
        assert "not ok" not in out, dom.context()
        assert re.search(r"^ok \d+ - virtio-blk init 0[1-9a-f]:00\.0 \(capacity=131072\)", out,
                         re.M), dom.context()
        assert re.search(r"^ok \d+ - balloon$", out, re.M), dom.context()
        # libvirt's command line puts the disk on a root port (bus > 0).
        assert "pcie-root-port" in libvirt.domain_log(name)
        # libvirt read the CPU the guest got, as from QEMU: every feature
        # property and unavailable-features (qemuMonitorJSONGetGuestCPU).
        with open(libvirt.log, errors="replace") as f:
            log = f.read()
        assert re.search(r'"qom-get","arguments":\{"path":"/machine/unattached/device\[0\]",'
                         r'"property":"unavailable-features"\}', log), libvirt.tail_log()
        unavailable = dom.cpu_property("unavailable-features")
        defs = json.loads(dom.monitor("query-cpu-definitions"))["return"]
        assert unavailable == next(d for d in defs if d["name"] == "qemu64")[
            "unavailable-features"]
        assert dom.cpu_property("sse2") is True and dom.cpu_property("lm") is True

        # Memory stats: the guest's own report (stats period 1 s).
        st = dom.wait("guest memory statistics",
                      lambda: (lambda m: m if "usable" in m else None)(dom.memstat()))
        assert st["actual"] == MEM_MIB << 10, st
        assert 0 < st["usable"] <= MEM_MIB << 10, st

        # Suspend: libvirt and the VMM agree, and the guest stops following
        # the balloon until resumed.
        dom.virsh("suspend", name)
        assert dom.state() == "paused"
        assert '"status":"paused"' in dom.monitor("query-status")
        dom.virsh("setmem", name, "100M", "--live")
        time.sleep(1.5)
        assert f"balloon actual={balloon_pages(100)} pages" not in dom.serial(), \
            "the guest ran while paused" + dom.context()
        dom.virsh("resume", name)
        assert dom.state() == "running"

        # setmem: the guest inflates to the target; libvirt sees it.
        dom.wait_serial(rf"^# balloon actual={balloon_pages(100)} pages")
        dom.wait("balloon actual 100 MiB", lambda: dom.memstat()["actual"] == 100 << 10)

        # Block info and domain stats.
        info = dom.virsh("domblkinfo", name, "vda")
        assert re.search(r"^Capacity:\s+67108864$", info, re.M), info
        # balloon.current is what BALLOON_CHANGE events told libvirt (QEMU
        # sends at most one a second), so it may lag query-balloon a little.
        stats = dom.wait("domstats balloon.current 100 MiB", lambda: (
            lambda s: s if s.get("balloon.current") == str(100 << 10) else None)(dom.stats()))
        assert stats["state.state"] == "1", stats          # VIR_DOMAIN_RUNNING
        assert stats["balloon.maximum"] == str(MEM_MIB << 10), stats
        assert stats["block.count"] == "1" and stats["block.0.name"] == "vda", stats
        assert stats["block.0.capacity"] == str(64 << 20), stats
        assert int(stats["block.0.rd.reqs"]) > 0, stats    # the guest read sector 0
        assert stats["vcpu.current"] == "1", stats
        # KVM's own statistics (query-stats) and the dirty-rate state.
        assert int(stats["vm.pages_4k.cur"]) >= 0, stats
        assert "vcpu.0.halt_poll_success_ns.sum" in stats or any(
            k.startswith("vcpu.0.") and k.endswith(".sum") for k in stats), stats
        assert stats["dirtyrate.calc_status"] == "0", stats

        # A monitor command through libvirt.
        assert '"status":"running"' in dom.monitor("query-status")

        # Shutdown through ACPI: the guest sees the power button and powers off.
        dom.virsh("shutdown", name)
        dom.wait_serial(r"^power button$")
        dom.wait_serial(r"^poweroff$")
        dom.wait_state("shut off")

        # Start again: a second boot, on a new serial file.
        os.unlink(os.path.join(workdir, "serial.log"))
        dom.virsh("start", name)
        assert dom.state() == "running"
        dom.wait_serial(r"^1\.\.10$")

        # reset (system_reset) and reboot (libvirt's fake reboot: the power
        # button, the guest powers off, libvirt resets and resumes it) each
        # boot the guest again.
        dom.virsh("reset", name)
        dom.wait_serial(r"^1\.\.10$", count=2)
        dom.virsh("reboot", name)
        dom.wait_serial(r"^poweroff$")
        dom.wait_serial(r"^1\.\.10$", count=3)
        assert dom.state() == "running"

        # libvirtd restarts; it reconnects to the running domain's monitor.
        libvirt.restart()
        assert name in libvirt.ok("list", "--name").split()
        assert dom.state() == "running"
        assert '"status":"running"' in dom.monitor("query-status")
        dom.virsh("setmem", name, "120M", "--live")
        dom.wait_serial(rf"^# balloon actual={balloon_pages(120)} pages")

        # Destroy: SIGTERM, and the VMM reports SHUTDOWN host-signal.
        with open(libvirt.log, errors="replace") as f:
            f.seek(0, os.SEEK_END)
            mark = f.tell()
        dom.virsh("destroy", name)
        assert dom.state() == "shut off"
        with open(libvirt.log, errors="replace") as f:
            f.seek(mark)
            after = f.read()
        assert re.search(r'"event": ?"SHUTDOWN", ?"data": ?\{"guest": ?false, ?"reason": ?'
                         r'"host-signal"\}', after), after[-3000:]
    finally:
        libvirt.virsh("destroy", name)
        libvirt.virsh("undefine", name)


@pytest.mark.parametrize("emu", ["qemu", "ferrovm"])
def test_domain_boots_a_disk_through_seabios_on_its_pty_console(libvirt, emu, tmp_path):
    emulator = vmm_binary(emu, "it is the reference emulator of the libvirt test")
    name = f"fv-disk-{emu}"
    workdir = str(tmp_path)
    disk = bootdisk.compose(os.path.join(workdir, "boot.raw"), label="disk libvirt")
    xml = os.path.join(workdir, "domain.xml")
    with open(xml, "w") as f:
        f.write(domain_xml(name, emulator, workdir, disk=disk, acpi=False, serial="pty"))
    dom = Domain(libvirt, name, workdir)
    libvirt.ok("define", xml)
    try:
        # COM1 on a pty, as `virsh console` reads it: opened before the guest runs.
        dom.virsh("start", "--paused", name)
        pty = dom.virsh("ttyconsole", name).strip()
        assert pty.startswith("/dev/pts/"), pty
        console = PtyReader(pty)
        try:
            dom.virsh("resume", name)
            text = console.read_until("bootdisk: rsdp oem ", timeout=60)
        finally:
            console.close()
        assert "bootdisk: mbr" in text and "bootdisk: far sector, disk libvirt" in text, text
        # Without <features><acpi/> libvirt passes -no-acpi: the VMM gives
        # the firmware no tables, and SeaBIOS's own (OEM "BOCHS ") are found.
        assert "-no-acpi" in libvirt.domain_log(name)
        assert "bootdisk: rsdp oem BOCHS" in console.text, console.text
        assert dom.state() == "running"
        dom.virsh("destroy", name)
        assert dom.state() == "shut off"
    finally:
        libvirt.virsh("destroy", name)
        libvirt.virsh("undefine", name)


def qemu_img(*args):
    import subprocess
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"qemu-img {' '.join(args)}: {r.stderr}{r.stdout}"
    return r.stdout


def disk_source(dom):
    """The file libvirt says vda is on."""
    out = dom.virsh("domblklist", dom.name)
    return next(l.split()[1] for l in out.splitlines() if l.split()[:1] == ["vda"])


@pytest.mark.parametrize("emu", ["qemu", "ferrovm"])
def test_block_jobs_through_libvirt(libvirt, emu, testguest, tmp_path):
    """External snapshots, then blockpull, an active blockcommit with pivot and a
    blockcopy with pivot, on a running domain's qcow2 disk: after each, libvirt
    and the emulator agree on the file the disk is on, the data written into
    the base before the start is where it belongs, and the guest still runs."""
    import subprocess
    emulator = vmm_binary(emu, "it is the reference emulator of the libvirt test")
    name = f"fv-jobs-{emu}"
    w = str(tmp_path)
    base, s1, s2, copy = (os.path.join(w, f) for f in
                          ("base.qcow2", "s1.qcow2", "s2.qcow2", "copy.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", base, "64M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 0xa1 0 1M", base], check=True)
    xml = os.path.join(w, "domain.xml")
    with open(xml, "w") as f:
        f.write(domain_xml(name, emulator, w, kernel=testguest, disk=base, fmt="qcow2"))
    dom = Domain(libvirt, name, w)
    libvirt.ok("define", xml)
    try:
        dom.virsh("start", name)
        dom.wait_serial(r"^1\.\.10$")
        for snap, path in (("s1", s1), ("s2", s2)):
            dom.virsh("snapshot-create-as", name, snap, "--disk-only", "--no-metadata",
                      "--diskspec", f"vda,file={path}")
            assert disk_source(dom) == path
        # blockpull into s2 from s1: s2's backing file becomes the base.
        dom.virsh("blockpull", name, "vda", "--wait", "--base", base, timeout=120)
        info = json.loads(qemu_img("info", "-U", "--output=json", s2))
        assert info["backing-filename"] == base, info
        # Active commit into the base, then pivot: the disk is on the base.
        dom.virsh("blockcommit", name, "vda", "--active", "--pivot", "--wait", timeout=120)
        assert disk_source(dom) == base
        # Copy to a new image, then pivot onto it.
        dom.virsh("blockcopy", name, "vda", copy, "--pivot", "--wait", "--transient-job",
                  "--format", "qcow2", timeout=120)
        assert disk_source(dom) == copy
        blk = json.loads(dom.monitor("query-block"))["return"]
        assert [b["inserted"]["image"]["filename"] for b in blk if b.get("inserted")] == [copy]
        r = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0xa1 0 1M",
                            copy], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "read 1048576/1048576" in r.stdout \
            and "verification failed" not in r.stdout, r.stdout + r.stderr
        # The guest ran through all of it.
        dom.virsh("setmem", name, "110M", "--live")
        dom.wait_serial(rf"^# balloon actual={balloon_pages(110)} pages")
        dom.virsh("destroy", name)
        qemu_img("check", "-q", copy)
    finally:
        libvirt.virsh("destroy", name)
        libvirt.virsh("undefine", name)
