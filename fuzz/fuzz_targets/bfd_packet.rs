//! BFD Control packets as lb-speaker's runner reads them off UDP port 3784 (`bfd::packet::ControlPacket::
//! decode` with the receive checks of RFC 5880 §6.8.6 that need no session), then fed to a session's state
//! machine (`bfd::session::Session`), as the runner does with a packet that passed. Anyone on the link can
//! send any datagram.
//!
//! The input is read twice: whole, as one datagram; and as steps of 25 bytes, each a byte of time
//! (bits 0-6: that many 10 ms pass, waking the session whenever it asked; bit 7: the session is taken
//! AdminDown first) and a 24-byte datagram for one session of ours (discriminator [`LOCAL`]): its Your
//! Discriminator must be ours or 0, as the runner's demultiplexing wants.
//!
//! Asserts: nothing panics; a packet that passes decodes from its own encoding, which is the datagram's
//! first 24 bytes with the Length field set to 24 (the receive checks keep nothing else out); a refused
//! one is refused with a reason that has a metric label; every packet the session sends passes the
//! peer's receive checks (ours) and names our discriminator; a state change changes the state; a session
//! taken AdminDown stays there; and a session never asks to be woken in the past.
#![no_main]

use std::time::Duration;

use lb_speaker::bfd::packet::{ControlPacket, PACKET_LEN};
use lb_speaker::bfd::session::{Action, Input, Profile, Session};
use lb_speaker::bfd::{Diagnostic, State};
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;

/// Our discriminator for the session.
const LOCAL: u32 = 0x4c6f_6361;
/// A step: a byte of time and a datagram.
const STEP: usize = 1 + PACKET_LEN;
/// Each unit of a step's time byte.
const TICK: Duration = Duration::from_millis(10);

fuzz_target!(|data: &[u8]| {
    check_datagram(data);
    run_session(data);
});

fn check_datagram(datagram: &[u8]) -> Option<ControlPacket> {
    match ControlPacket::decode(datagram) {
        Ok(packet) => {
            let bytes = packet.encode();
            assert_eq!(ControlPacket::decode(&bytes), Ok(packet));
            let mut expected = [0u8; PACKET_LEN];
            expected.copy_from_slice(&datagram[..PACKET_LEN]);
            expected[3] = PACKET_LEN as u8;
            assert_eq!(bytes, expected, "{packet:?}");
            Some(packet)
        }
        Err(discard) => {
            assert!(!discard.label().is_empty());
            assert!(!discard.to_string().is_empty());
            None
        }
    }
}

fn run_session(data: &[u8]) {
    let profile = Profile {
        receive_interval: Duration::from_millis(100),
        transmit_interval: Duration::from_millis(100),
        detect_multiplier: 3,
        passive: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut now = Instant::now();
    let mut session = Session::new(LOCAL, profile, 7, now);
    let mut admin_down = false;
    for step in data.chunks_exact(STEP) {
        let (time, datagram) = (step[0], &step[1..]);
        let until = now + TICK * u32::from(time & 0x7f);
        // The runner wakes the session when it asked; a step of 1.27 s at most, at least 75 ms between
        // packets while it sends: a bound far above what a step can need.
        for _ in 0..1000 {
            match session.next_wake() {
                Some(wake) if wake <= until => {
                    now = wake;
                    feed(&mut session, Input::Tick, now, admin_down);
                }
                _ => break,
            }
        }
        now = until;
        if time & 0x80 != 0 {
            admin_down = true;
            feed(&mut session, Input::AdminDown, now, admin_down);
            assert_eq!(
                (session.state(), session.diagnostic()),
                (State::AdminDown, Diagnostic::AdministrativelyDown)
            );
        }
        let Some(packet) = check_datagram(datagram) else {
            continue;
        };
        if packet.your_discriminator == 0 || packet.your_discriminator == LOCAL {
            feed(&mut session, Input::Packet(packet), now, admin_down);
        }
    }
}

fn feed(session: &mut Session, input: Input, now: Instant, admin_down: bool) {
    let mut state = session.state();
    for action in session.feed(input, now) {
        match action {
            Action::Send(packet) => {
                assert_eq!(ControlPacket::decode(&packet.encode()), Ok(packet));
                assert_eq!(packet.my_discriminator, LOCAL);
                assert_eq!(packet.state, state, "a packet tells the state it leaves in");
            }
            Action::StateChanged { from, to, .. } => {
                assert_eq!(from, state);
                assert_ne!(from, to);
                assert!(!admin_down || to == State::AdminDown, "{from} -> {to}");
                state = to;
            }
        }
    }
    assert_eq!(session.state(), state);
    if admin_down {
        assert_eq!(state, State::AdminDown);
    }
    assert!(
        session.next_wake().is_none_or(|wake| wake > now),
        "woken at {now:?}, it asks for {:?}",
        session.next_wake()
    );
}
