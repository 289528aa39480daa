//! Address ranges as pools spell them: a CIDR (`10.10.39.0/24`, `fd10:39::/120`) or an inclusive range
//! `first-last` (`10.10.39.200-10.10.39.220`), the two notations MetalLB accepts, so a pool moves over
//! unchanged. Parsing names what is wrong with a range; the allocator works on [`AddressRange`] only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(address: IpAddr) -> Self {
        if address.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// Why a range string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Neither a CIDR nor `first-last`, or an address in it does not parse.
    #[error("{0:?} is neither a CIDR (10.0.0.0/24) nor a range (10.0.0.10-10.0.0.20)")]
    Unparsable(String),
    /// `first-last` with first after last.
    #[error("{0:?}: the first address is after the last")]
    Reversed(String),
    /// `first-last` with one IPv4 and one IPv6 end.
    #[error("{0:?}: mixes IPv4 and IPv6")]
    MixedFamilies(String),
}

impl AddressRange {
    /// A range from its two inclusive ends, which must be of one family and in order.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        (Family::of(first) == Family::of(last) && first <= last).then_some(Self { first, last })
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        self.first
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        self.last
    }

    /// The family of both ends.
    pub fn family(&self) -> Family {
        Family::of(self.first)
    }

    /// Whether the range holds `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        Family::of(address) == self.family() && self.first <= address && address <= self.last
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.family() == other.family() && self.first <= other.last && other.first <= self.last
    }

    /// How many addresses the range holds (saturating: an IPv6 /0 does not fit in 128 bits + 1).
    pub fn size(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// The addresses in order, from `from` (clamped into the range) on.
    pub fn iter_from(&self, from: IpAddr) -> impl Iterator<Item = IpAddr> + use<> {
        let family = self.family();
        let start = if self.contains(from) {
            to_u128(from)
        } else {
            to_u128(self.first)
        };
        let last = to_u128(self.last);
        (start..=last).map(move |n| from_u128(family, n))
    }
}

impl FromStr for AddressRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let trimmed = text.trim();
        let unparsable = || RangeError::Unparsable(text.to_owned());
        if let Some((first, last)) = trimmed.split_once('-') {
            let first: IpAddr = first.trim().parse().map_err(|_| unparsable())?;
            let last: IpAddr = last.trim().parse().map_err(|_| unparsable())?;
            if Family::of(first) != Family::of(last) {
                return Err(RangeError::MixedFamilies(text.to_owned()));
            }
            return Self::new(first, last).ok_or_else(|| RangeError::Reversed(text.to_owned()));
        }
        if trimmed.contains('/') {
            // A CIDR with host bits set (10.0.0.7/24) is read as its network, as MetalLB does.
            let net: ipnet::IpNet = trimmed.parse().map_err(|_| unparsable())?;
            let net = net.trunc();
            return Self::new(net.network(), net.broadcast()).ok_or_else(unparsable);
        }
        // A bare address is a range of one.
        let address: IpAddr = trimmed.parse().map_err(|_| unparsable())?;
        Ok(Self {
            first: address,
            last: address,
        })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Whether an IPv4 address ends in .0 or .255: some old client stacks treat those as network or broadcast
/// addresses even inside a larger prefix, so pools can opt out of them (`avoidBuggyIPs`).
pub fn is_buggy(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        // Only reached with n between two IPv4 addresses, so it fits.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_the_notations_metallb_accepts() {
        let range: AddressRange = "10.10.39.200-10.10.39.220".parse().unwrap();
        assert_eq!(
            (range.first(), range.last(), range.size()),
            (ip("10.10.39.200"), ip("10.10.39.220"), 21)
        );
        let cidr: AddressRange = "10.10.39.0/24".parse().unwrap();
        assert_eq!(
            (cidr.first(), cidr.last()),
            (ip("10.10.39.0"), ip("10.10.39.255"))
        );
        let spaced: AddressRange = " 10.0.0.1 - 10.0.0.2 ".parse().unwrap();
        assert_eq!(spaced.size(), 2);
        let v6: AddressRange = "fd10:39::/120".parse().unwrap();
        assert_eq!((v6.family(), v6.size()), (Family::V6, 256));
        let single: AddressRange = "10.0.0.9".parse().unwrap();
        assert_eq!(single.size(), 1);
        let host_bits: AddressRange = "10.0.0.7/30".parse().unwrap();
        assert_eq!(host_bits.first(), ip("10.0.0.4"));
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_range() {
        assert_eq!(
            "10.0.0.300/24".parse::<AddressRange>(),
            Err(RangeError::Unparsable("10.0.0.300/24".into()))
        );
        assert_eq!(
            "10.0.0.9-10.0.0.1".parse::<AddressRange>(),
            Err(RangeError::Reversed("10.0.0.9-10.0.0.1".into()))
        );
        assert_eq!(
            "10.0.0.1-fd00::1".parse::<AddressRange>(),
            Err(RangeError::MixedFamilies("10.0.0.1-fd00::1".into()))
        );
        assert!(matches!(
            "pool".parse::<AddressRange>(),
            Err(RangeError::Unparsable(_))
        ));
        let message = "10.0.0.9-10.0.0.1"
            .parse::<AddressRange>()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("first address is after the last"),
            "{message}"
        );
    }

    #[test]
    fn overlap_and_membership_respect_families() {
        let a: AddressRange = "10.0.0.0/24".parse().unwrap();
        let b: AddressRange = "10.0.0.255-10.0.1.5".parse().unwrap();
        let c: AddressRange = "::a00:0/120".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(!a.contains(ip("::a00:1")));
        assert!(a.contains(ip("10.0.0.0")));
    }

    #[test]
    fn iterates_from_a_point_inside_or_from_the_start() {
        let range: AddressRange = "10.0.0.254-10.0.1.1".parse().unwrap();
        let all: Vec<_> = range.iter_from(ip("0.0.0.0")).collect();
        assert_eq!(
            all,
            vec![
                ip("10.0.0.254"),
                ip("10.0.0.255"),
                ip("10.0.1.0"),
                ip("10.0.1.1")
            ]
        );
        assert_eq!(range.iter_from(ip("10.0.1.0")).count(), 2);
        assert!(is_buggy(ip("10.0.1.0")) && is_buggy(ip("10.0.0.255")));
        assert!(!is_buggy(ip("10.0.1.1")));
    }

    #[test]
    fn the_whole_ipv6_space_has_a_saturated_size() {
        let all: AddressRange = "::/0".parse().unwrap();
        assert_eq!(all.size(), u128::MAX);
    }
}
