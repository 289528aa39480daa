//! ARP and Neighbor Discovery frames as lb-speaker's responder reads them off a raw socket
//! (`frames::parse`, then `responder::decide`): anyone on the segment can send any bytes.
//!
//! Asserts: parsing never panics; a frame that asks for an address we hold gets a reply that itself parses
//! as the right answer (an ARP reply from our MAC for the asked address to the asker, or a Neighbor
//! Advertisement with a valid checksum for the solicited target carrying our MAC); a frame we do not hold
//! the address of gets no reply and raises no conflict.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use lb_speaker::frames::{self, ArpOp, Frame, Mac};
use lb_speaker::responder::{Decision, decide};
use libfuzzer_sys::fuzz_target;

const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

fuzz_target!(|data: &[u8]| {
    check(data);
    // Neighbor Discovery is dropped unless its ICMPv6 checksum matches; with it fixed up, the option
    // parsing behind the check is reached by every input, not only by the rare one that guessed it.
    if let Some(fixed) = with_valid_checksum(data) {
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    let parsed = frames::parse(data);
    if let Ok(Frame::Arp(arp)) = &parsed {
        assert!(matches!(arp.op, ArpOp::Request | ArpOp::Reply));
    }
    match decide(data, MAC, |_| false) {
        Decision::Request { reply: None, .. } | Decision::Ignore | Decision::Malformed(_) => {}
        other => panic!("holding nothing, yet {other:?}"),
    }
    let Decision::Request {
        address,
        reply: Some(reply),
        ..
    } = decide(data, MAC, |_| true)
    else {
        return;
    };
    match (parsed, frames::parse(&reply)) {
        (Ok(Frame::Arp(request)), Ok(Frame::Arp(answer))) => {
            assert_eq!(answer.op, ArpOp::Reply);
            assert_eq!(IpAddr::V4(answer.sender_ip), address);
            assert_eq!(answer.sender_ip, request.target_ip);
            assert_eq!((answer.eth_src, answer.sender_mac), (MAC, MAC));
            assert_eq!(answer.eth_dst, request.sender_mac);
            assert_eq!(
                (answer.target_mac, answer.target_ip),
                (request.sender_mac, request.sender_ip)
            );
        }
        (Ok(Frame::Solicitation(solicitation)), Ok(Frame::Advertisement(advertisement))) => {
            assert_eq!(IpAddr::V6(advertisement.target), address);
            assert_eq!(advertisement.target, solicitation.target);
            assert_eq!(advertisement.target_mac, Some(MAC));
            assert_eq!(advertisement.eth_src, MAC);
            assert!(advertisement.override_flag);
            assert_eq!(advertisement.solicited, !solicitation.src.is_unspecified());
        }
        (request, answer) => panic!("request {request:?} answered with {answer:?}"),
    }
}

/// `data` with the ICMPv6 checksum of an Ethernet/IPv6/ICMPv6 frame recomputed, when it is one that is
/// long enough to carry it.
fn with_valid_checksum(data: &[u8]) -> Option<Vec<u8>> {
    const ETH: usize = 14;
    const IP: usize = ETH + 40;
    if data.len() < IP + 4 || data[12..14] != [0x86, 0xdd] || data[ETH + 6] != 58 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([data[ETH + 4], data[ETH + 5]]));
    let end = IP.checked_add(payload)?;
    if payload < 4 || end > data.len() {
        return None;
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&data[at..at + 16]);
        Ipv6Addr::from(octets)
    };
    let checksum = frames::icmpv6_checksum(address(ETH + 8), address(ETH + 24), &data[IP..end], 2);
    let mut fixed = data.to_vec();
    fixed[IP + 2..IP + 4].copy_from_slice(&checksum.to_be_bytes());
    Some(fixed)
}
