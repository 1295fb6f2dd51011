"""KVM's binary statistics through QMP (query-stats, query-stats-schemas)
and query-dirty-rate, ferrovm against QEMU 7.2 booting the same idle test
guest with two vCPUs on this host's KVM. Values differ from run to run, so
the checks are the names, the shapes the schema promises, the filters, and
that a cumulative counter moves while the guest runs (libvirt's `virsh
domstats` reads these)."""
import os
import time

import pytest
from qemu.qmp import ExecuteError

from qmp_util import Qmp, running, short_tmpdir, vm_argv


def boot(binary, testguest, sockdir, name):
    sock = os.path.join(sockdir, name)
    argv = vm_argv(binary, testguest, "-qmp", f"unix:{sock},server=on,wait=off",
                   plan="idle", smp="2")
    return argv, sock


@pytest.fixture(scope="module")
def vms(ferrovm, qemu, testguest):
    """Both emulators running the idle guest: {name: Qmp}."""
    sockdir = short_tmpdir()
    out = {}
    with running(boot(ferrovm, testguest, sockdir, "f")[0]) as gf, \
            running(boot(qemu, testguest, sockdir, "q")[0]) as gq:
        for name, g in (("ferrovm", gf), ("qemu", gq)):
            g.wait_line(r"^tick 1$", timeout=30)
            out[name] = Qmp(os.path.join(sockdir, name[0]), proc=g.proc)
        yield out
        for q in out.values():
            q.close()


def by_target(schemas):
    return {s["target"]: s for s in schemas}


def test_schemas_list_qemus_stats(vms):
    seen = {n: q.cmd("query-stats-schemas") for n, q in vms.items()}
    # vcpu first, then vm, as QEMU prepends.
    assert [s["target"] for s in seen["ferrovm"]] == [s["target"] for s in seen["qemu"]]
    assert [s["target"] for s in seen["qemu"]] == ["vcpu", "vm"]
    # Same kernel, same descriptors: every entry equal, in QEMU's order.
    assert seen["ferrovm"] == seen["qemu"]
    for n, q in vms.items():
        assert q.cmd("query-stats-schemas", {"provider": "kvm"}) == seen[n]


def check_shape(results, schema, target):
    """Each value as its schema entry says: a bool for unit boolean, a list
    for a histogram, else a number."""
    kinds = {e["name"]: e for e in schema["stats"]}
    for r in results:
        assert r["provider"] == "kvm"
        assert ("qom-path" in r) == (target == "vcpu"), r
        assert [s["name"] for s in r["stats"]] == [e["name"] for e in schema["stats"]]
        for s in r["stats"]:
            e = kinds[s["name"]]
            if e.get("unit") == "boolean":
                assert isinstance(s["value"], bool), s
            elif e["type"].endswith("histogram"):
                assert isinstance(s["value"], list) and all(
                    isinstance(v, int) and v >= 0 for v in s["value"]), s
            else:
                assert isinstance(s["value"], int) and not isinstance(s["value"], bool), s
                assert s["value"] >= 0, s


def test_values_have_the_schema_shape(vms):
    for n, q in vms.items():
        schemas = by_target(q.cmd("query-stats-schemas"))
        vm = q.cmd("query-stats", {"target": "vm"})
        assert len(vm) == 1
        check_shape(vm, schemas["vm"], "vm")
        vcpu = q.cmd("query-stats", {"target": "vcpu"})
        check_shape(vcpu, schemas["vcpu"], "vcpu")
    # The same vCPUs, named by the QOM paths query-cpus-fast gives, last first.
    paths = {n: [r["qom-path"] for r in q.cmd("query-stats", {"target": "vcpu"})]
             for n, q in vms.items()}
    assert paths["ferrovm"] == paths["qemu"]
    cpus = [c["qom-path"] for c in vms["ferrovm"].cmd("query-cpus-fast")]
    assert paths["ferrovm"] == cpus[::-1]


def exits(q, path):
    r = q.cmd("query-stats", {"target": "vcpu", "vcpus": [path],
                              "providers": [{"provider": "kvm", "names": ["exits"]}]})
    assert len(r) == 1 and [s["name"] for s in r[0]["stats"]] == ["exits"], r
    return r[0]["stats"][0]["value"]


def test_exits_grow_while_the_guest_runs(vms):
    q = vms["ferrovm"]
    bsp = q.cmd("query-cpus-fast")[0]["qom-path"]
    first = exits(q, bsp)
    # The idle guest's BSP takes timer interrupts (ticks every 100 ms).
    time.sleep(0.5)
    assert exits(q, bsp) > first


def filters(q):
    """What each filter lets through: the (qom-path, names) of every result."""
    def ask(args):
        try:
            reply = q.cmd("query-stats", args)
        except ExecuteError as e:
            return e.error_class, str(e)
        return [(r.get("qom-path"), [s["name"] for s in r["stats"]]) for r in reply]
    path = q.cmd("query-cpus-fast")[-1]["qom-path"]
    halt = {"provider": "kvm", "names": ["halt_poll_success_ns", "halt_poll_fail_ns"]}
    return [
        ask({"target": "vcpu", "providers": [halt]}),
        ask({"target": "vcpu", "providers": [halt, halt]}),
        ask({"target": "vcpu", "providers": []}),
        ask({"target": "vcpu", "providers": [{"provider": "kvm", "names": []}]}),
        ask({"target": "vcpu", "providers": [{"provider": "kvm", "names": ["nosuch"]}]}),
        ask({"target": "vcpu", "vcpus": [path]}),
        ask({"target": "vcpu", "vcpus": []}),
        ask({"target": "vcpu", "vcpus": ["/machine/nosuch"]}),
        ask({"target": "vm", "providers": [{"provider": "kvm", "names": ["pages_4k"]}]}),
        ask({"target": "vm", "vcpus": [path]}),
        ask({"target": "cryptodev"}),
        ask({"target": "vcpu", "providers": [{"provider": "nosuch"}]}),
        ask({}),
    ]


def test_filters_as_qemu(vms):
    assert filters(vms["ferrovm"]) == filters(vms["qemu"])


def test_query_dirty_rate_before_any_calc(vms):
    seen = {n: q.cmd("query-dirty-rate") for n, q in vms.items()}
    assert seen["ferrovm"] == seen["qemu"]
    assert seen["qemu"]["status"] == "unstarted"


def test_counters_survive_a_reset(vms):
    """QEMU keeps its KVM VM across system_reset, so cumulative counters go
    on; ferrovm rebuilds the VM and must not fall back to zero either."""
    for n, q in vms.items():
        bsp = q.cmd("query-cpus-fast")[0]["qom-path"]
        before = exits(q, bsp)
        q.cmd("system_reset")
        after = exits(q, bsp)
        assert after >= before, (n, before, after)
        paths = [r["qom-path"] for r in q.cmd("query-stats", {"target": "vcpu"})]
        assert paths == [c["qom-path"] for c in q.cmd("query-cpus-fast")][::-1], n
