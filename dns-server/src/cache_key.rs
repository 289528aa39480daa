//! The key under which a UDP answer is cached: what in a query decides its answer, and nothing else.
//!
//! Keyed on the raw datagram, trailing junk or padded EDNS options made every query a new entry (about
//! 280 MiB per serving thread with 9 KB queries). The key is the header after the ID (flags and counts),
//! the question as sent (its case is echoed in the answer), and of an EDNS OPT record only its fixed
//! fields (payload size, extended RCODE, version, DO flag): options are not read by the server, so they do
//! not change the answer. Anything else — several questions, records in the answer or authority section, a
//! compressed question name, more than one additional record — is not cached at all. Walking the question
//! is a few byte reads, far cheaper than parsing the message.

/// The cache key of `request`, or `None` when its answer must not come from the cache.
pub fn cache_key(request: &[u8]) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    write_cache_key(request, &mut key).then_some(key)
}

/// [`cache_key`] into `key` (cleared first, so a serving thread reuses one buffer); false when the answer
/// must not come from the cache.
pub fn write_cache_key(request: &[u8], key: &mut Vec<u8>) -> bool {
    key.clear();
    fill(request, key).is_some()
}

fn fill(request: &[u8], key: &mut Vec<u8>) -> Option<()> {
    let header = request.get(..12)?;
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    if questions != 1 || answers != 0 || authorities != 0 || additionals > 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let question_end = question_name_end(request)? + 4;
    key.extend_from_slice(request.get(2..question_end)?);
    if additionals == 1 {
        // Only an OPT record: root name, type 41, then class (payload) and TTL (ext. RCODE, version, flags).
        let opt = request.get(question_end..question_end + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] {
            return None;
        }
        key.extend_from_slice(&opt[3..9]);
    }
    Some(())
}

/// Where the question's name ends in `message` (the offset after its root label) when it is written out label
/// by label from byte 12; `None` when the message ends first or the name is compressed (a compression pointer,
/// or a reserved label type).
pub fn question_name_end(message: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let length = usize::from(*message.get(at)?);
        if length == 0 {
            return Some(at + 1);
        }
        if length > 63 {
            return None;
        }
        at += 1 + length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::EdnsOption;
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str, edns: Option<Edns>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 99;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn edns(payload: u16, dnssec_ok: bool) -> Edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(dnssec_ok);
        edns
    }

    #[test]
    fn junk_after_the_message_and_padding_options_share_one_key() {
        let plain = query("nginx.test.org.", Some(edns(1232, false)));
        let mut junk = plain.clone();
        junk.extend_from_slice(&[0xab; 9000]);
        let mut padded = edns(1232, false);
        padded
            .options_mut()
            .insert(EdnsOption::Unknown(12, vec![0; 400]));
        let padded = query("nginx.test.org.", Some(padded));
        let key = cache_key(&plain).unwrap();
        assert_eq!(cache_key(&junk).unwrap(), key);
        assert_eq!(cache_key(&padded).unwrap(), key);
        assert!(key.len() < 64, "{} bytes", key.len());
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = cache_key(&query("nginx.test.org.", Some(edns(1232, false)))).unwrap();
        for other in [
            query("NGINX.test.org.", Some(edns(1232, false))),
            query("www.test.org.", Some(edns(1232, false))),
            query("nginx.test.org.", Some(edns(512, false))),
            query("nginx.test.org.", Some(edns(1232, true))),
            query("nginx.test.org.", None),
        ] {
            assert_ne!(cache_key(&other).unwrap(), base);
        }
    }

    #[test]
    fn unusual_shapes_are_not_cached() {
        assert_eq!(cache_key(&[0; 11]), None);
        let mut two_questions = query("a.test.org.", None);
        two_questions[5] = 2;
        assert_eq!(cache_key(&two_questions), None);
        let mut truncated = query("a.test.org.", None);
        truncated.truncate(20);
        assert_eq!(cache_key(&truncated), None);
    }
}
