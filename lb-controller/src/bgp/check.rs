//! Checking the BGP objects into the forms the planner uses, the way `pool::PoolDef::from_spec` checks a
//! pool: every error names the field, a bad object is skipped (and reported) without touching the others,
//! and a field we parse but do not act on is named in a note instead of silently ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proto::announce::v1 as pb;

use super::crd::{BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, CommunityAlias};

/// A field that does not check out; the object is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct CheckError {
    /// The field's path under `spec`, as a user writes it.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> CheckError {
    CheckError {
        field: field.into(),
        message: message.into(),
    }
}

/// An object that checked out, with the fields it sets that we do not act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<T> {
    /// The checked form.
    pub def: T,
    /// `spec.<field>: why it is ignored`, one per such field set.
    pub ignored: Vec<String>,
}

/// A peer as the planner uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerDef {
    /// Unique name: the object's name, `namespace/name` for MetalLB's.
    pub name: String,
    /// The proto form sent to speakers, without the BFD profile resolved.
    pub session: pb::BgpPeer,
    /// The `BFDProfile` it names, if any.
    pub bfd_profile: Option<String>,
    /// Where it applies.
    pub node_selectors: Vec<LabelSelector>,
    /// Whether both address families go over the session.
    pub dual_stack: bool,
    /// The router's address family.
    pub ipv4: bool,
}

/// An advertisement as the planner uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvertisementDef {
    /// The object's name.
    pub name: String,
    /// IPv4 and IPv6 aggregation lengths.
    pub aggregation: (u8, u8),
    /// LOCAL_PREF for iBGP peers.
    pub local_pref: Option<u32>,
    /// Standard communities.
    pub communities: Vec<u32>,
    /// Large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Pools by name.
    pub pools: Vec<String>,
    /// Pools by label.
    pub pool_selectors: Vec<LabelSelector>,
    /// Nodes by label (all when empty).
    pub node_selectors: Vec<LabelSelector>,
    /// Peers by name (all when empty).
    pub peers: Vec<String>,
}

impl AdvertisementDef {
    /// Whether it advertises the pool `name` with `labels`.
    pub fn selects_pool(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.pools.is_empty() && self.pool_selectors.is_empty())
            || self.pools.iter().any(|p| p == name)
            || self
                .pool_selectors
                .iter()
                .any(|s| crate::pool::selector_matches(s, labels))
    }
}

/// Checks a peer; `name` is how it is known to advertisements and speakers.
pub fn peer(name: &str, spec: &BGPPeerSpec) -> Result<Checked<PeerDef>, CheckError> {
    refuse_unsupported(spec)?;
    if spec.my_asn == 0 {
        return Err(error("myASN", "must be set (1-4294967295)"));
    }
    if spec.peer_asn == 0 {
        return Err(error("peerASN", "must be set (1-4294967295)"));
    }
    let (address, source, router_id) = addresses(spec)?;
    let mut ignored = Vec::new();
    let timers = timers(spec, &mut ignored)?;
    Ok(Checked {
        def: PeerDef {
            name: name.to_owned(),
            session: pb::BgpPeer {
                name: name.to_owned(),
                address: address.to_string(),
                port: u32::from(spec.peer_port.unwrap_or(179)),
                my_asn: spec.my_asn,
                peer_asn: spec.peer_asn,
                router_id: router_id.map(|r| r.to_string()).unwrap_or_default(),
                hold_time_s: timers.hold,
                keepalive_s: timers.keepalive,
                connect_retry_s: timers.connect,
                password: spec.password.clone().unwrap_or_default(),
                source_address: source.map(|s| s.to_string()).unwrap_or_default(),
                ebgp_multihop: spec.ebgp_multi_hop,
                graceful_restart_s: timers.restart,
                bfd: None,
            },
            bfd_profile: spec.bfd_profile.clone().filter(|p| !p.is_empty()),
            node_selectors: selectors("nodeSelectors", &spec.node_selectors)?,
            dual_stack: spec.dual_stack_address_family,
            ipv4: address.is_ipv4(),
        },
        ignored,
    })
}

/// MetalLB's peer fields we cannot honour: a peer setting one is not used, rather than peered wrongly.
fn refuse_unsupported(spec: &BGPPeerSpec) -> Result<(), CheckError> {
    if let Some(mode) = &spec.dynamic_asn {
        return Err(error(
            "dynamicASN",
            format!("{mode:?} is not supported; set peerASN"),
        ));
    }
    if let Some(interface) = &spec.interface {
        return Err(error(
            "interface",
            format!("unnumbered peering ({interface:?}) is not supported; set peerAddress"),
        ));
    }
    if let Some(vrf) = spec.vrf.as_deref().filter(|v| !v.is_empty()) {
        return Err(error("vrf", format!("VRF {vrf:?} is not supported")));
    }
    if spec.disable_mp {
        return Err(error(
            "disableMP",
            "separate sessions per address family are not supported; use dualStackAddressFamily",
        ));
    }
    if spec.password_secret.is_some() {
        return Err(error(
            "passwordSecret",
            "passwords from Secrets are not supported yet; set password",
        ));
    }
    Ok(())
}

/// The router's address, the source address (same family) and the BGP identifier.
fn addresses(spec: &BGPPeerSpec) -> Result<(IpAddr, Option<IpAddr>, Option<Ipv4Addr>), CheckError> {
    let address: IpAddr = spec.peer_address.trim().parse().map_err(|_| {
        error(
            "peerAddress",
            format!("{:?} is not an IP address", spec.peer_address),
        )
    })?;
    let source = match spec.source_address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| error("sourceAddress", format!("{text:?} is not an IP address")))?,
        ),
    };
    if source.is_some_and(|s| s.is_ipv4() != address.is_ipv4()) {
        return Err(error(
            "sourceAddress",
            "must be of the same address family as peerAddress",
        ));
    }
    let router_id = match spec.router_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
            error(
                "routerID",
                format!("{text:?} is not a dotted-quad IPv4 address"),
            )
        })?),
    };
    Ok((address, source, router_id))
}

/// A peer's timers, in whole seconds as BGP carries them.
struct Timers {
    hold: u32,
    keepalive: u32,
    connect: u32,
    /// Graceful restart time; 0 = off.
    restart: u32,
}

fn timers(spec: &BGPPeerSpec, ignored: &mut Vec<String>) -> Result<Timers, CheckError> {
    let hold = seconds("holdTime", spec.hold_time.as_deref(), 90)?;
    if hold == 1 || hold == 2 {
        return Err(error("holdTime", "must be 0 or at least 3s (RFC 4271)"));
    }
    let keepalive = seconds("keepaliveTime", spec.keepalive_time.as_deref(), 0)?;
    if hold > 0 && keepalive > hold {
        return Err(error("keepaliveTime", "must not be longer than holdTime"));
    }
    let connect = seconds("connectTime", spec.connect_time.as_deref(), 0)?;
    let restart = if spec.enable_graceful_restart {
        let restart = seconds(
            "gracefulRestartTime",
            spec.graceful_restart_time.as_deref(),
            120,
        )?;
        if restart == 0 || restart > 4095 {
            return Err(error(
                "gracefulRestartTime",
                "must be between 1s and 4095s (RFC 4724's 12-bit field)",
            ));
        }
        restart
    } else {
        if spec.graceful_restart_time.is_some() {
            ignored.push("spec.gracefulRestartTime: enableGracefulRestart is false".to_owned());
        }
        0
    };
    Ok(Timers {
        hold,
        keepalive,
        connect,
        restart,
    })
}

/// A duration field in whole seconds (`default` when unset), as BGP carries it.
fn seconds(field: &str, text: Option<&str>, default: u32) -> Result<u32, CheckError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let duration = ops::parse_duration(text).map_err(|e| error(field, e))?;
    if duration.subsec_millis() != 0 {
        return Err(error(
            field,
            format!("{text:?} is not a whole number of seconds"),
        ));
    }
    u32::try_from(duration.as_secs())
        .ok()
        .filter(|s| *s <= 65_535)
        .ok_or_else(|| error(field, format!("{text:?} is longer than 65535s")))
}

fn selectors(field: &str, list: &[LabelSelector]) -> Result<Vec<LabelSelector>, CheckError> {
    for (i, selector) in list.iter().enumerate() {
        kube::core::Selector::try_from(selector.clone())
            .map_err(|e| error(format!("{field}[{i}]"), e.to_string()))?;
    }
    Ok(list.to_vec())
}

/// Checks an advertisement; `aliases` are MetalLB's `Community` names.
pub fn advertisement(
    name: &str,
    spec: &BGPAdvertisementSpec,
    aliases: &[CommunityAlias],
) -> Result<Checked<AdvertisementDef>, CheckError> {
    let length = |field: &str, value: Option<i32>, max: u8| -> Result<u8, CheckError> {
        let value = value.unwrap_or(i32::from(max));
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| error(field, format!("{value} is not a prefix length (0-{max})")))
    };
    let aggregation = (
        length("aggregationLength", spec.aggregation_length, 32)?,
        length("aggregationLengthV6", spec.aggregation_length_v6, 128)?,
    );
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    for (i, text) in spec.communities.iter().enumerate() {
        let field = format!("communities[{i}]");
        let value = aliases
            .iter()
            .find(|a| a.name == *text)
            .map_or(text.as_str(), |a| a.value.as_str());
        match community(value).map_err(|m| error(&field, m))? {
            Community::Standard(c) => communities.push(c),
            Community::Large(c) => large_communities.push(c),
        }
    }
    Ok(Checked {
        def: AdvertisementDef {
            name: name.to_owned(),
            aggregation,
            local_pref: spec.local_pref,
            communities,
            large_communities,
            pools: spec.ip_address_pools.clone(),
            pool_selectors: selectors("ipAddressPoolSelectors", &spec.ip_address_pool_selectors)?,
            node_selectors: selectors("nodeSelectors", &spec.node_selectors)?,
            peers: spec.peers.clone(),
        },
        ignored: Vec::new(),
    })
}

/// A community as written in an advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    /// RFC 1997: `65000:100`.
    Standard(u32),
    /// RFC 8092: `large:65000:1:2`.
    Large((u32, u32, u32)),
}

/// Parses `AS:VALUE` (two 16-bit numbers) or `large:GLOBAL:DATA1:DATA2` (three 32-bit numbers).
pub fn community(text: &str) -> Result<Community, String> {
    let text = text.trim();
    if let Some(large) = text.strip_prefix("large:") {
        let parts: Vec<&str> = large.split(':').collect();
        let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
        return match numbers.as_deref() {
            Some([a, b, c]) => Ok(Community::Large((*a, *b, *c))),
            _ => Err(format!(
                "{text:?} is not a large community (large:GLOBAL:DATA1:DATA2, each 0-4294967295)"
            )),
        };
    }
    let bad = || {
        format!(
            "{text:?} is neither a community (AS:VALUE, each 0-65535), large:A:B:C, nor a known alias"
        )
    };
    let (high, low) = text.split_once(':').ok_or_else(bad)?;
    let high: u16 = high.parse().map_err(|_| bad())?;
    let low: u16 = low.parse().map_err(|_| bad())?;
    Ok(Community::Standard(
        (u32::from(high) << 16) | u32::from(low),
    ))
}

/// Checks a BFD profile into what speakers get.
pub fn bfd_profile(spec: &BFDProfileSpec) -> Result<Checked<pb::BfdProfile>, CheckError> {
    let interval = |field: &str, value: Option<u32>| -> Result<u32, CheckError> {
        let value = value.unwrap_or(300);
        if (10..=60_000).contains(&value) {
            Ok(value)
        } else {
            Err(error(field, format!("{value} ms is outside 10-60000")))
        }
    };
    let multiplier = spec.detect_multiplier.unwrap_or(3);
    if !(2..=255).contains(&multiplier) {
        return Err(error(
            "detectMultiplier",
            format!("{multiplier} is outside 2-255"),
        ));
    }
    let mut ignored = Vec::new();
    if spec.echo_mode {
        ignored
            .push("spec.echoMode: echo mode is not supported; asynchronous mode only".to_owned());
    }
    if spec.echo_interval.is_some() {
        ignored.push("spec.echoInterval: echo mode is not supported".to_owned());
    }
    if spec.minimum_ttl.is_some_and(|t| t != 254 && t != 255) {
        ignored.push("spec.minimumTtl: single-hop BFD accepts only TTL 255 (RFC 5881)".to_owned());
    }
    Ok(Checked {
        def: pb::BfdProfile {
            receive_interval_ms: interval("receiveInterval", spec.receive_interval)?,
            transmit_interval_ms: interval("transmitInterval", spec.transmit_interval)?,
            detect_multiplier: multiplier,
            passive: spec.passive_mode,
        },
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_spec() -> BGPPeerSpec {
        BGPPeerSpec {
            my_asn: 64512,
            peer_asn: 64500,
            peer_address: "10.10.40.1".to_owned(),
            ..BGPPeerSpec::default()
        }
    }

    #[test]
    fn a_peer_gets_rfc_defaults_and_its_fields_in_the_proto_form() {
        let checked = peer("router", &peer_spec()).unwrap();
        let session = &checked.def.session;
        assert_eq!(
            (
                session.port,
                session.hold_time_s,
                session.graceful_restart_s
            ),
            (179, 90, 0)
        );
        assert_eq!(session.address, "10.10.40.1");
        assert!(checked.def.ipv4 && checked.ignored.is_empty());
        let mut spec = peer_spec();
        spec.hold_time = Some("1m30s".to_owned());
        spec.enable_graceful_restart = true;
        spec.peer_asn = 4_200_000_000;
        let session = peer("router", &spec).unwrap().def.session;
        assert_eq!(
            (
                session.hold_time_s,
                session.graceful_restart_s,
                session.peer_asn
            ),
            (90, 120, 4_200_000_000)
        );
    }

    #[test]
    fn peer_errors_name_the_field() {
        type Case = (fn(&mut BGPPeerSpec), &'static str);
        let cases: [Case; 7] = [
            (
                |s| s.peer_address = "router.example".to_owned(),
                "spec.peerAddress",
            ),
            (|s| s.hold_time = Some("2s".to_owned()), "spec.holdTime"),
            (|s| s.hold_time = Some("1500ms".to_owned()), "spec.holdTime"),
            (
                |s| s.dynamic_asn = Some("external".to_owned()),
                "spec.dynamicASN",
            ),
            (|s| s.peer_asn = 0, "spec.peerASN"),
            (
                |s| s.router_id = Some("fd00::1".to_owned()),
                "spec.routerID",
            ),
            (
                |s| s.source_address = Some("fd00::1".to_owned()),
                "spec.sourceAddress",
            ),
        ];
        for (change, field) in cases {
            let mut spec = peer_spec();
            change(&mut spec);
            let message = peer("router", &spec).unwrap_err().to_string();
            assert!(message.starts_with(field), "{message} should name {field}");
        }
    }

    #[test]
    fn communities_parse_as_metallb_writes_them_and_aliases_resolve() {
        assert_eq!(
            community("65000:100"),
            Ok(Community::Standard((65000 << 16) | 100))
        );
        assert_eq!(
            community("large:4200000000:1:2"),
            Ok(Community::Large((4_200_000_000, 1, 2)))
        );
        for bad in ["65536:1", "1", "large:1:2", "a:b"] {
            assert!(community(bad).is_err(), "{bad}");
        }
        let spec = BGPAdvertisementSpec {
            communities: vec!["no-advertise".to_owned(), "large:1:2:3".to_owned()],
            ..BGPAdvertisementSpec::default()
        };
        let aliases = [CommunityAlias {
            name: "no-advertise".to_owned(),
            value: "65535:65282".to_owned(),
        }];
        let def = advertisement("adv", &spec, &aliases).unwrap().def;
        assert_eq!(def.communities, vec![0xFFFF_FF02]);
        assert_eq!(def.large_communities, vec![(1, 2, 3)]);
        assert_eq!(def.aggregation, (32, 128));
        let error = advertisement("adv", &spec, &[]).unwrap_err();
        assert_eq!(error.field, "communities[0]");
    }

    #[test]
    fn an_advertisement_without_pools_selects_every_pool() {
        let def = advertisement("adv", &BGPAdvertisementSpec::default(), &[])
            .unwrap()
            .def;
        assert!(def.selects_pool("any", &BTreeMap::new()));
        let spec = BGPAdvertisementSpec {
            ip_address_pools: vec!["public".to_owned()],
            ..BGPAdvertisementSpec::default()
        };
        let def = advertisement("adv", &spec, &[]).unwrap().def;
        assert!(def.selects_pool("public", &BTreeMap::new()));
        assert!(!def.selects_pool("private", &BTreeMap::new()));
    }

    #[test]
    fn bfd_profiles_default_like_metallb_and_name_what_they_ignore() {
        let checked = bfd_profile(&BFDProfileSpec::default()).unwrap();
        assert_eq!(
            (
                checked.def.receive_interval_ms,
                checked.def.transmit_interval_ms,
                checked.def.detect_multiplier
            ),
            (300, 300, 3)
        );
        let spec = BFDProfileSpec {
            echo_mode: true,
            ..BFDProfileSpec::default()
        };
        assert_eq!(bfd_profile(&spec).unwrap().ignored.len(), 1);
        let spec = BFDProfileSpec {
            detect_multiplier: Some(1),
            ..BFDProfileSpec::default()
        };
        assert_eq!(bfd_profile(&spec).unwrap_err().field, "detectMultiplier");
    }
}
