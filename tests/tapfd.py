"""Opens a TAP the way libvirt does and execs the emulator with it as descriptor 3:
    tapfd.py IFNAME IFUP -- EMULATOR ARGS...
IFUP is run with the interface name once it exists (as QEMU's script=)."""
import fcntl
import os
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def main():
    ifname, ifup, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, __doc__
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    subprocess.run([ifup, ifname], check=True)
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.set_inheritable(3, True)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
