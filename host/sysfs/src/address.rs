//! PCI addresses (BDF): parsing, validation and the routing-id arithmetic SR-IOV uses to place VFs.

use std::fmt;
use std::str::FromStr;

/// A PCI function address in sysfs' long form: `dddd:bb:dd.f` (domain may be wider than 4 digits on
/// VMD-style domains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0–31.
    pub device: u8,
    /// Function number, 0–7.
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a PCI address: expected the long form sysfs uses, such as 0000:3b:00.2 ({reason})"
)]
pub struct AddressError {
    /// The rejected text.
    pub value: String,
    /// What exactly is wrong with it.
    pub reason: &'static str,
}

impl PciAddress {
    /// The 16-bit routing id (bus, device, function) that SR-IOV offsets and strides are added to.
    pub fn routing_id(self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }

    /// The address with the same domain and the given routing id.
    pub fn with_routing_id(self, rid: u16) -> Self {
        PciAddress {
            domain: self.domain,
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 0x7) as u8,
        }
    }

    /// True when `text` is a PCI address in the long form.
    pub fn is_valid(text: &str) -> bool {
        text.parse::<PciAddress>().is_ok()
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddressError {
            value: value.to_owned(),
            reason,
        };
        let (domain, rest) = value
            .split_once(':')
            .ok_or_else(|| err("missing the domain"))?;
        let (bus, rest) = rest.split_once(':').ok_or_else(|| err("missing the bus"))?;
        let (device, function) = rest
            .split_once('.')
            .ok_or_else(|| err("missing the function"))?;
        let hex = |s: &str, width: std::ops::RangeInclusive<usize>, what| {
            if !width.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(what));
            }
            u32::from_str_radix(s, 16).map_err(|_| err(what))
        };
        let domain = hex(domain, 4..=8, "the domain must be 4 to 8 hex digits")?;
        let bus = hex(bus, 2..=2, "the bus must be 2 hex digits")?;
        let device = hex(device, 2..=2, "the device must be 2 hex digits")?;
        let function = hex(function, 1..=1, "the function must be 1 digit")?;
        if device > 0x1f {
            return Err(err("the device number must be at most 1f"));
        }
        if function > 7 {
            return Err(err("the function number must be at most 7"));
        }
        Ok(PciAddress {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_long_form() {
        let a: PciAddress = "0000:3b:00.2".parse().unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 0x3b, 0, 2));
        assert_eq!(a.to_string(), "0000:3b:00.2");
        assert_eq!(
            "10000:01:1f.7".parse::<PciAddress>().unwrap().to_string(),
            "10000:01:1f.7"
        );
    }

    #[test]
    fn rejects_short_and_malformed_forms() {
        for bad in [
            "",
            "3b:00.2",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "00g0:3b:00.0",
            "0000:3b:0.1",
            "0000:3b:00.2 ",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad:?} was accepted");
        }
        let e = "3b:00.2".parse::<PciAddress>().unwrap_err();
        assert!(e.to_string().contains("0000:3b:00.2"), "{e}");
    }

    #[test]
    fn routing_id_arithmetic_places_vfs_like_the_kernel() {
        let pf: PciAddress = "0000:3b:00.0".parse().unwrap();
        // ConnectX-5: first VF offset 2, stride 1.
        let vf = |i: u16| pf.with_routing_id(pf.routing_id() + 2 + i).to_string();
        assert_eq!(vf(0), "0000:3b:00.2");
        assert_eq!(vf(5), "0000:3b:00.7");
        assert_eq!(vf(6), "0000:3b:01.0");
        assert_eq!(vf(11), "0000:3b:01.5");
    }
}
