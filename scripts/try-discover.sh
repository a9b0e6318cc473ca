#!/usr/bin/env bash
# The main job until `vfpool demo` exists: write the demo node's simulated sysfs tree into a
# temporary directory, show what vfpool discovers on it, and remove the tree again.
set -euo pipefail
vfpool=${1:-./target/release/vfpool}
node=$(mktemp -d -t vfpool-node.XXXXXX)
trap 'rm -rf "$node"' EXIT INT TERM

"$vfpool" sim --out "$node/sys" --fixture demo
echo
echo "\$ vfpool discover --sysfs-root $node/sys"
"$vfpool" discover --sysfs-root "$node/sys"
echo
echo "The same as JSON for programs: vfpool discover --sysfs-root DIR --json"
echo "Your own node: vfpool sim --print --fixture demo > my-node.toml; edit it; vfpool sim --out DIR --fixture my-node.toml"
