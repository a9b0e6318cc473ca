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
    // The node most must-include devices are on (the lowest of a tie), and their PFs: the rest
    // goes to other PFs first, so that the pod's interfaces do not share an uplink.
    let mut must_nodes: Vec<(u32, usize)> = Vec::new();
    let mut must_pfs: Vec<u64> = Vec::new();
    for c in available.iter().filter(|c| answer.contains(&c.id)) {
        must_pfs.push(c.pf);
        if let Some(n) = c.numa {
            match must_nodes.iter_mut().find(|(node, _)| *node == n) {
                Some((_, count)) => *count += 1,
                None => must_nodes.push((n, 1)),
            }
        }
    }
    let must_numa = must_nodes
        .into_iter()
        .max_by(|(na, ca), (nb, cb)| ca.cmp(cb).then_with(|| nb.cmp(na)))
        .map(|(n, _)| n);
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
    // Per NUMA group (the target first, devices of unknown node last), PFs as queues: PFs the
    // must-include devices are not on first, then the emptiest, then round-robin.
    let mut groups: Vec<(bool, bool, Option<u32>)> = rest
        .iter()
        .map(|c| (c.numa != target, c.numa.is_none(), c.numa))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for (_, _, numa) in groups {
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
        queues.sort_by(|(pa, qa), (pb, qb)| {
            must_pfs
                .contains(pa)
                .cmp(&must_pfs.contains(pb))
                .then_with(|| qb.len().cmp(&qa.len()))
                .then_with(|| pa.cmp(pb))
        });
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

    /// The pod's second interface goes to another PF than its must-include device's, even when
    /// that PF has more free devices: the example's point is not sharing an uplink.
    #[test]
    fn the_must_include_pf_comes_last() {
        let node = vec![
            c("a0", 0, 'A', 0),
            c("a1", 0, 'A', 1),
            c("b0", 0, 'B', 0),
            c("b1", 0, 'B', 1),
            c("b2", 0, 'B', 2),
            c("b3", 0, 'B', 3),
        ];
        assert_eq!(plan(&node, &["b0".into()], 2).unwrap(), ["b0", "a0"]);
    }

    /// The node most must-include devices are on, and devices of unknown node after every known
    /// node's.
    #[test]
    fn numa_node_of_most_must_include_and_unknown_nodes_last() {
        let mut node = vec![
            c("a0", 1, 'A', 0),
            c("b0", 0, 'B', 0),
            c("b1", 0, 'B', 1),
            c("d0", 0, 'D', 0),
            c("e0", 1, 'E', 0),
        ];
        node.push(Candidate {
            id: "u0".into(),
            numa: None,
            pf: u64::from('U'),
            index: Some(0),
        });
        // Must-include a0 (node 1), b0 and b1 (node 0): node 0 it is.
        let must = ["a0".into(), "b0".into(), "b1".into()];
        assert_eq!(plan(&node, &must, 4).unwrap()[3], "d0");
        assert_eq!(plan(&node[1..], &[], 5).unwrap()[4], "u0");
    }
}
