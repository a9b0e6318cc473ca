//! The WIT glue: WIT records to [`crate::Candidate`] and back. No logic here.
#![allow(unsafe_code)] // wit-bindgen's generated export shims

/// A fresh instance per call: never free (see `bump_alloc`).
#[global_allocator]
static ALLOCATOR: bump_alloc::Bump = bump_alloc::Bump::new();

wit_bindgen::generate!({
    path: "../../wit",
    world: "allocator-policy",
});

use exports::vfpool::policy::allocator::Guest;
use vfpool::policy::types::{AllocationRequest, PolicyError, Settings};

struct SpreadAllocator;

impl Guest for SpreadAllocator {
    fn validate_settings(_settings: Settings) -> Result<(), PolicyError> {
        // The spread allocator has no settings of its own; the device plugin config is not its.
        Ok(())
    }

    fn prefer(_settings: Settings, request: AllocationRequest) -> Result<Vec<String>, PolicyError> {
        let candidates: Vec<crate::Candidate> = request
            .available
            .into_iter()
            .map(|d| crate::Candidate {
                pf: d.pf_id.unwrap_or_else(|| d.id.clone()),
                index: d.vf_index.or(d.sf_num),
                numa: d.numa_node,
                id: d.id,
            })
            .collect();
        crate::plan(&candidates, &request.must_include, request.size as usize)
            .map_err(|p| PolicyError::InvalidRequest(p.0))
    }
}

export!(SpreadAllocator);
