"""blockdev-create as a job (QEMU 7.2 block/create.c): files and qcow2
images made through QMP, the way libvirt and QEMU's iotests make them. The
same command sequence on ferrovm and QEMU 7.2 gives the same replies,
errors, job states and events, and the images are alike (qemu-img info,
check)."""
import json

from qmp_util import Qmp
from test_qcow2 import qemu_img


def C(job, **options):
    return ("blockdev-create", {"job-id": job, "options": options}, job)


STEPS = [
    C("c1", driver="file", filename="@/a.qcow2", size=0),
    ("query-jobs", None, None),
    ("block-job-cancel", {"device": "c1"}, None),
    ("query-block-jobs", None, None),
    C("c1", driver="file", filename="@/b.qcow2", size=0),
    ("job-dismiss", {"id": "c1"}, None),
    ("blockdev-add", {"driver": "file", "node-name": "f", "filename": "@/a.qcow2"}, None),
    C("c2", driver="qcow2", file="f", size=64 << 20),
    ("query-jobs", None, None),
    ("job-dismiss", {"id": "c2"}, None),
    # Errors found when the job runs: it concludes with the error.
    C("e1", driver="qcow2", file="f", size=1000),
    C("e2", driver="qcow2", file="f", size=1 << 20, **{"cluster-size": 1000}),
    C("e3", driver="qcow2", file="f", size=1 << 20, version="v2",
      **{"lazy-refcounts": True}),
    C("e4", driver="qcow2", file="f", size=1 << 20, **{"backing-fmt": "raw"}),
    C("e5", driver="qcow2", file="f", size=1 << 20, **{"refcount-bits": 3}),
    C("e6", driver="file", filename="/nonexistent/x.img", size=1 << 20),
    C("e7", driver="file", filename="@/c.img", size=1 << 20, preallocation="metadata"),
    ("query-jobs", None, None),
    *[("job-dismiss", {"id": f"e{i}"}, None) for i in range(1, 8)],
    # Refused at once.
    ("blockdev-create", {"job-id": "r", "options": {"driver": "raw", "file": "f"}}, None),
    ("blockdev-create", {"job-id": "1r", "options": {"driver": "file", "filename": "@/d",
                                                     "size": 0}}, None),
    # A qcow2 image over a backing file, and one with other options, on fresh files.
    C("c3", driver="file", filename="@/o.qcow2", size=0),
    C("c4", driver="file", filename="@/base.raw", size=8 << 20, preallocation="full"),
    ("blockdev-add", {"driver": "file", "node-name": "o", "filename": "@/o.qcow2"}, None),
    C("c5", driver="qcow2", file="o", size=8 << 20, **{"backing-file": "@/base.raw",
                                                       "backing-fmt": "raw"}),
    C("c6", driver="file", filename="@/v2.qcow2", size=0),
    ("blockdev-add", {"driver": "file", "node-name": "v", "filename": "@/v2.qcow2"}, None),
    C("c7", driver="qcow2", file="v", size=(1 << 30) + 512, version="v2",
      **{"cluster-size": 4096, "refcount-bits": 16}),
    ("query-jobs", None, None),
    ("blockdev-del", {"node-name": "v"}, None),
    ("blockdev-del", {"node-name": "o"}, None),
    ("blockdev-del", {"node-name": "f"}, None),
    *[("job-dismiss", {"id": f"c{i}"}, None) for i in range(3, 8)],
    ("query-jobs", None, None),
]

IMAGES = ["a.qcow2", "o.qcow2", "v2.qcow2", "base.raw"]


def run(binary, d, sock, launch):
    g = launch([binary, "-nodefaults", "-M", "q35", "-S", "-display", "none",
                "-qmp", f"unix:{sock},server=on,wait=off"])
    steps = json.loads(json.dumps(STEPS).replace("@/", d + "/"))
    out = []
    with Qmp(sock, proc=g.proc) as q:
        for name, args, job in steps:
            mark = len(q.events)
            try:
                out.append((name, q.cmd(name, args)))
            except Exception as e:  # noqa: BLE001 - the error is the answer
                out.append((name, getattr(e, "error_class", "?"), str(e)))
                continue
            if job:
                q.wait_event("JOB_STATUS_CHANGE", data={"id": job, "status": "concluded"},
                             timeout=60, start=mark)
        q.cmd("quit")
        events = [(e["event"], e.get("data")) for e in q.events if e["event"] != "SHUTDOWN"]
    g.wait_exit(30)
    info = {}
    for img in IMAGES:
        j = json.loads(qemu_img("info", "--output=json", f"{d}/{img}").stdout)
        j.pop("actual-size", None)
        j.pop("dirty-flag", None)
        info[img] = j
        if img.endswith("qcow2"):
            assert qemu_img("check", f"{d}/{img}", check=False).returncode == 0, img
    return json.loads(json.dumps([out, events, info]).replace(d, "@"))


def test_blockdev_create_equals_qemus(ferrovm, qemu, launch, tmp_path, sockdir):
    runs = {}
    for name, binary in (("ferrovm", ferrovm), ("qemu", qemu)):
        d = tmp_path / name
        d.mkdir()
        runs[name] = run(binary, str(d), f"{sockdir}/{name}.sock", launch)
    ours, theirs = runs["ferrovm"], runs["qemu"]
    assert len(ours[0]) == len(theirs[0])
    for a, b in zip(ours[0], theirs[0]):
        assert a == b, f"reply differs:\nferrovm {a}\nqemu    {b}"
    assert ours[1] == theirs[1], "events differ:\n" + "\n".join(
        f"{x!s:<70} {y!s}" for x, y in zip(ours[1], theirs[1]))
    for img in IMAGES:
        assert ours[2][img] == theirs[2][img], f"{img}: qemu-img info differs"
    # The images hold what was asked for, not just the same as QEMU's.
    assert ours[2]["o.qcow2"]["backing-filename"] == "@/base.raw"
    assert ours[2]["v2.qcow2"]["format-specific"]["data"]["compat"] == "0.10"
