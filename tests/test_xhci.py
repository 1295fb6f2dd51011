"""`-device qemu-xhci` (QEMU 7.2 hw/usb/hcd-xhci-pci.c), the USB controller
libvirt gives every q35 domain, with no USB devices: the test guest's
`plan=xhci` brings the controller up as a driver does (xHCI 1.2 §4.2),
runs commands on the command ring, takes their completions from the event
ring after each MSI-X interrupt and reads every root hub port. ferrovm must
print what QEMU 7.2 prints for the same guest, line for line; `query-pci`
and `device-list-properties` must say what QEMU's say."""
import re

import pytest

from qmp_util import Qmp, start_vm, vm_argv

LIBVIRT = '{"driver":"qemu-xhci","id":"usb","bus":"pcie.0","addr":"0x5"}'


def xhci_lines(launch, binary, testguest, *extra):
    """The guest's xhci lines (TAP and comments) from a `plan=xhci` boot
    that powers off at the end."""
    g = launch(vm_argv(binary, testguest, *extra, plan="xhci"))
    assert g.wait_exit(60) == 0, g.output()
    out = g.output()
    assert "\npoweroff" in out, out
    return [l for l in out.splitlines() if "xhci" in l and "cmdline" not in l]


def test_guest_sees_qemus_controller(ferrovm, qemu, testguest, launch):
    got = xhci_lines(launch, ferrovm, testguest, "-device", LIBVIRT)
    text = "\n".join(got)
    assert not [l for l in got if l.startswith("not ok")], text
    # What the xHCI spec and QEMU's register file imply, on their own:
    # CAPLENGTH 0x40, version 1.0, 8 ports / 16 interrupters / 64 slots.
    assert re.search(r"ok \d+ - xhci capabilities \(caplength 0x40 hciversion 0x100 "
                     r"hcsparams 0x08001040 ", text), text
    assert "# xhci protocol USB 3.00 name 0x20425355 ports 1-4" in got
    assert "# xhci protocol USB 2.00 name 0x20425355 ports 5-8" in got
    # Empty ports: no CCS, port power on, link RxDetect, connect change.
    assert "# xhci port 8 portsc 0x000202a0 after reset" in got
    assert "# xhci port 1 portsc 0x000002a0 after clearing CSC" in got
    assert "# xhci enable slot event 2: type 33 cc 1 slot 2 ptr cmd+0x20 cycle 1" in got
    # Address Device for a port with nothing behind it: TRB Error (5);
    # Stop Endpoint without endpoints: Endpoint Not Enabled (12); a
    # transfer TRB type on the command ring: TRB Error.
    assert [l.split(": ")[1] for l in got if "slot commands event" in l][:3] == [
        "type 33 cc 5 slot 1 ptr cmd+0x0 cycle 1",
        "type 33 cc 12 slot 1 ptr cmd+0x10 cycle 1",
        "type 33 cc 5 slot 1 ptr cmd+0x20 cycle 1"]
    # The 16-entry event ring wrapped: cycle bit 0 from entry 0 on.
    assert "# xhci event ring wrap event 0: type 33 cc 1 slot 0 ptr cmd+0x20 cycle 0" in got
    oracle = xhci_lines(launch, qemu, testguest, "-device", LIBVIRT)
    assert got == oracle, "\n".join(
        f"{'  ' if a == b else '!='} ferrovm: {a}\n   QEMU:    {b}" for a, b in zip(got, oracle))


@pytest.mark.parametrize("props", ["p2=2,p3=1", "p2=0,p3=15,streams=off", "p2=20,p3=3"])
def test_port_counts_are_qemus(ferrovm, qemu, testguest, launch, props):
    got = xhci_lines(launch, ferrovm, testguest, "-device", f"qemu-xhci,{props}")
    assert got == xhci_lines(launch, qemu, testguest, "-device", f"qemu-xhci,{props}")


@pytest.mark.parametrize("gsi, arrives", [(21, True), (22, False)])
def test_intx_without_msix_is_qemus(ferrovm, qemu, testguest, launch, gsi, arrives):
    """MSI-X left off: interrupter 0 raises INTA# of slot 1, GSI 21 on q35
    (QEMU's table and the DSDT's _PRT), level; writing IMAN.IP drops it.
    A neighbouring GSI sees nothing."""
    args = ("-device", "qemu-xhci")
    plan = f"xhci intx_gsi={gsi}"
    g = launch(vm_argv(ferrovm, testguest, *args, plan=plan))
    assert g.wait_exit(60) == 0, g.output()
    got = [l for l in g.output().splitlines() if "xhci" in l and "cmdline" not in l]
    taps = [l for l in got if re.match(r"(not )?ok \d+ - xhci (noop|enable slot|event ring wrap)", l)]
    assert len(taps) == 3, got
    assert all(("interrupt taken" in l) == arrives and l.startswith("ok") == arrives
               for l in taps), taps
    o = launch(vm_argv(qemu, testguest, *args, plan=plan))
    assert o.wait_exit(60) == 0, o.output()
    assert got == [l for l in o.output().splitlines() if "xhci" in l and "cmdline" not in l]


def pci_entry(q):
    """query-pci's entry for 1b36:000d, less the BAR address (ferrovm
    assigns it on direct boot, QEMU leaves it to SeaBIOS)."""
    devs = [d for b in q.cmd("query-pci") for d in b["devices"]
            if d["id"]["vendor"] == 0x1b36 and d["id"]["device"] == 0x000d]
    assert len(devs) == 1, devs
    d = dict(devs[0])
    d["regions"] = [{k: v for k, v in r.items() if k != "address"} for r in d["regions"]]
    return d


def monitor_view(launch, binary, testguest, sockdir):
    g, sock = start_vm(launch, binary, testguest, sockdir, "-device", LIBVIRT,
                       name=binary.rsplit("/", 1)[-1])
    q = Qmp(sock, proc=g.proc)
    view = {
        "pci": pci_entry(q),
        "props": {p["name"]: p for p in q.cmd("device-list-properties", {"typename": "qemu-xhci"})},
        "qom": q.cmd("qom-get", {"path": "/machine/peripheral/usb", "property": "type"}),
    }
    q.close()
    g.kill()
    return view


def test_monitor_reports_what_qemu_reports(ferrovm, qemu, testguest, sockdir, launch):
    got = monitor_view(launch, ferrovm, testguest, sockdir)
    pci = got["pci"]
    assert (pci["slot"], pci["class_info"], pci["irq_pin"]) == (5, {"desc": "USB controller",
                                                                    "class": 0x0c03}, 1), pci
    assert [(r["type"], r["size"], r["mem_type_64"]) for r in pci["regions"]] == \
        [("memory", 0x4000, True)], pci
    assert got["qom"] == "qemu-xhci"
    assert {"p2", "p3", "streams"} <= set(got["props"]), got["props"]
    oracle = monitor_view(launch, qemu, testguest, sockdir)
    assert got["pci"] == oracle["pci"]
    assert got["qom"] == oracle["qom"]
    # Each property ferrovm lists is QEMU's, to the byte (QEMU lists more:
    # acpi-index, failover_pair_id, host, x-pcie-*, xhci-core).
    for name, p in got["props"].items():
        assert oracle["props"].get(name) == p, name


@pytest.mark.parametrize("arg, msg", [
    ("qemu-xhci,intrs=4", "Property 'qemu-xhci.intrs' not found"),
    ("qemu-xhci,streams=maybe", "Parameter 'streams' expects 'on' or 'off'"),
    ("qemu-xhci,p2=x", "Parameter 'p2' expects integer"),
])
def test_bad_properties_fail_as_qemu(ferrovm, qemu, launch, arg, msg):
    for binary in (ferrovm, qemu):
        g = launch(vm_argv(binary, None, "-device", arg))
        assert g.wait_exit(20) == 1
        assert msg in g.stderr.decode(), (binary, g.stderr)


def test_usb_devices_stay_refused(ferrovm, launch):
    g = launch(vm_argv(ferrovm, None, "-device", "qemu-xhci", "-device", "usb-kbd"))
    assert g.wait_exit(20) == 1
    # Refused by name before anything is built (ferrovm's CLI table).
    assert "-device 'usb-kbd' is not supported by ferrovm" in g.stderr.decode(), g.stderr
