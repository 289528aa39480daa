//! BGP-4 messages on the wire (RFC 4271), pure and without I/O: what the speaker sends (OPEN with its
//! capabilities, KEEPALIVE, NOTIFICATION, UPDATE for IPv4 in the classic fields and for IPv6 in
//! MP_REACH/MP_UNREACH, End-of-RIB) and what it must read from a router (the same four messages, of which
//! received routes are only checked and then dropped: this speaker originates routes, it never installs any).
//!
//! Why our own codec: we compared `zettabgp` (composes into caller-sized buffers through a session-params
//! object, sparse docs on capabilities), `netgauze-bgp-pkt` (complete and fuzzed, but brings nom, serde and
//! the netgauze IANA/parse crates for the ~10 fields we use), `bgpkit-parser` (parse only, aimed at MRT
//! archives) and `rustbgpd-wire` (young; UPDATE bodies stayed raw bytes in early releases). The subset a
//! route-originating speaker needs is small, and keeping it here lets decoding be total by construction:
//! every read goes through [`Reader`], which checks the length first, so hostile bytes give a
//! [`DecodeError`] (mapped to a NOTIFICATION code) and never a panic.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The largest message RFC 4271 allows (no Extended Message capability is offered).
pub const MAX_MESSAGE: usize = 4096;
/// Marker, length and type.
pub const HEADER: usize = 19;
/// The 2-octet AS placed in OPEN and AS_PATH for an AS above 65535 (RFC 6793).
pub const AS_TRANS: u16 = 23456;

const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;
const ROUTE_REFRESH: u8 = 5;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_COMMUNITIES: u8 = 8;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;
const ATTR_AS4_PATH: u8 = 17;
const ATTR_LARGE_COMMUNITIES: u8 = 32;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED: u8 = 0x10;
const AS_SEQUENCE: u8 = 2;
const ORIGIN_IGP: u8 = 0;

/// NOTIFICATION error codes (RFC 4271 §4.5) and the subcodes this speaker sends or names.
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease (RFC 4486 subcodes below).
    pub const CEASE: u8 = 6;

    /// Header: Connection Not Synchronized.
    pub const BAD_MARKER: u8 = 1;
    /// Header: Bad Message Length.
    pub const BAD_LENGTH: u8 = 2;
    /// Header: Bad Message Type.
    pub const BAD_TYPE: u8 = 3;
    /// OPEN: Unsupported Version Number.
    pub const BAD_VERSION: u8 = 1;
    /// OPEN: Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: Bad BGP Identifier.
    pub const BAD_IDENTIFIER: u8 = 3;
    /// OPEN: Unacceptable Hold Time.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// UPDATE: Malformed Attribute List.
    pub const MALFORMED_ATTRIBUTES: u8 = 1;
    /// Cease: Administrative Shutdown.
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    /// Cease: Peer De-configured.
    pub const PEER_DECONFIGURED: u8 = 3;
    /// Cease: Administrative Reset.
    pub const ADMINISTRATIVE_RESET: u8 = 4;
}

/// An address family this speaker can carry (unicast SAFI only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// AFI 1, SAFI 1.
    Ipv4,
    /// AFI 2, SAFI 1.
    Ipv6,
}

impl Family {
    fn afi(self) -> u16 {
        match self {
            Self::Ipv4 => 1,
            Self::Ipv6 => 2,
        }
    }

    fn from_afi_safi(afi: u16, safi: u8) -> Option<Self> {
        match (afi, safi) {
            (1, 1) => Some(Self::Ipv4),
            (2, 1) => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::Ipv4,
            IpAddr::V6(_) => Self::Ipv6,
        }
    }
}

/// The Graceful Restart capability (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The Restart-State bit: the sender restarted.
    pub restart_state: bool,
    /// Seconds the peer should keep our routes as stale after the session drops (12 bits).
    pub restart_time: u16,
    /// Families whose routes are kept, each with its Forwarding-State bit.
    pub families: Vec<(Family, bool)>,
}

/// Capabilities of an OPEN (RFC 5492) that this speaker understands; others are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Multiprotocol families (RFC 4760); empty with `multiprotocol == false` means IPv4 unicast only.
    pub families: BTreeSet<Family>,
    /// Whether any Multiprotocol capability was present (even for families we do not know).
    pub multiprotocol: bool,
    /// The 4-octet AS (RFC 6793).
    pub four_octet_as: Option<u32>,
    /// Graceful Restart (RFC 4724).
    pub graceful_restart: Option<GracefulRestart>,
    /// Route Refresh (RFC 2918).
    pub route_refresh: bool,
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Always 4 when sent.
    pub version: u8,
    /// The sender's AS: the 4-octet capability's value if present, the 2-octet field otherwise.
    pub asn: u32,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// What the sender can do.
    pub capabilities: Capabilities,
}

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code ([`code`]).
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A notification without data.
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match (self.code, self.subcode) {
            (code::HEADER, _) => "Message Header Error",
            (code::OPEN, code::BAD_PEER_AS) => "OPEN Message Error / Bad Peer AS",
            (code::OPEN, code::UNACCEPTABLE_HOLD_TIME) => {
                "OPEN Message Error / Unacceptable Hold Time"
            }
            (code::OPEN, _) => "OPEN Message Error",
            (code::UPDATE, _) => "UPDATE Message Error",
            (code::HOLD_TIMER_EXPIRED, _) => "Hold Timer Expired",
            (code::FSM, _) => "Finite State Machine Error",
            (code::CEASE, code::ADMINISTRATIVE_SHUTDOWN) => "Cease / Administrative Shutdown",
            (code::CEASE, code::PEER_DECONFIGURED) => "Cease / Peer De-configured",
            (code::CEASE, code::ADMINISTRATIVE_RESET) => "Cease / Administrative Reset",
            (code::CEASE, _) => "Cease",
            _ => "unknown error",
        };
        write!(f, "{name} ({}/{})", self.code, self.subcode)
    }
}

/// RFC 8092 large community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    /// Global administrator (an AS).
    pub global_admin: u32,
    /// First local data part.
    pub local_data_1: u32,
    /// Second local data part.
    pub local_data_2: u32,
}

/// The path attributes this speaker sends, ORIGIN being always IGP.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathAttributes {
    /// AS_PATH as one AS_SEQUENCE (empty for iBGP).
    pub as_path: Vec<u32>,
    /// NEXT_HOP, present when the UPDATE carries IPv4 NLRI.
    pub next_hop: Option<Ipv4Addr>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 communities.
    pub large_communities: Vec<LargeCommunity>,
}

/// IPv6 unicast reachability (MP_REACH_NLRI, RFC 4760).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// The global next hop.
    pub next_hop: Ipv6Addr,
    /// The prefixes.
    pub nlri: Vec<Ipv6Net>,
}

/// An UPDATE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// IPv4 prefixes withdrawn.
    pub withdrawn: Vec<Ipv4Net>,
    /// The attributes; `None` for a pure withdrawal or End-of-RIB.
    pub attributes: Option<PathAttributes>,
    /// IPv4 prefixes announced with `attributes`.
    pub nlri: Vec<Ipv4Net>,
    /// IPv6 prefixes announced with `attributes`.
    pub mp_reach: Option<MpReach>,
    /// IPv6 prefixes withdrawn; `Some(empty)` alone is the IPv6 End-of-RIB.
    pub mp_unreach: Option<Vec<Ipv6Net>>,
}

impl Update {
    /// The End-of-RIB marker of `family` (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Self {
        match family {
            Family::Ipv4 => Self::default(),
            Family::Ipv6 => Self {
                mp_unreach: Some(Vec::new()),
                ..Self::default()
            },
        }
    }

    /// Whether this is an End-of-RIB marker, and of which family.
    pub fn is_end_of_rib(&self) -> Option<Family> {
        let no_reach = self.withdrawn.is_empty()
            && self.attributes.is_none()
            && self.nlri.is_empty()
            && self.mp_reach.is_none();
        match &self.mp_unreach {
            None if no_reach => Some(Family::Ipv4),
            Some(v6) if no_reach && v6.is_empty() => Some(Family::Ipv6),
            _ => None,
        }
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918) for a family; `None` for one this speaker does not carry.
    RouteRefresh(Option<Family>),
}

/// Why bytes are not a valid message; [`DecodeError::notification`] is what to tell the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The marker is not all ones.
    #[error("bad marker")]
    Marker,
    /// The length field is out of range for the type, or disagrees with the bytes.
    #[error("bad message length {0}")]
    Length(usize),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// A field ran past the end of its container.
    #[error("{0} truncated")]
    Truncated(&'static str),
    /// A field has a value the RFCs forbid.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// The NOTIFICATION that reports this error to the peer.
    pub fn notification(&self, message_type: Option<u8>) -> Notification {
        match self {
            Self::Marker => Notification::new(code::HEADER, code::BAD_MARKER),
            Self::Length(_) => Notification::new(code::HEADER, code::BAD_LENGTH),
            Self::Type(t) => Notification {
                code: code::HEADER,
                subcode: code::BAD_TYPE,
                data: vec![*t],
            },
            Self::Truncated(_) | Self::Malformed(_) => match message_type {
                Some(OPEN) => Notification::new(code::OPEN, 0),
                Some(UPDATE) => Notification::new(code::UPDATE, code::MALFORMED_ATTRIBUTES),
                _ => Notification::new(code::HEADER, code::BAD_LENGTH),
            },
        }
    }
}

/// Reads a header and returns the whole message's length, checked to be within 19..=4096.
pub fn frame_length(header: &[u8; HEADER]) -> Result<usize, DecodeError> {
    if header[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::Marker);
    }
    let length = usize::from(u16::from_be_bytes([header[16], header[17]]));
    if !(HEADER..=MAX_MESSAGE).contains(&length) {
        return Err(DecodeError::Length(length));
    }
    Ok(length)
}

/// Decodes one whole message (header included). `four_octet_as` says whether AS_PATH carries 4-octet
/// AS numbers (both sides sent the capability).
pub fn decode(bytes: &[u8], four_octet_as: bool) -> Result<Message, DecodeError> {
    let header: &[u8; HEADER] = bytes
        .get(..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated("header"))?;
    let length = frame_length(header)?;
    if length != bytes.len() {
        return Err(DecodeError::Length(length));
    }
    let kind = header[18];
    let body = Reader::new(&bytes[HEADER..], "message");
    match kind {
        OPEN => decode_open(body).map(Message::Open),
        UPDATE => decode_update(body, four_octet_as).map(Message::Update),
        NOTIFICATION => decode_notification(body).map(Message::Notification),
        KEEPALIVE if length == HEADER => Ok(Message::Keepalive),
        KEEPALIVE => Err(DecodeError::Length(length)),
        ROUTE_REFRESH if length == HEADER + 4 => {
            let mut body = body;
            let afi = body.u16()?;
            let _reserved = body.u8()?;
            let safi = body.u8()?;
            Ok(Message::RouteRefresh(Family::from_afi_safi(afi, safi)))
        }
        ROUTE_REFRESH => Err(DecodeError::Length(length)),
        other => Err(DecodeError::Type(other)),
    }
}

/// The type byte of a message whose header was read, for [`DecodeError::notification`].
pub fn message_type(bytes: &[u8]) -> Option<u8> {
    bytes.get(18).copied()
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More than [`MAX_MESSAGE`] bytes; the caller splits UPDATEs before this happens.
    #[error("message of {0} bytes exceeds the 4096-byte limit")]
    TooLong(usize),
    /// A field does not fit its wire width.
    #[error("{0} too long for its length field")]
    FieldTooLong(&'static str),
}

/// Encodes a message with its header.
pub fn encode(message: &Message, four_octet_as: bool) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&[0, 0, 0]);
    let kind = match message {
        Message::Open(open) => {
            encode_open(open, &mut out)?;
            OPEN
        }
        Message::Update(update) => {
            encode_update(update, four_octet_as, &mut out)?;
            UPDATE
        }
        Message::Notification(n) => {
            out.extend_from_slice(&[n.code, n.subcode]);
            out.extend_from_slice(&n.data);
            NOTIFICATION
        }
        Message::Keepalive => KEEPALIVE,
        Message::RouteRefresh(family) => {
            let afi = family.map_or(0, Family::afi).to_be_bytes();
            out.extend_from_slice(&[afi[0], afi[1], 0, 1]);
            ROUTE_REFRESH
        }
    };
    if out.len() > MAX_MESSAGE {
        return Err(EncodeError::TooLong(out.len()));
    }
    let length = u16::try_from(out.len()).map_err(|_| EncodeError::TooLong(out.len()))?;
    out[16..18].copy_from_slice(&length.to_be_bytes());
    out[18] = kind;
    Ok(out)
}

/// The encoded size of an UPDATE, to split route sets before they reach [`MAX_MESSAGE`].
pub fn encoded_len(update: &Update, four_octet_as: bool) -> usize {
    let mut out = Vec::new();
    // Only the length matters; an error can only come from fields we size ourselves.
    let _ = encode_update(update, four_octet_as, &mut out);
    HEADER + out.len()
}

fn encode_open(open: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let two_octet = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    out.push(open.version);
    out.extend_from_slice(&two_octet.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.router_id.octets());
    let caps = &open.capabilities;
    let mut params = Vec::new();
    let mut capability = |code: u8, value: &[u8]| -> Result<(), EncodeError> {
        let len = u8::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong("capability"))?;
        // One capability per optional parameter, as most implementations send them.
        params.extend_from_slice(&[2, len + 2, code, len]);
        params.extend_from_slice(value);
        Ok(())
    };
    for family in &caps.families {
        let afi = family.afi().to_be_bytes();
        capability(CAP_MULTIPROTOCOL, &[afi[0], afi[1], 0, 1])?;
    }
    if caps.route_refresh {
        capability(CAP_ROUTE_REFRESH, &[])?;
    }
    if let Some(gr) = &caps.graceful_restart {
        let flags_and_time = (u16::from(gr.restart_state) << 15) | (gr.restart_time & 0x0fff);
        let mut value = flags_and_time.to_be_bytes().to_vec();
        for (family, forwarding) in &gr.families {
            value.extend_from_slice(&family.afi().to_be_bytes());
            value.push(1);
            value.push(if *forwarding { 0x80 } else { 0 });
        }
        capability(CAP_GRACEFUL_RESTART, &value)?;
    }
    if let Some(asn) = caps.four_octet_as {
        capability(CAP_FOUR_OCTET_AS, &asn.to_be_bytes())?;
    }
    out.push(
        u8::try_from(params.len()).map_err(|_| EncodeError::FieldTooLong("optional parameters"))?,
    );
    out.extend_from_slice(&params);
    Ok(())
}

fn decode_open(mut r: Reader<'_>) -> Result<Open, DecodeError> {
    let version = r.u8()?;
    let two_octet = r.u16()?;
    let hold_time = r.u16()?;
    let router_id = Ipv4Addr::from(r.u32()?);
    let params_len = usize::from(r.u8()?);
    let mut params = r.sub(params_len, "optional parameters")?;
    if !r.is_empty() {
        return Err(DecodeError::Malformed("OPEN length"));
    }
    let mut caps = Capabilities::default();
    while !params.is_empty() {
        let kind = params.u8()?;
        let len = usize::from(params.u8()?);
        let mut value = params.sub(len, "optional parameter")?;
        if kind != 2 {
            // Authentication (deprecated) or unknown: nothing we use.
            continue;
        }
        while !value.is_empty() {
            let code = value.u8()?;
            let len = usize::from(value.u8()?);
            let mut cap = value.sub(len, "capability")?;
            match code {
                CAP_MULTIPROTOCOL => {
                    let afi = cap.u16()?;
                    let _reserved = cap.u8()?;
                    let safi = cap.u8()?;
                    caps.multiprotocol = true;
                    if let Some(family) = Family::from_afi_safi(afi, safi) {
                        caps.families.insert(family);
                    }
                }
                CAP_ROUTE_REFRESH => caps.route_refresh = true,
                CAP_FOUR_OCTET_AS => caps.four_octet_as = Some(cap.u32()?),
                CAP_GRACEFUL_RESTART => {
                    let flags_and_time = cap.u16()?;
                    let mut families = Vec::new();
                    while !cap.is_empty() {
                        let afi = cap.u16()?;
                        let safi = cap.u8()?;
                        let flags = cap.u8()?;
                        if let Some(family) = Family::from_afi_safi(afi, safi) {
                            families.push((family, flags & 0x80 != 0));
                        }
                    }
                    caps.graceful_restart = Some(GracefulRestart {
                        restart_state: flags_and_time & 0x8000 != 0,
                        restart_time: flags_and_time & 0x0fff,
                        families,
                    });
                }
                _ => {}
            }
        }
    }
    let asn = caps.four_octet_as.unwrap_or(u32::from(two_octet));
    Ok(Open {
        version,
        asn,
        hold_time,
        router_id,
        capabilities: caps,
    })
}

fn decode_notification(mut r: Reader<'_>) -> Result<Notification, DecodeError> {
    let code = r.u8()?;
    let subcode = r.u8()?;
    Ok(Notification {
        code,
        subcode,
        data: r.rest().to_vec(),
    })
}

fn put_attribute(out: &mut Vec<u8>, flags: u8, kind: u8, value: &[u8]) -> Result<(), EncodeError> {
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags, kind, len]);
    } else {
        let len = u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong("attribute"))?;
        out.extend_from_slice(&[flags | FLAG_EXTENDED, kind]);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(value);
    Ok(())
}

fn put_prefix(out: &mut Vec<u8>, length: u8, octets: &[u8]) {
    out.push(length);
    out.extend_from_slice(&octets[..usize::from(length).div_ceil(8)]);
}

fn as_path(path: &[u32], four_octet: bool) -> Result<Vec<u8>, EncodeError> {
    let mut value = Vec::new();
    for chunk in path.chunks(255) {
        // 255 ASes at most per segment; chunks() never yields more.
        value.extend_from_slice(&[AS_SEQUENCE, u8::try_from(chunk.len()).unwrap_or(u8::MAX)]);
        for asn in chunk {
            if four_octet {
                value.extend_from_slice(&asn.to_be_bytes());
            } else {
                value.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
            }
        }
    }
    Ok(value)
}

fn encode_update(update: &Update, four_octet: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut withdrawn = Vec::new();
    for prefix in &update.withdrawn {
        put_prefix(&mut withdrawn, prefix.prefix_len(), &prefix.addr().octets());
    }
    let mut attrs = Vec::new();
    if let Some(a) = &update.attributes {
        put_attribute(&mut attrs, FLAG_TRANSITIVE, ATTR_ORIGIN, &[ORIGIN_IGP])?;
        put_attribute(
            &mut attrs,
            FLAG_TRANSITIVE,
            ATTR_AS_PATH,
            &as_path(&a.as_path, four_octet)?,
        )?;
        if let Some(next_hop) = a.next_hop {
            put_attribute(
                &mut attrs,
                FLAG_TRANSITIVE,
                ATTR_NEXT_HOP,
                &next_hop.octets(),
            )?;
        }
        if let Some(pref) = a.local_pref {
            put_attribute(
                &mut attrs,
                FLAG_TRANSITIVE,
                ATTR_LOCAL_PREF,
                &pref.to_be_bytes(),
            )?;
        }
        if !a.communities.is_empty() {
            let value: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
            put_attribute(
                &mut attrs,
                FLAG_OPTIONAL | FLAG_TRANSITIVE,
                ATTR_COMMUNITIES,
                &value,
            )?;
        }
        if !four_octet && a.as_path.iter().any(|asn| *asn > u32::from(u16::MAX)) {
            // RFC 6793 §4.2.2: the true path for 4-octet-aware routers behind a 2-octet one.
            put_attribute(
                &mut attrs,
                FLAG_OPTIONAL | FLAG_TRANSITIVE,
                ATTR_AS4_PATH,
                &as_path(&a.as_path, true)?,
            )?;
        }
        if !a.large_communities.is_empty() {
            let value: Vec<u8> = a
                .large_communities
                .iter()
                .flat_map(|c| [c.global_admin, c.local_data_1, c.local_data_2])
                .flat_map(u32::to_be_bytes)
                .collect();
            put_attribute(
                &mut attrs,
                FLAG_OPTIONAL | FLAG_TRANSITIVE,
                ATTR_LARGE_COMMUNITIES,
                &value,
            )?;
        }
    }
    if let Some(reach) = &update.mp_reach {
        let mut value = vec![0, 2, 1, 16];
        value.extend_from_slice(&reach.next_hop.octets());
        value.push(0);
        for prefix in &reach.nlri {
            put_prefix(&mut value, prefix.prefix_len(), &prefix.addr().octets());
        }
        put_attribute(&mut attrs, FLAG_OPTIONAL, ATTR_MP_REACH, &value)?;
    }
    if let Some(unreach) = &update.mp_unreach {
        let mut value = vec![0, 2, 1];
        for prefix in unreach {
            put_prefix(&mut value, prefix.prefix_len(), &prefix.addr().octets());
        }
        put_attribute(&mut attrs, FLAG_OPTIONAL, ATTR_MP_UNREACH, &value)?;
    }
    let withdrawn_len = u16::try_from(withdrawn.len())
        .map_err(|_| EncodeError::FieldTooLong("withdrawn routes"))?;
    let attrs_len =
        u16::try_from(attrs.len()).map_err(|_| EncodeError::FieldTooLong("path attributes"))?;
    out.extend_from_slice(&withdrawn_len.to_be_bytes());
    out.extend_from_slice(&withdrawn);
    out.extend_from_slice(&attrs_len.to_be_bytes());
    out.extend_from_slice(&attrs);
    for prefix in &update.nlri {
        put_prefix(out, prefix.prefix_len(), &prefix.addr().octets());
    }
    Ok(())
}

fn read_prefix<const N: usize>(r: &mut Reader<'_>) -> Result<([u8; N], u8), DecodeError> {
    let length = r.u8()?;
    if usize::from(length) > N * 8 {
        return Err(DecodeError::Malformed("prefix length"));
    }
    let bytes = r.take(usize::from(length).div_ceil(8), "prefix")?;
    let mut octets = [0u8; N];
    octets[..bytes.len()].copy_from_slice(bytes);
    Ok((octets, length))
}

fn read_v4_prefixes(mut r: Reader<'_>) -> Result<Vec<Ipv4Net>, DecodeError> {
    let mut prefixes = Vec::new();
    while !r.is_empty() {
        let (octets, length) = read_prefix::<4>(&mut r)?;
        let net = Ipv4Net::new(Ipv4Addr::from(octets), length)
            .map_err(|_| DecodeError::Malformed("IPv4 prefix"))?;
        prefixes.push(net);
    }
    Ok(prefixes)
}

fn read_v6_prefixes(mut r: Reader<'_>) -> Result<Vec<Ipv6Net>, DecodeError> {
    let mut prefixes = Vec::new();
    while !r.is_empty() {
        let (octets, length) = read_prefix::<16>(&mut r)?;
        let net = Ipv6Net::new(Ipv6Addr::from(octets), length)
            .map_err(|_| DecodeError::Malformed("IPv6 prefix"))?;
        prefixes.push(net);
    }
    Ok(prefixes)
}

fn read_as_path(mut r: Reader<'_>, four_octet: bool) -> Result<Vec<u32>, DecodeError> {
    let mut path = Vec::new();
    while !r.is_empty() {
        let _segment_type = r.u8()?;
        let count = r.u8()?;
        for _ in 0..count {
            path.push(if four_octet {
                r.u32()?
            } else {
                u32::from(r.u16()?)
            });
        }
    }
    Ok(path)
}

fn decode_update(mut r: Reader<'_>, four_octet: bool) -> Result<Update, DecodeError> {
    let withdrawn_len = usize::from(r.u16()?);
    let withdrawn = read_v4_prefixes(r.sub(withdrawn_len, "withdrawn routes")?)?;
    let attrs_len = usize::from(r.u16()?);
    let mut attrs = r.sub(attrs_len, "path attributes")?;
    let nlri = read_v4_prefixes(r)?;
    let mut update = Update {
        withdrawn,
        nlri,
        ..Update::default()
    };
    let mut path = PathAttributes::default();
    let mut any_path_attribute = false;
    while !attrs.is_empty() {
        let flags = attrs.u8()?;
        let kind = attrs.u8()?;
        let len = if flags & FLAG_EXTENDED != 0 {
            usize::from(attrs.u16()?)
        } else {
            usize::from(attrs.u8()?)
        };
        let mut value = attrs.sub(len, "path attribute")?;
        match kind {
            ATTR_MP_REACH => {
                let afi = value.u16()?;
                let safi = value.u8()?;
                let nh_len = usize::from(value.u8()?);
                let next_hop = value.take(nh_len, "MP_REACH next hop")?;
                let _reserved = value.u8()?;
                if Family::from_afi_safi(afi, safi) == Some(Family::Ipv6) {
                    let global: [u8; 16] = next_hop
                        .get(..16)
                        .and_then(|n| n.try_into().ok())
                        .ok_or(DecodeError::Malformed("MP_REACH next hop"))?;
                    update.mp_reach = Some(MpReach {
                        next_hop: Ipv6Addr::from(global),
                        nlri: read_v6_prefixes(value)?,
                    });
                }
            }
            ATTR_MP_UNREACH => {
                let afi = value.u16()?;
                let safi = value.u8()?;
                if Family::from_afi_safi(afi, safi) == Some(Family::Ipv6) {
                    update.mp_unreach = Some(read_v6_prefixes(value)?);
                }
            }
            _ => {
                any_path_attribute = true;
                match kind {
                    ATTR_ORIGIN if len != 1 => return Err(DecodeError::Malformed("ORIGIN")),
                    ATTR_AS_PATH => path.as_path = read_as_path(value, four_octet)?,
                    ATTR_NEXT_HOP => path.next_hop = Some(Ipv4Addr::from(value.u32()?)),
                    ATTR_LOCAL_PREF => path.local_pref = Some(value.u32()?),
                    ATTR_COMMUNITIES => {
                        while !value.is_empty() {
                            path.communities.push(value.u32()?);
                        }
                    }
                    ATTR_LARGE_COMMUNITIES => {
                        while !value.is_empty() {
                            path.large_communities.push(LargeCommunity {
                                global_admin: value.u32()?,
                                local_data_1: value.u32()?,
                                local_data_2: value.u32()?,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if any_path_attribute {
        update.attributes = Some(path);
    }
    Ok(update)
}

/// A cursor over bytes whose every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.take(n, what)?, what))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, self.what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
