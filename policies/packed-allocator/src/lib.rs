//! The default allocator policy (`vfpool:policy/allocator`): answers kubelet's
//! GetPreferredAllocation by packing.
//!
//! Owns the ordering rule ([`plan`], plain Rust, unit-tested natively): honour must-include; prefer
//! the NUMA node of the must-include devices (or, without any, the node with the most free
//! devices); within it, fill one PF before the next (the fullest PF first, so whole PFs stay free
//! for later requests — upstream issues #255/#574); devices of a PF by VF index; deterministic.
//! Must not touch: anything but its inputs.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(target_arch = "wasm32")]
mod component;

/// What the plan needs to know about an available device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Device id (borrowed: a request of a thousand devices is not copied to be ordered).
    pub id: &'a str,
    /// NUMA node, if known.
    pub numa: Option<u32>,
    /// The device's PF group: devices with the same value share a PF; groups order like their PF's
    /// PCI address. A device without a parent PF is a group of its own.
    pub pf: u64,
    /// VF index or sub-function number, if any.
    pub index: Option<u32>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestProblem(pub String);

/// The preferred ids: `must_include` first (in the given order), then the packed choice.
pub fn plan(
    available: &[Candidate<'_>],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, RequestProblem> {
    let chosen = checked_must_include(available, must_include, size)?;
    let need = size - chosen.len();
    // Sets, not scans: any local process can send a request of a hundred thousand ids, half of
    // them must-include, and a scan per id would take seconds of a core. (Ordered sets: a policy
    // gets no WASI randomness to seed a hash.)
    let is_chosen: BTreeSet<&str> = chosen.iter().map(String::as_str).collect();
    let (must, rest): (Vec<&Candidate<'_>>, Vec<&Candidate<'_>>) =
        available.iter().partition(|c| is_chosen.contains(c.id));
    let target = target_numa(&must, &rest);
    let must_pfs: BTreeSet<u64> = must.iter().map(|c| c.pf).collect();
    // Counted once: sorting compares O(n log n) times.
    let mut free_on_pf: BTreeMap<u64, usize> = BTreeMap::new();
    let mut free_on_numa: BTreeMap<u32, usize> = BTreeMap::new();
    for c in &rest {
        *free_on_pf.entry(c.pf).or_default() += 1;
        if let Some(n) = c.numa {
            *free_on_numa.entry(n).or_default() += 1;
        }
    }
    let numa_rank = |numa: Option<u32>| match numa {
        Some(n) if Some(n) == target => (0u8, 0usize, 0u32),
        Some(n) => (
            1,
            usize::MAX - free_on_numa.get(&n).copied().unwrap_or(0),
            n,
        ),
        None => (2, 0, 0),
    };
    let key = |c: &Candidate<'_>| {
        (
            numa_rank(c.numa),
            !must_pfs.contains(&c.pf),
            free_on_pf.get(&c.pf).copied().unwrap_or(0),
            c.pf,
            c.index.unwrap_or(u32::MAX),
        )
    };
    let mut ordered: Vec<_> = rest.into_iter().map(|c| (key(c), c)).collect();
    // Ids are unique, so the order is total and the unstable sort deterministic. Only the first
    // `need` matter: partition around them (linear), then sort just those.
    let order = |(ka, a): &(_, &Candidate<'_>), (kb, b): &(_, &Candidate<'_>)| {
        Ord::cmp(ka, kb).then_with(|| a.id.cmp(b.id))
    };
    if need > 0 && need < ordered.len() {
        ordered.select_nth_unstable_by(need - 1, order);
        ordered.truncate(need);
    }
    ordered.sort_unstable_by(order);
    let mut answer = chosen;
    answer.extend(
        ordered
            .into_iter()
            .take(need)
            .map(|(_, c)| c.id.to_string()),
    );
    Ok(answer)
}

/// Checks the request and returns the must-include ids without duplicates.
pub fn checked_must_include(
    available: &[Candidate<'_>],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, RequestProblem> {
    let mut chosen: Vec<String> = Vec::with_capacity(must_include.len());
    if !must_include.is_empty() {
        let is_available: BTreeSet<&str> = available.iter().map(|c| c.id).collect();
        let mut taken: BTreeSet<&str> = BTreeSet::new();
        for id in must_include {
            if !is_available.contains(id.as_str()) {
                return Err(RequestProblem(format!(
                    "must-include device {id:?} is not among the available devices"
                )));
            }
            if taken.insert(id.as_str()) {
                chosen.push(id.clone());
            }
        }
    }
    if size < chosen.len() {
        return Err(RequestProblem(format!(
            "size {size} is smaller than the {} must-include devices",
            chosen.len()
        )));
    }
    if size > available.len() {
        return Err(RequestProblem(format!(
            "size {size} is more than the {} available devices",
            available.len()
        )));
    }
    Ok(chosen)
}

/// The NUMA node to prefer: the most common among the `must`-include devices, otherwise the node
/// with the most free devices (of the `rest`); ties go to the lower node.
pub fn target_numa(must: &[&Candidate<'_>], rest: &[&Candidate<'_>]) -> Option<u32> {
    let from_must = most_common(must.iter().filter_map(|c| c.numa));
    from_must.or_else(|| most_common(rest.iter().filter_map(|c| c.numa)))
}

fn most_common(nodes: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for node in nodes {
        match counts.iter_mut().find(|(n, _)| *n == node) {
            Some((_, count)) => *count += 1,
            None => counts.push((node, 1)),
        }
    }
    counts
        .into_iter()
        .max_by(|(na, ca), (nb, cb)| ca.cmp(cb).then_with(|| nb.cmp(na)))
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, numa: u32, pf: char, index: u32) -> Candidate<'_> {
        Candidate {
            id,
            numa: Some(numa),
            pf: u64::from(pf),
            index: Some(index),
        }
    }

    fn node() -> Vec<Candidate<'static>> {
        vec![
            c("a0", 0, 'A', 0),
            c("a1", 0, 'A', 1),
            c("a2", 0, 'A', 2),
            c("b0", 0, 'B', 0),
            c("b1", 0, 'B', 1),
            c("c0", 1, 'C', 0),
            c("c1", 1, 'C', 1),
            c("c2", 1, 'C', 2),
            c("c3", 1, 'C', 3),
        ]
    }

    #[test]
    fn fills_the_fullest_pf_of_the_numa_node_with_most_free_devices() {
        // NUMA 0 has 5 free, NUMA 1 has 4: node 0; PF B (2 free) before A (3 free).
        assert_eq!(plan(&node(), &[], 3).unwrap(), ["b0", "b1", "a0"]);
    }

    #[test]
    fn follows_the_must_include_numa_node_and_pf() {
        let answer = plan(&node(), &["c2".to_string()], 3).unwrap();
        assert_eq!(answer, ["c2", "c0", "c1"]);
    }

    #[test]
    fn spills_to_other_nodes_when_needed() {
        let answer = plan(&node(), &[], 7).unwrap();
        assert_eq!(answer[..5], ["b0", "b1", "a0", "a1", "a2"]);
        assert_eq!(answer[5..], ["c0", "c1"]);
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(plan(&node(), &["zz".to_string()], 1).is_err());
        assert!(plan(&node(), &[], 10).is_err());
        assert!(plan(&node(), &["a0".to_string(), "a1".to_string()], 1).is_err());
    }

    /// After the must-include device, its own PF comes first even when another PF of the node has
    /// fewer free devices (the pod's interfaces share the PF it already has).
    #[test]
    fn the_must_include_pf_is_filled_first() {
        let devices = vec![
            c("a0", 0, 'A', 0),
            c("a1", 0, 'A', 1),
            c("a2", 0, 'A', 2),
            c("a3", 0, 'A', 3),
            c("b0", 0, 'B', 0),
            c("b1", 0, 'B', 1),
        ];
        // B has fewer free devices, but A holds the must-include one.
        assert_eq!(
            plan(&devices, &["a3".to_string()], 3).unwrap(),
            ["a3", "a0", "a1"]
        );
    }

    /// Devices whose NUMA node is unknown come after those of every known node.
    #[test]
    fn unknown_numa_nodes_come_last() {
        let mut devices = vec![c("a0", 0, 'A', 0), c("c0", 1, 'C', 0)];
        devices.push(Candidate {
            id: "u0",
            numa: None,
            pf: u64::from('U'),
            index: Some(0),
        });
        assert_eq!(plan(&devices, &[], 3).unwrap(), ["a0", "c0", "u0"]);
    }

    #[test]
    fn a_smaller_answer_is_a_prefix_of_a_larger_one() {
        // Guards the partial selection: choosing k must give the first k of the full order.
        let full = plan(&node(), &[], node().len()).unwrap();
        for k in 0..=node().len() {
            assert_eq!(plan(&node(), &[], k).unwrap(), full[..k], "size {k}");
        }
    }

    #[test]
    fn a_request_of_a_hundred_thousand_ids_is_answered() {
        // Any local process can ask this of the agent's built-in order (the same plan): half the
        // ids must-include. Per-id scans of the must-include list took 22 s of a core here.
        let ids: Vec<String> = (0..100_000).map(|n| format!("{n:05x}")).collect();
        let available: Vec<Candidate<'_>> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| Candidate {
                id,
                numa: Some(u32::try_from(n % 2).unwrap()),
                pf: u64::try_from(n / 64).unwrap(),
                index: Some(u32::try_from(n % 64).unwrap()),
            })
            .collect();
        let must: Vec<String> = ids.iter().step_by(2).cloned().collect();
        let answer = plan(&available, &must, 60_000).unwrap();
        assert_eq!(answer.len(), 60_000);
        assert_eq!(answer[..50_000], must[..]);
        let distinct: BTreeSet<&String> = answer.iter().collect();
        assert_eq!(distinct.len(), 60_000);
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let mut reversed = node();
        reversed.reverse();
        assert_eq!(
            plan(&node(), &[], 4).unwrap(),
            plan(&reversed, &[], 4).unwrap()
        );
    }
}
