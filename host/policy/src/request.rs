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
//! tests call real components through them. The candidates are lowered by [`crate::lowering`]:
//! in one allocation for an allocator that declares it may take them so.

use wasmtime::component::__internal::{InterfaceType, LowerContext};
use wasmtime::component::{ComponentType, Lower};

use crate::lowering::{Heap, ListElement, ListRef, Lowering, RecordWriter};
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
/// Lowered by hand ([`ListElement`]): each record is assembled on the host and written with one
/// access to guest memory, its id from the call's [`Lowering`].
#[derive(ComponentType, Lower, Debug, Clone, Copy, PartialEq, Eq)]
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

const CANDIDATE_BYTES: usize = <Candidate<'static> as ComponentType>::SIZE32;

impl ListElement for Candidate<'_> {
    fn lower_at<T, H: Heap>(
        &self,
        cx: &mut LowerContext<'_, T>,
        heap: &mut H,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let Candidate {
            id,
            numa_node,
            pf,
            vf_index,
            sf_num,
        } = self;
        let types = cx.types;
        let mut record = RecordWriter::<CANDIDATE_BYTES>::new(types, ty)?;
        record.string(cx, heap, id)?;
        record.option_u32(*numa_node)?;
        record.option_u32(*pf)?;
        record.option_u32(*vf_index)?;
        record.option_u32(*sf_num)?;
        record.finish(cx, heap, offset)
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
    available: ListRef<'a, Candidate<'a>>,
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
    /// The request to lower, its candidates by `lowering`.
    pub(crate) fn lowered(&self, lowering: Lowering) -> AllocationRequestRef<'_> {
        AllocationRequestRef {
            pool: self.pool,
            available: ListRef::new(&self.available, lowering),
            pfs: &self.pfs,
            must_include: &self.must_include,
            size: self.size,
        }
    }
}
