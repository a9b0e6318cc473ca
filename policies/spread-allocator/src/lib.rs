//! An example allocator policy (`vfpool:policy/allocator`): NUMA-local like the default, but
//! spreading an allocation across PFs round-robin (the emptiest PF first), so that a pod's
//! interfaces do not share one uplink. Copy it to start your own allocator.
//!
//! Owns only its ordering rule ([`plan`], plain Rust, unit-tested natively).

#[cfg(target_arch = "wasm32")]
mod component;

/// What the plan needs to know about an available device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Device id.
    pub id: String,
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

/// The preferred ids: `must_include` first, then one device per PF in turn.
pub fn plan(
    available: &[Candidate],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, RequestProblem> {
    let mut answer: Vec<String> = Vec::with_capacity(size);
    for id in must_include {
        if !available.iter().any(|c| &c.id == id) {
            return Err(RequestProblem(format!(
                "must-include device {id:?} is not among the available devices"
            )));
        }
        if !answer.contains(id) {
            answer.push(id.clone());
        }
    }
    if size < answer.len() || size > available.len() {
        return Err(RequestProblem(format!(
            "size {size} does not fit {} must-include and {} available devices",
            answer.len(),
            available.len()
        )));
    }
    let must_numa = available
        .iter()
        .find(|c| answer.contains(&c.id))
        .and_then(|c| c.numa);
    let rest: Vec<&Candidate> = available
        .iter()
        .filter(|c| !answer.contains(&c.id))
        .collect();
    let target = must_numa.or_else(|| {
        let mut nodes: Vec<u32> = rest.iter().filter_map(|c| c.numa).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.into_iter().max_by_key(|n| {
            (
                rest.iter().filter(|c| c.numa == Some(*n)).count(),
                u32::MAX - n,
            )
        })
    });
    // Per NUMA group (target first), PFs as queues, emptiest PF first, then round-robin.
    let mut groups: Vec<(bool, Option<u32>)> =
        rest.iter().map(|c| (c.numa != target, c.numa)).collect();
    groups.sort_unstable();
    groups.dedup();
    for (_, numa) in groups {
        let mut queues: Vec<(u64, Vec<&Candidate>)> = Vec::new();
        for c in rest.iter().filter(|c| c.numa == numa) {
            match queues.iter_mut().find(|(pf, _)| *pf == c.pf) {
                Some((_, q)) => q.push(c),
                None => queues.push((c.pf, vec![c])),
            }
        }
        for (_, q) in &mut queues {
            q.sort_by_key(|c| (c.index.unwrap_or(u32::MAX), c.id.clone()));
        }
        queues.sort_by(|(pa, qa), (pb, qb)| qb.len().cmp(&qa.len()).then_with(|| pa.cmp(pb)));
        let mut round = 0;
        while answer.len() < size && queues.iter().any(|(_, q)| round < q.len()) {
            for (_, q) in &queues {
                if answer.len() == size {
                    break;
                }
                if let Some(c) = q.get(round) {
                    answer.push(c.id.clone());
                }
            }
            round += 1;
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, numa: u32, pf: char, index: u32) -> Candidate {
        Candidate {
            id: id.into(),
            numa: Some(numa),
            pf: u64::from(pf),
            index: Some(index),
        }
    }

    #[test]
    fn round_robin_across_pfs_of_one_node() {
        let node = vec![
            c("a0", 0, 'A', 0),
            c("a1", 0, 'A', 1),
            c("b0", 0, 'B', 0),
            c("b1", 0, 'B', 1),
            c("b2", 0, 'B', 2),
            c("c0", 1, 'C', 0),
        ];
        assert_eq!(plan(&node, &[], 3).unwrap(), ["b0", "a0", "b1"]);
        assert_eq!(plan(&node, &["c0".into()], 2).unwrap(), ["c0", "b0"]);
    }
}
