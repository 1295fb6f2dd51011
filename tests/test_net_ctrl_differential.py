"""virtio-net's control queue, ferrovm against QEMU 7.2 with the same guest: plan=net with
net_ctrl=1 (firmware/testguest/README.md) runs two fixed scripts of control commands, each
started by a link down-and-up from set_link. After each phase: the command acks on the
serial console, the NIC_RX_FILTER_CHANGED events (one per phase: QEMU sends no other until
query-rx-filter is asked) and query-rx-filter must be QEMU's; so must which host-side MAC
addresses the new filter lets through. One boot of each for the module, in one namespace."""
import re

import pytest

from conftest import Guest, guest_args
from netns import GUEST_IP, netns  # noqa: F401  (fixture)
from qmp_util import Qmp, short_tmpdir

# Host-side source MACs to try after each phase: the NIC's first address, the one the guest
# put in its unicast table, one it did not, the address it switches to, and none pinned.
PROBE_MACS = ["52:54:00:12:34:56", "52:54:00:00:00:01", "52:54:00:00:00:02",
              "52:54:00:12:34:99", None]


def reachable(ns, tap, mac):
    """Whether the guest answers a ping whose frames carry `mac` as destination (the host's
    ARP entry for the guest pinned to it; None: the host has to ARP)."""
    ns.run("ip", "neigh", "flush", "dev", tap)
    if mac:
        ns.run("ip", "neigh", "replace", GUEST_IP, "lladdr", mac, "dev", tap, "nud", "permanent")
    ok = ns.ping(count=2)
    ns.run("ip", "neigh", "flush", "dev", tap)
    ns.run("ip", "neigh", "del", GUEST_IP, "dev", tap, check=False)
    return ok


def drive(ns, binary, testguest, tap, is_qemu):
    sock = short_tmpdir() + "/q.sock"
    dev = "virtio-net-pci,netdev=n0,id=nic0,romfile="
    if is_qemu:  # QEMU's modern-only device, as ferrovm's
        dev += ",disable-legacy=on"
    argv = guest_args(binary, testguest, "plan=net net_ctrl=1", "-machine", "q35",
                      "-m", "256", "-qmp", f"unix:{sock},server=on,wait=off",
                      "-netdev", f"tap,id=n0,ifname={tap},script={ns.ifup},downscript=no",
                      "-device", dev)
    out = {"phases": []}
    g = Guest(ns.prefix() + argv)
    try:
        g.wait_line(r"^ok \d+ - net", 60)
        with Qmp(sock, proc=g.proc) as q:
            out["before"] = q.cmd("query-rx-filter")
            for phase in (1, 2):
                start, events = len(g.lines), len(q.events)
                q.cmd("set_link", {"name": "nic0", "up": False})
                g.wait_line(r"^# net link=down$", 10, start)
                q.cmd("set_link", {"name": "nic0", "up": True})
                g.wait_line(rf"^# net ctrl phase {phase} done$", 20, start)
                acks = [l for l in g.lines[start:] if re.match(r"^# net (ctrl \d+\.\d+|mac=)", l)]
                changed = [e for e in q.events[events:] if e["event"] == "NIC_RX_FILTER_CHANGED"]
                first = q.cmd("query-rx-filter")
                # Re-armed by the query, but nothing changed since: still no event.
                second = q.cmd("query-rx-filter", {"name": "nic0"})
                late = [e for e in q.events[events:] if e["event"] == "NIC_RX_FILTER_CHANGED"]
                out["phases"].append({
                    "acks": acks, "events": [e["data"] for e in changed],
                    "late": len(late) - len(changed), "filter": first, "again": second,
                    "reachable": [reachable(ns, tap, m) for m in PROBE_MACS]})
    finally:
        g.kill()
    return out


@pytest.fixture(scope="module")
def runs(netns, ferrovm, testguest, qemu):  # noqa: F811
    return {"ferrovm": drive(netns, ferrovm, testguest, "fctl0", False),
            "qemu": drive(netns, qemu, testguest, "qctl0", True)}


def test_filter_before_any_command_is_qemus(runs):
    assert runs["ferrovm"]["before"] == runs["qemu"]["before"]
    assert runs["ferrovm"]["before"][0]["promiscuous"] is True


@pytest.mark.parametrize("phase", [0, 1])
def test_each_phase_acks_events_and_filter_match_qemu(runs, phase):
    f, q = runs["ferrovm"]["phases"][phase], runs["qemu"]["phases"][phase]
    assert f["acks"] == q["acks"]
    assert f["events"] == q["events"]
    assert len(f["events"]) == 1, f["events"]
    assert f["events"][0] == {"name": "nic0", "path": "/machine/peripheral/nic0/virtio-backend"}
    assert f["late"] == q["late"] == 0
    assert f["filter"] == q["filter"] and f["again"] == q["again"]


@pytest.mark.parametrize("phase", [0, 1])
def test_the_filter_lets_through_what_qemus_does(runs, phase):
    f, q = runs["ferrovm"]["phases"][phase], runs["qemu"]["phases"][phase]
    assert f["reachable"] == q["reachable"], list(zip(PROBE_MACS, f["reachable"], q["reachable"]))
