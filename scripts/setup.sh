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
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

installed_targets=$(rustup target list --installed)
for target in $rust_targets; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    echo "setup: adding Rust target $target"
    rustup target add "$target"
  fi
done
