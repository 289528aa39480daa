//! Which of the node's interfaces may announce. Answering ARP on the wrong interface is one of the classic
//! L2 load-balancer failures (a bridge port or bond member answering with its own MAC, a NOARP tunnel),
//! so eligibility is a pure function of what the kernel reports about a link, tested on its own; the scan
//! that feeds it is a thin read of the interface list and `/sys/class/net`.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

use crate::frames::Mac;

// Flags from `<linux/if.h>`.
const IFF_UP: u32 = 0x1;
const IFF_BROADCAST: u32 = 0x2;
const IFF_LOOPBACK: u32 = 0x8;
/// The link does not use ARP (tunnels, some point-to-point links).
const IFF_NOARP: u32 = 0x80;

/// The `--interfaces` / `--exclude-interfaces` regular expressions.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Names that may announce (all when `None`).
    pub include: Option<Regex>,
    /// Names that never announce.
    pub exclude: Option<Regex>,
}

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Hardware address, if it has one.
    pub mac: Option<Mac>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Configured addresses, in CIDR notation.
    pub addresses: Vec<String>,
    /// The bond or bridge it is enslaved to, if any.
    pub master: Option<String>,
}

/// Why a link may not announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    /// Administratively down.
    #[error("interface is down")]
    Down,
    /// The loopback interface.
    #[error("loopback interface")]
    Loopback,
    /// No broadcast: ARP cannot work.
    #[error("interface has no broadcast capability")]
    NoBroadcast,
    /// The link is flagged NOARP.
    #[error("interface is NOARP")]
    NoArp,
    /// No 6-byte hardware address.
    #[error("interface has no Ethernet address")]
    NoMac,
    /// A bond or bridge member: its master announces instead.
    #[error("interface is a member of {0}")]
    Member(String),
    /// Not matched by `--interfaces`.
    #[error("not matched by --interfaces")]
    NotIncluded,
    /// Matched by `--exclude-interfaces`.
    #[error("matched by --exclude-interfaces")]
    Excluded,
}

/// An interface the speaker announces on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligible {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Its MAC, which every answer on it carries.
    pub mac: Mac,
    /// Configured addresses (for Hello).
    pub addresses: Vec<String>,
}

/// The outcome of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSet {
    /// Interfaces to announce on, by name.
    pub eligible: BTreeMap<String, Eligible>,
    /// Every other interface, with the reason.
    pub ineligible: BTreeMap<String, Ineligible>,
}

/// Decides whether `link` may announce. Pure: the rules in one place.
pub fn eligibility(link: &Link, filter: &Filter) -> Result<Mac, Ineligible> {
    let has = |flag: u32| link.flags & flag != 0;
    if has(IFF_LOOPBACK) {
        return Err(Ineligible::Loopback);
    }
    if filter
        .include
        .as_ref()
        .is_some_and(|r| !r.is_match(&link.name))
    {
        return Err(Ineligible::NotIncluded);
    }
    if filter
        .exclude
        .as_ref()
        .is_some_and(|r| r.is_match(&link.name))
    {
        return Err(Ineligible::Excluded);
    }
    if !has(IFF_UP) {
        return Err(Ineligible::Down);
    }
    if !has(IFF_BROADCAST) {
        return Err(Ineligible::NoBroadcast);
    }
    if has(IFF_NOARP) {
        return Err(Ineligible::NoArp);
    }
    if let Some(master) = &link.master {
        return Err(Ineligible::Member(master.clone()));
    }
    link.mac
        .filter(|mac| *mac != [0; 6])
        .ok_or(Ineligible::NoMac)
}

/// Classifies `links`.
pub fn classify(links: Vec<Link>, filter: &Filter) -> InterfaceSet {
    let mut set = InterfaceSet::default();
    for link in links {
        match eligibility(&link, filter) {
            Ok(mac) => {
                set.eligible.insert(
                    link.name.clone(),
                    Eligible {
                        name: link.name,
                        index: link.index,
                        mac,
                        addresses: link.addresses,
                    },
                );
            }
            Err(reason) => {
                set.ineligible.insert(link.name, reason);
            }
        }
    }
    set
}

/// Reads the node's links: names, flags, MACs and addresses from the kernel, bond/bridge membership from
/// `/sys/class/net/<name>/master` (or `brport`, present on bridge ports).
pub fn scan(filter: &Filter) -> InterfaceSet {
    let links = pnet::datalink::interfaces()
        .into_iter()
        .map(|i| Link {
            master: master_of(&i.name),
            mac: i.mac.map(|m| m.octets()),
            addresses: i.ips.iter().map(ToString::to_string).collect(),
            name: i.name,
            index: i.index,
            flags: i.flags,
        })
        .collect();
    classify(links, filter)
}

fn master_of(name: &str) -> Option<String> {
    let dir = Path::new("/sys/class/net").join(name);
    if let Ok(target) = std::fs::read_link(dir.join("master")) {
        return Some(target.file_name().map_or_else(
            || "a master".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ));
    }
    dir.join("brport").exists().then(|| "a bridge".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(name: &str) -> Link {
        Link {
            name: name.to_owned(),
            index: 2,
            mac: Some([2, 0, 0, 0, 0, 1]),
            flags: (IFF_UP | IFF_BROADCAST),
            addresses: vec!["10.10.40.110/16".to_owned()],
            master: None,
        }
    }

    fn filter(include: Option<&str>, exclude: Option<&str>) -> Filter {
        Filter {
            include: include.map(|r| Regex::new(r).unwrap()),
            exclude: exclude.map(|r| Regex::new(r).unwrap()),
        }
    }

    #[test]
    fn an_up_broadcast_ethernet_link_is_eligible() {
        assert_eq!(
            eligibility(&ethernet("eth0"), &Filter::default()),
            Ok([2, 0, 0, 0, 0, 1])
        );
    }

    #[test]
    fn loopback_down_noarp_pointopoint_and_macless_links_are_not() {
        let mut lo = ethernet("lo");
        lo.flags |= IFF_LOOPBACK;
        let mut down = ethernet("eth1");
        down.flags = IFF_BROADCAST;
        let mut noarp = ethernet("vxlan0");
        noarp.flags |= IFF_NOARP;
        let mut p2p = ethernet("wg0");
        p2p.flags = IFF_UP;
        let mut macless = ethernet("tun0");
        macless.mac = None;
        let f = Filter::default();
        assert_eq!(eligibility(&lo, &f), Err(Ineligible::Loopback));
        assert_eq!(eligibility(&down, &f), Err(Ineligible::Down));
        assert_eq!(eligibility(&noarp, &f), Err(Ineligible::NoArp));
        assert_eq!(eligibility(&p2p, &f), Err(Ineligible::NoBroadcast));
        assert_eq!(eligibility(&macless, &f), Err(Ineligible::NoMac));
    }

    #[test]
    fn bond_and_bridge_members_leave_announcing_to_their_master() {
        let mut port = ethernet("eno1");
        port.master = Some("br0".to_owned());
        assert_eq!(
            eligibility(&port, &Filter::default()),
            Err(Ineligible::Member("br0".to_owned()))
        );
        assert!(eligibility(&ethernet("br0"), &Filter::default()).is_ok());
    }

    #[test]
    fn include_and_exclude_patterns_select_by_name() {
        let f = filter(Some("^(eth|bond)"), Some("^eth9$"));
        assert!(eligibility(&ethernet("eth0"), &f).is_ok());
        assert!(eligibility(&ethernet("bond0"), &f).is_ok());
        assert_eq!(
            eligibility(&ethernet("ens3"), &f),
            Err(Ineligible::NotIncluded)
        );
        assert_eq!(
            eligibility(&ethernet("eth9"), &f),
            Err(Ineligible::Excluded)
        );
    }

    #[test]
    fn classification_splits_eligible_from_ineligible_with_reasons() {
        let mut lo = ethernet("lo");
        lo.flags |= IFF_LOOPBACK;
        let set = classify(vec![ethernet("eth0"), lo], &Filter::default());
        assert_eq!(set.eligible.keys().collect::<Vec<_>>(), ["eth0"]);
        assert_eq!(set.ineligible.get("lo"), Some(&Ineligible::Loopback));
    }
}
