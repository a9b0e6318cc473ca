"""A vfpool selector policy in Python: pools by PF and NUMA node, named by a template.

Settings (the `settings.config` text, JSON):

    {
      "resourcePrefix": "example.com",            optional; default: the agent's --resource-prefix
      "pools": [
        {"name": "fast_numa0", "pf": ["ens1f0"], "numa": 0},
        {"name": "{pf}_numa{numa}", "pf": ["ens1f1", "ens2f0"], "rdma": true}
      ]
    }

Each entry of `pools` selects VFs (or PFs, with "kind": "pf") whose parent PF is one of `pf`
(netdev names such as "ens1f0" or PCI addresses such as "0000:3b:00.0") and whose NUMA node is
`numa` (a number or a list; leave it out for any node). `name` is a template: `{pf}` and `{numa}`
are replaced by each device's PF name and NUMA node, so one entry can make one pool per PF and
node. A device goes to the first entry that matches it, so entries never overlap. Devices that
carry the node's default route are never pooled (the node would lose its uplink).

The componentize-py toolchain generates the `wit_world` package from ../../../wit at build time
(see README.md); nothing generated is checked in.
"""

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

# Placeholders a pool name may use, each with a sample value for checking the name's shape.
PLACEHOLDERS = {"pf": "ens1f0", "numa": "0"}
# Keys a pool entry may have: a typo such as "numaNode" is an error, not a silently ignored key.
POOL_KEYS = {"name", "pf", "numa", "kind", "rdma", "drivers"}
# Kubernetes extended resource names: `prefix/name`, the name at most 63 characters of
# alphanumerics, '-', '_' and '.', alphanumeric at both ends (kubelet refuses anything else).
NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")

EXAMPLE = '{"pools":[{"name":"fast_numa0","pf":["ens1f0"],"numa":0}]}'


class SettingsError(Exception):
    """A problem in the settings: where (a JSON path) and what, with the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class PoolRule:
    """One checked entry of `pools`."""

    def __init__(self, index: int, entry: Any):
        here = f"pools[{index}]"
        if not isinstance(entry, dict):
            raise SettingsError(here, f"must be an object like {EXAMPLE[10:-2]}, not {json.dumps(entry)}")
        unknown = sorted(set(entry) - POOL_KEYS)
        if unknown:
            raise SettingsError(
                f"{here}.{unknown[0]}",
                f"unknown key {unknown[0]!r}; a pool entry has only {', '.join(sorted(POOL_KEYS))}",
            )

        self.name = entry.get("name")
        if not isinstance(self.name, str) or not self.name:
            raise SettingsError(
                f"{here}.name",
                f"missing or not a string ({json.dumps(self.name)}); give the pool a name such as "
                '"fast_numa0" or a template such as "{pf}_numa{numa}"',
            )
        for placeholder in TEMPLATE_RE.findall(self.name):
            if placeholder not in PLACEHOLDERS:
                raise SettingsError(
                    f"{here}.name",
                    f"unknown placeholder {{{placeholder}}} in {self.name!r}; use {{pf}} or {{numa}}",
                )
        sample = self.expand(PLACEHOLDERS["pf"], PLACEHOLDERS["numa"])
        if not NAME_RE.match(sample):
            raise SettingsError(
                f"{here}.name",
                f"{self.name!r} does not make a valid resource name (e.g. {sample!r}): use at most "
                "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            )

        pf = entry.get("pf")
        if not isinstance(pf, list) or not pf or not all(isinstance(p, str) and p for p in pf):
            raise SettingsError(
                f"{here}.pf",
                f"must be a non-empty list of PF netdev names or PCI addresses, such as "
                f'["ens1f0"] or ["0000:3b:00.0"], not {json.dumps(pf)}',
            )
        self.pfs = set(pf)

        numa = entry.get("numa")
        if numa is None:
            self.numa: Optional[set] = None
        elif isinstance(numa, bool) or not isinstance(numa, (int, list)):
            raise SettingsError(
                f"{here}.numa", f"must be a NUMA node number or a list of them, not {json.dumps(numa)}"
            )
        else:
            nodes = numa if isinstance(numa, list) else [numa]
            for i, node in enumerate(nodes):
                if isinstance(node, bool) or not isinstance(node, int) or node < 0:
                    where = f"{here}.numa[{i}]" if isinstance(numa, list) else f"{here}.numa"
                    raise SettingsError(
                        where, f"{json.dumps(node)} is not a NUMA node number (0, 1, ...)"
                    )
            self.numa = set(nodes)

        self.kind = entry.get("kind", "vf")
        if self.kind not in ("vf", "pf"):
            raise SettingsError(f"{here}.kind", f'must be "vf" or "pf", not {json.dumps(self.kind)}')

        self.rdma = entry.get("rdma", False)
        if not isinstance(self.rdma, bool):
            raise SettingsError(f"{here}.rdma", f"must be true or false, not {json.dumps(self.rdma)}")

        drivers = entry.get("drivers")
        if drivers is not None and (
            not isinstance(drivers, list) or not all(isinstance(d, str) and d for d in drivers)
        ):
            raise SettingsError(
                f"{here}.drivers",
                f'must be a list of driver names such as ["mlx5_core", "vfio-pci"], not {json.dumps(drivers)}',
            )
        self.drivers = set(drivers) if drivers is not None else None

    def expand(self, pf: str, numa: str) -> str:
        """The pool name for a device on PF `pf` and NUMA node `numa`."""
        return self.name.replace("{pf}", pf).replace("{numa}", numa)

    def matches(self, device: types.Device, parent: Optional[types.Device]) -> bool:
        """Whether `device` (with its PF record `parent`, for a VF) belongs to this entry."""
        if self.kind == "vf":
            if device.kind != types.DeviceKind.VF:
                return False
            pf_names = {device.pf_name, device.pf_id}
        else:
            if device.kind != types.DeviceKind.PF or device.sriov_total_vfs is None:
                return False
            # A PF with VFs enabled carries their traffic: never pooled (as upstream; the host
            # keeps it out of network pools anyway).
            if device.sriov_num_vfs:
                return False
            pf_names = {device.netdev, device.id}
        if not (pf_names & self.pfs):
            return False
        if self.numa is not None:
            numa = device.numa_node if device.numa_node is not None else (parent and parent.numa_node)
            if numa not in self.numa:
                return False
        if self.drivers is not None and device.driver not in self.drivers:
            return False
        return True


def parse(settings: types.Settings) -> Tuple[str, List[PoolRule]]:
    """Checks the settings and returns the resource prefix and the pool rules."""
    text = settings.config
    if not text.strip():
        raise SettingsError("", f"no settings: this policy needs a JSON object such as {EXAMPLE}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise SettingsError("", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(document, dict):
        raise SettingsError("", f"must be a JSON object such as {EXAMPLE}")
    # Other top-level keys are not ours: every policy gets the same configuration text (the
    # allocator's "spread", or an upstream "resourceList" kept for a rollback), so they are left
    # alone.
    prefix = document.get("resourcePrefix", settings.default_resource_prefix)
    # kubelet checks "requests.<prefix>/..." as a qualified name too: 244 characters at most.
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix) or len(prefix) > 244:
        raise SettingsError(
            "resourcePrefix",
            f"{json.dumps(prefix)} is not a DNS subdomain such as \"example.com\" (lower case, "
            "at most 244 characters)",
        )
    pools = document.get("pools")
    if not isinstance(pools, list) or not pools:
        hint = ""
        if "pools" not in document and any(k.lower() == "resourcelist" for k in document):
            hint = ' (this looks like an upstream config.json: add a "pools" list for this selector)'
        raise SettingsError(
            "pools", f"must be a non-empty list of pool entries, e.g. {EXAMPLE}{hint}"
        )
    rules = [PoolRule(i, entry) for i, entry in enumerate(pools)]
    names = [(r.name, i) for i, r in enumerate(rules)]
    seen: Dict[str, int] = {}
    for name, i in names:
        if name in seen:
            raise SettingsError(
                f"pools[{i}].name",
                f"{name!r} is also the name of pools[{seen[name]}]; pool names must be unique",
            )
        seen[name] = i
    return prefix, rules


def invalid(e: SettingsError) -> Err:
    """The WIT error for a settings problem."""
    return Err(types.PolicyError_InvalidSettings(types.SettingsProblem(field=e.field, message=e.message)))


class Selector(exports.Selector):
    """The exported `vfpool:policy/selector` interface."""

    def validate_settings(self, settings: types.Settings) -> None:
        try:
            parse(settings)
        except SettingsError as e:
            raise invalid(e)

    def select(self, settings: types.Settings, inventory: types.Inventory) -> List[types.Pool]:
        try:
            prefix, rules = parse(settings)
        except SettingsError as e:
            raise invalid(e)

        by_id = {d.id: d for d in inventory.devices}
        # Pools in the order their rules come, then by name; a dict keeps insertion order.
        pools: Dict[str, List[types.PoolDevice]] = {}
        for rule in rules:
            # A rule without placeholders makes its pool even when no device matches: `vfpool pools`
            # then shows the operator the pool exists but is empty, rather than silently missing.
            if not TEMPLATE_RE.search(rule.name):
                pools.setdefault(rule.name, [])

        taken = set()
        for device in inventory.devices:
            if device.carries_default_route:
                continue
            parent = by_id.get(device.pf_id) if device.pf_id else None
            for rule in rules:
                if not rule.matches(device, parent):
                    continue
                pf = device.pf_name if rule.kind == "vf" else device.netdev
                pf = pf or (device.pf_id if rule.kind == "vf" else device.id) or "unknown"
                numa = device.numa_node if device.numa_node is not None else (parent and parent.numa_node)
                name = rule.expand(pf, "unknown" if numa is None else str(numa))
                if not NAME_RE.match(name):
                    log.log(log.Level.WARN, f"{device.id}: pool name {name!r} is not valid; device skipped")
                    break
                pools.setdefault(name, []).append(
                    types.PoolDevice(
                        id=device.id,
                        # A VF whose RDMA device is inside a pod's network namespace shows no
                        # rdma-devices here; devlink's enable_rdma still says it has one.
                        rdma=rule.rdma
                        and (bool(device.rdma_devices) or device.devlink_enable_rdma is True),
                        vhost_net=False,
                        vdpa_type=None,
                        additional_info=None,
                    )
                )
                taken.add(device.id)
                break

        log.log(
            log.Level.INFO,
            f"{len(pools)} pools, {len(taken)} of {len(inventory.devices)} devices pooled",
        )
        return [
            types.Pool(
                resource_name=f"{prefix}/{name}",
                device_type=types.DeviceType.NET_DEVICE,
                exclude_topology=False,
                devices=devices,
            )
            for name, devices in pools.items()
        ]
