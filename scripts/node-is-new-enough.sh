#!/usr/bin/env bash
# Exits 0 when the `node` on PATH runs componentize-js 0.23's toolchain: the `engines` of its
# package-lock.json dependencies (rolldown, oxc-minify), ^20.19.0 || ^22.13.0 || >=23.5.0.
set -euo pipefail
node -e '
const [major, minor] = process.versions.node.split(".").map(Number);
const ok = (major === 20 && minor >= 19) || (major === 22 && minor >= 13) || (major === 23 && minor >= 5) || major > 23;
process.exit(ok ? 0 : 1);
' 2>/dev/null
