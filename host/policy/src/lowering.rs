//! How the host lowers its largest arguments into a policy: the inventory's `device` records for
//! `select` and the allocator's `candidate` records for `prefer`, written by hand to the
//! canonical ABI's layout.
//!
//! `select` passes every attribute of every device: 1,032 records of ~20 strings each on the
//! 1,024-VF node. wasmtime's derived lowering looks the guest's memory up again (instance,
//! canonical options, memory export, bounds) for every field it writes, ~60 times per device.
//! Here each record is assembled on the host and written with one access, in one of two ways:
//!
//! - [`Lowering::PerValue`]: every string and list gets its own guest `realloc`, as the canonical
//!   ABI lays it down, because a guest may free each one (Python, JavaScript, Rust with the
//!   default allocator). Each `realloc` is a call into the guest (~60 ns); for the inventory that
//!   is ~24,000 calls, 1.3 ms — several times the selection itself.
//! - [`Lowering::OneAllocation`], for a guest that declares it never frees
//!   ([`ARENA_ARGUMENTS_SECTION`]): the list is laid out once on the host as an [`Image`] (its
//!   bytes plus where they hold addresses), and each call copies it into one guest allocation and
//!   moves the addresses there. The inventory's image is made on the first such `select` and kept
//!   with the inventory ([`PolicyInventory`]), so a rescan's `select` costs one `realloc` and a
//!   copy. The guest sees the same values either way.
//!
//! Layout: wasmtime type-checks each list against the component's export (through the generated
//! types' checks) before every call, and [`RecordWriter`] checks each field's type as it writes
//! it, so a contract change this code does not follow is an error, never garbage in the guest.
//! The tests compare what a guest receives with what wasmtime's own lowering gives it, field by
//! field, in both ways. A guest whose strings are not UTF-8 (none built for `wasm32-wasip2`
//! today) gets wasmtime's lowering.

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
use crate::convert::PolicyInventory;

/// Which lowering a call uses. [`Lowering::Derived`] (wasmtime's own) is the tests' reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lowering {
    /// The hand-written record lowering of this module, one guest `realloc` per string and list,
    /// as the canonical ABI lays it down.
    PerValue,
    /// The hand-written record lowering with everything the records point to in one guest
    /// allocation: for a guest that declares [`ARENA_ARGUMENTS_SECTION`].
    OneAllocation,
    /// wasmtime's derived lowering of the generated types (what non-UTF-8 guests get, and the
    /// reference the tests compare with).
    #[cfg_attr(not(test), expect(dead_code, reason = "chosen by the tests only"))]
    Derived,
}

/// The custom section by which a core module declares that its `cabi_realloc` never frees a
/// block (and copies a block it grows, unless it is the last), so that the strings and lists of
/// a call's arguments may be carved out of one allocation: the guest can neither tell the
/// difference nor be harmed by it. It counts when every core module exporting `cabi_realloc`
/// carries it (`crate::footprint`). `bump_alloc::global_allocator!` (`policies/bump-alloc`)
/// emits it with the allocator; a module whose allocator frees must not carry it (it would
/// corrupt its own heap, never the host's). Its content is one byte, the declaration's
/// version: 1.
pub(crate) const ARENA_ARGUMENTS_SECTION: &str = "vfpool:arena-arguments";

/// WIT `inventory`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct InventoryRef<'a> {
    devices: ListRef<'a, wit::Device>,
    node: &'a wit::NodeFacts,
}

impl<'a> InventoryRef<'a> {
    pub(crate) fn new(inventory: &'a PolicyInventory, lowering: Lowering) -> Self {
        InventoryRef {
            devices: ListRef::cached(&inventory.wit.devices, lowering, inventory.argument_image()),
            node: &inventory.wit.node,
        }
    }
}

/// A WIT `list<E>` lowered by a [`Lowering`] of this module.
pub(crate) struct ListRef<'a, E> {
    items: &'a [E],
    lowering: Lowering,
    /// Where the [`Lowering::OneAllocation`] image of `items` is kept between calls, when they
    /// outlive one call (an inventory does; an allocation request does not).
    image: Option<&'a ImageCache>,
}

impl<'a, E> ListRef<'a, E> {
    pub(crate) fn new(items: &'a [E], lowering: Lowering) -> Self {
        ListRef {
            items,
            lowering,
            image: None,
        }
    }

    /// `new`, keeping the list's one-allocation image in `cache` for the next call (`cache`
    /// belongs to `items`, which must not change while it lives).
    pub(crate) fn cached(items: &'a [E], lowering: Lowering, cache: &'a ImageCache) -> Self {
        ListRef {
            items,
            lowering,
            image: Some(cache),
        }
    }
}

// SAFETY: the type is `[E]`'s as a list: same flat form (a pointer pair), same ABI, same type
// check.
#[allow(unsafe_code)]
unsafe impl<E: ComponentType> ComponentType for ListRef<'_, E> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[E] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: every guest address written is bounds-checked (`write_to_guest`, `Image::place`), and
// every allocation comes from the guest's `realloc` through wasmtime (which checks its alignment
// and bounds).
#[allow(unsafe_code)]
unsafe impl<E: ListElement + Lower + Sync> Lower for ListRef<'_, E> {
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

impl<E: ListElement + Lower> ListRef<'_, E> {
    /// Allocates the list in the guest and writes every element; returns its pointer and length.
    fn lower<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
    ) -> wasmtime::Result<(u32, u32)> {
        let element = match ty {
            InterfaceType::List(i) => cx.types[i].element,
            _ => bad_type_info(),
        };
        if !E::is_element_type(cx.types, element) {
            return Err(format_err!(
                "list element is not of the type the host writes"
            ));
        }
        let utf8 = cx.options().string_encoding == StringEncoding::Utf8;
        let ptr = match self.lowering {
            Lowering::PerValue if utf8 => write_list(cx, &mut PerValue, element, self.items)?,
            Lowering::OneAllocation if utf8 => match self.image {
                Some(cache) => match cache.get() {
                    Some(image) => image.place(cx)?,
                    None => {
                        let image = Image::of(cx, element, self.items)?;
                        let ptr = image.place(cx)?;
                        // A walk that passed the record checks for one component passes them for
                        // every component wasmtime lets this type be passed to.
                        let _ = cache.set(image);
                        ptr
                    }
                },
                None => Image::of(cx, element, self.items)?.place(cx)?,
            },
            _ => {
                let ptr = PerValue.array(cx, self.items.len(), E::SIZE32, E::ALIGN32)?;
                E::linear_store_list_to_memory(cx, element, ptr, self.items)?;
                ptr
            }
        };
        Ok((u32::try_from(ptr)?, u32::try_from(self.items.len())?))
    }
}

/// Allocates a list of `items` from `heap` and writes each element; returns its pointer.
fn write_list<T, H: Heap, E: ListElement>(
    cx: &mut LowerContext<'_, T>,
    heap: &mut H,
    element: InterfaceType,
    items: &[E],
) -> wasmtime::Result<usize> {
    let ptr = heap.array(cx, items.len(), E::SIZE32, E::ALIGN32)?;
    let mut at = ptr;
    for item in items {
        item.lower_at(cx, heap, element, at)?;
        at += E::SIZE32;
    }
    Ok(ptr)
}

/// A list element this module writes itself, to any [`Heap`], at its canonical-ABI size and
/// alignment ([`ComponentType::SIZE32`], [`ComponentType::ALIGN32`]).
pub(crate) trait ListElement: ComponentType {
    /// Whether the component's element type `ty` is of this element's kind (a record's fields
    /// are checked as they are written): a record, unless the element says otherwise.
    fn is_element_type(_: &ComponentTypes, ty: InterfaceType) -> bool {
        matches!(ty, InterfaceType::Record(_))
    }

    /// Writes the element, of the component's type `ty`, at `offset`.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()>;
}

/// Where the parts of a lowered value that live out of line (string bytes, list elements) are
/// allocated and written.
pub(crate) trait Heap {
    /// Allocates `bytes` aligned to `align`; returns the guest address.
    fn allocate<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        align: u32,
        bytes: usize,
    ) -> wasmtime::Result<usize>;

    /// Writes `bytes` at guest address `at`, inside an allocation of this heap.
    fn write<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        at: usize,
        bytes: &[u8],
    ) -> wasmtime::Result<()>;

    /// Notes that the four bytes written at `at` are a guest address this heap returned.
    fn pointer(&mut self, at: usize);

    /// Allocates `count` elements of `size` bytes.
    fn array<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        count: usize,
        size: usize,
        align: u32,
    ) -> wasmtime::Result<usize> {
        let bytes = count
            .checked_mul(size)
            .ok_or_else(|| format_err!("list of {count} records too large to pass to a policy"))?;
        self.allocate(cx, align, bytes)
    }

    /// Copies `s` (UTF-8, as the caller checked the guest expects) into an allocation; returns
    /// its pointer pair.
    fn string<T>(&mut self, cx: &mut LowerContext<'_, T>, s: &str) -> wasmtime::Result<[u8; 8]> {
        let len = string_length(s)?;
        let ptr = self.allocate(cx, 1, s.len())?;
        self.write(cx, ptr, s.as_bytes())?;
        Ok(pointer_pair(u32::try_from(ptr)?, len))
    }
}

/// The length of `s` as the canonical ABI passes it, if it can.
fn string_length(s: &str) -> wasmtime::Result<u32> {
    u32::try_from(s.len())
        .ok()
        .filter(|&len| len as usize <= MAX_STRING_BYTES)
        .ok_or_else(|| format_err!("string of {} bytes too large to pass to a policy", s.len()))
}

/// The canonical ABI's way: a guest `realloc` per string and per list (empty ones included), each
/// written at once.
struct PerValue;

impl Heap for PerValue {
    fn allocate<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        align: u32,
        bytes: usize,
    ) -> wasmtime::Result<usize> {
        cx.realloc(0, 0, align, bytes)
    }

    fn write<T>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        at: usize,
        bytes: &[u8],
    ) -> wasmtime::Result<()> {
        write_to_guest(cx, at, bytes)
    }

    fn pointer(&mut self, _: usize) {}
}

/// A list laid out as one allocation at address 0 — its elements first, then what they point
/// to: its bytes, their alignment, and where they hold addresses. Placed in a guest by copying it
/// into one allocation and adding that allocation's address to every address in it.
#[derive(Clone)]
pub(crate) struct Image {
    bytes: Vec<u8>,
    align: u32,
    /// Offsets of the little-endian `u32` addresses in `bytes`.
    pointers: Vec<u32>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("bytes", &self.bytes.len())
            .field("pointers", &self.pointers.len())
            .finish_non_exhaustive()
    }
}

/// An [`Image`] kept with the data it was made from.
pub(crate) type ImageCache = std::sync::OnceLock<Image>;

impl Image {
    /// Lays `items` out, as a list of the component's element type `element`.
    fn of<T, E: ListElement>(
        cx: &mut LowerContext<'_, T>,
        element: InterfaceType,
        items: &[E],
    ) -> wasmtime::Result<Image> {
        // Room for each item's record and a string or two, and an address each: a call's
        // candidates then fill the image without it moving as it grows.
        let mut image = Image {
            bytes: Vec::with_capacity(items.len().saturating_mul(64)),
            align: 1,
            pointers: Vec::with_capacity(items.len()),
        };
        // The elements are the first allocation of an empty image: at offset 0.
        let list = write_list(cx, &mut image, element, items)?;
        debug_assert_eq!(list, 0);
        Ok(image)
    }

    /// Where `bytes` more bytes at `at` end, if the arguments stay addressable (under 4 GiB).
    fn end_of(at: usize, bytes: usize) -> wasmtime::Result<usize> {
        at.checked_add(bytes)
            .filter(|end| u32::try_from(*end).is_ok())
            .ok_or_else(|| format_err!("arguments too large to pass to a policy"))
    }

    /// Copies the image into one new guest allocation, its addresses moved there; returns the
    /// list's address (the allocation's).
    fn place<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<usize> {
        let base = cx.realloc(0, 0, self.align, self.bytes.len())?;
        let shift = u32::try_from(base)?;
        let region = guest_region(cx, base, self.bytes.len())?;
        region.copy_from_slice(&self.bytes);
        for &at in &self.pointers {
            let word = region
                .get_mut(at as usize..)
                .and_then(|w| w.first_chunk_mut::<4>())
                .ok_or_else(|| format_err!("address at {at} beyond the arguments"))?;
            let moved = u32::from_le_bytes(*word)
                .checked_add(shift)
                .ok_or_else(|| format_err!("argument address beyond 4 GiB"))?;
            *word = moved.to_le_bytes();
        }
        Ok(base)
    }
}

impl Heap for Image {
    /// Appended as it is (a string's alignment is 1): the default would zero the bytes first.
    fn string<T>(&mut self, _: &mut LowerContext<'_, T>, s: &str) -> wasmtime::Result<[u8; 8]> {
        let len = string_length(s)?;
        let at = self.bytes.len();
        Image::end_of(at, s.len())?;
        self.bytes.extend_from_slice(s.as_bytes());
        Ok(pointer_pair(u32::try_from(at)?, len))
    }

    fn allocate<T>(
        &mut self,
        _: &mut LowerContext<'_, T>,
        align: u32,
        bytes: usize,
    ) -> wasmtime::Result<usize> {
        let at = self.bytes.len().next_multiple_of(align_bytes(align)?);
        let end = Image::end_of(at, bytes)?;
        self.bytes.resize(end, 0);
        self.align = self.align.max(align);
        Ok(at)
    }

    fn write<T>(
        &mut self,
        _: &mut LowerContext<'_, T>,
        at: usize,
        bytes: &[u8],
    ) -> wasmtime::Result<()> {
        self.bytes
            .get_mut(at..)
            .and_then(|b| b.get_mut(..bytes.len()))
            .ok_or_else(|| format_err!("write beyond the arguments at {at}"))?
            .copy_from_slice(bytes);
        Ok(())
    }

    fn pointer(&mut self, at: usize) {
        // `at` is within `bytes`, which `allocate` keeps under 4 GiB.
        self.pointers.push(at as u32);
    }
}

/// An alignment the canonical ABI uses (1, 2, 4 or 8 bytes).
fn align_bytes(align: u32) -> wasmtime::Result<usize> {
    match align {
        1 | 2 | 4 | 8 => Ok(align as usize),
        _ => Err(format_err!(
            "alignment {align} is not one the canonical ABI uses"
        )),
    }
}

impl ListElement for wit::Device {
    /// Writes one `device` record at `offset`: its fields in WIT order.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
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
        } = self;
        let types = cx.types;
        let mut record = RecordWriter::<{ <Self as ComponentType>::SIZE32 }>::new(types, ty)?;
        record.string(cx, heap, id)?;
        record.enum_case(match kind {
            wit::DeviceKind::Pf => "pf",
            wit::DeviceKind::Vf => "vf",
            wit::DeviceKind::Aux => "aux",
        })?;
        record.option_string(cx, heap, vendor.as_deref())?;
        record.option_string(cx, heap, device_id.as_deref())?;
        record.option_string(cx, heap, subsystem_vendor.as_deref())?;
        record.option_string(cx, heap, subsystem_device.as_deref())?;
        record.option_string(cx, heap, class_code.as_deref())?;
        record.option_string(cx, heap, driver.as_deref())?;
        record.option_u32(*numa_node)?;
        record.option_u32(*acpi_index)?;
        record.option_u32(*iommu_group)?;
        record.bool(*no_iommu)?;
        record.option_string(cx, heap, uio_device.as_deref())?;
        record.option_u32(*sriov_total_vfs)?;
        record.option_u32(*sriov_num_vfs)?;
        record.list(cx, heap, vfs)?;
        record.option_string(cx, heap, pf_id.as_deref())?;
        record.option_string(cx, heap, pf_name.as_deref())?;
        record.option_u32(*vf_index)?;
        record.bool(*switchdev)?;
        record.list(cx, heap, netdevs)?;
        record.option_string(cx, heap, netdev.as_deref())?;
        record.option_string(cx, heap, link_type.as_deref())?;
        record.list(cx, heap, rdma_devices)?;
        record.option_string(cx, heap, pkey.as_deref())?;
        record.option_bool(*devlink_enable_rdma)?;
        record.list(cx, heap, vdpa_devices)?;
        record.option_string(cx, heap, aux_type.as_deref())?;
        record.option_u32(*sf_num)?;
        record.list(cx, heap, aux_devices)?;
        record.bool(*carries_default_route)?;
        record.option_string(cx, heap, ddp_profile.as_deref())?;
        record.finish(cx, heap, offset)
    }
}

impl ListElement for wit::Netdev {
    /// Writes one `netdev` record at `offset`.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
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
        } = self;
        let types = cx.types;
        let mut record = RecordWriter::<{ <Self as ComponentType>::SIZE32 }>::new(types, ty)?;
        record.string(cx, heap, name)?;
        record.option_string(cx, heap, link_type.as_deref())?;
        record.option_string(cx, heap, operstate.as_deref())?;
        record.option_bool(*carrier)?;
        record.option_string(cx, heap, mac.as_deref())?;
        record.option_u32(*mtu)?;
        record.option_string(cx, heap, phys_port_name.as_deref())?;
        record.option_string(cx, heap, phys_switch_id.as_deref())?;
        record.finish(cx, heap, offset)
    }
}

impl ListElement for wit::VfRef {
    /// Writes one `vf-ref` record at `offset`.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let wit::VfRef { index, id } = self;
        let types = cx.types;
        let mut record = RecordWriter::<{ <Self as ComponentType>::SIZE32 }>::new(types, ty)?;
        record.u32(*index)?;
        record.string(cx, heap, id)?;
        record.finish(cx, heap, offset)
    }
}

impl ListElement for wit::VdpaDevice {
    /// Writes one `vdpa-device` record at `offset`.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let wit::VdpaDevice {
            name,
            driver,
            vhost_device,
        } = self;
        let types = cx.types;
        let mut record = RecordWriter::<{ <Self as ComponentType>::SIZE32 }>::new(types, ty)?;
        record.string(cx, heap, name)?;
        record.option_string(cx, heap, driver.as_deref())?;
        record.option_string(cx, heap, vhost_device.as_deref())?;
        record.finish(cx, heap, offset)
    }
}

impl ListElement for String {
    fn is_element_type(_: &ComponentTypes, ty: InterfaceType) -> bool {
        ty == InterfaceType::String
    }

    /// Writes one element of a `list<string>` at `offset`: its pointer pair.
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        _: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let pair = heap.string(cx, self)?;
        heap.write(cx, offset, &pair)?;
        heap.pointer(offset);
        Ok(())
    }
}

/// One record assembled in host memory, field by field in WIT order, then written to the guest
/// at once. Each field's offset follows the canonical ABI's record layout; each field's type is
/// checked against the component's as it is written.
pub(crate) struct RecordWriter<'t, const N: usize> {
    types: &'t ComponentTypes,
    fields: std::slice::Iter<'t, RecordField>,
    bytes: [u8; N],
    end: usize,
    /// Where in `bytes` the pointer pairs are (for [`Heap::pointer`]), the first `pointer_count`.
    pointers: [u16; MAX_RECORD_POINTERS],
    pointer_count: usize,
}

/// Most strings and lists a record written here has (`device` has 20).
const MAX_RECORD_POINTERS: usize = 32;

/// The payload offset of `option<T>` for 4-byte aligned `T` (strings, `u32`) and for `bool`.
const OPTION_PAYLOAD_4: usize = <Option<u32> as ComponentVariant>::PAYLOAD_OFFSET32;
const OPTION_PAYLOAD_1: usize = <Option<bool> as ComponentVariant>::PAYLOAD_OFFSET32;
const _: () = assert!(<Option<&str> as ComponentVariant>::PAYLOAD_OFFSET32 == OPTION_PAYLOAD_4);

impl<'t, const N: usize> RecordWriter<'t, N> {
    pub(crate) fn new(types: &'t ComponentTypes, ty: InterfaceType) -> wasmtime::Result<Self> {
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
            pointers: [0; MAX_RECORD_POINTERS],
            pointer_count: 0,
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

    /// Puts a string's or list's pointer pair at `at`.
    fn put_pointer_pair(&mut self, at: usize, pair: &[u8; 8]) -> wasmtime::Result<()> {
        let slot = self.pointers.get_mut(self.pointer_count).ok_or_else(|| {
            format_err!("more than {MAX_RECORD_POINTERS} strings and lists in a record")
        })?;
        *slot = u16::try_from(at).map_err(|_| format_err!("record field at {at}"))?;
        self.pointer_count += 1;
        self.put(at, pair)
    }

    fn put(&mut self, at: usize, bytes: &[u8]) -> wasmtime::Result<()> {
        self.bytes
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| format_err!("record field beyond the record's {N} bytes"))?
            .copy_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn string<T, H: Heap>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        s: &str,
    ) -> wasmtime::Result<()> {
        let at = self.field(&CanonicalAbiInfo::POINTER_PAIR, |_, ty| {
            ty == InterfaceType::String
        })?;
        let pair = heap.string(cx, s)?;
        self.put_pointer_pair(at, &pair)
    }

    pub(crate) fn option_string<T, H: Heap>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        s: Option<&str>,
    ) -> wasmtime::Result<()> {
        let at = self.field(&<Option<&str> as ComponentType>::ABI, |types, ty| {
            option_of(types, ty, InterfaceType::String)
        })?;
        if let Some(s) = s {
            let pair = heap.string(cx, s)?;
            self.put(at, &[1])?;
            self.put_pointer_pair(at + OPTION_PAYLOAD_4, &pair)?;
        }
        Ok(())
    }

    fn u32(&mut self, value: u32) -> wasmtime::Result<()> {
        let at = self.field(&<u32 as ComponentType>::ABI, |_, ty| {
            ty == InterfaceType::U32
        })?;
        self.put(at, &value.to_le_bytes())
    }

    pub(crate) fn option_u32(&mut self, value: Option<u32>) -> wasmtime::Result<()> {
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

    /// A `list<E>` field, each element written by its [`ListElement`] lowering.
    fn list<T, H: Heap, E: ListElement>(
        &mut self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        items: &[E],
    ) -> wasmtime::Result<()> {
        let mut element = None;
        let at = self.field(&CanonicalAbiInfo::POINTER_PAIR, |types, ty| match ty {
            InterfaceType::List(i) => {
                element = Some(types[i].element);
                E::is_element_type(types, types[i].element)
            }
            _ => false,
        })?;
        let element = element.ok_or_else(|| format_err!("list field without element type"))?;
        let ptr = write_list(cx, heap, element, items)?;
        self.put_pointer_pair(
            at,
            &pointer_pair(u32::try_from(ptr)?, u32::try_from(items.len())?),
        )
    }

    /// Writes the record at `offset`, once every field is in.
    pub(crate) fn finish<T, H: Heap>(
        mut self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        offset: usize,
    ) -> wasmtime::Result<()> {
        if let Some(field) = self.fields.next() {
            return Err(format_err!(
                "record field `{}` is not written by the host",
                field.name
            ));
        }
        heap.write(cx, offset, &self.bytes)?;
        for &at in &self.pointers[..self.pointer_count] {
            heap.pointer(offset + usize::from(at));
        }
        Ok(())
    }
}

/// `ty` is `option<payload>`.
fn option_of(types: &ComponentTypes, ty: InterfaceType, payload: InterfaceType) -> bool {
    matches!(ty, InterfaceType::Option(i) if types[i].ty == payload)
}

/// Longest string the canonical ABI can pass (its length is 31 bits).
const MAX_STRING_BYTES: usize = (1 << 31) - 1;

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
    guest_region(cx, at, bytes.len())?.copy_from_slice(bytes);
    Ok(())
}

/// The `len` bytes of the guest's memory at `at`, bounds-checked.
fn guest_region<'m, T>(
    cx: &'m mut LowerContext<'_, T>,
    at: usize,
    len: usize,
) -> wasmtime::Result<&'m mut [u8]> {
    cx.as_slice_mut()
        .get_mut(at..)
        .and_then(|m| m.get_mut(..len))
        .ok_or_else(|| format_err!("write beyond the policy's memory at {at}"))
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
            bond: None,
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
        echo_padded(lowering, inventory, 0)
    }

    /// [`echo`] with `padding` spaces after the settings text, which the probe ignores: the
    /// guest's allocations for the inventory then start `padding` bytes further on.
    fn echo_padded(
        lowering: Lowering,
        inventory: &PolicyInventory,
        padding: usize,
    ) -> Vec<wit::Pool> {
        let engine = PolicyEngine::new(Limits::default()).unwrap();
        let bytes = std::fs::read(Path::new(BUILT_COMPONENTS_DIR).join("probe.wasm")).unwrap();
        let probe = Policy::compile(&engine, "probe.wasm", &bytes).unwrap();
        let settings = Settings {
            config: format!("probe:echo{}", " ".repeat(padding)),
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

    /// A guest receives from the hand-written lowerings — a `realloc` per value, and one
    /// allocation for all — exactly what wasmtime's own lowering gives it, for every field, set
    /// and unset.
    #[test]
    fn a_guest_receives_every_field_as_wasmtime_lowers_it() {
        let (inventory, facts) = every_field();
        let inventory = PolicyInventory::new(&inventory, &facts);
        let direct = echo(Lowering::PerValue, &inventory);
        let derived = echo(Lowering::Derived, &inventory);
        let arena = echo(Lowering::OneAllocation, &inventory);
        assert_eq!(records(&direct), records(&derived));
        assert_eq!(records(&arena), records(&derived));
        // Again from the image kept with the inventory, placed at another address.
        assert!(inventory.argument_image().get().is_some());
        let moved = echo_padded(Lowering::OneAllocation, &inventory, 1001);
        assert_eq!(records(&moved), records(&derived));
        for pools in [&direct, &derived, &arena] {
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

    /// An allocator receives its candidates from the hand-written lowerings — per value and in
    /// one allocation — as wasmtime's own lowering of the same records gives them.
    #[test]
    fn an_allocator_receives_every_candidate_as_wasmtime_lowers_it() {
        let (inventory, facts) = every_field();
        let inventory = PolicyInventory::new(&inventory, &facts);
        let engine = PolicyEngine::new(Limits::default()).unwrap();
        let bytes = std::fs::read(Path::new(BUILT_COMPONENTS_DIR).join("probe.wasm")).unwrap();
        let settings = Settings {
            config: "probe:echo".into(),
            default_resource_prefix: "intel.com".into(),
        };
        // Every device: a PF, two VFs (one with every field unset) and a sub-function.
        let available: Vec<String> = inventory.devices().iter().map(|d| d.id.clone()).collect();
        let received = |lowering: Lowering| {
            let probe = Policy::compile(&engine, "probe.wasm", &bytes)
                .unwrap()
                .with_argument_lowering(lowering);
            let outcome = probe
                .prefer(&settings, &inventory, "intel.com/x", &available, &[], 1)
                .unwrap();
            let lines: Vec<String> = outcome.logs.into_iter().map(|l| l.message).collect();
            assert_eq!(lines.len(), available.len(), "{lines:?}");
            lines
        };
        let derived = received(Lowering::Derived);
        assert_eq!(received(Lowering::PerValue), derived);
        assert_eq!(received(Lowering::OneAllocation), derived);
        // Not merely the same mistake three times: the ids, NUMA nodes, VF index and SF number
        // are the host's, each in its candidate.
        for (line, id) in derived.iter().zip(&available) {
            assert!(line.contains(&format!("id: \"{id}\"")), "{line}");
        }
        assert!(
            derived
                .iter()
                .any(|l| l.contains("numa-node: Some(6)") && l.contains("vf-index: Some(7)")),
            "{derived:?}"
        );
        assert!(
            derived.iter().any(|l| l.contains("sf-num: Some(8)")),
            "{derived:?}"
        );
    }
}
