//! The BFD Control packet (RFC 5880 §4.1) without authentication: its 24 bytes, encoded and decoded, and
//! the receive checks of §6.8.6 that a packet can be judged by on its own (the checks that need a session,
//! such as looking Your Discriminator up, are the runner's).
//!
//! Decoding is total: any byte string gives a packet or a [`Discard`] naming the rule it broke, and never
//! panics. Packets with the Authentication bit are discarded ([`Discard::Authentication`]): groundwork
//! configures no authentication, and §6.8.6 discards an authenticated packet on a session without it.
//!
//! Why not a crate: the Rust BFD crates found (`rust-bfd`, an early single-author daemon that owns its own
//! sockets and event loop; `netget-tool`'s module, part of a protocol-stubbing tool) bring their own I/O
//! and state machine, while the speaker needs a pure state machine driven with explicit times (as
//! `link.rs`) and 24 bytes of wire format, which are shorter to write than to adapt.

use std::fmt;

/// Length of a Control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;

/// A session's state (§4.1 "Sta"), as sent in every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Held down by configuration.
    AdminDown,
    /// Down, or coming up and waiting for the peer.
    Down,
    /// The peer was heard in Down: waiting for it to hear us.
    Init,
    /// Both sides hear each other.
    Up,
}

impl State {
    fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }

    /// The name `announce.proto`'s `BgpSessionState.bfd_state` uses ("Down", "Init", "Up", "AdminDown"),
    /// also the `state` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminDown => "AdminDown",
            Self::Down => "Down",
            Self::Init => "Init",
            Self::Up => "Up",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session last changed state (§4.1 "Diag").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// No Diagnostic.
    None,
    /// Control Detection Time Expired: nothing heard from the peer for the detection time.
    ControlDetectionTimeExpired,
    /// Echo Function Failed.
    EchoFunctionFailed,
    /// Neighbor Signaled Session Down.
    NeighborSignaledSessionDown,
    /// Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// Path Down.
    PathDown,
    /// Concatenated Path Down.
    ConcatenatedPathDown,
    /// Administratively Down.
    AdministrativelyDown,
    /// Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// A code RFC 5880 reserves (9-31), kept as received.
    Reserved(u8),
}

impl Diagnostic {
    fn from_code(code: u8) -> Self {
        match code & 0x1f {
            0 => Self::None,
            1 => Self::ControlDetectionTimeExpired,
            2 => Self::EchoFunctionFailed,
            3 => Self::NeighborSignaledSessionDown,
            4 => Self::ForwardingPlaneReset,
            5 => Self::PathDown,
            6 => Self::ConcatenatedPathDown,
            7 => Self::AdministrativelyDown,
            8 => Self::ReverseConcatenatedPathDown,
            other => Self::Reserved(other),
        }
    }

    /// The 5-bit code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::ControlDetectionTimeExpired => 1,
            Self::EchoFunctionFailed => 2,
            Self::NeighborSignaledSessionDown => 3,
            Self::ForwardingPlaneReset => 4,
            Self::PathDown => 5,
            Self::ConcatenatedPathDown => 6,
            Self::AdministrativelyDown => 7,
            Self::ReverseConcatenatedPathDown => 8,
            Self::Reserved(code) => code & 0x1f,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no diagnostic"),
            Self::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Self::EchoFunctionFailed => f.write_str("echo function failed"),
            Self::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Self::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Self::PathDown => f.write_str("path down"),
            Self::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Self::AdministrativelyDown => f.write_str("administratively down"),
            Self::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Self::Reserved(code) => write!(f, "reserved diagnostic {code}"),
        }
    }
}

/// A BFD Control packet without authentication section. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    /// Why the sender's session last changed state.
    pub diagnostic: Diagnostic,
    /// The sender's session state.
    pub state: State,
    /// Poll (P): the sender asks for a packet with Final.
    pub poll: bool,
    /// Final (F): the answer to a Poll.
    pub final_: bool,
    /// Control Plane Independent (C).
    pub control_plane_independent: bool,
    /// Demand (D): the sender wishes to run Demand mode (never set by us).
    pub demand: bool,
    /// Detect Mult.
    pub detect_mult: u8,
    /// My Discriminator: the sender's id for the session, never 0.
    pub my_discriminator: u32,
    /// Your Discriminator: the receiver's id for the session, 0 while unknown.
    pub your_discriminator: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx_us: u32,
    /// Required Min RX Interval, µs.
    pub required_min_rx_us: u32,
    /// Required Min Echo RX Interval, µs (always 0 from us: no Echo function).
    pub required_min_echo_rx_us: u32,
}

/// Why a received packet was discarded (§6.8.6, RFC 5881 §5), also the `reason` label of the
/// discarded-packets metric ([`Discard::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Discard {
    /// Fewer bytes than a Control packet.
    #[error("shorter than a BFD Control packet")]
    Short,
    /// The version is not 1.
    #[error("version {0}, not 1")]
    Version(u8),
    /// The Length field is below 24 or beyond the datagram.
    #[error("length field {field} does not fit (minimum 24, datagram {datagram} bytes)")]
    Length {
        /// The Length field.
        field: u8,
        /// The datagram's size.
        datagram: usize,
    },
    /// Detect Mult is 0.
    #[error("detect multiplier 0")]
    DetectMult,
    /// The Multipoint bit is set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is 0.
    #[error("my discriminator 0")]
    MyDiscriminator,
    /// Your Discriminator is 0 while the sender claims Init or Up, or names no session of ours.
    #[error("your discriminator 0 in state Init/Up, or unknown")]
    YourDiscriminator,
    /// The Authentication bit is set (no authentication is configured).
    #[error("authentication present but not configured")]
    Authentication,
    /// Received with a TTL or hop limit other than 255 (RFC 5881 §5): it crossed a router.
    #[error("TTL/hop limit {0}, not 255")]
    Ttl(u8),
    /// No session matches the packet's addresses.
    #[error("no session for the packet's addresses")]
    NoSession,
    /// The packet names a session by discriminator but comes from another address than its peer.
    #[error("source address is not the session's peer")]
    WrongSource,
}

impl Discard {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Version(_) => "version",
            Self::Length { .. } => "length",
            Self::DetectMult => "detect_mult",
            Self::Multipoint => "multipoint",
            Self::MyDiscriminator => "my_discriminator",
            Self::YourDiscriminator => "your_discriminator",
            Self::Authentication => "authentication",
            Self::Ttl(_) => "ttl",
            Self::NoSession => "no_session",
            Self::WrongSource => "wrong_source",
        }
    }
}

const POLL: u8 = 0x20;
const FINAL: u8 = 0x10;
const CPI: u8 = 0x08;
const AUTH: u8 = 0x04;
const DEMAND: u8 = 0x02;
const MULTIPOINT: u8 = 0x01;

impl ControlPacket {
    /// The 24 bytes on the wire.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0] = (VERSION << 5) | self.diagnostic.code();
        let mut flags = self.state.bits() << 6;
        for (set, bit) in [
            (self.poll, POLL),
            (self.final_, FINAL),
            (self.control_plane_independent, CPI),
            (self.demand, DEMAND),
        ] {
            if set {
                flags |= bit;
            }
        }
        out[1] = flags;
        out[2] = self.detect_mult;
        out[3] = PACKET_LEN as u8;
        out[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        out[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        out[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        out[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        out[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        out
    }

    /// Decodes a datagram's payload and applies the receive checks of §6.8.6 that need no session.
    pub fn decode(datagram: &[u8]) -> Result<Self, Discard> {
        let Some(fixed) = datagram.first_chunk::<PACKET_LEN>() else {
            return Err(Discard::Short);
        };
        let version = fixed[0] >> 5;
        if version != VERSION {
            return Err(Discard::Version(version));
        }
        let flags = fixed[1];
        let length = fixed[3];
        if usize::from(length) < PACKET_LEN || usize::from(length) > datagram.len() {
            return Err(Discard::Length {
                field: length,
                datagram: datagram.len(),
            });
        }
        let detect_mult = fixed[2];
        if detect_mult == 0 {
            return Err(Discard::DetectMult);
        }
        if flags & MULTIPOINT != 0 {
            return Err(Discard::Multipoint);
        }
        let word = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let packet = Self {
            diagnostic: Diagnostic::from_code(fixed[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & POLL != 0,
            final_: flags & FINAL != 0,
            control_plane_independent: flags & CPI != 0,
            demand: flags & DEMAND != 0,
            detect_mult,
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        };
        if packet.my_discriminator == 0 {
            return Err(Discard::MyDiscriminator);
        }
        if packet.your_discriminator == 0 && matches!(packet.state, State::Init | State::Up) {
            return Err(Discard::YourDiscriminator);
        }
        if flags & AUTH != 0 {
            return Err(Discard::Authentication);
        }
        Ok(packet)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::ControlDetectionTimeExpired,
            state: State::Up,
            poll: true,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0x0a0b_0c0d,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 100_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn a_packet_encodes_to_the_rfc_layout_and_decodes_back() {
        let bytes = sample().encode();
        assert_eq!(
            bytes,
            [
                0x21, 0xe0, 3, 24, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x04, 0x93, 0xe0,
                0x00, 0x01, 0x86, 0xa0, 0, 0, 0, 0
            ]
        );
        assert_eq!(ControlPacket::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn every_state_and_diagnostic_survives_the_wire() {
        for state in [State::AdminDown, State::Down, State::Init, State::Up] {
            for code in 0..32 {
                let packet = ControlPacket {
                    state,
                    diagnostic: Diagnostic::from_code(code),
                    poll: false,
                    final_: true,
                    ..sample()
                };
                assert_eq!(ControlPacket::decode(&packet.encode()), Ok(packet));
                assert_eq!(packet.diagnostic.code(), code);
            }
        }
    }

    #[test]
    fn trailing_bytes_beyond_the_length_field_are_ignored() {
        let mut bytes = sample().encode().to_vec();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(ControlPacket::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn each_receive_check_discards_with_its_reason() {
        let base = sample().encode();
        let with = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = base;
            f(&mut b);
            ControlPacket::decode(&b)
        };
        assert_eq!(ControlPacket::decode(&base[..23]), Err(Discard::Short));
        assert_eq!(with(&|b| b[0] = 0x41), Err(Discard::Version(2)));
        assert_eq!(
            with(&|b| b[3] = 23),
            Err(Discard::Length {
                field: 23,
                datagram: 24
            })
        );
        assert_eq!(
            with(&|b| b[3] = 26),
            Err(Discard::Length {
                field: 26,
                datagram: 24
            })
        );
        assert_eq!(with(&|b| b[2] = 0), Err(Discard::DetectMult));
        assert_eq!(with(&|b| b[1] |= MULTIPOINT), Err(Discard::Multipoint));
        assert_eq!(with(&|b| b[4..8].fill(0)), Err(Discard::MyDiscriminator));
        assert_eq!(with(&|b| b[8..12].fill(0)), Err(Discard::YourDiscriminator));
        assert_eq!(
            with(&|b| {
                b[8..12].fill(0);
                b[1] = (2 << 6) | POLL;
            }),
            Err(Discard::YourDiscriminator),
            "Init with your discriminator 0"
        );
        assert_eq!(with(&|b| b[1] |= AUTH), Err(Discard::Authentication));
    }

    #[test]
    fn a_down_packet_may_not_know_our_discriminator_yet() {
        let down = ControlPacket {
            state: State::Down,
            your_discriminator: 0,
            ..sample()
        };
        assert_eq!(ControlPacket::decode(&down.encode()), Ok(down));
    }

    #[test]
    fn decoding_hostile_bytes_never_panics() {
        // A deterministic walk over many lengths and bit patterns, prefixes of valid packets included.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..64 {
            for _ in 0..500 {
                let mut bytes = vec![0u8; len];
                for b in &mut bytes {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                if len > 3 && x.is_multiple_of(2) {
                    bytes[0] = 0x20;
                    bytes[3] = (x >> 8) as u8 % 40;
                }
                let _ = ControlPacket::decode(&bytes);
            }
        }
        let _ = ControlPacket::decode(&[]);
    }
}
