//! The WIT glue: WIT records to [`crate::Candidate`] and back. No logic here.
#![allow(unsafe_code)] // wit-bindgen's generated export shims

// A fresh instance per call: never free, and take arguments in one allocation (see `bump_alloc`).
bump_alloc::global_allocator!();

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
        let AllocationRequest {
            available,
            pfs,
            must_include,
            size,
            ..
        } = request;
        // A device without a parent PF is a group of its own, after every PF.
        let standalone = pfs.len() as u64;
        let candidates: Vec<crate::Candidate> = available
            .into_iter()
            .enumerate()
            .map(|(position, c)| crate::Candidate {
                pf: c.pf.map_or(standalone + position as u64, u64::from),
                index: c.vf_index.or(c.sf_num),
                numa: c.numa_node,
                id: c.id,
            })
            .collect();
        crate::plan(&candidates, &must_include, size as usize)
            .map_err(|p| PolicyError::InvalidRequest(p.0))
    }
}

export!(SpreadAllocator);
