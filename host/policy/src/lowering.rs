//! The inventory as the host lowers it into a selector: a hand-written canonical-ABI lowering of
//! the WIT `device` and `netdev` records.
//!
//! `select` passes every attribute of every device: 1,032 records of ~20 strings each on the
//! 1,024-VF node. wasmtime's derived lowering looks the guest's memory up again (instance,
//! canonical options, memory export, bounds) for every field it writes, ~60 times per device: in
//! the profile that was a fifth of a `select` call. Here each record is assembled in a host buffer
//! and written with one access. Strings and lists still get one guest `realloc` each, as the
//! canonical ABI requires: the guest owns them and frees them one by one. (Holding every write
//! back until the last `realloc`, to look the memory up once, measured no faster: the look-up
//! left is the one inside wasmtime's `realloc`.)
//!
//! Layout: wasmtime type-checks `list<device>` against the component's export (through the
//! generated `wit::Device`'s check) before every call, and [`RecordWriter`] checks each field's
//! type as it writes it, so a contract change this code does not follow is an error, never garbage
//! in the guest. The tests compare what a guest receives with what wasmtime's own lowering gives
//! it, field by field. A guest whose strings are not UTF-8 (none built for `wasm32-wasip2` today)
//! gets wasmtime's lowering.

use std::mem::MaybeUninit;

use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::{RecordField, StringEncoding};
use wasmtime::component::__internal::{
    CanonicalAbiInfo, ComponentTypes, ComponentVariant, InstanceType, InterfaceType, LowerContext,
    bad_type_info, map_maybe_uninit,
};
use wasmtime::component::{ComponentType, Lower};
use wasmtime::format_err;

use crate::bindings::wit;

/// Which lowering a call uses. [`Lowering::Derived`] (wasmtime's own) is the tests' reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lowering {
    /// The hand-written record lowering of this module.
    Direct,
    /// wasmtime's derived lowering of the generated types (what non-UTF-8 guests get, and the
    /// reference the tests compare with).
    #[cfg_attr(not(test), expect(dead_code, reason = "chosen by the tests only"))]
    Derived,
}

/// WIT `inventory`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct InventoryRef<'a> {
    devices: DeviceList<'a>,
    node: &'a wit::NodeFacts,
}

impl<'a> InventoryRef<'a> {
    pub(crate) fn new(inventory: &'a wit::Inventory, lowering: Lowering) -> Self {
        InventoryRef {
            devices: DeviceList {
                devices: &inventory.devices,
                lowering,
            },
            node: &inventory.node,
        }
    }
}

/// WIT `list<device>`.
pub(crate) struct DeviceList<'a> {
    devices: &'a [wit::Device],
    lowering: Lowering,
}

// SAFETY: the type is the generated `list<device>`'s: same flat form (a pointer pair), same ABI,
// same type check.
#[allow(unsafe_code)]
unsafe impl ComponentType for DeviceList<'_> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[wit::Device] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: every guest address written is bounds-checked (`write_to_guest`), every allocation comes
// from the guest's `realloc` through wasmtime (which checks its alignment and bounds).
#[allow(unsafe_code)]
unsafe impl Lower for DeviceList<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower(cx, ty)?;
        // Pointers go into the flat form as 64-bit values, as wasmtime's own list lowering does.
        map_maybe_uninit!(dst[0]).write(ValRaw::i64(i64::from(ptr)));
        map_maybe_uninit!(dst[1]).write(ValRaw::i64(i64::from(len)));
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower(cx, ty)?;
        write_to_guest(cx, offset, &pointer_pair(ptr, len))
    }
}

impl DeviceList<'_> {
    /// Allocates the list in the guest and writes every record; returns its pointer and length.
    fn lower<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
    ) -> wasmtime::Result<(u32, u32)> {
        let element = match ty {
            InterfaceType::List(i) => cx.types[i].element,
            _ => bad_type_info(),
        };
        let direct = self.lowering == Lowering::Direct
            && cx.options().string_encoding == StringEncoding::Utf8;
        let ptr = guest_array(cx, self.devices.len(), DEVICE_BYTES, DEVICE_ALIGN)?;
        if direct {
            let mut at = ptr;
            for device in self.devices {
                lower_device(cx, element, device, at)?;
                at += DEVICE_BYTES;
            }
        } else {
            wit::Device::linear_store_list_to_memory(cx, element, ptr, self.devices)?;
        }
        Ok((u32::try_from(ptr)?, u32::try_from(self.devices.len())?))
    }
}

const DEVICE_BYTES: usize = <wit::Device as ComponentType>::SIZE32;
const DEVICE_ALIGN: u32 = <wit::Device as ComponentType>::ALIGN32;
const NETDEV_BYTES: usize = <wit::Netdev as ComponentType>::SIZE32;
const NETDEV_ALIGN: u32 = <wit::Netdev as ComponentType>::ALIGN32;

/// Writes one `device` record at `offset`: its fields in WIT order.
fn lower_device<T>(
    cx: &mut LowerContext<'_, T>,
    ty: InterfaceType,
    device: &wit::Device,
    offset: usize,
) -> wasmtime::Result<()> {
    // Every field, so that a field added to the WIT does not compile until it is written here.
    let wit::Device {
        id,
        kind,
        vendor,
        device: device_id,
        subsystem_vendor,
        subsystem_device,
        class_code,
        driver,
        numa_node,
        acpi_index,
        iommu_group,
        no_iommu,
        uio_device,
        sriov_total_vfs,
        sriov_num_vfs,
        vfs,
        pf_id,
        pf_name,
        vf_index,
        switchdev,
        netdevs,
        netdev,
        link_type,
        rdma_devices,
        pkey,
        devlink_enable_rdma,
        vdpa_devices,
        aux_type,
        sf_num,
        aux_devices,
        carries_default_route,
        ddp_profile,
    } = device;
    let types = cx.types;
    let mut record = RecordWriter::<DEVICE_BYTES>::new(types, ty)?;
    record.string(cx, id)?;
    record.enum_case(match kind {
        wit::DeviceKind::Pf => "pf",
        wit::DeviceKind::Vf => "vf",
        wit::DeviceKind::Aux => "aux",
    })?;
    record.option_string(cx, vendor.as_deref())?;
    record.option_string(cx, device_id.as_deref())?;
    record.option_string(cx, subsystem_vendor.as_deref())?;
    record.option_string(cx, subsystem_device.as_deref())?;
    record.option_string(cx, class_code.as_deref())?;
    record.option_string(cx, driver.as_deref())?;
    record.option_u32(*numa_node)?;
    record.option_u32(*acpi_index)?;
    record.option_u32(*iommu_group)?;
    record.bool(*no_iommu)?;
    record.option_string(cx, uio_device.as_deref())?;
    record.option_u32(*sriov_total_vfs)?;
    record.option_u32(*sriov_num_vfs)?;
    record.list(cx, vfs)?;
    record.option_string(cx, pf_id.as_deref())?;
    record.option_string(cx, pf_name.as_deref())?;
    record.option_u32(*vf_index)?;
    record.bool(*switchdev)?;
    record.netdevs(cx, netdevs)?;
    record.option_string(cx, netdev.as_deref())?;
    record.option_string(cx, link_type.as_deref())?;
    record.list(cx, rdma_devices)?;
    record.option_string(cx, pkey.as_deref())?;
    record.option_bool(*devlink_enable_rdma)?;
    record.list(cx, vdpa_devices)?;
    record.option_string(cx, aux_type.as_deref())?;
    record.option_u32(*sf_num)?;
    record.list(cx, aux_devices)?;
    record.bool(*carries_default_route)?;
    record.option_string(cx, ddp_profile.as_deref())?;
    record.finish(cx, offset)
}

/// Writes one `netdev` record at `offset`.
fn lower_netdev<T>(
    cx: &mut LowerContext<'_, T>,
    ty: InterfaceType,
    netdev: &wit::Netdev,
    offset: usize,
) -> wasmtime::Result<()> {
    let wit::Netdev {
        name,
        link_type,
        operstate,
        carrier,
        mac,
        mtu,
        phys_port_name,
        phys_switch_id,
    } = netdev;
    let types = cx.types;
    let mut record = RecordWriter::<NETDEV_BYTES>::new(types, ty)?;
    record.string(cx, name)?;
    record.option_string(cx, link_type.as_deref())?;
    record.option_string(cx, operstate.as_deref())?;
    record.option_bool(*carrier)?;
    record.option_string(cx, mac.as_deref())?;
    record.option_u32(*mtu)?;
    record.option_string(cx, phys_port_name.as_deref())?;
    record.option_string(cx, phys_switch_id.as_deref())?;
    record.finish(cx, offset)
}

/// One record assembled in host memory, field by field in WIT order, then written to the guest
/// at once. Each field's offset follows the canonical ABI's record layout; each field's type is
/// checked against the component's as it is written.
struct RecordWriter<'t, const N: usize> {
    types: &'t ComponentTypes,
    fields: std::slice::Iter<'t, RecordField>,
    bytes: [u8; N],
    end: usize,
}

/// The payload offset of `option<T>` for 4-byte aligned `T` (strings, `u32`) and for `bool`.
const OPTION_PAYLOAD_4: usize = <Option<u32> as ComponentVariant>::PAYLOAD_OFFSET32;
const OPTION_PAYLOAD_1: usize = <Option<bool> as ComponentVariant>::PAYLOAD_OFFSET32;
const _: () = assert!(<Option<&str> as ComponentVariant>::PAYLOAD_OFFSET32 == OPTION_PAYLOAD_4);

impl<'t, const N: usize> RecordWriter<'t, N> {
    fn new(types: &'t ComponentTypes, ty: InterfaceType) -> wasmtime::Result<Self> {
        let record = match ty {
            InterfaceType::Record(i) => &types[i],
            _ => bad_type_info(),
        };
        if record.abi.size32 as usize != N {
            return Err(format_err!(
                "record of {} bytes where the host writes {N}",
                record.abi.size32
            ));
        }
        Ok(RecordWriter {
            types,
            fields: record.fields.iter(),
            bytes: [0; N],
            end: 0,
        })
    }

    /// The next field, which must be of the type `expected` says: its offset and type.
    fn field(
        &mut self,
        abi: &CanonicalAbiInfo,
        expected: impl FnOnce(&ComponentTypes, InterfaceType) -> bool,
    ) -> wasmtime::Result<usize> {
        let field = self
            .fields
            .next()
            .ok_or_else(|| format_err!("the host writes more fields than the record has"))?;
        if !expected(self.types, field.ty) {
            return Err(format_err!(
                "record field `{}` is not of the type the host writes",
                field.name
            ));
        }
        let align = abi.align32 as usize;
        let at = self.end.next_multiple_of(align);
        self.end = at + abi.size32 as usize;
        Ok(at)
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> wasmtime::Result<()> {
        self.bytes
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| format_err!("record field beyond the record's {N} bytes"))?
            .copy_from_slice(bytes);
        Ok(())
    }

    fn string<T>(&mut self, cx: &mut LowerContext<'_, T>, s: &str) -> wasmtime::Result<()> {
        let at = self.field(&CanonicalAbiInfo::POINTER_PAIR, |_, ty| {
            ty == InterfaceType::String
        })?;
        let pair = lower_utf8(cx, s)?;
        self.put(at, &pair)
    }

    fn option_string<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        s: Option<&str>,
    ) -> wasmtime::Result<()> {
        let at = self.field(&<Option<&str> as ComponentType>::ABI, |types, ty| {
            option_of(types, ty, InterfaceType::String)
        })?;
        if let Some(s) = s {
            let pair = lower_utf8(cx, s)?;
            self.put(at, &[1])?;
            self.put(at + OPTION_PAYLOAD_4, &pair)?;
        }
        Ok(())
    }

    fn option_u32(&mut self, value: Option<u32>) -> wasmtime::Result<()> {
        let at = self.field(&<Option<u32> as ComponentType>::ABI, |types, ty| {
            option_of(types, ty, InterfaceType::U32)
        })?;
        if let Some(value) = value {
            self.put(at, &[1])?;
            self.put(at + OPTION_PAYLOAD_4, &value.to_le_bytes())?;
        }
        Ok(())
    }

    fn option_bool(&mut self, value: Option<bool>) -> wasmtime::Result<()> {
        let at = self.field(&<Option<bool> as ComponentType>::ABI, |types, ty| {
            option_of(types, ty, InterfaceType::Bool)
        })?;
        if let Some(value) = value {
            self.put(at, &[1])?;
            self.put(at + OPTION_PAYLOAD_1, &[u8::from(value)])?;
        }
        Ok(())
    }

    fn bool(&mut self, value: bool) -> wasmtime::Result<()> {
        let at = self.field(&<bool as ComponentType>::ABI, |_, ty| {
            ty == InterfaceType::Bool
        })?;
        self.put(at, &[u8::from(value)])
    }

    /// An `enum` field, by its case's WIT name (enums of at most 256 cases: one byte).
    fn enum_case(&mut self, case: &str) -> wasmtime::Result<()> {
        let mut index = None;
        let at = self.field(&CanonicalAbiInfo::SCALAR1, |types, ty| match ty {
            InterfaceType::Enum(i) => {
                index = types[i].names.get_index_of(case);
                index.is_some() && types[i].abi.size32 == 1
            }
            _ => false,
        })?;
        let index = index.and_then(|i| u8::try_from(i).ok());
        self.put(at, &[index.unwrap_or_default()])
    }

    /// A `list<T>` field lowered by wasmtime's lowering of `T`.
    fn list<T, U: Lower>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        items: &[U],
    ) -> wasmtime::Result<()> {
        let mut element = None;
        let at = self.field(&CanonicalAbiInfo::POINTER_PAIR, |types, ty| match ty {
            InterfaceType::List(i) => {
                element = Some(types[i].element);
                true
            }
            _ => false,
        })?;
        let element = element.ok_or_else(|| format_err!("list field without element type"))?;
        let ptr = guest_array(cx, items.len(), U::SIZE32, U::ALIGN32)?;
        U::linear_store_list_to_memory(cx, element, ptr, items)?;
        self.put(
            at,
            &pointer_pair(u32::try_from(ptr)?, u32::try_from(items.len())?),
        )
    }

    /// The `list<netdev>` field, each record lowered by [`lower_netdev`].
    fn netdevs<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        netdevs: &[wit::Netdev],
    ) -> wasmtime::Result<()> {
        let mut element = None;
        let at = self.field(&CanonicalAbiInfo::POINTER_PAIR, |types, ty| match ty {
            InterfaceType::List(i) => {
                element = Some(types[i].element);
                matches!(types[i].element, InterfaceType::Record(_))
            }
            _ => false,
        })?;
        let element = element.ok_or_else(|| format_err!("list field without element type"))?;
        let ptr = guest_array(cx, netdevs.len(), NETDEV_BYTES, NETDEV_ALIGN)?;
        let mut offset = ptr;
        for netdev in netdevs {
            lower_netdev(cx, element, netdev, offset)?;
            offset += NETDEV_BYTES;
        }
        self.put(
            at,
            &pointer_pair(u32::try_from(ptr)?, u32::try_from(netdevs.len())?),
        )
    }

    /// Writes the record at `offset` in the guest, once every field is in.
    fn finish<T>(mut self, cx: &mut LowerContext<'_, T>, offset: usize) -> wasmtime::Result<()> {
        if let Some(field) = self.fields.next() {
            return Err(format_err!(
                "record field `{}` is not written by the host",
                field.name
            ));
        }
        write_to_guest(cx, offset, &self.bytes)
    }
}

/// `ty` is `option<payload>`.
fn option_of(types: &ComponentTypes, ty: InterfaceType, payload: InterfaceType) -> bool {
    matches!(ty, InterfaceType::Option(i) if types[i].ty == payload)
}

/// Longest string the canonical ABI can pass (its length is 31 bits).
const MAX_STRING_BYTES: usize = (1 << 31) - 1;

/// Copies `s` into a guest allocation (the context's strings are UTF-8, checked by the caller);
/// returns its pointer pair.
fn lower_utf8<T>(cx: &mut LowerContext<'_, T>, s: &str) -> wasmtime::Result<[u8; 8]> {
    if s.len() > MAX_STRING_BYTES {
        return Err(format_err!(
            "string of {} bytes too large to pass to a policy",
            s.len()
        ));
    }
    let ptr = cx.realloc(0, 0, 1, s.len())?;
    write_to_guest(cx, ptr, s.as_bytes())?;
    Ok(pointer_pair(u32::try_from(ptr)?, u32::try_from(s.len())?))
}

/// Allocates `count` elements of `size` bytes in the guest (the canonical ABI calls `realloc`
/// for empty lists too).
fn guest_array<T>(
    cx: &mut LowerContext<'_, T>,
    count: usize,
    size: usize,
    align: u32,
) -> wasmtime::Result<usize> {
    let bytes = count
        .checked_mul(size)
        .ok_or_else(|| format_err!("list of {count} records too large to pass to a policy"))?;
    cx.realloc(0, 0, align, bytes)
}

fn pointer_pair(ptr: u32, len: u32) -> [u8; 8] {
    let mut pair = [0; 8];
    pair[..4].copy_from_slice(&ptr.to_le_bytes());
    pair[4..].copy_from_slice(&len.to_le_bytes());
    pair
}

fn write_to_guest<T>(
    cx: &mut LowerContext<'_, T>,
    at: usize,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    cx.as_slice_mut()
        .get_mut(at..)
        .and_then(|m| m.get_mut(..bytes.len()))
        .ok_or_else(|| format_err!("write beyond the policy's memory at {at}"))?
        .copy_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vfpool_sysfs::{Device, DeviceKind, Inventory, Netdev, VdpaDevice, VfRef};

    use super::*;
    use crate::convert::{HostFacts, PolicyInventory};
    use crate::defaults::BUILT_COMPONENTS_DIR;
    use crate::engine::{Limits, PolicyEngine};
    use crate::model::Settings;
    use crate::policy::Policy;

    fn netdev(name: &str, port: &str) -> Netdev {
        Netdev {
            name: name.into(),
            link_type: Some("ether".into()),
            operstate: Some("up".into()),
            carrier: Some(false),
            mac: Some("02:00:00:00:00:01".into()),
            mtu: Some(9000),
            phys_port_name: Some(port.into()),
            phys_switch_id: Some("0300e8030000c4".into()),
        }
    }

    /// A PF, a VF and a sub-function with every field set to a value of its own (no two
    /// `option<u32>` or `option<string>` fields alike, so a field written at another's offset
    /// shows), and a VF with every field empty.
    fn every_field() -> (Inventory, HostFacts) {
        let mut pf = Device::unknown("0000:3b:00.0", DeviceKind::Pf);
        pf.vendor = Some("15b3".into());
        pf.device = Some("1017".into());
        pf.subsystem_vendor = Some("15b4".into());
        pf.subsystem_device = Some("0007".into());
        pf.class = Some("020000".into());
        pf.driver = Some("mlx5_core".into());
        pf.numa_node = Some(1);
        pf.acpi_index = Some(2);
        pf.iommu_group = Some(3);
        pf.no_iommu = true;
        pf.uio_device = Some("uio0".into());
        pf.sriov_total_vfs = Some(4);
        pf.sriov_num_vfs = Some(5);
        pf.vfs = vec![
            VfRef {
                index: 0,
                id: "0000:3b:00.2".into(),
            },
            VfRef {
                index: 1,
                id: "0000:3b:00.3".into(),
            },
        ];
        pf.switchdev = true;
        pf.netdevs = vec![netdev("p0", "p0"), netdev("pf0vf0", "pf0vf0")];
        pf.netdev = Some("p0".into());
        pf.link_type = Some("infiniband".into());
        pf.rdma_devices = vec!["mlx5_0".into(), "mlx5_9".into()];
        pf.pkey = Some("0x7fff".into());
        pf.vdpa_devices = vec![VdpaDevice {
            name: "vdpa0".into(),
            driver: Some("vhost_vdpa".into()),
            vhost_device: Some("vhost-vdpa-0".into()),
        }];
        pf.aux_devices = vec!["mlx5_core.sf.4".into()];

        let mut vf = Device::unknown("0000:3b:00.2", DeviceKind::Vf);
        vf.vendor = Some("8086".into());
        vf.driver = Some("iavf".into());
        vf.numa_node = Some(6);
        vf.pf_id = Some("0000:3b:00.0".into());
        vf.pf_name = Some("p0".into());
        vf.vf_index = Some(7);
        vf.netdevs = vec![Netdev {
            carrier: Some(true),
            ..netdev("ens1f0v0", "")
        }];
        vf.netdev = Some("ens1f0v0".into());

        let empty = Device::unknown("0000:3b:00.3", DeviceKind::Vf);

        let mut sf = Device::unknown("mlx5_core.sf.4", DeviceKind::Aux);
        sf.pf_id = Some("0000:3b:00.0".into());
        sf.aux_type = Some("sf".into());
        sf.sf_num = Some(8);

        let mut facts = HostFacts::default();
        facts.default_route_netdevs.insert("p0".into());
        facts
            .ddp_profiles
            .insert("0000:3b:00.2".into(), "ICE COMMS Package — é".into());
        facts.rdma_enabled.insert("0000:3b:00.0".into(), true);
        facts.rdma_enabled.insert("0000:3b:00.2".into(), false);
        let inventory = Inventory {
            devices: vec![pf, vf, empty, sf],
            ..Inventory::default()
        };
        (inventory, facts)
    }

    /// The probe's echo of every device, unchecked: the inventory holds devices no pool may hold
    /// (the uplink, a PF with VFs), for their fields' sake.
    fn echo(lowering: Lowering, inventory: &PolicyInventory) -> Vec<wit::Pool> {
        let engine = PolicyEngine::new(Limits::default()).unwrap();
        let bytes = std::fs::read(Path::new(BUILT_COMPONENTS_DIR).join("probe.wasm")).unwrap();
        let probe = Policy::compile(&engine, "probe.wasm", &bytes).unwrap();
        let settings = Settings {
            config: "probe:echo".into(),
            default_resource_prefix: "intel.com".into(),
        };
        probe
            .select_unchecked(&settings, inventory, lowering)
            .unwrap()
            .0
    }

    /// What the guest received for each device: its `{:?}` text, by id.
    fn records(pools: &[wit::Pool]) -> Vec<(String, String)> {
        pools
            .iter()
            .flat_map(|pool| &pool.devices)
            .map(|member| {
                let info = member.additional_info.as_deref().unwrap_or_default();
                let record = info.iter().find(|(key, _)| key == "record");
                (member.id.clone(), record.map(|(_, v)| v.clone()).unwrap())
            })
            .collect()
    }

    /// A guest receives from the hand-written lowering exactly what wasmtime's own lowering gives
    /// it, for every field, set and unset.
    #[test]
    fn a_guest_receives_every_field_as_wasmtime_lowers_it() {
        let (inventory, facts) = every_field();
        let inventory = PolicyInventory::new(&inventory, &facts);
        let direct = echo(Lowering::Direct, &inventory);
        let derived = echo(Lowering::Derived, &inventory);
        assert_eq!(records(&direct), records(&derived));
        for pools in [&direct, &derived] {
            assert!(
                matches!(
                    pools.iter().map(|p| p.device_type).collect::<Vec<_>>()[..],
                    [wit::DeviceType::NetDevice, wit::DeviceType::AuxNetDevice]
                ),
                "{pools:?}"
            );
        }

        // And it is the host's record, not merely the same mistake twice: the guest's `{:?}` of
        // each record is the host's (both bindings print records as structs of their fields).
        let host: Vec<(String, String)> = inventory
            .devices()
            .iter()
            .map(|d| (d.id.clone(), format!("{d:?}")))
            .collect();
        assert_eq!(records(&direct), host);
    }
}
