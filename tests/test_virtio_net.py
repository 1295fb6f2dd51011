"""virtio-net-pci on a TAP, on KVM: the test guest (plan=net: ARP and ICMP echo responder,
firmware/testguest/README.md) is pinged from the host's own network stack inside a private
network namespace, pings the host itself, follows set_link, and loses its backend to
netdev_del. Command-line errors are compared with QEMU 7.2's."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import Guest, guest_args
from netns import GUEST_IP, netns  # noqa: F401  (fixture)
from qmp_util import Qmp, short_tmpdir, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def nic_args(ns, tap, *netdev_extra, device_extra=""):
    netdev = ",".join([f"tap,id=n0,ifname={tap},script={ns.ifup},downscript=no", *netdev_extra])
    return ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,id=nic0{device_extra}"]


class Booted:
    """ferrovm inside the namespace, plan=net, with a QMP client."""

    def __init__(self, ns, ferrovm, testguest, args, append="plan=net", pass_fds=(), wrap=()):
        self.sock = short_tmpdir() + "/q.sock"
        argv = list(wrap) + guest_args(ferrovm, testguest, append, "-m", "128",
                                       "-qmp", f"unix:{self.sock},server=on,wait=off", *args)
        self.g = Guest(ns.prefix() + argv, pass_fds=pass_fds)
        self.g.wait_line(r"^ok \d+ - net", 30)
        self.q = Qmp(self.sock, proc=self.g.proc)

    def finish(self):
        """system_powerdown: the guest prints its counters and powers off."""
        start = len(self.g.lines)
        self.q.cmd("system_powerdown")
        m = self.g.wait_line(r"^# net rx_frames=(\d+) rx_bytes=\d+ tx_frames=(\d+)", 20, start)
        assert self.g.wait_exit(20) == 0, self.g.output()
        self.q.close()
        return int(m.group(1)), int(m.group(2))

    def kill(self):
        self.q.close()
        self.g.kill()


@pytest.fixture
def boot(netns, ferrovm, testguest):  # noqa: F811
    started = []

    def _boot(args, **kw):
        b = Booted(netns, ferrovm, testguest, args, **kw)
        started.append(b)
        return b

    yield _boot
    for b in started:
        b.kill()


def test_frames_cross_both_ways_and_set_link_stops_them(netns, boot):  # noqa: F811
    b = boot(nic_args(netns, "fvnet0"))
    # Guest to host and back: its ARP request for 10.0.2.1, our reply, its echo request.
    b.g.wait_line(r"^# net ping 10\.0\.2\.1 reply rtt_us=\d+", 20)
    # Host to guest: the host's ping, answered by the guest.
    assert netns.ping(count=5), "the guest did not answer the host's ping"
    assert netns.ping(count=2, size=1472), "a full-MTU echo did not come back"
    assert netns.stat("fvnet0", "tx_packets") >= 7 and netns.stat("fvnet0", "rx_packets") >= 7

    start = len(b.g.lines)
    b.q.cmd("set_link", {"name": "nic0", "up": False})
    b.g.wait_line(r"^# net link=down$", 10, start)
    rx_before = netns.stat("fvnet0", "rx_packets")
    assert not netns.ping(count=2), "frames crossed a link that is down"
    assert netns.stat("fvnet0", "rx_packets") == rx_before, "the guest's replies left a down link"

    # The netdev's id reaches the NIC too (QEMU's qmp_set_link).
    start = len(b.g.lines)
    b.q.cmd("set_link", {"name": "n0", "up": True})
    b.g.wait_line(r"^# net link=up$", 10, start)
    assert netns.ping(count=3), "no traffic after the link came back"
    rx, tx = b.finish()
    assert rx >= 10 and tx >= 10, (rx, tx)


def test_multiqueue_tap_and_mq_nic_carry_traffic(netns, boot):  # noqa: F811
    # The JSON forms, with native types, as libvirt writes them.
    netdev = json.dumps({"type": "tap", "id": "n0", "ifname": "fvmq0", "script": netns.ifup,
                         "downscript": "no", "queues": 2, "vnet_hdr": True})
    device = json.dumps({"driver": "virtio-net-pci", "netdev": "n0", "id": "nic0", "mq": True,
                         "vectors": 6})
    b = boot(["-netdev", netdev, "-device", device])
    flags = int(netns.run("cat", "/sys/class/net/fvmq0/tun_flags").stdout, 16)
    assert flags & 0x0100, f"the TAP is not multiqueue (tun_flags {flags:#x})"  # IFF_MULTI_QUEUE
    assert netns.ping(count=3)
    b.finish()


def test_fd_passed_by_the_caller_as_libvirt_does(netns, ferrovm, testguest, boot):  # noqa: F811
    # tests/tapfd.py opens the TAP in the namespace and execs ferrovm with fd=3.
    wrap = [sys.executable, os.path.join(HERE, "tapfd.py"), "fvfd0", netns.ifup, "--"]
    b = boot(["-netdev", "tap,id=n0,fd=3", "-device", "virtio-net-pci,netdev=n0,id=nic0"],
             wrap=wrap)
    assert netns.ping(count=3), "no traffic over the TAP handed in as fd=3"
    b.finish()


def test_netdev_add_and_del_while_running(netns, boot):  # noqa: F811
    b = boot(nic_args(netns, "fvdel0"))
    b.q.cmd("netdev_add", {"type": "tap", "id": "n1", "ifname": "fvadd1", "script": "no",
                           "downscript": "no"})
    assert "fvadd1" in netns.links()
    assert b.q.error("netdev_add", {"type": "tap", "id": "n1", "ifname": "fvadd2",
                                    "script": "no"}) == ("GenericError", "Duplicate ID 'n1'")
    b.q.cmd("netdev_del", {"id": "n1"})
    wait_for(lambda: "fvadd1" not in netns.links(), 5, "fvadd1 to disappear")
    # Deleting the NIC's own netdev: its link goes down and the TAP goes away.
    assert netns.ping(count=1)
    start = len(b.g.lines)
    b.q.cmd("netdev_del", {"id": "n0"})
    b.g.wait_line(r"^# net link=down$", 10, start)
    wait_for(lambda: "fvdel0" not in netns.links(), 5, "fvdel0 to disappear")
    assert b.q.error("netdev_del", {"id": "n0"}) == ("DeviceNotFound", "Device 'n0' not found")
    assert b.q.error("query-rx-filter", {"name": "n0"}) == (
        "GenericError", "invalid net client name: n0")
    assert b.q.cmd("query-rx-filter", {"name": "nic0"})[0]["name"] == "nic0"
    b.finish()


def run(argv, timeout=20):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def message(stderr):
    lines = [l for l in stderr.splitlines() if "warning:" not in l and l.strip()]
    assert lines, "no error on stderr"
    first = lines[0]
    for prefix in ("ferrovm: ", "qemu-system-x86_64: "):
        first = first.removeprefix(prefix)
    return first


BAD_LINES = [
    ["-netdev", "tap,id=n0,fd=3,ifname=x"],
    ["-netdev", "tap,id=n0,fds=3:4,fd=5"],
    ["-netdev", "tap,id=n0,queues=x"],
    ["-netdev", "tap,id=n0,ifname=fvbad0,script=no,downscript=no",
     "-device", "virtio-net-pci,netdev=nope"],
    ["-netdev", "tap,id=n0,ifname=fvbad1,script=no,downscript=no",
     "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-net-pci,netdev=n0"],
    ["-netdev", "tap,id=n0,ifname=fvbad2,script=/nonexistent,downscript=no"],
    ["-device", "virtio-net-pci,mac=52:54:00:12:34"],
    ["-device", "virtio-net-pci,rx_queue_size=100"],
]


@pytest.mark.parametrize("args", BAD_LINES, ids=lambda a: " ".join(a)[:60])
def test_bad_command_lines_fail_as_qemu_does(netns, ferrovm, testguest, qemu, args):  # noqa: F811
    base = ["-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none", "-S"]
    ours = run(netns.prefix() + [ferrovm, *base, "-kernel", testguest, *args])
    theirs = run(netns.prefix() + [qemu, *base, *args])
    assert theirs.returncode == 1, theirs.stderr
    assert ours.returncode == 1, ours.stderr
    assert message(ours.stderr) == message(theirs.stderr)


def test_vhost_is_refused_in_one_line(netns, ferrovm, testguest):  # noqa: F811
    r = run(netns.prefix() + [ferrovm, "-nodefaults", "-display", "none", "-S", "-kernel",
                              testguest, "-netdev", "tap,id=n0,vhost=on,script=no"])
    assert r.returncode == 1
    assert message(r.stderr).startswith("-netdev tap,id=n0,vhost=on,script=no: vhost-net is not "
                                        "supported by ferrovm"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
