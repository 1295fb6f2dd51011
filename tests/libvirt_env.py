"""A private libvirtd and virtlogd for one test module.

They run in their own mount namespace, where libvirt's state, run, cache, log and
configuration directories are bind mounts of one temporary directory. So they never
touch the host's libvirt (a running system daemon, its domains, its capability cache),
and stopping them stops only them. virsh reaches the daemon through the socket in that
directory (`qemu:///system?socket=...`).

A libvirtd restart starts a new daemon over the same directories: it finds the running
domains' status files and reconnects to their monitors, as after `systemctl restart`."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

# libvirt's directories and what each holds.
MOUNTS = {
    "run": "/run/libvirt",            # sockets, pid files, domain status XML
    "lib": "/var/lib/libvirt",        # domain home directories, monitor sockets
    "cache": "/var/cache/libvirt",    # the capability cache
    "log": "/var/log/libvirt",        # domain logs (written by virtlogd)
    "etc": "/etc/libvirt",            # configuration, defined domains
}

# Root runs the emulator without a security driver or cgroups: these hosts have no
# AppArmor profile for ferrovm, and their cgroup v1 hierarchy is a container's.
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def require_libvirt():
    """Fails (never skips) with what is missing."""
    import pytest

    for tool in ("/usr/bin/virsh", "/usr/sbin/libvirtd", "/usr/sbin/virtlogd",
                 "/usr/bin/unshare"):
        if not os.path.exists(tool):
            pytest.fail(f"{tool} is missing: install libvirt-daemon-system and "
                        "libvirt-clients (scripts/deps.sh)")
    if os.geteuid() != 0:
        pytest.fail("the libvirt tests run libvirt's system daemon: run them as root")


class Libvirt:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="fvlv", dir="/tmp")
        for sub in MOUNTS:
            os.makedirs(os.path.join(self.root, sub))
        for sub in ("qemu", "secrets", "storage"):
            os.makedirs(os.path.join(self.root, "etc", sub))
        with open(os.path.join(self.root, "etc", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        self.log = os.path.join(self.root, "libvirtd.log")
        self.uri = f"qemu:///system?socket={self.root}/run/libvirt-sock"
        self.daemon = None
        self.starts = 0

    def _namespaced(self, command):
        """argv running `command` (a shell line) in a new mount namespace with the
        bind mounts in place."""
        binds = "".join(f"mkdir -p {target} && mount --bind {self.root}/{sub} {target} && "
                        for sub, target in MOUNTS.items())
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                binds + command]

    def start(self):
        if self.starts == 0:
            subprocess.run(self._namespaced(
                f"exec /usr/sbin/virtlogd -d -p {self.root}/run/virtlogd.pid"), check=True,
                           timeout=20)
        env = {**os.environ,
               "LIBVIRT_LOG_FILTERS": "1:qemu 1:libvirt 3:object 3:json 3:event 1:util",
               "LIBVIRT_LOG_OUTPUTS": f"1:file:{self.log}"}
        self.daemon = subprocess.Popen(self._namespaced(
            f"exec /usr/sbin/libvirtd -p {self.root}/run/libvirtd.pid"), env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.starts += 1
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.virsh("version", timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                err = self.daemon.stderr.read().decode() if self.daemon.poll() is not None \
                    else ""
                self.stop_daemon()
                raise AssertionError(f"libvirtd did not start: {err} (log {self.log})")
            time.sleep(0.2)

    def stop_daemon(self):
        if self.daemon is None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        self.daemon = None

    def restart(self):
        self.stop_daemon()
        self.start()

    def virsh(self, *args, timeout=60):
        return subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True,
                              text=True, timeout=timeout)

    def ok(self, *args, timeout=60):
        r = self.virsh(*args, timeout=timeout)
        assert r.returncode == 0, (f"virsh {' '.join(args)} failed: {r.stderr.strip()}\n"
                                   f"{self.tail_log()}")
        return r.stdout

    def tail_log(self, lines=40):
        try:
            with open(self.log, errors="replace") as f:
                errs = [l for l in f if " error : " in l]
            return "libvirtd errors:\n" + "".join(errs[-lines:])
        except OSError:
            return ""

    def domain_log(self, name):
        try:
            with open(os.path.join(self.root, "log", "qemu", f"{name}.log"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        """Destroys what is left, stops both daemons, removes the directory."""
        if self.daemon is not None:
            out = self.virsh("list", "--name").stdout
            for name in out.split():
                self.virsh("destroy", name)
        self.stop_daemon()
        for pidfile in ("virtlogd.pid",):
            try:
                with open(os.path.join(self.root, "run", pidfile)) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        # Any emulator libvirt left behind (its pid file is in run/qemu).
        qdir = os.path.join(self.root, "run", "qemu")
        for name in os.listdir(qdir) if os.path.isdir(qdir) else ():
            if name.endswith(".pid"):
                try:
                    with open(os.path.join(qdir, name)) as f:
                        os.kill(int(f.read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
