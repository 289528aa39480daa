//! BGP messages as lb-speaker's sessions read them off TCP (`bgp::message::frame_length` on the 19-byte
//! header, then `bgp::message::decode` on the whole frame): the peer, or anyone who can reach port 179 or
//! sit on the path, chooses every byte. The input is one frame, decoded both with 2-octet and with
//! 4-octet AS numbers.
//!
//! Asserts: nothing panics; `decode` checks the header as `frame_length` does (the same error when it
//! refuses it, a message only for a frame of exactly the length it gives); every error maps to a
//! NOTIFICATION that encodes and decodes back to itself (it is what the session sends); and a decoded
//! message re-encodes to bytes that decode to the same message, whose length `encoded_len` predicts.
//! Two things the decoder reads are not meant to go back on the wire: the Multiprotocol capability for a
//! family this speaker does not carry (kept only as `multiprotocol`), and the bytes a re-encoding adds
//! (ORIGIN and AS_PATH are always written, one capability per optional parameter), which can push a
//! message near the limit past 4096 bytes or 255 bytes of optional parameters: those are refused, never
//! cut.
#![no_main]

use lb_speaker::bgp::message::{self, EncodeError, HEADER, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [false, true] {
        check(data, four_octet_as);
    }
});

fn check(data: &[u8], four_octet_as: bool) {
    let decoded = message::decode(data, four_octet_as);
    if let Some(header) = data.first_chunk::<HEADER>() {
        match message::frame_length(header) {
            Err(refused) => assert_eq!(decoded.as_ref().err(), Some(&refused)),
            Ok(length) if length != data.len() => assert!(decoded.is_err(), "{decoded:?}"),
            Ok(_) => {}
        }
    } else {
        assert!(decoded.is_err(), "a message from {} bytes", data.len());
    }
    let message = match decoded {
        Ok(message) => message,
        Err(error) => {
            let notification =
                Message::Notification(error.notification(message::message_type(data)));
            let bytes = message::encode(&notification, four_octet_as)
                .unwrap_or_else(|e| panic!("the NOTIFICATION for {error} does not encode: {e}"));
            assert_eq!(message::decode(&bytes, four_octet_as), Ok(notification));
            return;
        }
    };
    let bytes = match message::encode(&message, four_octet_as) {
        Ok(bytes) => bytes,
        Err(EncodeError::TooLong(_) | EncodeError::FieldTooLong("optional parameters")) => return,
        Err(e) => panic!("{message:?} decoded but does not encode: {e}"),
    };
    if let Message::Update(update) = &message {
        assert_eq!(message::encoded_len(update, four_octet_as), bytes.len());
    }
    let again = message::decode(&bytes, four_octet_as)
        .unwrap_or_else(|e| panic!("{message:?} re-encoded to bytes that do not decode: {e}"));
    assert_eq!(again, as_sent(message));
}

/// `message` as it can go back on the wire: the Multiprotocol capability is sent for the families we
/// carry only.
fn as_sent(mut message: Message) -> Message {
    if let Message::Open(open) = &mut message {
        let caps = &mut open.capabilities;
        caps.multiprotocol = !caps.families.is_empty();
    }
    message
}
