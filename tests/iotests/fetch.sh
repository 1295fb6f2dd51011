#!/usr/bin/env bash
# Fetches QEMU 7.2's iotests (tests/qemu-iotests) and Python package (python/qemu)
# from Debian bookworm's `qemu` source package into a cache directory, once.
# Usage: fetch.sh CACHE_DIR   (prints the extracted source tree's path on stdout)
#
# Nothing of QEMU's is committed to ferrovm: the tests are fetched at test time.
# The deb-src entries are derived from the machine's own deb entries
# (/etc/apt/sources.list.d/debian.sources), so they point at the same mirror.
set -euo pipefail
cache=${1:?usage: fetch.sh CACHE_DIR}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
log() { echo "iotests-fetch: $*" >&2; }

tree() {  # the extracted tree: qemu-7.2+dfsg/ (dpkg-source names it after the upstream version)
  local d
  for d in "$cache"/qemu-7.2*/; do
    [ -f "$d/tests/qemu-iotests/iotests.py" ] && [ -d "$d/python/qemu/machine" ] && { echo "${d%/}"; return 0; }
  done
  return 1
}

# The tools the tests run besides the emulator: Debian's QEMU 7.2 ones.
# qemu-img, qemu-io and qemu-nbd are in qemu-utils, qemu-storage-daemon in
# qemu-system-common (iotests.py and testenv.py want all four to exist).
need=()
for t in qemu-img:qemu-utils qemu-io:qemu-utils qemu-nbd:qemu-utils qemu-storage-daemon:qemu-system-common; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing ${need[*]} (install them as root)"; exit 1; }
  pkgs=()
  for p in $(printf '%s\n' "${need[@]}" | sort -u); do
    v=$(apt-cache madison "$p" 2>/dev/null | awk -F'|' '$2 ~ /1:7\.2/ {gsub(/ /, "", $2); print $2; exit}')
    pkgs+=("$p${v:+=$v}")
  done
  log "installing ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if t=$(tree); then echo "$t"; exit 0; fi

[ "$(id -u)" = 0 ] || { log "QEMU's source is not in $cache and fetching it needs root (apt-get)"; exit 1; }
command -v dpkg-source >/dev/null || { log "installing dpkg-dev (dpkg-source)"; apt-get install -y -qq dpkg-dev >/dev/null; }

# deb-src for bookworm: one separate file, written only when missing or different.
src=/etc/apt/sources.list.d/debian.sources
dst=/etc/apt/sources.list.d/ferrovm-iotests-deb-src.sources
[ -f "$src" ] || { log "$src is missing: cannot derive deb-src entries"; exit 1; }
want=$(sed -e 's/^Types:.*/Types: deb-src/' "$src")
if [ ! -f "$dst" ] || [ "$(cat "$dst")" != "$want" ]; then
  log "writing $dst"
  printf '%s\n' "$want" > "$dst"
fi
log "apt-get update"
apt-get update -qq

# Prefer the source of the QEMU that is installed (the oracle), else bookworm's newest 7.2.
ver=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null || true)
case "$ver" in 1:7.2*) spec="qemu=$ver" ;; *) spec="qemu/bookworm" ;; esac
log "apt-get source $spec into $cache"
if ! (cd "$cache" && apt-get source -qq "$spec" >&2); then
  [ "$spec" = qemu/bookworm ] && exit 1
  log "$spec is not available; trying qemu/bookworm"
  (cd "$cache" && apt-get source -qq qemu/bookworm >&2)
fi
t=$(tree) || { log "no QEMU 7.2 tree with tests/qemu-iotests in $cache"; exit 1; }
echo "$t"
