//! A speaker's messages to the controller built from their parts, for everything that plays a speaker
//! without being one: the fence's unit tests, the controller's tests and fuzz target, and the scale
//! benchmark's simulated speakers. One builder each, so a field added to `announce.proto` is filled in one
//! place.

use crate::announce::v1::{
    Announcement, Heartbeat, Hello, Interface, Leaving, Report, SpeakerMessage,
    speaker_message::Body,
};

/// A Hello's content: `node`, the generation it still holds from an earlier session, its interfaces.
pub fn hello_of(node: &str, held_generation: u64, interfaces: Vec<Interface>) -> Hello {
    Hello {
        node: node.to_owned(),
        interfaces,
        version: "test".to_owned(),
        held_generation,
    }
}

/// The first message of a session (step 1), stamped `sent_at_ms` by the speaker's clock.
pub fn hello(sent_at_ms: u64, hello: Hello) -> SpeakerMessage {
    message(sent_at_ms, Body::Hello(hello))
}

/// A Report of the generation `applied` and of what the speaker announces.
pub fn report(
    sent_at_ms: u64,
    applied: u64,
    announcing: impl IntoIterator<Item = Announcement>,
) -> SpeakerMessage {
    message(
        sent_at_ms,
        Body::Report(Report {
            applied_generation: applied,
            announcing: announcing.into_iter().collect(),
            conflicts: vec![],
            problems: vec![],
            bgp_sessions: vec![],
        }),
    )
}

/// `address` announced on `interface`, as a Report lists it.
pub fn announcement(address: impl ToString, interface: &str) -> Announcement {
    Announcement {
        address: address.to_string(),
        interface: interface.to_owned(),
    }
}

/// A Heartbeat acknowledging the generation `applied` (step 4).
pub fn heartbeat(sent_at_ms: u64, applied: u64) -> SpeakerMessage {
    message(
        sent_at_ms,
        Body::Heartbeat(Heartbeat {
            applied_generation: applied,
        }),
    )
}

/// Leaving: the speaker is shutting down (step 6).
pub fn leaving(sent_at_ms: u64) -> SpeakerMessage {
    message(sent_at_ms, Body::Leaving(Leaving {}))
}

/// Any message body, stamped.
pub fn message(sent_at_ms: u64, body: Body) -> SpeakerMessage {
    SpeakerMessage {
        sent_at_ms,
        body: Some(body),
    }
}
