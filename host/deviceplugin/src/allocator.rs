//! GetPreferredAllocation: which devices kubelet should pick. The answer comes from a pluggable
//! [`Allocator`] (the agent plugs in the active allocator policy, [`PolicyAllocator`]); when it
//! errs, times out or answers something invalid, the server falls back to [`builtin_preference`],
//! a deterministic packing order, and logs why. A pod never fails because of a preference.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use vfpool_policy::{ActivePolicies, PolicyInventory};

use crate::model::PoolSnapshot;

/// One container's preference question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceRequest {
    /// The pool's resource name.
    pub resource_name: String,
    /// Ids kubelet may choose from.
    pub available: Vec<String>,
    /// Ids that must be part of the answer.
    pub must_include: Vec<String>,
    /// How many devices to choose.
    pub size: usize,
}

impl PreferenceRequest {
    /// Leaves the ids `avoid` names out of `available` (not out of `must_include`) when enough
    /// others remain: kubelet takes the preferred answer, so a device left out stays free.
    pub fn avoid(&mut self, avoid: impl Fn(&str) -> bool) {
        // A set once must-include ids are many: any local process can send a hundred thousand.
        let must: Option<HashSet<&str>> = (self.must_include.len() > 16)
            .then(|| self.must_include.iter().map(String::as_str).collect());
        let keep = |id: &String| {
            !avoid(id)
                || match &must {
                    Some(set) => set.contains(id.as_str()),
                    None => self.must_include.contains(id),
                }
        };
        let kept: Vec<bool> = self.available.iter().map(keep).collect();
        let count = kept.iter().filter(|k| **k).count();
        if count >= self.size && count < self.available.len() {
            let mut kept = kept.into_iter();
            self.available.retain(|_| kept.next().unwrap_or(true));
        }
    }

    /// Steers the preference clear of ids Allocate refuses, then of ids better left free, each
    /// only while enough others remain ([`Self::avoid`]): first ids that are not (or no longer)
    /// members of `pool` (kubelet's list may still name a device withdrawn a moment ago), then
    /// members held for a pod outside their policy's pool (a released one should move, not be
    /// handed out again here). In one step, a request short of plain members kept both kinds and
    /// could prefer a withdrawn device where a held one would have done.
    pub fn steer_clear(&mut self, pool: &PoolSnapshot) {
        self.avoid(|id| pool.get(id).is_none());
        if pool.members.iter().any(|m| m.held) {
            self.avoid(|id| pool.get(id).is_some_and(|m| m.held));
        }
    }

    /// A request as kubelet's GetPreferredAllocation puts it, made well-formed: `available`
    /// without repeated ids, `must_include` only ids that are available (each once), and `size`
    /// at most the number available and at least the must-include count. kubelet sends sets, but
    /// any local process can call the socket: the answer must still name only available ids.
    pub fn from_kubelet(
        resource_name: String,
        mut available: Vec<String>,
        mut must_include: Vec<String>,
        size: i32,
    ) -> Self {
        // Borrowed ids first: this runs on every GetPreferredAllocation, over the whole pool, and
        // kubelet never repeats one.
        let repeated = {
            let unique: HashSet<&str> = available.iter().map(String::as_str).collect();
            unique.len() < available.len()
        };
        if repeated {
            let mut kept = HashSet::with_capacity(available.len());
            available.retain(|id| kept.insert(id.clone()));
        }
        if !must_include.is_empty() {
            let unique: HashSet<&str> = available.iter().map(String::as_str).collect();
            let mut included = HashSet::with_capacity(must_include.len());
            must_include.retain(|id| unique.contains(id.as_str()) && included.insert(id.clone()));
        }
        let size = usize::try_from(size.max(0))
            .unwrap_or(0)
            .max(must_include.len())
            .min(available.len());
        PreferenceRequest {
            resource_name,
            available,
            must_include,
            size,
        }
    }

    /// [`Self::from_kubelet`], then [`Self::steer_clear`] of `pool`: the same request, found
    /// with one lookup per id in the pool's index instead of also hashing the request's own ids
    /// into a set (SipHash, as they come from the caller): 17 → 6 µs over 1,024 ids, on the
    /// thread that serves every pool. A request naming an id the pool does not know (a device
    /// withdrawn a moment ago, another local process) takes the general path.
    pub fn for_pool(
        resource_name: String,
        mut available: Vec<String>,
        mut must_include: Vec<String>,
        size: i32,
        pool: &PoolSnapshot,
    ) -> Self {
        let positions: Option<Vec<usize>> = available.iter().map(|id| pool.position(id)).collect();
        let Some(positions) = positions else {
            let mut request =
                PreferenceRequest::from_kubelet(resource_name, available, must_include, size);
            request.steer_clear(pool);
            return request;
        };
        // Every id is a member: a repeat is a position seen before.
        let mut in_available = vec![false; pool.members.len()];
        let mut repeated = false;
        for &position in &positions {
            if let Some(seen) = in_available.get_mut(position) {
                repeated |= std::mem::replace(seen, true);
            }
        }
        if repeated {
            let mut kept = vec![false; pool.members.len()];
            let mut positions = positions.iter();
            available.retain(|_| {
                positions
                    .next()
                    .and_then(|&p| kept.get_mut(p))
                    .is_some_and(|kept| !std::mem::replace(kept, true))
            });
        }
        if !must_include.is_empty() {
            let mut included = vec![false; pool.members.len()];
            must_include.retain(|id| {
                pool.position(id).is_some_and(|p| {
                    in_available.get(p).copied().unwrap_or(false)
                        && included
                            .get_mut(p)
                            .is_some_and(|i| !std::mem::replace(i, true))
                })
            });
        }
        let size = usize::try_from(size.max(0))
            .unwrap_or(0)
            .max(must_include.len())
            .min(available.len());
        let mut request = PreferenceRequest {
            resource_name,
            available,
            must_include,
            size,
        };
        // No id to steer clear of for not being a member: only held members.
        if pool.members.iter().any(|m| m.held) {
            request.avoid(|id| pool.get(id).is_some_and(|m| m.held));
        }
        request
    }
}

/// Why an allocator gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    /// No allocator policy is active yet.
    #[error("no allocator policy is active")]
    NotReady,
    /// The policy call failed (trap, deadline, invalid answer, bad request).
    #[error("the allocator policy failed")]
    Policy(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The answer breaks the request's contract.
    #[error("the allocator's answer is invalid: {0}")]
    InvalidAnswer(String),
    /// The request waited for the allocator (busy with others) until too little of its deadline
    /// was left to ask it.
    #[error("the allocator was busy: {left_ms} ms of the deadline were left when it was free")]
    Busy {
        /// What was left, in milliseconds.
        left_ms: u128,
    },
}

/// Chooses devices for kubelet. Called on a blocking thread, under a deadline.
pub trait Allocator: Send + Sync + 'static {
    /// The preferred ids, exactly `request.size` of them, all in `available`, including
    /// `must_include`; wanted `within` from now (the caller stops waiting then and uses its
    /// built-in order: work past it is wasted).
    fn prefer(
        &self,
        request: &PreferenceRequest,
        within: Duration,
    ) -> Result<Vec<String>, AllocatorError>;
}

/// Checks an answer against its request (count, membership, no repeats, must-include).
pub fn check_answer(request: &PreferenceRequest, answer: &[String]) -> Result<(), AllocatorError> {
    if answer.len() != request.size {
        return Err(AllocatorError::InvalidAnswer(format!(
            "{} ids for a request of {}",
            answer.len(),
            request.size
        )));
    }
    // Answers are a few ids out of up to thousands available: scanning the request per answer id
    // is cheaper than hashing every available id on every call.
    let available: Option<HashSet<&str>> =
        (answer.len() > 16).then(|| request.available.iter().map(String::as_str).collect());
    let is_available = |id: &str| match &available {
        Some(set) => set.contains(id),
        None => request.available.iter().any(|a| a == id),
    };
    let mut seen = HashSet::with_capacity(answer.len());
    for id in answer {
        if !is_available(id) {
            return Err(AllocatorError::InvalidAnswer(format!(
                "{id} is not available"
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(AllocatorError::InvalidAnswer(format!("{id} repeated")));
        }
    }
    if let Some(missing) = request
        .must_include
        .iter()
        .find(|id| !seen.contains(id.as_str()))
    {
        return Err(AllocatorError::InvalidAnswer(format!(
            "must-include {missing} missing"
        )));
    }
    Ok(())
}

/// The built-in order: the default allocator policy's packing (`packed-allocator`'s plan, run
/// natively), so that a pod whose allocator failed or timed out is placed as the default policy
/// would place it — must-include first, the NUMA node of the must-include devices (or the node with
/// the most free devices), the PF with the fewest free devices first so one PF fills before the
/// next, devices of a PF by VF index or SF number. Ids the pool does not know come last.
/// Deterministic for a given pool and request.
pub fn builtin_preference(pool: &PoolSnapshot, request: &PreferenceRequest) -> Vec<String> {
    let size = request.size.min(request.available.len());
    let candidates: Vec<packed_allocator::Candidate<'_>> = request
        .available
        .iter()
        .zip(0u64..)
        .map(|(id, i)| {
            let known = pool
                .position(id)
                .and_then(|p| Some((pool.members.get(p)?, pool.pf_rank(p)?)));
            match known {
                Some((member, pf)) => packed_allocator::Candidate {
                    id,
                    numa: member.device.numa_node,
                    pf,
                    index: member.device.vf_index.or(member.device.sf_num),
                },
                // A group of its own, after every PF of the pool's.
                None => packed_allocator::Candidate {
                    id,
                    numa: None,
                    pf: u64::MAX - i,
                    index: None,
                },
            }
        })
        .collect();
    match packed_allocator::plan(&candidates, &request.must_include, size) {
        Ok(ids) => ids,
        // Not a request `from_kubelet` lets through; answered anyway, in the order given.
        Err(_) => {
            let mut chosen: Vec<String> = Vec::with_capacity(size);
            for id in request.must_include.iter().chain(&request.available) {
                if chosen.len() >= size.max(request.must_include.len()) {
                    break;
                }
                if !chosen.contains(id) {
                    chosen.push(id.clone());
                }
            }
            chosen
        }
    }
}

/// The active allocator policy as an [`Allocator`]. The agent swaps the inventory the policy sees
/// after every rescan ([`PolicyAllocator::set_inventory`]).
pub struct PolicyAllocator {
    policies: Arc<ActivePolicies>,
    inventory: RwLock<Arc<PolicyInventory>>,
}

impl std::fmt::Debug for PolicyAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAllocator").finish_non_exhaustive()
    }
}

impl PolicyAllocator {
    /// An allocator over the active policies, seeing `inventory`.
    pub fn new(policies: Arc<ActivePolicies>, inventory: Arc<PolicyInventory>) -> Self {
        PolicyAllocator {
            policies,
            inventory: RwLock::new(inventory),
        }
    }

    /// Replaces the inventory the policy sees.
    pub fn set_inventory(&self, inventory: Arc<PolicyInventory>) {
        *self
            .inventory
            .write()
            .unwrap_or_else(PoisonError::into_inner) = inventory;
    }
}

impl Allocator for PolicyAllocator {
    fn prefer(
        &self,
        request: &PreferenceRequest,
        within: Duration,
    ) -> Result<Vec<String>, AllocatorError> {
        let active = self.policies.current().ok_or(AllocatorError::NotReady)?;
        let inventory = Arc::clone(
            &self
                .inventory
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let size = u32::try_from(request.size)
            .map_err(|_| AllocatorError::InvalidAnswer("size out of range".to_string()))?;
        let outcome = active
            .allocator
            .prefer_within(
                &active.settings,
                &inventory,
                &request.resource_name,
                &request.available,
                &request.must_include,
                size,
                within,
            )
            .map_err(|e| AllocatorError::Policy(Box::new(e)))?;
        // What the policy logged went to debug as it came (the policy engine forwards it).
        Ok(outcome.value)
    }
}

#[cfg(test)]
mod tests {
    use vfpool_policy::{DeviceType, PoolDevice};
    use vfpool_sysfs::{Device, DeviceKind, NodeFacts};

    use super::*;
    use crate::model::{Health, Member};

    /// A healthy member for `device`, with no Allocate hints.
    fn member(device: Device) -> Member {
        Member {
            hints: PoolDevice {
                id: device.id.clone(),
                rdma: false,
                vhost_net: false,
                vdpa_type: None,
                additional_info: None,
            },
            device,
            health: Health::Healthy,
            held: false,
        }
    }

    /// 4 VFs on PF p0 (NUMA 0), 2 on p1 (NUMA 0), 3 on p2 (NUMA 1).
    fn pool() -> PoolSnapshot {
        let mut members = Vec::new();
        for (pf, numa, count) in [("p0", 0, 4), ("p1", 0, 2), ("p2", 1, 3)] {
            for i in 0..count {
                let mut d = Device::unknown(format!("{pf}-{i}"), DeviceKind::Vf);
                d.pf_id = Some(pf.to_string());
                d.numa_node = Some(numa);
                members.push(member(d));
            }
        }
        PoolSnapshot::new(
            "x.io/p".to_string(),
            DeviceType::NetDevice,
            false,
            members,
            NodeFacts::default(),
        )
    }

    fn request(available: &[&str], must: &[&str], size: usize) -> PreferenceRequest {
        PreferenceRequest {
            resource_name: "x.io/p".to_string(),
            available: available.iter().map(|s| (*s).to_string()).collect(),
            must_include: must.iter().map(|s| (*s).to_string()).collect(),
            size,
        }
    }

    /// The built-in order is the default policy's packing: on the NUMA node with the most free
    /// devices, the PF with the fewest free first. It took the PF with the most free first, so
    /// pods of one device each alternated between PFs instead of filling one (upstream #255).
    #[test]
    fn builtin_fills_one_pf_before_the_next_across_requests() {
        let pool = pool();
        let mut free: Vec<&str> = pool.members.iter().map(|m| m.id()).collect();
        let mut given = Vec::new();
        for _ in 0..4 {
            let req = request(&free, &[], 1);
            let got = builtin_preference(&pool, &req);
            check_answer(&req, &got).unwrap();
            free.retain(|id| *id != got[0]);
            given.push(got[0].clone());
        }
        assert_eq!(given, ["p1-0", "p1-1", "p0-0", "p0-1"]);
    }

    /// It stays on one NUMA node when the node can hold the request; it crossed to another
    /// node's bigger PF (the groups were ranked by size alone).
    #[test]
    fn builtin_stays_on_one_numa_node() {
        let pool = pool();
        let all: Vec<&str> = pool.members.iter().map(|m| m.id()).collect();
        let got = builtin_preference(&pool, &request(&all, &[], 6));
        assert_eq!(got, ["p1-0", "p1-1", "p0-0", "p0-1", "p0-2", "p0-3"]);
    }

    /// Sub-functions in SF-number order, not id order (`mlx5_core.sf.10` sorts before `.sf.9`).
    #[test]
    fn builtin_orders_sub_functions_by_number() {
        let members = [9u32, 10, 11]
            .iter()
            .map(|n| {
                let mut d = Device::unknown(format!("mlx5_core.sf.{n}"), DeviceKind::Aux);
                d.pf_id = Some("p0".to_string());
                d.numa_node = Some(0);
                d.sf_num = Some(*n);
                member(d)
            })
            .collect();
        let pool = PoolSnapshot::new(
            "x.io/sf".to_string(),
            DeviceType::AuxNetDevice,
            false,
            members,
            NodeFacts::default(),
        );
        let all: Vec<&str> = pool.members.iter().map(|m| m.id()).collect();
        let got = builtin_preference(&pool, &request(&all, &[], 2));
        assert_eq!(got, ["mlx5_core.sf.9", "mlx5_core.sf.10"]);
    }

    #[test]
    fn builtin_starts_with_must_include_and_its_pf() {
        let pool = pool();
        let all: Vec<&str> = pool.members.iter().map(|m| m.id()).collect();
        let req = request(&all, &["p2-1"], 3);
        let got = builtin_preference(&pool, &req);
        assert_eq!(got, ["p2-1", "p2-0", "p2-2"]);
        check_answer(&req, &got).unwrap();
    }

    #[test]
    fn builtin_is_deterministic_and_spills_over() {
        let pool = pool();
        let req = request(&["p1-1", "p2-0", "p1-0", "p0-3"], &[], 3);
        let a = builtin_preference(&pool, &req);
        let b = builtin_preference(&pool, &req);
        assert_eq!(a, b);
        assert_eq!(a, ["p0-3", "p1-0", "p1-1"]);
    }

    #[test]
    fn answers_breaking_the_contract_are_refused() {
        let req = request(&["a", "b", "c"], &["c"], 2);
        assert!(check_answer(&req, &["a".into()]).is_err());
        assert!(check_answer(&req, &["a".into(), "z".into()]).is_err());
        assert!(check_answer(&req, &["c".into(), "c".into()]).is_err());
        assert!(check_answer(&req, &["a".into(), "b".into()]).is_err());
        check_answer(&req, &["b".into(), "c".into()]).unwrap();
    }

    /// A malformed request (any local process can call the socket) is made well-formed before any
    /// allocator sees it: the built-in order answered `["zz"]` for a must-include id that is not
    /// available, and more ids than asked for.
    #[test]
    fn a_malformed_request_is_made_well_formed() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let request = PreferenceRequest::from_kubelet(
            "x.io/p".to_string(),
            ids(&["p0-0", "p0-1", "p0-0", "p2-0"]),
            ids(&["zz", "p2-0", "p2-0"]),
            7,
        );
        assert_eq!(request.available, ids(&["p0-0", "p0-1", "p2-0"]));
        assert_eq!(request.must_include, ids(&["p2-0"]));
        assert_eq!(request.size, 3);
        let answer = builtin_preference(&pool(), &request);
        assert_eq!(answer.len(), 3);
        assert!(answer.iter().all(|id| request.available.contains(id)));
        let negative =
            PreferenceRequest::from_kubelet("x.io/p".to_string(), ids(&["p0-0"]), vec![], -3);
        assert_eq!(negative.size, 0);
    }

    /// `for_pool` is `from_kubelet` then `steer_clear`, on requests of every shape: repeats,
    /// must-include ids available or not (repeated too), ids the pool does not know, held members,
    /// sizes out of range.
    #[test]
    fn for_pool_is_from_kubelet_then_steer_clear() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below as u64).unwrap()
        };
        let names: Vec<String> = pool()
            .members
            .iter()
            .map(|m| m.device.id.clone())
            .chain(["gone".to_string(), "zz".to_string()])
            .collect();
        let mut shapes = [0usize; 4];
        for _ in 0..5000 {
            let mut pool = pool();
            for member in &mut pool.members {
                member.held = next(4) == 0;
            }
            // Members only in most requests (the path without the general one), strangers in some.
            let strangers = next(3) == 0;
            let from = if strangers { names.len() } else { 9 };
            let mut pick = |most: usize| -> Vec<String> {
                let n = next(most);
                (0..n).map(|_| names[next(from)].clone()).collect()
            };
            let available = pick(12);
            let must_include = pick(4);
            let size = i32::try_from(next(14)).unwrap() - 2;
            let mut expected = PreferenceRequest::from_kubelet(
                "x.io/p".into(),
                available.clone(),
                must_include.clone(),
                size,
            );
            expected.steer_clear(&pool);
            let got = PreferenceRequest::for_pool(
                "x.io/p".into(),
                available.clone(),
                must_include.clone(),
                size,
                &pool,
            );
            assert_eq!(
                got, expected,
                "available {available:?} must {must_include:?} size {size}"
            );
            let repeats = available.len() > available.iter().collect::<HashSet<_>>().len();
            shapes[usize::from(strangers) * 2 + usize::from(repeats)] += 1;
        }
        // Every kind of request was tried, many times.
        assert!(shapes.iter().all(|&n| n > 100), "{shapes:?}");
    }

    /// Free members m1 and m2, a held member and a withdrawn id, three wanted: the withdrawn id
    /// goes (Allocate would refuse it), the held member stays (it is needed). Both used to stay,
    /// the two kinds lumped together and too few plain members left.
    #[test]
    fn a_withdrawn_id_is_steered_clear_of_before_a_held_member() {
        let mut pool = pool();
        pool.members[1].held = true;
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut request = PreferenceRequest::from_kubelet(
            "x.io/p".into(),
            ids(&["gone", "p0-0", "p0-1", "p0-2"]),
            vec![],
            3,
        );
        request.steer_clear(&pool);
        assert_eq!(request.available, ids(&["p0-0", "p0-1", "p0-2"]));
        let mut roomy = PreferenceRequest::from_kubelet(
            "x.io/p".into(),
            ids(&["gone", "p0-0", "p0-1", "p0-2"]),
            vec![],
            2,
        );
        roomy.steer_clear(&pool);
        assert_eq!(roomy.available, ids(&["p0-0", "p0-2"]));
    }

    /// Held devices (kept for a pod outside the pool the policy puts them in) are left out of the
    /// answer while enough others are free, so a released one is not handed out again from its
    /// old pool before the agent moves it; when they are needed, they stay.
    #[test]
    fn avoided_ids_are_left_out_only_while_enough_others_remain() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let held = |id: &str| id == "p0-0";
        let mut roomy = PreferenceRequest::from_kubelet(
            "x.io/p".into(),
            ids(&["p0-0", "p0-1", "p0-2"]),
            vec![],
            2,
        );
        roomy.avoid(held);
        assert_eq!(roomy.available, ids(&["p0-1", "p0-2"]));
        let mut tight =
            PreferenceRequest::from_kubelet("x.io/p".into(), ids(&["p0-0", "p0-1"]), vec![], 2);
        tight.avoid(held);
        assert_eq!(tight.available, ids(&["p0-0", "p0-1"]));
        let mut must = PreferenceRequest::from_kubelet(
            "x.io/p".into(),
            ids(&["p0-0", "p0-1", "p0-2"]),
            ids(&["p0-0"]),
            1,
        );
        must.avoid(held);
        assert_eq!(must.available, ids(&["p0-0", "p0-1", "p0-2"]));
    }
}
