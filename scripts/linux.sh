#!/usr/bin/env bash
# make linux: boots Debian's own kernel with a busybox initramfs (Debian's
# busybox-static plus the kernel's virtio modules) to a shell on the serial
# console. Meant for hosts whose KVM runs guest ring 0 natively; where KVM
# emulates ring 0 (nested paravirtual KVM) Linux does not reach userspace in
# useful time — see docs/known-gaps.md.
set -euo pipefail
cd "$(dirname "$0")/.."
kernel=$(scripts/fetch-kernel.sh)
cache=${FERROVM_CACHE:-/var/cache/ferrovm}
version=$(basename "$kernel" | sed 's/^vmlinuz-//')
moddir="$cache/kernel/lib/modules/$version/kernel"
work=build/initramfs
rm -rf "$work"
mkdir -p "$work"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$work/bin/busybox"
for m in drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko \
         drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko \
         drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko drivers/net/net_failover.ko \
         net/core/failover.ko drivers/net/virtio_net.ko; do
  [ -f "$moddir/$m" ] && cp "$moddir/$m" "$work/lib/modules/"
done
cat > "$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null
done
echo "ferrovm: busybox initramfs up ($(uname -r))"
exec setsid cttyhack sh
INIT
chmod +x "$work/init"
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) > build/initramfs.cpio.gz
echo "kernel $kernel, initramfs build/initramfs.cpio.gz; Ctrl-C or 'poweroff -f' ends it"
exec target/release/ferrovm -accel kvm -m 512 -smp 2 -nodefaults -display none -serial stdio \
  -kernel "$kernel" -initrd build/initramfs.cpio.gz -append "console=ttyS0 panic=-1"
