//! The codec: round trips, the exact bytes of the simplest messages, and totality on hostile input.

use super::*;

fn open() -> Open {
    Open {
        version: 4,
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            families: [Family::Ipv4, Family::Ipv6].into_iter().collect(),
            multiprotocol: true,
            four_octet_as: Some(4_200_000_001),
            graceful_restart: Some(GracefulRestart {
                restart_state: true,
                restart_time: 120,
                families: vec![(Family::Ipv4, true), (Family::Ipv6, true)],
            }),
            route_refresh: true,
        },
    }
}

fn update() -> Update {
    Update {
        withdrawn: vec!["10.9.0.0/16".parse().unwrap()],
        attributes: Some(PathAttributes {
            as_path: vec![64512, 4_200_000_001],
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            local_pref: Some(200),
            communities: vec![0xfde8_0001],
            large_communities: vec![LargeCommunity {
                global_admin: 64512,
                local_data_1: 1,
                local_data_2: 2,
            }],
        }),
        nlri: vec![
            "10.10.39.200/32".parse().unwrap(),
            "10.11.0.0/17".parse().unwrap(),
        ],
        mp_reach: Some(MpReach {
            next_hop: "fd10::1".parse().unwrap(),
            nlri: vec!["fd10:39::200/128".parse().unwrap()],
        }),
        mp_unreach: Some(vec!["fd10:40::/64".parse().unwrap()]),
    }
}

#[test]
fn a_keepalive_is_the_bare_header() {
    let bytes = encode(&Message::Keepalive, true).unwrap();
    assert_eq!(bytes.len(), 19);
    assert_eq!(&bytes[16..], &[0, 19, 4]);
    assert_eq!(decode(&bytes, true).unwrap(), Message::Keepalive);
}

#[test]
fn an_open_puts_as_trans_in_the_two_octet_field_and_round_trips() {
    let bytes = encode(&Message::Open(open()), true).unwrap();
    assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
    assert_eq!(decode(&bytes, true).unwrap(), Message::Open(open()));
}

#[test]
fn an_update_round_trips_with_four_octet_as() {
    let bytes = encode(&Message::Update(update()), true).unwrap();
    assert_eq!(decode(&bytes, true).unwrap(), Message::Update(update()));
}

#[test]
fn two_octet_sessions_get_as_trans_in_as_path() {
    let bytes = encode(&Message::Update(update()), false).unwrap();
    let Message::Update(decoded) = decode(&bytes, false).unwrap() else {
        panic!("not an update");
    };
    assert_eq!(
        decoded.attributes.unwrap().as_path,
        [64512, u32::from(AS_TRANS)]
    );
}

#[test]
fn end_of_rib_markers_are_recognised() {
    for family in [Family::Ipv4, Family::Ipv6] {
        let bytes = encode(&Message::Update(Update::end_of_rib(family)), true).unwrap();
        let Message::Update(decoded) = decode(&bytes, true).unwrap() else {
            panic!("not an update");
        };
        assert_eq!(decoded.is_end_of_rib(), Some(family));
    }
    assert_eq!(
        encode(&Message::Update(Update::end_of_rib(Family::Ipv4)), true)
            .unwrap()
            .len(),
        23
    );
    assert_eq!(update().is_end_of_rib(), None);
}

#[test]
fn a_notification_round_trips_and_names_itself() {
    let n = Notification::new(code::CEASE, code::PEER_DECONFIGURED);
    let bytes = encode(&Message::Notification(n.clone()), true).unwrap();
    assert_eq!(
        decode(&bytes, true).unwrap(),
        Message::Notification(n.clone())
    );
    assert_eq!(n.to_string(), "Cease / Peer De-configured (6/3)");
}

#[test]
fn a_route_refresh_keeps_its_family() {
    for family in [Some(Family::Ipv4), Some(Family::Ipv6)] {
        let bytes = encode(&Message::RouteRefresh(family), true).unwrap();
        assert_eq!(decode(&bytes, true).unwrap(), Message::RouteRefresh(family));
    }
    let mut other = encode(&Message::RouteRefresh(Some(Family::Ipv4)), true).unwrap();
    other[22] = 128; // SAFI 128 (VPN): not ours.
    assert_eq!(decode(&other, true).unwrap(), Message::RouteRefresh(None));
}

#[test]
fn headers_out_of_range_are_rejected() {
    let mut header = [0xff; HEADER];
    header[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(frame_length(&header), Err(DecodeError::Length(4097)));
    header[16..18].copy_from_slice(&18u16.to_be_bytes());
    assert_eq!(frame_length(&header), Err(DecodeError::Length(18)));
    header[0] = 0;
    assert_eq!(frame_length(&header), Err(DecodeError::Marker));
}

/// Every truncation and every single-byte corruption of valid messages decodes to a value or an error,
/// never a panic.
#[test]
fn decoding_is_total_on_truncated_and_corrupted_messages() {
    let messages = [
        encode(&Message::Open(open()), true).unwrap(),
        encode(&Message::Update(update()), true).unwrap(),
        encode(&Message::Notification(Notification::new(6, 2)), true).unwrap(),
    ];
    for message in &messages {
        for cut in 0..message.len() {
            let mut truncated = message[..cut].to_vec();
            if truncated.len() >= 18 {
                truncated[16..18].copy_from_slice(&u16::try_from(cut).unwrap().to_be_bytes());
            }
            let _ = decode(&truncated, true);
        }
        for at in 19..message.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut corrupted = message.clone();
                corrupted[at] = value;
                let _ = decode(&corrupted, true);
                let _ = decode(&corrupted, false);
            }
        }
    }
}

#[test]
fn an_oversized_update_is_refused_by_the_encoder() {
    let many = Update {
        attributes: Some(PathAttributes::default()),
        nlri: (0..2000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
            .collect(),
        ..Update::default()
    };
    assert!(encoded_len(&many, true) > MAX_MESSAGE);
    assert!(matches!(
        encode(&Message::Update(many), true),
        Err(EncodeError::TooLong(_))
    ));
}

proptest::proptest! {
    /// Random bodies behind a well-formed header (every type, both AS widths) decode or fail, never panic.
    #[test]
    fn decoding_random_bodies_never_panics(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
        kind in 0u8..=6,
        four_octet in proptest::bool::ANY,
    ) {
        let mut bytes = vec![0xff; 16];
        let length = u16::try_from(HEADER + body.len()).unwrap();
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        let _ = decode(&bytes, four_octet);
    }
}
