"""The NBD server (`nbd-server-start`, `nbd-server-add`, `nbd-server-remove`,
`nbd-server-stop`) against QEMU 7.2: one `-M none` boot of each per module,
each over its own copy of the same images, running the same scenario. What
QEMU answers is the expectation: QMP replies, errors and events; what
`qemu-img` and `qemu-io` see through the exports; the server's bytes for
the same raw NBD client bytes; the lines it prints; and the files after
writes through a writable export."""
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from qmp_util import ExecuteError, Qmp

MB = 1 << 20
OPTS_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x3e889045565a9
REQ_MAGIC = 0x25609513
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META = 8, 9, 10
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE = 0, 1, 2, 3, 4, 5
CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 6, 7


# --- a raw NBD client ---------------------------------------------------------

class Nbd:
    """The client side of the protocol, recording every byte the server sends."""

    def __init__(self, path, flags=3, greet=True):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.got = b""
        if greet:
            self.recv(18)
            self.s.sendall(struct.pack(">I", flags))

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError(f"EOF after {len(b)} of {n} bytes")
            b += c
        self.got += b
        return b

    def rest(self, timeout=5):
        """Whatever comes until the server closes (or `timeout`)."""
        self.s.settimeout(timeout)
        try:
            while True:
                c = self.s.recv(65536)
                if not c:
                    return "EOF"
                self.got += c
        except socket.timeout:
            return "open"
        except ConnectionResetError:
            return "reset"

    def opt(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", OPTS_MAGIC, opt, len(data)) + data)

    def replies(self):
        """The replies to one option, up to its ACK or error."""
        out = []
        while True:
            magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
            assert magic == REP_MAGIC, hex(magic)
            out.append((opt, typ, self.recv(ln)))
            if typ == 1 or typ & 0x80000000:
                return out

    def go(self, name, reqs=()):
        self.opt(OPT_GO, info(name, reqs))
        return self.replies()

    def req(self, typ, off=0, ln=0, flags=0, data=b"", handle=7):
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, handle, off, ln) + data)

    def simple(self, datalen=0):
        magic, err, handle = struct.unpack(">IIQ", self.recv(16))
        assert magic == 0x67446698, hex(magic)
        return err, handle, (self.recv(datalen) if not err and datalen else b"")

    def chunks(self):
        out = []
        while True:
            magic, = struct.unpack(">I", self.recv(4))
            if magic == 0x67446698:
                out.append(("simple",) + struct.unpack(">IQ", self.recv(12)))
                return out
            flags, typ, handle, ln = struct.unpack(">HHQI", self.recv(16))
            out.append((flags, typ, handle, self.recv(ln)))
            if flags & 1:
                return out

    def close(self):
        self.s.close()


def info(name, reqs=()):
    n = name.encode()
    return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(reqs))
            + b"".join(struct.pack(">H", r) for r in reqs))


def meta(name, queries):
    n = name.encode()
    p = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    return p + b"".join(struct.pack(">I", len(q)) + q.encode() for q in queries)


# --- the scenario --------------------------------------------------------------

def make_images(d):
    q = os.path.join(d, "q.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", q, "-c", "write -P 0x11 0 64k",
                    "-c", "write -P 0x22 1M 4k", "-c", "write -z 2M 64k"],
                   check=True, capture_output=True)
    r = os.path.join(d, "r.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", r, "1M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", r, "-c", "write -P 0x33 0 512k"],
                   check=True, capture_output=True)
    ro = os.path.join(d, "ro.raw")
    shutil.copy(r, ro)
    dr = os.path.join(d, "d.raw")
    shutil.copy(r, dr)
    return q, r, ro, dr


QEMU_IO_TIMES = re.compile(r"; \d+\.\d\d sec \([^)]*\)")


def tool(*argv):
    """A qemu-img / qemu-io run: (exit code, stdout, stderr), timings out."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return r.returncode, QEMU_IO_TIMES.sub("T", r.stdout), r.stderr


def qmp_steps(q, steps, events=True):
    """Each step's reply or error text, with the events it brought (those
    that come before the reply, and shortly after it)."""
    out = []
    for cmd, args in steps:
        before = len(q.events)
        try:
            r = q.cmd(cmd, args)
        except ExecuteError as e:
            r = ("error", str(e))
        if not events:
            out.append((cmd, r))
            continue
        time.sleep(0.05)
        out.append((cmd, r, [(e["event"], e.get("data")) for e in q.events[before:]]))
    return out


def scenario(binary, d):
    q_img, r_img, ro_img, d_img = make_images(d)
    sock = os.path.join(d, "nbd.sock")
    qmp_sock = os.path.join(d, "qmp.sock")
    p = subprocess.Popen(
        [binary, "-nodefaults", "-display", "none", "-M", "none",
         "-qmp", f"unix:{qmp_sock},server=on,wait=off",
         "-blockdev", f"driver=file,filename={q_img},node-name=qf",
         "-blockdev", "driver=qcow2,file=qf,node-name=q0",
         "-blockdev", f"driver=file,filename={r_img},node-name=rf",
         "-blockdev", "driver=raw,file=rf,node-name=r0",
         "-blockdev", f"driver=file,filename={ro_img},node-name=rof,read-only=on",
         "-blockdev", "driver=raw,file=rof,node-name=ro,read-only=on",
         "-drive", f"if=none,id=d0,file={d_img},format=raw",
         "-drive", "if=none,id=empty"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    res = {}
    try:
        q = Qmp(qmp_sock, proc=p)
        unix = {"type": "unix", "data": {"path": sock}}
        res["before"] = qmp_steps(q, [
            ("nbd-server-stop", {}),
            ("nbd-server-add", {"device": "q0"}),
            ("nbd-server-add", {"device": "nope"}),
            ("nbd-server-add", {"device": "q0", "name": "1bad"}),
            ("nbd-server-remove", {"name": "q0"}),
            ("nbd-server-start", {"addr": {"type": "unix",
                                           "data": {"path": d + "/nonexistent/s"}}}),
            ("nbd-server-start", {"addr": unix, "tls-creds": "nope"}),
            ("nbd-server-start", {"addr": {"type": "fd", "data": {"str": "nope"}}}),
            ("nbd-server-start", {"addr": {"type": "inet", "data": {
                "host": "127.0.0.1", "port": "0", "ipv4": False, "ipv6": False}}}),
            ("nbd-server-start", {"addr": {"type": "inet",
                                           "data": {"host": "127.0.0.1", "port": "x"}}}),
            ("nbd-server-start", {"addr": {"type": "vsock", "data": {"cid": "x", "port": "1"}}}),
            ("nbd-server-start", {"addr": unix, "max-connections": -1}),
            ("nbd-server-start", {"addr": {"type": "inet",
                                           "data": {"host": "127.0.0.1", "port": "0"}}}),
            ("nbd-server-start", {"addr": unix}),
            ("nbd-server-stop", {}),
        ])
        res["socket_left_after_failures"] = os.path.exists(sock)
        res["start"] = qmp_steps(q, [
            ("nbd-server-start", {"addr": unix, "tls-authz": "nope"}),
            ("nbd-server-start", {"addr": unix}),
            ("nbd-server-add", {"device": "q0", "name": "1bad"}),
            ("nbd-server-add", {"device": "q0", "name": "x" * 4097}),
            ("nbd-server-add", {"device": "q0", "description": "x" * 4097}),
            ("nbd-server-add", {"device": "q0", "bitmap": "nope"}),
            ("nbd-server-add", {"device": "empty"}),
            ("nbd-server-add", {"device": "q0", "description": "the qcow2 image"}),
            ("nbd-server-add", {"device": "q0"}),
            ("nbd-server-add", {"device": "r0", "name": "w", "writable": True}),
            # A read-only node is exported read-only, without an error.
            ("nbd-server-add", {"device": "ro", "writable": True}),
            ("nbd-server-add", {"device": "d0"}),
            ("query-block-exports", {}),
            # The exports are parents of their nodes, with their permissions.
            ("x-debug-query-block-graph", {}),
            ("block_resize", {"node-name": "q0", "size": 8 * MB}),
            ("blockdev-del", {"node-name": "q0"}),
            ("nbd-server-remove", {"name": "q0", "mode": "bogus"}),
        ])
        res["socket_exists"] = os.path.exists(sock)
        res["wire"] = wire(sock)
        uri = lambda name: f"nbd+unix:///{name}?socket={sock}"
        res["tools"] = [
            tool("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", uri("q0"), q_img),
            tool("qemu-img", "map", "--output=json", "-f", "raw", uri("q0")),
            tool("qemu-img", "info", "--output=json", uri("q0")),
            tool("qemu-io", "-r", "-f", "raw", uri("q0"), "-c", "read -P 0x11 0 64k",
                 "-c", "read -P 0x22 1M 4k", "-c", "read -P 0 2M 64k",
                 "-c", "read -P 0 3M 1M"),
            # Read-only exports refuse writes.
            tool("qemu-io", "-f", "raw", uri("q0"), "-c", "write 0 4"),
            tool("qemu-io", "-r", "-f", "raw", uri("q0"), "-c", "write 0 4"),
            tool("qemu-io", "-f", "raw", uri("ro"), "-c", "write 0 4"),
            tool("qemu-io", "-f", "raw", uri("nope"), "-c", "read 0 4"),
            # Writes through the writable export.
            tool("qemu-io", "-f", "raw", uri("w"), "-c", "write -P 0x5a 4096 8k",
                 "-c", "write -z 64k 64k", "-c", "discard 128k 64k", "-c", "flush",
                 "-c", "write -P 0x6b 1020k 4k", "-c", "write 1023k 2k",
                 "-c", "read -P 0x5a 4096 8k", "-c", "read -P 0 64k 64k"),
            tool("qemu-img", "compare", "-U", "-f", "raw", uri("d0"), d_img),
        ]
        res["clients"] = clients(q, sock)
        res["max_connections"] = max_connections(q, sock, unix)
        res["stop"] = stop(q, sock, unix)
        # The exports go at exit, with their events before quit's reply.
        qmp_steps(q, [("nbd-server-start", {"addr": unix}), ("nbd-server-add", {"device": "q0"})])
        res["quit"] = qmp_steps(q, [("quit", {})])
        q.close()
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    # The lines the server printed, without the program's name.
    res["stderr"] = [re.sub(r"^[^:]+: ", "", line) for line in err.splitlines()]
    res["files"] = {os.path.basename(f): hashlib.sha256(open(f, "rb").read()).hexdigest()
                    for f in (r_img, d_img)}
    with open(r_img, "rb") as f:
        res["r_bytes"] = f.read()
    return res


def wire(sock):
    """Raw conversations; the server's bytes for each."""
    out = {}
    c = Nbd(sock)
    c.opt(OPT_LIST)
    c.opt(OPT_LIST, b"x")
    c.opt(OPT_STARTTLS)
    c.opt(99, b"abc")
    for name, reqs in (("q0", ()), ("q0", (1, 3)), ("w", ()), ("ro", (3,)), ("d0", ()),
                       ("nope", ()), ("x" * 100, ())):
        c.opt(OPT_INFO, info(name, reqs))
    c.opt(OPT_INFO, info("q0")[:-1])
    c.opt(OPT_SET_META, meta("q0", ["base:allocation"]))
    c.opt(OPT_STRUCTURED)
    c.opt(OPT_STRUCTURED)
    c.opt(OPT_LIST_META, meta("q0", []))
    c.opt(OPT_LIST_META, meta("nope", []))
    c.opt(OPT_SET_META, meta("q0", ["base:", "qemu:", "base:allocation"]))
    c.opt(OPT_ABORT)
    out["options"] = c.rest()
    out["options_bytes"] = c.got

    # Structured replies, base:allocation, reads and bad requests on q0.
    c = Nbd(sock)
    c.opt(OPT_STRUCTURED)
    c.replies()
    c.opt(OPT_SET_META, meta("q0", ["base:allocation"]))
    c.replies()
    c.go("q0")
    for r in [(CMD_BLOCK_STATUS, 0, 4 * MB), (CMD_BLOCK_STATUS, 0, 4 * MB, 8),
              (CMD_BLOCK_STATUS, 0, 0), (CMD_READ, 0, 128 << 10),
              (CMD_READ, 60 << 10, 8 << 10, 4), (CMD_READ, 0, 0), (CMD_READ, 4 * MB - 1, 2),
              (CMD_WRITE, 0, 4, 0, b"abcd"), (CMD_TRIM, 0, 512), (CMD_WRITE_ZEROES, 0, 512),
              (CMD_READ, 0, 1, 16), (42, 0, 1), (CMD_FLUSH,), (CMD_CACHE, 0, 64 << 10),
              (CMD_READ, 0, 33 * MB)]:
        c.req(*r)
        c.chunks()
    c.req(CMD_DISC)
    out["structured"] = c.rest()
    out["structured_bytes"] = c.got

    # Simple replies on the writable export, then a bad magic.
    c = Nbd(sock)
    c.go("w")
    for r, n in [((CMD_WRITE, 512 << 10, 8, 1, b"12345678"), 0), ((CMD_READ, 512 << 10, 8), 8),
                 ((CMD_WRITE_ZEROES, 520 << 10, 4096, 2), 0), ((CMD_TRIM, 0, 4096, 1), 0),
                 ((CMD_BLOCK_STATUS, 0, 512), 0), ((CMD_WRITE, MB - 2, 4, 0, b"abcd"), 0),
                 ((CMD_READ, 0, 1, 4), 1)]:
        c.req(*r)
        c.simple(n)
    c.s.sendall(b"\0" * 28)
    out["simple"] = c.rest()
    out["simple_bytes"] = c.got

    # A write too large: refused, then the connection closes.
    c = Nbd(sock)
    c.go("w")
    c.req(CMD_WRITE, 0, 33 * MB)
    out["big_write"] = c.rest()
    out["big_write_bytes"] = c.got

    # The old way in, and failed handshakes.
    c = Nbd(sock, flags=1)
    c.opt(OPT_EXPORT_NAME, b"q0")
    c.recv(134)
    c.req(CMD_DISC)
    out["export_name"] = (c.rest(), c.got)
    for flags, opt in ((1, (OPT_EXPORT_NAME, b"nope")), (0, (OPT_LIST, b"")), (8, None),
                       (3, (OPT_GO, b"\0" * 3))):
        c = Nbd(sock, flags=flags)
        if opt:
            c.opt(*opt)
        if flags == 3:
            c.opt(OPT_ABORT)
        out[f"refused-{flags}-{opt}"] = (c.rest(), c.got)
    # (Exactly the magic: bytes left unread when the server closes would
    # make the close a reset, for QEMU as for ferrovm.)
    c = Nbd(sock)
    c.s.sendall(b"x" * 8)
    out["bad_magic"] = (c.rest(), c.got)
    return out


def clients(q, sock):
    """safe and hard removal with a client connected."""
    c = Nbd(sock)
    c.go("d0")
    # The event comes once the client has gone, after the reply.
    r = qmp_steps(q, [("nbd-server-remove", {"name": "d0", "mode": "safe"}),
                      ("nbd-server-remove", {"name": "d0", "mode": "hard"})], events=False)
    client = c.rest()
    q.wait_event("BLOCK_EXPORT_DELETED", data={"id": "d0"}, timeout=10)
    r += qmp_steps(q, [("query-block-exports", {}),
                       ("nbd-server-remove", {"name": "d0"})])
    return r, client


def max_connections(q, sock, unix):
    """One client at a time: the second is greeted once the first has gone."""
    r = qmp_steps(q, [("nbd-server-stop", {}),
                      ("nbd-server-start", {"addr": unix, "max-connections": 1}),
                      ("nbd-server-add", {"device": "q0"})])
    a = Nbd(sock)
    flags = a.go("q0")
    b = Nbd(sock, greet=False)
    b.s.settimeout(0.5)
    try:
        early = b.s.recv(18)
    except socket.timeout:
        early = b""
    a.req(CMD_DISC)
    a.rest()
    b.s.settimeout(5)
    late = b.recv(18)
    b.close()
    return r, flags, early, late


def stop(q, sock, unix):
    """nbd-server-stop disconnects the clients, deletes every export and
    removes the socket file."""
    r = qmp_steps(q, [("nbd-server-stop", {}),
                      ("nbd-server-start", {"addr": unix}),
                      ("nbd-server-add", {"device": "q0"}),
                      ("nbd-server-add", {"device": "r0", "name": "w"}),
                      ("nbd-server-add", {"device": "ro"})])
    c = Nbd(sock)
    c.go("w")
    # (Not with a client still in the handshake: QEMU 7.2's
    # nbd-server-stop then never returns.)
    r += qmp_steps(q, [("nbd-server-stop", {})])
    return r, c.rest(), os.path.exists(sock), qmp_steps(q, [
        ("query-block-exports", {}), ("nbd-server-stop", {}),
        ("blockdev-del", {"node-name": "ro"})])


@pytest.fixture(scope="module")
def runs(ferrovm, qemu):
    dirs = [tempfile.mkdtemp(prefix="fvn", dir="/tmp") for _ in range(2)]
    try:
        yield scenario(qemu, dirs[0]), scenario(ferrovm, dirs[1])
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def paths_out(v):
    """The runs' directories differ: their names are masked, and so are
    automatic node names (a counter and two random digits)."""
    if isinstance(v, str):
        return re.sub(r"#block\d+", "#block", re.sub(r"/tmp/fvn[^/]*", "/D", v))
    if isinstance(v, bytes):
        return re.sub(rb"/tmp/fvn[^/]*", b"/D", v)
    if isinstance(v, (list, tuple)):
        return [paths_out(x) for x in v]
    if isinstance(v, dict):
        return {k: paths_out(x) for k, x in v.items()}
    return v


# --- the comparisons ------------------------------------------------------------

def test_qmp_replies_errors_and_events_are_qemus(runs):
    qemu, ferro = runs
    for key in ("before", "start"):
        for a, b in zip(paths_out(qemu[key]), paths_out(ferro[key])):
            assert a == b
        assert len(qemu[key]) == len(ferro[key])
    assert qemu["socket_left_after_failures"] == ferro["socket_left_after_failures"] is False
    assert qemu["socket_exists"] and ferro["socket_exists"]


def test_handshake_and_requests_are_byte_for_byte_qemus(runs):
    qemu, ferro = runs
    for key in qemu["wire"]:
        assert paths_out(ferro["wire"][key]) == paths_out(qemu["wire"][key]), key


def test_qemu_img_and_qemu_io_see_the_images(runs):
    qemu, ferro = runs
    for a, b in zip(paths_out(qemu["tools"]), paths_out(ferro["tools"])):
        assert b == a
    compare, *_ = ferro["tools"]
    assert compare[0] == 0 and "Images are identical." in compare[1]
    # qemu-io read the patterns back.
    assert ferro["tools"][3][0] == 0 and "Pattern verification failed" not in ferro["tools"][3][1]


def test_writes_through_a_writable_export_land_in_the_image(runs):
    qemu, ferro = runs
    assert ferro["files"] == qemu["files"]
    b = ferro["r_bytes"]
    assert b[4096:4096 + 8192] == b"\x5a" * 8192
    assert b[64 << 10:128 << 10] == bytes(64 << 10)
    assert b[1020 << 10:1023 << 10] == b"\x6b" * 3072
    assert b[512 << 10:(512 << 10) + 8] == b"12345678"


def test_read_only_exports_refuse_writes(runs):
    qemu, ferro = runs
    write_ro, write_r, write_downgraded = ferro["tools"][4:7]
    assert write_ro[0] == 1 and "Permission denied" in write_ro[2]
    assert write_r[0] == 1 and "Block node is read-only" in write_r[2]
    assert write_downgraded[0] == 1
    assert paths_out(ferro["tools"][4:7]) == paths_out(qemu["tools"][4:7])


def test_removal_with_a_client_connected(runs):
    qemu, ferro = runs
    assert ferro["clients"] == qemu["clients"]
    (safe, hard, *_), client = ferro["clients"]
    assert safe[1] == ("error", "export 'd0' still in use")
    assert client == "EOF"


def test_max_connections_serves_one_client_at_a_time(runs):
    qemu, ferro = runs
    assert ferro["max_connections"] == qemu["max_connections"]
    _, _, early, late = ferro["max_connections"]
    assert early == b"" and late.startswith(b"NBDMAGIC")


def test_stop_disconnects_everyone_and_removes_the_socket(runs):
    qemu, ferro = runs
    assert ferro["stop"] == qemu["stop"]
    _, client, sock_left, _ = ferro["stop"]
    assert (client, sock_left) == ("EOF", False)


def test_exports_go_at_exit(runs):
    qemu, ferro = runs
    assert ferro["quit"] == qemu["quit"]
    assert ferro["quit"][0][2] == [("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}),
                                   ("BLOCK_EXPORT_DELETED", {"id": "q0"})]


def test_the_server_prints_what_qemu_prints(runs):
    qemu, ferro = runs
    assert ferro["stderr"] == qemu["stderr"]
