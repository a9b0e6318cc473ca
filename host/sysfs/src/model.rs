//! The device inventory: what discovery found, as plain data.
//!
//! These types are the stable vocabulary of the whole agent: policies get them (converted to WIT
//! records), `vfpool discover --json` prints them, Allocate and the CNI plugin read them. They are
//! deliberately independent of any wire format (kubelet v1beta1, DRA, WIT) so each of those can be
//! derived from them. Every attribute the kernel may not provide is an `Option` (printed as `null`),
//! never a sentinel such as `-1` or `""`.

use serde::Serialize;

/// What the agent found on a node: every PCI function and auxiliary device of interest, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Devices sorted by [`Device::id`]; PCI addresses sort before auxiliary device names.
    pub devices: Vec<Device>,
    /// Node-wide facts that are not a property of one device.
    pub node: NodeFacts,
}

impl Inventory {
    /// The device with this id (PCI address or auxiliary device name), if discovered.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices
            .binary_search_by(|d| d.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.devices.get(i))
    }
}

/// Node-wide facts read from sysfs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFacts {
    /// `/dev/vhost-net` exists (its node on the host, or the `class/misc/vhost-net` entry), so it
    /// can be handed to pods that ask for it (`needVhostNet`).
    pub vhost_net: bool,
    /// `/dev/net/tun` exists (its node on the host, or `class/misc/tun`).
    pub tun: bool,
    /// The RDMA connection manager's misc device exists (`class/misc/rdma_cm`, present while
    /// `rdma_ucm` is loaded), i.e. `/dev/infiniband/rdma_cm`.
    pub rdma_cm: bool,
}

/// Whether a device is a physical function, a virtual function, or an auxiliary (sub-function) device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A PCI function that is not a VF: an SR-IOV PF, or a plain (non-SR-IOV) NIC or accelerator.
    Pf,
    /// An SR-IOV virtual function (it has a `physfn` link).
    Vf,
    /// An auxiliary-bus sub-function, such as a Mellanox SF (`mlx5_core.sf.4`).
    Aux,
}

impl DeviceKind {
    /// The lower-case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Pf => "pf",
            DeviceKind::Vf => "vf",
            DeviceKind::Aux => "aux",
        }
    }
}

/// One discovered device with every attribute a policy, Allocate or the CNI plugin needs.
///
/// For auxiliary devices the PCI identity fields (`vendor`, `device`, `class`, `driver`, `numaNode`,
/// ...) are those of the parent PCI function, as upstream's auxNetDevice selectors expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// PCI address in the long form sysfs uses (`0000:3b:00.2`), or the auxiliary device name.
    pub id: String,
    /// PF, VF or auxiliary device.
    pub kind: DeviceKind,
    /// PCI vendor id, four lower-case hex digits (`15b3`).
    pub vendor: Option<String>,
    /// PCI device id, four lower-case hex digits (`1018`).
    pub device: Option<String>,
    /// PCI subsystem vendor id.
    pub subsystem_vendor: Option<String>,
    /// PCI subsystem device id.
    pub subsystem_device: Option<String>,
    /// PCI class code, six lower-case hex digits (`020000`).
    pub class: Option<String>,
    /// Name of the bound kernel driver; `None` when the device is unbound.
    pub driver: Option<String>,
    /// NUMA node; `None` when the kernel reports it unknown (`-1`) or the file is missing.
    pub numa_node: Option<u32>,
    /// ACPI index (`acpi_index`), used for predictable interface naming.
    pub acpi_index: Option<u32>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// The IOMMU group is a vfio no-IOMMU group (`/dev/vfio/noiommu-N` on the host).
    pub no_iommu: bool,
    /// The uio device bound to this function (`uio0`), for `igb_uio` / `uio_pci_generic`.
    pub uio_device: Option<String>,
    /// `sriov_totalvfs`: present only on SR-IOV capable functions, i.e. whenever the file exists
    /// (upstream's `IsSriovPF`) or the function has `virtfnN` links. If the file is missing, or
    /// cannot be read or parsed, the number of VFs known to be enabled (`sriov_num_vfs`), a lower
    /// bound of the real value, so that the function still counts as SR-IOV capable.
    pub sriov_total_vfs: Option<u32>,
    /// `sriov_numvfs`: how many VFs are currently enabled; never fewer than the `virtfnN` links
    /// (the file is updated after the VFs are added, and may be unreadable or garbled).
    pub sriov_num_vfs: Option<u32>,
    /// For a PF: its VFs by index (from the `virtfnN` links).
    pub vfs: Vec<VfRef>,
    /// For a VF: its PF's address; for an auxiliary device: its parent PCI function.
    pub pf_id: Option<String>,
    /// For a VF: the PF's netdev name as upstream's `GetPfName` computes it — the uplink
    /// representor when the PF is in switchdev mode (see `switchdev`), otherwise the PF's first
    /// netdev that is neither a representor nor a sub-function's (upstream #645).
    ///
    /// For a sub-function (aux device): the PF's uplink representor only, as upstream's
    /// `GetUplinkRepresentorFromAux` (sriovnet `GetUplinkRepresentor`): the first PF netdev with a
    /// non-empty `phys_switch_id` and a `phys_port_name` of the form `p<N>`; `None` when the PF has
    /// none. Upstream drops such a sub-function; the default selector does not pool it.
    pub pf_name: Option<String>,
    /// For a VF: its index under the PF (from the PF's `virtfnN` links).
    pub vf_index: Option<u32>,
    /// For a PF: whether its eswitch is in switchdev mode (`devlink dev eswitch show` says
    /// `switchdev`), as far as sysfs shows it. Where the driver provides
    /// `net/<if>/compat/devlink/mode` (MLNX_OFED's mlx5), that file decides. Otherwise it is true
    /// when the PF has an uplink-shaped netdev (non-empty `phys_switch_id`, `phys_port_name`
    /// `p<N>`) and at least one representor netdev of a VF, SF or host PF (`phys_port_name`
    /// `pf<N>vf<M>`, `pf<N>sf<M>`, `c<C>pf<N>vf<M>`, `pf<N>vfr<M>`, `pf<N>`) on the same switch.
    /// The uplink shape alone is not enough: ice and recent mlx5 give the PF's netdev both
    /// attributes in legacy mode too, but only switchdev mode creates representors. A switchdev
    /// PF with no VF or SF yet therefore reads `false`. Always `false` for VFs and aux devices.
    pub switchdev: bool,
    /// The device's own netdevs (empty for vfio/uio-bound functions and for VFs whose netdev moved into
    /// a pod's network namespace).
    pub netdevs: Vec<Netdev>,
    /// The first of `netdevs`, by name; the one upstream calls the device's netdev.
    pub netdev: Option<String>,
    /// Link type of the device's first netdev, or of its PF's netdev when it has none (upstream PR
    /// #479): `ether`, `infiniband`, ...
    pub link_type: Option<String>,
    /// RDMA devices under the function (`infiniband/*`), sorted.
    pub rdma_devices: Vec<String>,
    /// Default partition key of the first RDMA device's port 1 (`0xffff`), when `link_type` (the
    /// device's own, or its PF's) is `infiniband`.
    pub pkey: Option<String>,
    /// vDPA devices created on this function (child directories on the vDPA bus, whatever their
    /// name).
    pub vdpa_devices: Vec<VdpaDevice>,
    /// For an auxiliary device: its type, the middle token of the name (`sf` in `mlx5_core.sf.4`).
    pub aux_type: Option<String>,
    /// For a sub-function: its `sfnum`.
    pub sf_num: Option<u32>,
    /// For a sub-function: the driver bound to it (`mlx5_core.sf`); `None` while it is unbound
    /// (no netdev, unusable). `driver` is its parent function's, which selectors match on.
    pub aux_driver: Option<String>,
    /// For a PF: the sub-functions created on it, by id. Other auxiliary devices (`mlx5_core.eth.0`,
    /// `ice.roce.0`) are not listed, nor discovered.
    pub aux_devices: Vec<String>,
}

impl Device {
    /// An empty record for `id`: every attribute unknown. Discovery fills in what it can read.
    pub fn unknown(id: impl Into<String>, kind: DeviceKind) -> Self {
        Device {
            id: id.into(),
            kind,
            vendor: None,
            device: None,
            subsystem_vendor: None,
            subsystem_device: None,
            class: None,
            driver: None,
            numa_node: None,
            acpi_index: None,
            iommu_group: None,
            no_iommu: false,
            uio_device: None,
            sriov_total_vfs: None,
            sriov_num_vfs: None,
            vfs: Vec::new(),
            pf_id: None,
            pf_name: None,
            vf_index: None,
            switchdev: false,
            netdevs: Vec::new(),
            netdev: None,
            link_type: None,
            rdma_devices: Vec::new(),
            pkey: None,
            vdpa_devices: Vec::new(),
            aux_type: None,
            sf_num: None,
            aux_driver: None,
            aux_devices: Vec::new(),
        }
    }

    /// The class code's base class byte (`0x02` network, `0x12` processing accelerator).
    pub fn base_class(&self) -> Option<u8> {
        self.class
            .as_deref()
            .and_then(|c| c.get(..2))
            .and_then(|b| u8::from_str_radix(b, 16).ok())
    }

    /// True for an SR-IOV PF that currently has VFs enabled; upstream never advertises such a PF.
    /// Any VF linked counts, whatever the counts say.
    pub fn has_vfs_enabled(&self) -> bool {
        (self.sriov_total_vfs.is_some() && self.sriov_num_vfs.unwrap_or(0) > 0)
            || !self.vfs.is_empty()
    }
}

/// A PF's reference to one of its VFs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VfRef {
    /// The VF index (`N` of `virtfnN`).
    pub index: u32,
    /// The VF's PCI address.
    pub id: String,
}

/// A network interface that belongs to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Netdev {
    /// Interface name (`ens1f0v0`). The kernel's name is bytes; one that is not UTF-8 is kept with
    /// each invalid sequence replaced by U+FFFD rather than dropped, so the device still shows it
    /// has a netdev ([`Netdev::name_is_lossy`] tells such a name).
    pub name: String,
    /// Link type from `type` (ARPHRD): `ether` (1), `infiniband` (32), ...
    pub link_type: Option<String>,
    /// `operstate`: `up`, `down`, `lowerlayerdown`, `unknown`, ...
    pub operstate: Option<String>,
    /// `carrier`; `None` when unreadable (the kernel refuses to read it on a down interface).
    pub carrier: Option<bool>,
    /// Permanent-or-current hardware address from `address`, lower-case.
    pub mac: Option<String>,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// `phys_port_name` (`p0` on an uplink representor, `pf0vf3` on a VF representor).
    pub phys_port_name: Option<String>,
    /// `phys_switch_id`, set on eswitch ports: representors, and the PF's own netdev when its
    /// driver registers it as a devlink physical port (ice and recent mlx5, in legacy mode too).
    pub phys_switch_id: Option<String>,
    /// The bond this netdev is a port of (its `master` is a bonding device), read for a PF's own
    /// netdevs only. With the ports of one NIC in switchdev mode in one bond (mlx5 VF-LAG, usual
    /// under OVS hardware offload) a VF reaches the wire through the bond: one port down is not
    /// its VFs down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondLink>,
}

/// A bond's link state, as [`Netdev::bond`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BondLink {
    /// The bond's interface name (`bond0`).
    pub name: String,
    /// Its `operstate`.
    pub operstate: Option<String>,
    /// Its `carrier`.
    pub carrier: Option<bool>,
    /// Its ports' interface names (`bonding/slaves`).
    pub ports: Vec<String>,
}

impl Netdev {
    /// Whether `name` may not be the kernel's name for this netdev: the kernel's name was not
    /// UTF-8 and discovery kept it with U+FFFD in place of the bytes it could not represent (see
    /// [`Netdev::name`]). Nothing can match such a name against what the host reports (the route
    /// table, netlink), so whoever decides whether the netdev is safe to take away from the host
    /// must assume it is not. A genuine U+FFFD in a name also counts: that errs on the safe side.
    pub fn name_is_lossy(&self) -> bool {
        self.name.contains(char::REPLACEMENT_CHARACTER)
    }
}

/// A vDPA device created on a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VdpaDevice {
    /// vDPA device name as its creator gave it (`vdpa0`, or `vdpa:0000:03:00.2` as
    /// sriov-network-operator names them); the name under `bus/vdpa/devices`.
    pub name: String,
    /// Bound vDPA bus driver: `vhost_vdpa` or `virtio_vdpa`.
    pub driver: Option<String>,
    /// For `vhost_vdpa`: the character device name (`vhost-vdpa-0`).
    pub vhost_device: Option<String>,
}
