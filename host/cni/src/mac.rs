//! Ethernet hardware addresses.

use std::fmt;
use std::str::FromStr;

/// A 6-byte Ethernet address, printed lower-case with colons as sriov-cni and the kernel do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-zero address the kernel reports for a VF without an admin MAC.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// A multicast or broadcast address (the group bit, the lowest of the first byte, set).
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The first six bytes of a netlink address attribute, if it has at least six.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let six: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(six))
    }
}

/// The bytes of `s` in one of the notations Go's `net.ParseMAC` reads (sriov-cni and Multus parse
/// `mac`, `runtimeConfig.mac` and CNI_ARGS `MAC=` with it): two hex digits per byte separated by
/// `:` or `-` (one separator throughout), or four per pair of bytes separated by `.`; 6, 8 or 20
/// bytes; either case.
fn parse_go_mac(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let hex = |i: usize| -> Option<u8> {
        let pair = std::str::from_utf8(b.get(i..i + 2)?).ok()?;
        if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(pair, 16).ok()
    };
    let sized = |n: usize| matches!(n, 6 | 8 | 20).then_some(n);
    if b.len() < 14 {
        return None;
    }
    let mut out = Vec::new();
    if b[2] == b':' || b[2] == b'-' {
        if !(b.len() + 1).is_multiple_of(3) {
            return None;
        }
        let n = sized((b.len() + 1) / 3)?;
        for i in 0..n {
            out.push(hex(3 * i)?);
            if i + 1 < n && b[3 * i + 2] != b[2] {
                return None;
            }
        }
    } else if b[4] == b'.' {
        if !(b.len() + 1).is_multiple_of(5) {
            return None;
        }
        let n = sized(2 * (b.len() + 1) / 5)?;
        for g in 0..n / 2 {
            out.push(hex(5 * g)?);
            out.push(hex(5 * g + 2)?);
            if g + 1 < n / 2 && b[5 * g + 4] != b'.' {
                return None;
            }
        }
    } else {
        return None;
    }
    Some(out)
}

impl FromStr for MacAddr {
    type Err = String;

    /// Accepts what Go's `net.ParseMAC` accepts for a six-byte address: `aa:bb:cc:dd:ee:ff`,
    /// `aa-bb-cc-dd-ee-ff` and `aabb.ccdd.eeff`, any case. The 8-byte (EUI-64) and 20-byte
    /// (IP over InfiniBand) addresses ParseMAC also reads are refused: an Ethernet VF has a
    /// six-byte MAC (sriov-cni would hand the longer address to the PF and then fail ADD when
    /// the PF reports the VF's six bytes back).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_go_mac(s).ok_or_else(|| {
            format!(
                "{s:?} is not a MAC address (expected six hex bytes like 02:00:00:00:00:01, 02-00-00-00-00-01 or 0200.0000.0001)"
            )
        })?;
        let six: [u8; 6] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "{s:?} is a {}-byte hardware address; an Ethernet VF takes a six-byte MAC like 02:00:00:00:00:01",
                bytes.len()
            )
        })?;
        Ok(MacAddr(six))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lower_case() {
        let m: MacAddr = "AA:bb:CC:00:11:22".parse().unwrap();
        assert_eq!(m.to_string(), "aa:bb:cc:00:11:22");
        assert_eq!("aa-bb-cc-00-11-22".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "aa:bb:cc:00:11",
            "aa:bb:cc:00:11:22:33",
            "aa:bb:cc:00:11:zz",
            "aabbcc001122",
            "a:bb:cc:00:11:222",
            "aa:bb-cc:00:11:22",
            "+a:bb:cc:00:11:22",
            "aa:bb:cc:00:11:22:",
            "é:bb:cc:00:11:22",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn go_parse_mac_dotted_form_is_accepted_for_six_bytes() {
        let m: MacAddr = "0200.5E00.0001".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:5e:00:00:01");
        for bad in [
            "0200.5e00.000",
            "0200.5e00.00001",
            "0200.5e00:0001",
            "0200.5e00.00g1",
            "02005e00.0001",
            "0200.5e00.0001.",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn longer_hardware_addresses_are_refused_with_their_length() {
        for (long, len) in [
            ("02:00:5e:10:00:00:00:01", 8),
            ("02-00-5e-10-00-00-00-01", 8),
            ("0200.5e10.0000.0001", 8),
            (
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
                20,
            ),
            ("0000.0000.fe80.0000.0000.0000.0200.5e10.0000.0001", 20),
        ] {
            let err = long.parse::<MacAddr>().unwrap_err();
            assert!(err.contains(&format!("{len}-byte")), "{long}: {err}");
        }
    }
}
