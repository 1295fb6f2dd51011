#!/usr/bin/env bash
# Installs what building, running and testing ferrovm needs, on Debian as root.
# Idempotent and quick when everything is already there: `make` calls it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in gcc make binutils python3 python3-venv seabios busybox-static cpio xz-utils fio \
    iproute2 iputils-ping libvirt-daemon-system libvirt-clients mount; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# QEMU 7.2 is the oracle, qemu-img included: a machine with a newer
# qemu-utils (bookworm-backports) loses it when qemu-system-x86 7.2 comes
# in, so both are asked for by version, together.
for pkg in qemu-system-x86 qemu-utils; do
  case "$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null || true)" in
    "install ok installed 1:7.2"*) ;;
    *) need_qemu=1 ;;
  esac
done
if [ -n "${need_qemu:-}" ]; then
  [ "$(id -u)" = 0 ] && apt-get update -qq
  for pkg in qemu-system-x86 qemu-utils; do
    v=$(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '$2 ~ /1:7\.2/ {gsub(/ /, "", $2); print $2; exit}')
    need_apt+=("$pkg${v:+=$v}")
  done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages: ${need_apt[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "deps: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: cargo is in ~/.cargo/bin: add it to PATH" >&2
  else
    echo "deps: Rust >= 1.85 is needed (https://rustup.rs: 'curl --proto =https -sSf https://sh.rustup.rs | sh')" >&2
  fi
  exit 1
fi

# `make test` lints with rustfmt and clippy.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

# Python test tooling lives in a venv under build/, so the system Python stays untouched.
venv=build/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import qemu.qmp, pytest" >/dev/null 2>&1; then
  echo "deps: installing qemu.qmp and pytest into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "qemu.qmp==0.0.6" "pytest>=7,<9"
fi
