#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine, and nothing that is
# already there. Idempotent and quiet when everything is present.
set -euo pipefail

apt_packages=${1:-}
rust_targets=${2:-}

missing=()
for pkg in $apt_packages; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
# The JavaScript example policy's toolchain (componentize-js) runs on Node.js 20.19 or later;
# Debian 13 ships 20.19, Debian 12 only 18 (scripts/build-policies.sh then says what to install).
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "setup: need root to install ${missing[*]}: run as root, install sudo, or install them yourself" >&2
      exit 1
    }
    sudo="sudo"
  fi
  # `env`: sudo drops DEBIAN_FRONTEND. The lock timeout rides out apt-daily or unattended-upgrades
  # holding dpkg's lock on a machine that has just booted.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v rustup >/dev/null 2>&1 || {
  echo "setup: rustup not found: the WebAssembly target (${rust_targets}) is added with rustup; install Rust with rustup (https://rustup.rs) or put it on PATH" >&2
  exit 1
}
installed_targets=$(rustup target list --installed)
for target in $rust_targets; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "setup: adding Rust target $target"
    rustup target add "$target"
  fi
done
