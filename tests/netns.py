"""A private network namespace for the NIC tests: ferrovm (or QEMU) runs inside it with
its TAP, and the host side of the test (ping, raw sockets) runs there too, so no frame
leaves it. Needs root and iproute2; a missing `ip` fails the test, naming it."""
import os
import shutil
import subprocess
import uuid

import pytest

HOST_IP = "10.0.2.1"
GUEST_IP = "10.0.2.15"


class Netns:
    def __init__(self):
        if shutil.which("ip") is None:
            pytest.fail("iproute2's `ip` is missing: the virtio-net tests need network namespaces")
        if os.geteuid() != 0:
            pytest.fail("the virtio-net tests create a network namespace and TAPs: run as root")
        self.name = "fv" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")
        d = f"/tmp/{self.name}"
        os.makedirs(d, exist_ok=True)
        # QEMU's script= protocol: called with the interface name once it exists.
        self.ifup = os.path.join(d, "ifup")
        with open(self.ifup, "w") as f:
            f.write(f"#!/bin/sh\nip addr add {HOST_IP}/24 dev \"$1\" && ip link set \"$1\" up\n")
        os.chmod(self.ifup, 0o755)

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def run(self, *cmd, check=True, timeout=30):
        return subprocess.run(self.prefix() + list(cmd), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def ping(self, count=3, timeout=1, size=None, ip=GUEST_IP):
        """True if the guest answered (ping exits 0 on any reply; False: none came back)."""
        cmd = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout)]
        if size is not None:
            cmd += ["-s", str(size)]
        return self.run(*cmd, ip, check=False).returncode == 0

    def links(self):
        out = self.run("ip", "-o", "link", "show").stdout
        return [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()]

    def stat(self, ifname, counter):
        return int(self.run("cat", f"/sys/class/net/{ifname}/statistics/{counter}").stdout)

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(f"/tmp/{self.name}", ignore_errors=True)


@pytest.fixture(scope="module")
def netns():
    ns = Netns()
    yield ns
    ns.close()
