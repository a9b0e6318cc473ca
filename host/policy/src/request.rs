//! The allocator's request as the host lowers it into the guest: borrowing mirrors of the WIT
//! `settings`, `allocation-request`, `candidate` and `parent-pf` records.
//!
//! `prefer` is on kubelet's GetPreferredAllocation path. The generated (owning) bindings would
//! need every candidate id cloned into a `String` per call — a thousand allocations and frees for
//! a 1,024-device pool, ~15% of the call — only to be copied again into the guest. These records
//! borrow the ids from the inventory instead. wasmtime's `bindgen!` cannot generate borrowing
//! types for this world (its `Borrowing` mode emits an undeclared lifetime in 48.0), so they are
//! written here; the field names are the WIT's, and wasmtime type-checks them against the
//! component's export on every call (a mismatch is an error, never undefined behaviour). The
//! tests call real components through them.

use std::mem::MaybeUninit;

use wasmtime::component::__internal::{
    InterfaceType, LowerContext, bad_type_info, map_maybe_uninit,
};
use wasmtime::component::{ComponentType, Lower};

use crate::model::Settings;

/// WIT `settings`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct SettingsRef<'a> {
    config: &'a str,
    #[component(name = "default-resource-prefix")]
    default_resource_prefix: &'a str,
}

impl<'a> SettingsRef<'a> {
    pub(crate) fn new(settings: &'a Settings) -> Self {
        SettingsRef {
            config: &settings.config,
            default_resource_prefix: &settings.default_resource_prefix,
        }
    }
}

/// WIT `candidate`: a device an allocator may choose.
///
/// Its [`Lower`] is written by hand (below) to write the four `option<u32>` fields with one
/// access to guest memory instead of up to eight.
#[derive(ComponentType, Debug, Clone, Copy, PartialEq, Eq)]
#[component(record)]
pub struct Candidate<'a> {
    /// The device's id.
    pub id: &'a str,
    /// NUMA node, when known.
    #[component(name = "numa-node")]
    pub numa_node: Option<u32>,
    /// Index of the parent PF in [`AllocationRequest::pfs`].
    pub pf: Option<u32>,
    /// For a VF: its index under the PF.
    #[component(name = "vf-index")]
    pub vf_index: Option<u32>,
    /// For a sub-function: its SF number.
    #[component(name = "sf-num")]
    pub sf_num: Option<u32>,
}

/// Where `candidate`'s four `option<u32>` fields start in its canonical-ABI layout (after the id's
/// pointer pair), and their size: each is a tag byte, three bytes of padding and the value.
const CANDIDATE_OPTIONS_AT: usize = 8;
const CANDIDATE_OPTIONS_LEN: usize = 4 * OPTION_U32_LEN;
const OPTION_U32_LEN: usize = 8;

// The hand-written layout above is wasmtime's for this record (checked against its ABI in the
// tests too); `ComponentType`'s type check has already matched field names, order and types
// against the component's WIT before anything is lowered.
const _: () = assert!(<Candidate<'static> as ComponentType>::SIZE32 == 40);
const _: () = assert!(<Candidate<'static> as ComponentType>::ALIGN32 == 4);
const _: () = assert!(<Option<u32> as ComponentType>::SIZE32 == OPTION_U32_LEN);
const _: () = assert!(CANDIDATE_OPTIONS_AT + CANDIDATE_OPTIONS_LEN == 40);

/// An `option<u32>` as the canonical ABI stores it (none: all zero).
fn option_u32_bytes(value: Option<u32>) -> [u8; OPTION_U32_LEN] {
    let mut bytes = [0; OPTION_U32_LEN];
    if let Some(value) = value {
        bytes[0] = 1;
        bytes[4..].copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

// SAFETY: the flat lowering is the derived one, field by field; the memory lowering writes the id
// through wasmtime's own `str` lowering and the options within the record's `SIZE32` bytes at
// `offset`, which the caller (wasmtime's list lowering) has bounds-checked, as the derived code
// assumes too.
#[allow(unsafe_code)]
unsafe impl Lower for Candidate<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let ty = match ty {
            InterfaceType::Record(i) => &cx.types[i],
            _ => bad_type_info(),
        };
        let [id, numa_node, pf, vf_index, sf_num] = [0, 1, 2, 3, 4].map(|i| ty.fields[i].ty);
        self.id
            .linear_lower_to_flat(cx, id, map_maybe_uninit!(dst.id))?;
        self.numa_node
            .linear_lower_to_flat(cx, numa_node, map_maybe_uninit!(dst.numa_node))?;
        self.pf
            .linear_lower_to_flat(cx, pf, map_maybe_uninit!(dst.pf))?;
        self.vf_index
            .linear_lower_to_flat(cx, vf_index, map_maybe_uninit!(dst.vf_index))?;
        self.sf_num
            .linear_lower_to_flat(cx, sf_num, map_maybe_uninit!(dst.sf_num))?;
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let id = match ty {
            InterfaceType::Record(i) => cx.types[i].fields[0].ty,
            _ => bad_type_info(),
        };
        self.id.linear_lower_to_memory(cx, id, offset)?;
        let options = cx.get::<CANDIDATE_OPTIONS_LEN>(offset + CANDIDATE_OPTIONS_AT);
        for (slot, value) in options.chunks_exact_mut(OPTION_U32_LEN).zip([
            self.numa_node,
            self.pf,
            self.vf_index,
            self.sf_num,
        ]) {
            slot.copy_from_slice(&option_u32_bytes(value));
        }
        Ok(())
    }
}

/// WIT `parent-pf`: the parent PF of one or more candidates.
#[derive(ComponentType, Lower, Debug, Clone, Copy, PartialEq, Eq)]
#[component(record)]
pub struct ParentPf<'a> {
    /// The PF's PCI address.
    pub id: &'a str,
    /// The PF's netdev name, when it has one.
    pub name: Option<&'a str>,
    /// The PF's NUMA node, when known.
    #[component(name = "numa-node")]
    pub numa_node: Option<u32>,
}

/// WIT `allocation-request` as lowered: slices of the request's vectors.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct AllocationRequestRef<'a> {
    pool: &'a str,
    available: &'a [Candidate<'a>],
    pfs: &'a [ParentPf<'a>],
    #[component(name = "must-include")]
    must_include: &'a [&'a str],
    size: u32,
}

/// One `prefer` call's request, built by [`crate::validate::allocation_request`] from the
/// inventory and the caller's ids, which it borrows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRequest<'a> {
    /// The pool's full resource name.
    pub pool: &'a str,
    /// The available devices, sorted by id, each once.
    pub available: Vec<Candidate<'a>>,
    /// The parent PFs `Candidate::pf` indexes, sorted by id.
    pub pfs: Vec<ParentPf<'a>>,
    /// Ids the answer must contain, each once.
    pub must_include: Vec<&'a str>,
    /// How many devices the answer must have.
    pub size: u32,
}

impl AllocationRequest<'_> {
    pub(crate) fn lowered(&self) -> AllocationRequestRef<'_> {
        AllocationRequestRef {
            pool: self.pool,
            available: &self.available,
            pfs: &self.pfs,
            must_include: &self.must_include,
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::ComponentType;

    use super::*;

    /// The hand-written `candidate` lowering writes the options where wasmtime's ABI puts them.
    #[test]
    fn candidate_layout_is_wasmtimes() {
        let mut offset = 0;
        let id = <&str as ComponentType>::ABI.next_field32_size(&mut offset);
        let options: Vec<usize> = (0..4)
            .map(|_| <Option<u32> as ComponentType>::ABI.next_field32_size(&mut offset))
            .collect();
        assert_eq!(id, 0);
        assert_eq!(
            options,
            (0..4)
                .map(|i| CANDIDATE_OPTIONS_AT + i * OPTION_U32_LEN)
                .collect::<Vec<_>>()
        );
        assert_eq!(offset, <Candidate<'static> as ComponentType>::SIZE32);
        assert_eq!(option_u32_bytes(None), [0; 8]);
        assert_eq!(
            option_u32_bytes(Some(0x0102_0304)),
            [1, 0, 0, 0, 4, 3, 2, 1]
        );
    }
}
