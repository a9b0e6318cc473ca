//! `pfNames` / `rootDevices` entries: `<pf>` or `<pf>#<i>,<a>-<b>,...` (0-based, inclusive).
//!
//! Difference from upstream: upstream's `getItem` only looks at the *first* entry whose PF part
//! matches, so `["ens1f0#0-1", "ens1f0#5"]` never selects VF 5. Here every matching entry counts
//! (the obvious meaning). A malformed entry is a configuration error instead of a silent miss.
//! Empty pieces are not malformed: an empty entry (`""`, or `null` in the list) or one with no PF
//! name before the `#` (`"#0-3"`, what a template with an empty variable renders) names no PF (so
//! a list of only such entries selects nothing), as upstream, and an empty index item covers
//! nothing, so `"ens1f0#"` covers no VF, as upstream. A trailing one (`"ens1f0#0-3,"`) selects
//! what it does upstream, so configs that work today keep working. One before the last differs:
//! upstream stops reading the list at the first item it cannot parse, so `"ens1f0#0,,2"` selects
//! only VF 0 there, `"ens1f0#,3"` (a leading one) none, and `"ens1f0#0-3,x"` only VFs 0–3; here
//! `"0,,2"` selects VFs 0 and 2, `",3"` VF 3 (the obvious meaning), and `x` is refused. An index
//! beyond `u32` (`"ens1f0#4-4294967296"`, a large bound meaning "all the rest") is read as the
//! largest index, as upstream's 64-bit `strconv.Atoi` does; one beyond `i64::MAX` makes Atoi fail,
//! which ends upstream's list like `x`, so it is refused like `x`. An inverted range (`"3-1"`) is
//! no parse error upstream: it covers nothing and the list goes on; it is refused here all the
//! same, as almost certainly a slip for `"1-3"` that would silently shrink the pool.

use std::num::IntErrorKind;

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfSelector {
    /// The PF netdev name or PF PCI address (compared case-insensitively, as upstream does).
    pub name: String,
    /// Inclusive index ranges; `None` selects every function of the PF.
    pub ranges: Option<Vec<(u32, u32)>>,
}

impl PfSelector {
    /// Parses one entry; one without a PF name names no PF and never matches. The error explains
    /// what is wrong and how to write it.
    pub fn parse(entry: &str) -> Result<PfSelector, String> {
        let mut parts = entry.split('#');
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            // Upstream compares the empty name with each PF's and never reads the indexes.
            return Ok(PfSelector {
                name: String::new(),
                ranges: None,
            });
        }
        let ranges = parts.next();
        if parts.next().is_some() {
            return Err(format!(
                "{entry:?} has more than one '#'; write \"<pf>#<indexes>\" such as \"ens1f0#0,2-7\""
            ));
        }
        // `"ens1f0#"` keeps an empty list: it covers nothing, as upstream.
        let ranges = match ranges {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .filter(|item| !item.is_empty())
                    .map(|item| parse_range(entry, item))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(PfSelector {
            name: name.to_string(),
            ranges,
        })
    }

    /// Whether this entry names `pf` (case-insensitively); an empty entry names nothing.
    pub fn names(&self, pf: &str) -> bool {
        !self.name.is_empty()
            && self.name.len() == pf.len()
            && self
                .name
                .chars()
                .flat_map(char::to_lowercase)
                .eq(pf.chars().flat_map(char::to_lowercase))
    }

    /// Whether the entry covers function `index` (`None`: the index is unknown).
    pub fn covers(&self, index: Option<u32>) -> bool {
        match &self.ranges {
            None => true,
            Some(ranges) => {
                index.is_some_and(|i| ranges.iter().any(|(a, b)| (*a..=*b).contains(&i)))
            }
        }
    }
}

/// Whether any entry naming `pf` covers `index`. A device without a PF never matches.
pub fn selects(entries: &[PfSelector], pf: Option<&str>, index: Option<u32>) -> bool {
    let Some(pf) = pf.filter(|p| !p.is_empty()) else {
        return false;
    };
    entries.iter().any(|e| e.names(pf) && e.covers(index))
}

fn parse_range(entry: &str, item: &str) -> Result<(u32, u32), String> {
    // Upstream reads an index with Go's `strconv.Atoi` (64 bits; a sign is allowed, and a `-`
    // never reaches it: it splits the range). Beyond `u32` it names no function that can exist:
    // the largest. Beyond `i64` Atoi fails, which ends upstream's list: malformed, refused here.
    let number = |text: &str| match text.parse::<i64>() {
        Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(format!(
            "{entry:?}: {text:?} is beyond the largest index upstream reads ({}); write a smaller bound, such as \"ens1f0#4-255\"",
            i64::MAX
        )),
        Err(_) => Err(format!(
            "{entry:?}: {text:?} is not an index; write indexes as non-negative integers, such as \"ens1f0#0,2-7\""
        )),
    };
    let mut bounds = item.split('-');
    let start = number(bounds.next().unwrap_or_default())?;
    let end = match bounds.next() {
        None => start,
        Some(end) => number(end)?,
    };
    if bounds.next().is_some() {
        return Err(format!(
            "{entry:?}: {item:?} is not a range; write \"<first>-<last>\" such as \"2-7\""
        ));
    }
    // Upstream reads on past an inverted range, which covers nothing; refused here because it is
    // almost certainly a slip for the range the other way round, which would silently shrink the
    // pool (a deliberate difference).
    if start > end {
        return Err(format!(
            "{entry:?}: the range {item:?} is empty (its start is after its end) and would select nothing; write it as \"{end}-{start}\""
        ));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(entries: &[&str]) -> Vec<PfSelector> {
        entries
            .iter()
            .map(|e| PfSelector::parse(e).unwrap())
            .collect()
    }

    /// Upstream `deviceSelectors_test.go`: pfNames `["ens0","ens2f0#1","ens2f1#0,3-5,7"]`.
    #[test]
    fn upstream_pf_name_vectors() {
        let entries = parse_all(&["ens0", "ens2f0#1", "ens2f1#0,3-5,7"]);
        let selected: Vec<u32> = (0..10)
            .filter(|i| selects(&entries, Some("ens2f1"), Some(*i)))
            .collect();
        assert_eq!(selected, [0, 3, 4, 5, 7]);
        assert!(
            selects(&entries, Some("ens0"), Some(9)),
            "no range: every VF"
        );
        assert!(selects(&entries, Some("ens2f0"), Some(1)));
        assert!(!selects(&entries, Some("ens2f0"), Some(0)));
        assert!(!selects(&entries, Some("eth0"), Some(0)));
        assert!(
            !selects(&entries, None, Some(0)),
            "no PF name: never selected"
        );
    }

    /// Upstream: rootDevices `["0000:86:00.0","0000:86:00.1#1","0000:86:00.2#0-2,5,7"]`.
    #[test]
    fn upstream_root_device_vectors() {
        let entries = parse_all(&["0000:86:00.0", "0000:86:00.1#1", "0000:86:00.2#0-2,5,7"]);
        let selected: Vec<u32> = (0..10)
            .filter(|i| selects(&entries, Some("0000:86:00.2"), Some(*i)))
            .collect();
        assert_eq!(selected, [0, 1, 2, 5, 7]);
    }

    #[test]
    fn names_compare_case_insensitively() {
        let entries = parse_all(&["ENS1F0#1"]);
        assert!(selects(&entries, Some("ens1f0"), Some(1)));
    }

    /// Upstream never selects VF 5 here (first-entry quirk); we do.
    #[test]
    fn every_matching_entry_counts() {
        let entries = parse_all(&["ens1f0#0-1", "ens1f0#5"]);
        assert!(selects(&entries, Some("ens1f0"), Some(5)));
        assert!(selects(&entries, Some("ens1f0"), Some(1)));
        assert!(!selects(&entries, Some("ens1f0"), Some(3)));
    }

    #[test]
    fn unknown_index_only_matches_without_range() {
        assert!(!selects(&parse_all(&["p0#1"]), Some("p0"), None));
        assert!(selects(&parse_all(&["p0"]), Some("p0"), None));
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in ["a#1#2", "a#1-2-3", "a#x", "a#-1", "a#3-1", "a# 1", "a#1-"] {
            assert!(PfSelector::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    /// Go's `strconv.Atoi` fails above `i64::MAX`, which ends upstream's reading of the list: a
    /// malformed item, refused here like any other. It used to read as the largest index.
    #[test]
    fn bounds_beyond_go_int_are_refused() {
        for bad in [
            "ens1f0#9223372036854775808",
            "ens1f0#0-9223372036854775808",
            "ens1f0#99999999999999999999999",
            "ens1f0#99999999999999999999999-99999999999999999999999",
        ] {
            let err = PfSelector::parse(bad).unwrap_err();
            assert!(err.contains("9223372036854775807"), "{bad}: {err}");
        }
        let entries = parse_all(&["ens1f0#9223372036854775807", "ens1f1#+3"]);
        assert!(selects(&entries, Some("ens1f0"), Some(u32::MAX)));
        assert!(
            selects(&entries, Some("ens1f1"), Some(3)),
            "Atoi takes a sign"
        );
    }

    /// An index bound beyond `u32` (up to Go's `int`) reads as the largest index (upstream parses
    /// 64 bits).
    #[test]
    fn huge_bounds_mean_the_largest_index() {
        let entries = parse_all(&["ens1f0#4-4294967296", "ens1f1#9223372036854775807"]);
        assert!(selects(&entries, Some("ens1f0"), Some(4)));
        assert!(selects(&entries, Some("ens1f0"), Some(u32::MAX)));
        assert!(!selects(&entries, Some("ens1f0"), Some(3)));
        assert!(selects(&entries, Some("ens1f1"), Some(u32::MAX)));
        assert!(!selects(&entries, Some("ens1f1"), Some(0)));
    }

    /// Empty pieces cover nothing: a trailing empty item selects what it does upstream (configs
    /// that carry one work today and must keep working); a leading one or one in the middle does
    /// not end the list as upstream's parser does (a documented difference).
    #[test]
    fn empty_pieces_are_not_errors() {
        let entries = parse_all(&["ens1f0#0-1,", "ens1f1#,3,,5", ""]);
        let picked = |pf: &str| -> Vec<u32> {
            (0..8)
                .filter(|i| selects(&entries, Some(pf), Some(*i)))
                .collect()
        };
        assert_eq!(picked("ens1f0"), [0, 1]);
        assert_eq!(picked("ens1f1"), [3, 5]);
        assert!(!selects(&entries, Some(""), Some(0)));
        // No indexes after the '#': no VF of that PF; no PF name before it: no PF at all.
        for entry in ["ens1f0#", "ens1f0#,", "#0-3", "#", "#x#y"] {
            let parsed = parse_all(&[entry]);
            assert!(
                (0..8).all(|i| !selects(&parsed, Some("ens1f0"), Some(i))),
                "{entry}"
            );
            assert!(!selects(&parsed, Some("ens1f0"), None), "{entry}");
        }
        // A list of only empty entries is still a filter: it selects nothing (as upstream), not
        // everything.
        let empty = parse_all(&["", ""]);
        assert!(!empty.is_empty());
        assert!(!selects(&empty, Some("ens1f0"), Some(0)));
        assert!(!selects(&empty, Some("ens1f0"), None));
    }
}
