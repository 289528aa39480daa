//! The Ethernet frames the speaker reads and writes — ARP (RFC 826, gratuitous per RFC 5227) and the two
//! IPv6 Neighbor Discovery messages (RFC 4861) — parsed and built as plain bytes with no I/O, so every
//! rule (offsets, flags, the ICMPv6 checksum) is checked by unit tests. Frames come from the wire, which
//! anyone on the segment can write to: malformed input is a typed error, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A 6-byte Ethernet hardware address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The all-nodes link-local multicast group, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ETH_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_LEN: usize = 40;
/// Type, code, checksum, flags/reserved and the 16-byte target.
const ND_LEN: usize = 24;
const ICMPV6: u8 = 58;
const NS_TYPE: u8 = 135;
const NA_TYPE: u8 = 136;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;
/// Ethernet's minimum frame size without the FCS; shorter frames are padded.
const MIN_FRAME: usize = 60;

/// Why a frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its headers say.
    #[error("{what} truncated: {len} bytes")]
    Truncated {
        /// Which part.
        what: &'static str,
        /// The bytes there were.
        len: usize,
    },
    /// ARP for something other than Ethernet/IPv4.
    #[error("ARP for hardware {htype:#06x} / protocol {ptype:#06x} (lengths {hlen}/{plen})")]
    ArpKind {
        /// Hardware type.
        htype: u16,
        /// Protocol type.
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// An ARP operation other than request or reply.
    #[error("ARP operation {0}")]
    ArpOperation(u16),
    /// Not IPv6 although the EtherType says so.
    #[error("IP version {0} in an IPv6 frame")]
    IpVersion(u8),
    /// Neighbor Discovery must arrive with hop limit 255 (RFC 4861 7.1.1): anything else was routed.
    #[error("Neighbor Discovery with hop limit {0}")]
    HopLimit(u8),
    /// Neighbor Discovery with a code other than 0.
    #[error("Neighbor Discovery with code {0}")]
    Code(u8),
    /// The ICMPv6 checksum does not match.
    #[error("ICMPv6 checksum {found:#06x}, expected {expected:#06x}")]
    Checksum {
        /// In the frame.
        found: u16,
        /// Computed.
        expected: u16,
    },
    /// A Neighbor Discovery option with length 0 or running past the message.
    #[error("malformed Neighbor Discovery option")]
    Option,
    /// A solicitation for a multicast address.
    #[error("Neighbor Solicitation for multicast target {0}")]
    MulticastTarget(Ipv6Addr),
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// Who has `target_ip`?
    Request,
    /// `sender_ip` is at `sender_mac`.
    Reply,
}

/// An ARP packet with its Ethernet addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arp {
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// A gratuitous ARP (request or reply form) announces the sender's own address: sender IP = target IP.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// A Neighbor Solicitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solicitation {
    /// Ethernet source.
    pub eth_src: Mac,
    /// IPv6 source (`::` during duplicate address detection).
    pub src: Ipv6Addr,
    /// IPv6 destination (solicited-node multicast or the target itself).
    pub dst: Ipv6Addr,
    /// Whose link-layer address is asked for.
    pub target: Ipv6Addr,
    /// The solicitor's link-layer address option, if present.
    pub source_mac: Option<Mac>,
}

/// A Neighbor Advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Ethernet source.
    pub eth_src: Mac,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// The address advertised.
    pub target: Ipv6Addr,
    /// An answer to a solicitation.
    pub solicited: bool,
    /// Receivers must replace an existing entry.
    pub override_flag: bool,
    /// The target link-layer address option, if present.
    pub target_mac: Option<Mac>,
}

/// A frame, as far as the speaker cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// ARP.
    Arp(Arp),
    /// ICMPv6 Neighbor Solicitation.
    Solicitation(Solicitation),
    /// ICMPv6 Neighbor Advertisement.
    Advertisement(Advertisement),
    /// Anything else (other EtherTypes, other ICMPv6 types, IPv6 with extension headers).
    Other,
}

fn mac_at(bytes: &[u8], at: usize) -> Mac {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[at..at + 6]);
    mac
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn v4_at(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

fn v6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// Parses an Ethernet frame. Every index below is guarded by a length check before it.
pub fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() < ETH_LEN {
        return Err(FrameError::Truncated {
            what: "Ethernet header",
            len: bytes.len(),
        });
    }
    let eth_dst = mac_at(bytes, 0);
    let eth_src = mac_at(bytes, 6);
    let payload = &bytes[ETH_LEN..];
    match u16_at(bytes, 12) {
        ETHERTYPE_ARP => parse_arp(eth_src, eth_dst, payload).map(Frame::Arp),
        ETHERTYPE_IPV6 => parse_ipv6(eth_src, payload),
        _ => Ok(Frame::Other),
    }
}

fn parse_arp(eth_src: Mac, eth_dst: Mac, p: &[u8]) -> Result<Arp, FrameError> {
    if p.len() < ARP_LEN {
        return Err(FrameError::Truncated {
            what: "ARP packet",
            len: p.len(),
        });
    }
    let (htype, ptype, hlen, plen) = (u16_at(p, 0), u16_at(p, 2), p[4], p[5]);
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) {
        return Err(FrameError::ArpKind {
            htype,
            ptype,
            hlen,
            plen,
        });
    }
    let op = match u16_at(p, 6) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        other => return Err(FrameError::ArpOperation(other)),
    };
    Ok(Arp {
        eth_src,
        eth_dst,
        op,
        sender_mac: mac_at(p, 8),
        sender_ip: v4_at(p, 14),
        target_mac: mac_at(p, 18),
        target_ip: v4_at(p, 24),
    })
}

fn parse_ipv6(eth_src: Mac, p: &[u8]) -> Result<Frame, FrameError> {
    if p.len() < IPV6_LEN {
        return Err(FrameError::Truncated {
            what: "IPv6 header",
            len: p.len(),
        });
    }
    let version = p[0] >> 4;
    if version != 6 {
        return Err(FrameError::IpVersion(version));
    }
    if p[6] != ICMPV6 {
        return Ok(Frame::Other);
    }
    let payload_len = usize::from(u16_at(p, 4));
    // Ethernet pads short frames: trust the IPv6 payload length, not the frame length.
    let Some(icmp) = p.get(IPV6_LEN..IPV6_LEN + payload_len) else {
        return Err(FrameError::Truncated {
            what: "IPv6 payload",
            len: p.len() - IPV6_LEN,
        });
    };
    let Some(&kind) = icmp.first() else {
        return Err(FrameError::Truncated {
            what: "ICMPv6 message",
            len: 0,
        });
    };
    if kind != NS_TYPE && kind != NA_TYPE {
        return Ok(Frame::Other);
    }
    if icmp.len() < ND_LEN {
        return Err(FrameError::Truncated {
            what: "Neighbor Discovery message",
            len: icmp.len(),
        });
    }
    let hop_limit = p[7];
    if hop_limit != 255 {
        return Err(FrameError::HopLimit(hop_limit));
    }
    if icmp[1] != 0 {
        return Err(FrameError::Code(icmp[1]));
    }
    let src = v6_at(p, 8);
    let dst = v6_at(p, 24);
    let found = u16_at(icmp, 2);
    let expected = icmpv6_checksum(src, dst, icmp, 2);
    if found != expected {
        return Err(FrameError::Checksum { found, expected });
    }
    let target = v6_at(icmp, 8);
    let option = |wanted: u8| -> Result<Option<Mac>, FrameError> {
        let mut options = &icmp[ND_LEN..];
        let mut found = None;
        while !options.is_empty() {
            let len = usize::from(*options.get(1).ok_or(FrameError::Option)?) * 8;
            if len == 0 || len > options.len() {
                return Err(FrameError::Option);
            }
            if options[0] == wanted && len >= 8 && found.is_none() {
                found = Some(mac_at(options, 2));
            }
            options = &options[len..];
        }
        Ok(found)
    };
    if kind == NS_TYPE {
        if target.is_multicast() {
            return Err(FrameError::MulticastTarget(target));
        }
        Ok(Frame::Solicitation(Solicitation {
            eth_src,
            src,
            dst,
            target,
            source_mac: option(OPT_SOURCE_LLA)?,
        }))
    } else {
        let flags = icmp[4];
        Ok(Frame::Advertisement(Advertisement {
            eth_src,
            src,
            target,
            solicited: flags & 0x40 != 0,
            override_flag: flags & 0x20 != 0,
            target_mac: option(OPT_TARGET_LLA)?,
        }))
    }
}

/// The ICMPv6 checksum over the pseudo-header and `message`, treating the two bytes at `checksum_at` as
/// zero (so the same function verifies and fills in).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8], checksum_at: usize) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |chunk: &[u8]| {
        for pair in chunk.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum = sum.wrapping_add(hi | lo);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    // A message longer than u32::MAX cannot come from an Ethernet frame; saturate instead of wrapping.
    add(&u32::try_from(message.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    for (i, pair) in message.chunks(2).enumerate() {
        if i * 2 == checksum_at {
            continue;
        }
        add(pair);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits just above.
    !(sum as u16)
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(capacity.max(MIN_FRAME));
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn pad(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

/// Builds an ARP packet in an Ethernet frame.
#[allow(clippy::too_many_arguments)]
pub fn arp(
    eth_dst: Mac,
    eth_src: Mac,
    op: ArpOp,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = ethernet(eth_dst, eth_src, ETHERTYPE_ARP, ETH_LEN + ARP_LEN);
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(
        &match op {
            ArpOp::Request => 1u16,
            ArpOp::Reply => 2,
        }
        .to_be_bytes(),
    );
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender_ip.octets());
    frame.extend_from_slice(&target_mac);
    frame.extend_from_slice(&target_ip.octets());
    pad(frame)
}

/// The unicast reply to `request`, saying `request.target_ip` is at `mac`.
pub fn arp_reply(mac: Mac, request: &Arp) -> Vec<u8> {
    arp(
        request.sender_mac,
        mac,
        ArpOp::Reply,
        mac,
        request.target_ip,
        request.sender_mac,
        request.sender_ip,
    )
}

/// A broadcast gratuitous ARP for `ip` at `mac`, in request form (target MAC zero, RFC 5227's
/// announcement) or reply form (target MAC broadcast); some hosts honour only one of them.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr, op: ArpOp) -> Vec<u8> {
    let target_mac = match op {
        ArpOp::Request => [0; 6],
        ArpOp::Reply => BROADCAST,
    };
    arp(BROADCAST, mac, op, mac, ip, target_mac, ip)
}

/// A broadcast ARP request from `sender` asking for `target` (clients, tests and benchmarks).
pub fn arp_request(mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(BROADCAST, mac, ArpOp::Request, mac, sender, [0; 6], target)
}

/// The solicited-node multicast group of `addr` (ff02::1:ffXX:XXXX from its low 24 bits).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast address of an IPv6 multicast group (33:33 and its low 32 bits, RFC 2464).
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn icmpv6_frame(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mut message: Vec<u8>,
) -> Vec<u8> {
    let checksum = icmpv6_checksum(src, dst, &message, 2);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = ethernet(
        eth_dst,
        eth_src,
        ETHERTYPE_IPV6,
        ETH_LEN + IPV6_LEN + message.len(),
    );
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    // ND messages are a few dozen bytes.
    frame.extend_from_slice(
        &u16::try_from(message.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&[ICMPV6, 255]);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&message);
    pad(frame)
}

fn nd_message(kind: u8, flags: u8, target: Ipv6Addr, option: u8, mac: Mac) -> Vec<u8> {
    let mut message = vec![kind, 0, 0, 0, flags, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[option, 1]);
    message.extend_from_slice(&mac);
    message
}

/// The Neighbor Advertisement answering `solicitation` for its target at `mac`: solicited and override set,
/// with the target link-layer address option. A solicitation from `::` (duplicate address detection)
/// is answered to all-nodes without the solicited flag (RFC 4861 7.2.4).
pub fn neighbor_advertisement(mac: Mac, solicitation: &Solicitation) -> Vec<u8> {
    if solicitation.src.is_unspecified() {
        return unsolicited_advertisement(mac, solicitation.target);
    }
    let eth_dst = solicitation.source_mac.unwrap_or(solicitation.eth_src);
    let message = nd_message(NA_TYPE, 0x60, solicitation.target, OPT_TARGET_LLA, mac);
    icmpv6_frame(eth_dst, mac, solicitation.target, solicitation.src, message)
}

/// An unsolicited Neighbor Advertisement with the override flag, to all-nodes: IPv6's gratuitous ARP.
pub fn unsolicited_advertisement(mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let message = nd_message(NA_TYPE, 0x20, target, OPT_TARGET_LLA, mac);
    icmpv6_frame(multicast_mac(ALL_NODES), mac, target, ALL_NODES, message)
}

/// A Neighbor Solicitation from `src` at `mac` for `target`, to its solicited-node group (clients, tests
/// and benchmarks).
pub fn neighbor_solicitation(mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let message = nd_message(NS_TYPE, 0, target, OPT_SOURCE_LLA, mac);
    icmpv6_frame(multicast_mac(group), mac, src, group, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Mac = [0x02, 0, 0, 0, 0, 0x01];
    const CLIENT: Mac = [0x02, 0, 0, 0, 0, 0xc1];

    /// An ARP request as `arping` sends it, written out byte by byte.
    fn arping_request() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[10, 10, 40, 200]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 10, 39, 200]);
        f
    }

    #[test]
    fn an_arp_request_parses_with_its_addresses() {
        let Frame::Arp(arp) = parse(&arping_request()).unwrap() else {
            panic!("not ARP")
        };
        assert_eq!(arp.op, ArpOp::Request);
        assert_eq!(arp.eth_src, CLIENT);
        assert_eq!(arp.sender_ip, Ipv4Addr::new(10, 10, 40, 200));
        assert_eq!(arp.target_ip, Ipv4Addr::new(10, 10, 39, 200));
        assert!(!arp.is_gratuitous());
    }

    #[test]
    fn the_arp_reply_is_unicast_to_the_requester_with_our_mac_as_sender() {
        let Frame::Arp(request) = parse(&arping_request()).unwrap() else {
            panic!()
        };
        let reply = arp_reply(OURS, &request);
        assert_eq!(reply.len(), 60, "padded to Ethernet's minimum");
        let mut expected = CLIENT.to_vec();
        expected.extend_from_slice(&OURS);
        expected.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        expected.extend_from_slice(&OURS);
        expected.extend_from_slice(&[10, 10, 39, 200]);
        expected.extend_from_slice(&CLIENT);
        expected.extend_from_slice(&[10, 10, 40, 200]);
        assert_eq!(&reply[..42], &expected[..]);
        assert!(reply[42..].iter().all(|b| *b == 0));
    }

    #[test]
    fn gratuitous_arp_comes_in_request_and_reply_form() {
        let ip = Ipv4Addr::new(10, 10, 39, 200);
        for (op, target_mac) in [(ArpOp::Request, [0; 6]), (ArpOp::Reply, BROADCAST)] {
            let Frame::Arp(arp) = parse(&gratuitous_arp(OURS, ip, op)).unwrap() else {
                panic!()
            };
            assert_eq!(arp.op, op);
            assert_eq!(arp.eth_dst, BROADCAST);
            assert_eq!((arp.sender_mac, arp.sender_ip), (OURS, ip));
            assert_eq!((arp.target_mac, arp.target_ip), (target_mac, ip));
            assert!(arp.is_gratuitous());
        }
    }

    #[test]
    fn solicited_node_group_and_its_mac_come_from_the_low_24_bits() {
        let addr: Ipv6Addr = "fd10:10::12:3456:789a".parse().unwrap();
        let group = solicited_node(addr);
        assert_eq!(group, "ff02::1:ff56:789a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), [0x33, 0x33, 0xff, 0x56, 0x78, 0x9a]);
    }

    /// A Neighbor Solicitation captured from Linux 6.x (`ping -6 fd10:10::99` from fd10:10::40:200).
    fn linux_solicitation() -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0xff, 0x00, 0x00, 0x99];
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&"fd10:10::40:200".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"ff02::1:ff00:99".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&"fd10:10::99".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[1, 1]);
        f.extend_from_slice(&CLIENT);
        let src: Ipv6Addr = "fd10:10::40:200".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:99".parse().unwrap();
        let sum = icmpv6_checksum(src, dst, &f[54..], 2);
        f[56..58].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn the_icmpv6_checksum_matches_a_known_value() {
        // RFC 1071-style sum worked out by hand for an all-zero 8-byte message between :: and ::1:
        // pseudo-header = 0x0001 (dst) + 0x0008 (length) + 0x003a (next header) = 0x0043.
        let sum = icmpv6_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST, &[0; 8], 2);
        assert_eq!(sum, !0x0043);
    }

    #[test]
    fn a_solicitation_parses_and_is_answered_with_a_solicited_override_advertisement() {
        let Frame::Solicitation(ns) = parse(&linux_solicitation()).unwrap() else {
            panic!("not NS")
        };
        assert_eq!(ns.target, "fd10:10::99".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ns.source_mac, Some(CLIENT));
        let na = neighbor_advertisement(OURS, &ns);
        assert_eq!(&na[..6], &CLIENT, "unicast to the solicitor");
        let Frame::Advertisement(adv) = parse(&na).unwrap() else {
            panic!("not NA")
        };
        assert_eq!(adv.target, ns.target);
        assert_eq!(adv.src, ns.target);
        assert!(adv.solicited && adv.override_flag);
        assert_eq!(adv.target_mac, Some(OURS));
        assert_eq!(na[21], 255, "hop limit");
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes_unsolicited() {
        let mut ns = match parse(&linux_solicitation()).unwrap() {
            Frame::Solicitation(ns) => ns,
            other => panic!("{other:?}"),
        };
        ns.src = Ipv6Addr::UNSPECIFIED;
        ns.source_mac = None;
        let na = neighbor_advertisement(OURS, &ns);
        assert_eq!(&na[..6], &multicast_mac(ALL_NODES));
        let Frame::Advertisement(adv) = parse(&na).unwrap() else {
            panic!()
        };
        assert!(!adv.solicited && adv.override_flag);
    }

    #[test]
    fn the_unsolicited_advertisement_goes_to_all_nodes_with_override() {
        let target: Ipv6Addr = "fd10:10::99".parse().unwrap();
        let na = unsolicited_advertisement(OURS, target);
        assert_eq!(&na[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let Frame::Advertisement(adv) = parse(&na).unwrap() else {
            panic!()
        };
        assert_eq!((adv.target, adv.target_mac), (target, Some(OURS)));
        assert!(adv.override_flag && !adv.solicited);
    }

    #[test]
    fn our_own_solicitation_builder_round_trips() {
        let src: Ipv6Addr = "fd10:10::40:200".parse().unwrap();
        let target: Ipv6Addr = "fd10:10::99".parse().unwrap();
        let Frame::Solicitation(ns) = parse(&neighbor_solicitation(CLIENT, src, target)).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (ns.src, ns.target, ns.source_mac),
            (src, target, Some(CLIENT))
        );
        assert_eq!(ns.dst, solicited_node(target));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert!(matches!(parse(&[0; 5]), Err(FrameError::Truncated { .. })));
        let mut short = arping_request();
        short.truncate(30);
        assert!(matches!(parse(&short), Err(FrameError::Truncated { .. })));
        let mut op = arping_request();
        op[21] = 9;
        assert_eq!(parse(&op), Err(FrameError::ArpOperation(9)));
        let mut kind = arping_request();
        kind[15] = 6;
        assert!(matches!(parse(&kind), Err(FrameError::ArpKind { .. })));
        let mut checksum = linux_solicitation();
        checksum[56] ^= 0xff;
        assert!(matches!(parse(&checksum), Err(FrameError::Checksum { .. })));
        let mut hops = linux_solicitation();
        hops[21] = 64;
        assert_eq!(parse(&hops), Err(FrameError::HopLimit(64)));
        let mut option = linux_solicitation();
        option[79] = 0; // option length 0 would loop forever if accepted
        assert!(parse(&option).is_err());
        let mut version = linux_solicitation();
        version[14] = 0x40;
        assert_eq!(parse(&version), Err(FrameError::IpVersion(4)));
        let mut length = linux_solicitation();
        length[19] = 200;
        assert!(matches!(parse(&length), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn other_traffic_is_not_an_error() {
        let mut ipv4 = arping_request();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&ipv4), Ok(Frame::Other));
        let mut echo = linux_solicitation();
        echo[54] = 128;
        assert_eq!(parse(&echo), Ok(Frame::Other));
    }

    /// A small xorshift generator: deterministic, no dependency, enough to shake the parser.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_bytes_never_panic_the_parser() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let seeds = [
            arping_request(),
            linux_solicitation(),
            unsolicited_advertisement(OURS, "fd10::1".parse().unwrap()),
        ];
        for round in 0..200_000 {
            let r = xorshift(&mut state);
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (r % 120) as usize;
                (0..len).map(|_| xorshift(&mut state) as u8).collect()
            } else {
                // Mutate a valid frame: flip a few bytes and cut it somewhere.
                let mut f = seeds[(r % 3) as usize].clone();
                for _ in 0..(r >> 8) % 4 {
                    let at = (xorshift(&mut state) as usize) % f.len();
                    f[at] = xorshift(&mut state) as u8;
                }
                let cut = (xorshift(&mut state) as usize) % (f.len() + 1);
                f.truncate(cut.max(f.len() / 2));
                f
            };
            let _ = parse(&bytes);
        }
    }
}
