#!/usr/bin/env bash
# Prints the path of Debian's own amd64 kernel (vmlinuz), downloading the
# package once into a cache outside the clone (FERROVM_CACHE, default
# /var/cache/ferrovm) so CI and repeated runs reuse it.
set -euo pipefail
cache=${FERROVM_CACHE:-/var/cache/ferrovm}
mkdir -p "$cache"
existing=$(ls "$cache"/kernel/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq >&2
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve Debian's linux-image-amd64" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >&2)
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
rm -rf "$cache/kernel"
mkdir -p "$cache/kernel"
cp -a "$tmp/x/boot" "$cache/kernel/"
# The virtio modules are kept for `make linux`'s initramfs.
if [ -d "$tmp/x/lib/modules" ]; then
  mkdir -p "$cache/kernel/lib"
  cp -a "$tmp/x/lib/modules" "$cache/kernel/lib/"
fi
ls "$cache"/kernel/boot/vmlinuz-* | head -n1
