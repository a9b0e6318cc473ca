// A vfpool allocator policy in JavaScript: spread each allocation across PFs, for redundancy.
//
// The default (packed) allocator fills one PF before it touches the next, which keeps PFs free for
// large requests. This one does the opposite: a pod asking for 2 VFs gets them on 2 different
// PFs, so losing one PF (cable, switch port, firmware) does not take all of the pod's links down.
//
// Rules, in order:
//   1. every `mustInclude` id is in the answer (kubelet requires it);
//   2. when `numaLocal` is on (the default), devices on one NUMA node are preferred: the node of
//      the first must-include device, or else the node with the most free devices; other nodes
//      are used only when that node has too few;
//   3. the next device always comes from the PF that has the fewest devices in the answer so far
//      (ties: the PF with the most free devices left, then the PF listed first), and within a PF
//      the lowest VF index first.
//
// Settings: the agent passes every policy the same configuration text (`--config-file`), so this
// allocator reads only its own key and ignores the rest (the selector's "pools" or "resourceList"):
//   {"spread": {"numaLocal": true}}
// No "spread" key, or empty settings: the defaults above.
//
// The WIT (../../../wit/policy.wit, world `allocator-policy`) appears in JavaScript as: an exported
// object `allocator` with `validateSettings` and `prefer`; records with camelCase fields; `option`
// as a value or `undefined`; an error result by throwing an object whose `payload` is the
// `policy-error` variant ({tag: "invalid-settings", val: {field, message}}).

import { log } from "vfpool:policy/log@0.1.0";

const SPREAD_KEYS = ["numaLocal"];

/** An error result (`policy-error`) the host reports to the operator. */
class PolicyError extends Error {
  constructor(payload) {
    super(payload.tag);
    this.payload = payload;
  }
}

function invalidSettings(field, message) {
  return new PolicyError({ tag: "invalid-settings", val: { field, message } });
}

/** Reads and checks this allocator's settings; throws an invalid-settings error. */
function parseSettings(settings) {
  const defaults = { numaLocal: true };
  if (settings.config.trim() === "") {
    return defaults;
  }
  let document;
  try {
    document = JSON.parse(settings.config);
  } catch (e) {
    throw invalidSettings("", `not valid JSON (${e.message}); the spread allocator reads {"spread": {"numaLocal": true}}`);
  }
  if (document === null || typeof document !== "object" || Array.isArray(document)) {
    throw invalidSettings("", "must be a JSON object; the spread allocator reads its \"spread\" key");
  }
  const spread = document.spread;
  if (spread === undefined) {
    return defaults;
  }
  if (spread === null || typeof spread !== "object" || Array.isArray(spread)) {
    throw invalidSettings("spread", `must be an object such as {"numaLocal": true}, not ${JSON.stringify(spread)}`);
  }
  for (const key of Object.keys(spread)) {
    if (!SPREAD_KEYS.includes(key)) {
      throw invalidSettings(`spread.${key}`, `unknown key ${JSON.stringify(key)}; the spread allocator has only ${SPREAD_KEYS.join(", ")}`);
    }
  }
  const numaLocal = spread.numaLocal ?? defaults.numaLocal;
  if (typeof numaLocal !== "boolean") {
    throw invalidSettings("spread.numaLocal", `must be true or false, not ${JSON.stringify(spread.numaLocal)}`);
  }
  return { numaLocal };
}

/** The NUMA node to prefer: the first must-include device's, else the one with most candidates. */
function targetNuma(request, byId) {
  for (const id of request.mustInclude) {
    const node = byId.get(id)?.numaNode;
    if (node != null) {
      return node;
    }
  }
  const counts = new Map();
  for (const c of request.available) {
    if (c.numaNode != null) {
      counts.set(c.numaNode, (counts.get(c.numaNode) ?? 0) + 1);
    }
  }
  let best;
  for (const [node, count] of counts) {
    if (best === undefined || count > counts.get(best) || (count === counts.get(best) && node < best)) {
      best = node;
    }
  }
  return best;
}

/** Picks `want` more ids from `candidates` (not yet chosen), one PF at a time. */
function spreadPick(candidates, chosenPerPf, want) {
  // Free candidates per PF key, lowest VF index first (then id, for devices without an index).
  const queues = new Map();
  for (const c of candidates) {
    const key = c.pf ?? `device:${c.id}`; // a device without a PF is its own failure domain
    if (!queues.has(key)) {
      queues.set(key, []);
    }
    queues.get(key).push(c);
  }
  for (const queue of queues.values()) {
    queue.sort((a, b) => (a.vfIndex ?? Infinity) - (b.vfIndex ?? Infinity) || (a.id < b.id ? -1 : 1));
  }
  const order = [...queues.keys()]; // insertion order: candidates arrive sorted by id
  const picked = [];
  while (picked.length < want) {
    let best;
    for (const key of order) {
      const queue = queues.get(key);
      if (queue.length === 0) {
        continue;
      }
      if (best === undefined) {
        best = key;
        continue;
      }
      const used = chosenPerPf.get(key) ?? 0;
      const bestUsed = chosenPerPf.get(best) ?? 0;
      if (used < bestUsed || (used === bestUsed && queue.length > queues.get(best).length)) {
        best = key;
      }
    }
    if (best === undefined) {
      break; // nothing left here; the caller widens the search
    }
    picked.push(queues.get(best).shift().id);
    chosenPerPf.set(best, (chosenPerPf.get(best) ?? 0) + 1);
  }
  return picked;
}

export const allocator = {
  validateSettings(settings) {
    parseSettings(settings);
  },

  prefer(settings, request) {
    const { numaLocal } = parseSettings(settings);
    const byId = new Map(request.available.map((c) => [c.id, c]));
    if (request.mustInclude.length > request.size) {
      throw new PolicyError({
        tag: "invalid-request",
        val: `${request.mustInclude.length} must-include devices but only ${request.size} asked for`,
      });
    }
    if (request.available.length < request.size) {
      throw new PolicyError({
        tag: "invalid-request",
        val: `${request.size} devices asked for but only ${request.available.length} are free in ${request.pool}`,
      });
    }

    const answer = [...new Set(request.mustInclude)];
    const chosen = new Set(answer);
    const chosenPerPf = new Map();
    for (const id of answer) {
      const c = byId.get(id);
      const key = c?.pf ?? `device:${id}`;
      chosenPerPf.set(key, (chosenPerPf.get(key) ?? 0) + 1);
    }
    const free = request.available.filter((c) => !chosen.has(c.id));
    const node = numaLocal ? targetNuma(request, byId) : undefined;
    // First the preferred NUMA node's devices; then, only if those are too few, all the others.
    const rounds = node === undefined ? [free] : [free.filter((c) => c.numaNode === node), free.filter((c) => c.numaNode !== node)];
    for (const round of rounds) {
      answer.push(...spreadPick(round, chosenPerPf, request.size - answer.length));
    }

    const pfsUsed = new Set(answer.map((id) => byId.get(id)?.pf).filter((pf) => pf != null));
    log("debug", `${request.pool}: ${answer.length} devices over ${pfsUsed.size} PFs${node === undefined ? "" : ` (NUMA node ${node} first)`}`);
    return answer;
  },
};
