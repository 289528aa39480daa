//! TSIG (RFC 8945): shared-secret signatures on zone transfers, the queries around them and NOTIFY, so a
//! secondary knows it talks to its primary and the primary hands the zone only to key holders.
//!
//! Keys are read from files in the two forms operators already have: BIND's `key` clause (what
//! `tsig-keygen` prints and what a BIND or Kubernetes Secret holds) and the one-line
//! `algorithm:name:secret` that `dig -y`, `kdig -y` and `knsupdate` take. HMAC-SHA256/384/512 are supported
//! (the MD5 and SHA-1 variants are deprecated by RFC 8945 and not offered).
//!
//! The MAC arithmetic is hickory-proto's; this module applies the server's half of the protocol: verify a
//! request (unknown key: BADKEY, wrong MAC: BADSIG, clock off by more than the fudge: BADTIME), sign
//! every message of the answer, each later message of a transfer chained to the MAC of the one before
//! (RFC 8945 5.3.1), and sign NOTIFYs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// Seconds a signature's time may differ from ours (RFC 8945 recommends 300).
pub const FUDGE: u16 = 300;

/// A problem with a key file or key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("{flag} {path}: {source}")]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no key, or a malformed one.
    #[error("{flag} {path}: {reason}")]
    Invalid {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A flag names a key no file defines.
    #[error("{flag} {name}: no such key in the --tsig-key-file files")]
    Unknown {
        /// The flag.
        flag: &'static str,
        /// The key name.
        name: String,
    },
}

/// One key as written in a file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The key's name (the TSIG record's owner).
    pub name: Name,
    /// Algorithm name as written, e.g. `hmac-sha256`.
    pub algorithm: String,
    /// The decoded secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("KeySpec")
            .field("name", &self.name.to_ascii())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Reads every key in the file at `path` (given with `flag`).
pub fn read_key_file(flag: &'static str, path: &Path) -> Result<Vec<KeySpec>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })?;
    parse_keys(&text).map_err(|reason| KeyError::Invalid {
        flag,
        path: path.display().to_string(),
        reason,
    })
}

/// The keys in `text`: BIND `key "name" { algorithm a; secret "b64"; };` clauses, or
/// `algorithm:name:secret` lines. `#`, `//` and `;` start comments.
pub fn parse_keys(text: &str) -> Result<Vec<KeySpec>, String> {
    let cleaned: String = text
        .lines()
        .map(|line| {
            let cut = ["#", "//"]
                .iter()
                .filter_map(|mark| line.find(mark))
                .min()
                .unwrap_or(line.len());
            &line[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n");
    let keys = if cleaned.contains('{') {
        parse_bind(&cleaned)?
    } else {
        cleaned
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(parse_line)
            .collect::<Result<Vec<_>, _>>()?
    };
    if keys.is_empty() {
        return Err("no key in the file".to_owned());
    }
    Ok(keys)
}

fn parse_line(line: &str) -> Result<KeySpec, String> {
    let mut parts = line.splitn(3, ':');
    let (Some(algorithm), Some(name), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{line:?}: expected algorithm:name:secret"));
    };
    spec(name, algorithm, secret)
}

fn parse_bind(text: &str) -> Result<Vec<KeySpec>, String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("key") {
        rest = &rest[at + 3..];
        let Some(open) = rest.find('{') else {
            return Err("a key clause without '{'".to_owned());
        };
        let name = rest[..open].trim().trim_matches('"');
        let Some(close) = rest.find('}') else {
            return Err(format!("key {name:?}: no closing '}}'"));
        };
        let body = &rest[open + 1..close];
        rest = &rest[close + 1..];
        let mut algorithm = None;
        let mut secret = None;
        for statement in body.split(';') {
            let mut words = statement.split_whitespace();
            match (words.next(), words.next()) {
                (Some("algorithm"), Some(value)) => algorithm = Some(value.trim_matches('"')),
                (Some("secret"), Some(value)) => secret = Some(value.trim_matches('"')),
                (Some(other), _) => {
                    return Err(format!("key {name:?}: unknown statement {other:?}"));
                }
                (None, _) => {}
            }
        }
        let (Some(algorithm), Some(secret)) = (algorithm, secret) else {
            return Err(format!("key {name:?}: needs an algorithm and a secret"));
        };
        keys.push(spec(name, algorithm, secret)?);
    }
    Ok(keys)
}

fn spec(name: &str, algorithm: &str, secret: &str) -> Result<KeySpec, String> {
    let owner = Name::from_ascii(name.trim()).map_err(|e| format!("key name {name:?}: {e}"))?;
    let algorithm = algorithm.trim().to_ascii_lowercase();
    if !matches!(
        algorithm.as_str(),
        "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
    ) {
        return Err(format!(
            "key {name:?}: algorithm {algorithm:?} is not supported (hmac-sha256, hmac-sha384, hmac-sha512)"
        ));
    }
    let secret = data_encoding::BASE64
        .decode(secret.trim().as_bytes())
        .map_err(|e| format!("key {name:?}: secret is not base64: {e}"))?;
    if secret.is_empty() {
        return Err(format!("key {name:?}: empty secret"));
    }
    Ok(KeySpec {
        name: owner,
        algorithm,
        secret,
    })
}

/// The keys the server knows, by name.
#[derive(Clone, Default)]
pub struct Keyring {
    signers: HashMap<Name, TSigner>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.signers.keys().map(Name::to_ascii))
            .finish()
    }
}

impl Keyring {
    /// A keyring holding `keys` (a later key of the same name replaces an earlier one).
    pub fn new(keys: Vec<KeySpec>) -> Result<Self, String> {
        let mut signers = HashMap::new();
        for key in keys {
            let algorithm = TsigAlgorithm::from_name(
                Name::from_ascii(&key.algorithm).map_err(|e| e.to_string())?,
            );
            let signer = TSigner::new(key.secret, algorithm, key.name.clone(), FUDGE)
                .map_err(|e| format!("key {}: {e}", key.name))?;
            signers.insert(lowercase(&key.name), signer);
        }
        Ok(Self { signers })
    }

    /// The key called `name`.
    pub fn get(&self, name: &Name) -> Option<&TSigner> {
        self.signers.get(&lowercase(name))
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }
}

fn lowercase(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

/// Seconds since the epoch, as TSIG counts time.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the signature on a request says.
#[derive(Debug)]
pub enum Verdict {
    /// No TSIG record.
    Unsigned,
    /// Signed with a known key and valid: answer, signing every message with [`Session::sign`].
    Signed(Session),
    /// Signed but not acceptable: answer only [`Rejection::response`].
    Rejected(Rejection),
}

/// Checks the TSIG of `request` (parsed from `raw`) against `keys` at time `now`.
pub fn verify(keys: &Keyring, raw: &[u8], request: &Message, now: u64) -> Verdict {
    let Some(record) = request.signature() else {
        return Verdict::Unsigned;
    };
    let original_id = record.data.oid;
    let Some(signer) = keys.get(&record.name) else {
        return Verdict::Rejected(Rejection {
            context: TSigResponseContext::unknown_key(original_id, now, record.name.clone()),
            key: record.name.to_ascii(),
            reason: "BADKEY",
        });
    };
    match signer.verify_message_byte(raw, None, true) {
        Err(_) => Verdict::Rejected(Rejection {
            context: TSigResponseContext::bad_signature(original_id, now, signer.clone()),
            key: record.name.to_ascii(),
            reason: "BADSIG",
        }),
        Ok((mac, _, window)) if !window.contains(&now) => Verdict::Rejected(Rejection {
            context: TSigResponseContext::new(
                original_id,
                now,
                signer.clone(),
                mac,
                Some(TsigError::BadTime),
            ),
            key: record.name.to_ascii(),
            reason: "BADTIME",
        }),
        Ok((mac, _, _)) => Verdict::Signed(Session {
            signer: signer.clone(),
            request_mac: mac,
            original_id,
        }),
    }
}

/// A request signed with a valid key: its answer is signed with the same key.
#[derive(Clone)]
pub struct Session {
    signer: TSigner,
    request_mac: Vec<u8>,
    original_id: u16,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.signer.signer_name().to_ascii())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Session {
    fn eq(&self, other: &Self) -> bool {
        self.signer.signer_name() == other.signer.signer_name()
            && self.request_mac == other.request_mac
            && self.original_id == other.original_id
    }
}

impl Eq for Session {}

impl Session {
    /// The key's name.
    pub fn key(&self) -> &Name {
        self.signer.signer_name()
    }

    /// The most bytes the TSIG record adds to a message: owner and algorithm names, fixed fields, and a
    /// MAC of up to 64 bytes (HMAC-SHA512).
    pub fn overhead(&self) -> usize {
        let name_length = |name: &Name| name.to_bytes().map_or(256, |b| b.len());
        name_length(self.signer.signer_name())
            + name_length(&self.signer.algorithm().to_name())
            + 10
            + 16
            + 64
    }

    /// Signs the encoded answer `messages` in order, at time `now`: the first over the request's MAC
    /// with the full TSIG variables, each later one over the previous MAC with the timers only.
    pub fn sign(&self, messages: Vec<Vec<u8>>, now: u64) -> Vec<Vec<u8>> {
        let mut previous: Option<Vec<u8>> = None;
        let mut signed = Vec::with_capacity(messages.len());
        for message in messages {
            let record = match &previous {
                None => TSigResponseContext::new(
                    self.original_id,
                    now,
                    self.signer.clone(),
                    self.request_mac.clone(),
                    None,
                )
                .sign(&message)
                .map(|record| *record),
                Some(mac) => self.sign_later(mac, &message, now),
            };
            let Ok(record) = record else {
                // An encoding failure of our own record: end the answer rather than send it unsigned.
                tracing::warn!("cannot sign an answer message; answer cut short");
                break;
            };
            previous = Some(record.data.mac.clone());
            match append_record(message, &record) {
                Some(message) => signed.push(message),
                None => break,
            }
        }
        signed
    }

    fn sign_later(
        &self,
        previous_mac: &[u8],
        message: &[u8],
        now: u64,
    ) -> Result<Record<TSIG>, hickory_proto::ProtoError> {
        let mut tbs = Vec::with_capacity(previous_mac.len() + message.len() + 10);
        let length = u16::try_from(previous_mac.len()).unwrap_or(u16::MAX);
        tbs.extend_from_slice(&length.to_be_bytes());
        tbs.extend_from_slice(previous_mac);
        tbs.extend_from_slice(message);
        // Time signed (48 bits) and fudge.
        tbs.extend_from_slice(&now.to_be_bytes()[2..]);
        tbs.extend_from_slice(&self.signer.fudge().to_be_bytes());
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|e| hickory_proto::ProtoError::from(e.to_string()))?;
        let rdata = TSIG::new(
            self.signer.algorithm().clone(),
            now,
            self.signer.fudge(),
            mac,
            self.original_id,
            None,
            Vec::new(),
        );
        Ok(make_tsig_record(self.signer.signer_name().clone(), rdata))
    }
}

/// A signed request that is refused, and how to tell the client.
pub struct Rejection {
    context: TSigResponseContext,
    /// The key the request named.
    pub key: String,
    /// The TSIG error, for logs: BADKEY, BADSIG or BADTIME.
    pub reason: &'static str,
}

impl std::fmt::Debug for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejection")
            .field("key", &self.key)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Rejection {
    /// The answer: `response` (header and question) with NOTAUTH and the TSIG record carrying the error
    /// (unsigned for BADKEY and BADSIG, signed for BADTIME, as RFC 8945 5.2 says).
    pub fn response(self, mut response: Message) -> Option<Vec<u8>> {
        response.metadata.response_code = ResponseCode::NotAuth;
        response.answers.clear();
        response.authorities.clear();
        response.additionals.clear();
        response.take_signature();
        let bytes = response.to_vec().ok()?;
        let record = self.context.sign(&bytes).ok()?;
        append_record(bytes, &record)
    }
}

/// `message` with `record` appended as the last additional record.
fn append_record(mut message: Vec<u8>, record: &Record<TSIG>) -> Option<Vec<u8>> {
    let count = u16::from_be_bytes([*message.get(10)?, *message.get(11)?]).checked_add(1)?;
    message[10..12].copy_from_slice(&count.to_be_bytes());
    // Encoded on its own (RFC 8945 forbids compressing its names anyway), then appended.
    let mut tail = Vec::with_capacity(128);
    record.emit(&mut BinEncoder::new(&mut tail)).ok()?;
    message.extend_from_slice(&tail);
    Some(message)
}

/// Signs an outgoing request (a NOTIFY) with `signer` at `now`; the returned verifier checks the answer.
pub fn sign_request(
    signer: &TSigner,
    message: &mut Message,
    now: u64,
) -> Option<hickory_proto::rr::TSigVerifier> {
    message.finalize(signer, now).ok().flatten()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;

    use super::*;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";

    #[test]
    fn bind_key_clauses_and_one_line_keys_are_read() {
        let bind = format!(
            "key \"transfer.test.org\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n# another\nkey other {{ algorithm hmac-sha512; secret \"{SECRET}\"; }};\n"
        );
        let keys = parse_keys(&bind).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name.to_ascii(), "transfer.test.org");
        assert_eq!(keys[1].algorithm, "hmac-sha512");
        let line = parse_keys(&format!("hmac-sha256:transfer:{SECRET}\n")).unwrap();
        assert_eq!(line[0].name.to_ascii(), "transfer");
        assert_eq!(line[0].secret, keys[0].secret);
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "no key"),
            ("hmac-md5:k:c2VjcmV0", "not supported"),
            ("hmac-sha256:k:%%%", "not base64"),
            (
                "key k { algorithm hmac-sha256; };",
                "needs an algorithm and a secret",
            ),
            ("hmac-sha256:k", "expected algorithm:name:secret"),
        ] {
            let error = parse_keys(text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    fn keyring() -> Keyring {
        Keyring::new(parse_keys(&format!("hmac-sha256:transfer:{SECRET}")).unwrap()).unwrap()
    }

    fn signed_query(key: &TSigner, time: u64) -> (Vec<u8>, Message) {
        let mut message = Message::query();
        message.metadata.id = 77;
        message.add_query(Query::query(
            Name::from_ascii("test.org.").unwrap(),
            RecordType::AXFR,
        ));
        sign_request(key, &mut message, time);
        let raw = message.to_vec().unwrap();
        let parsed = Message::from_vec(&raw).unwrap();
        (raw, parsed)
    }

    #[test]
    fn a_signed_transfer_is_verified_and_every_answer_message_checks_out_in_a_chain() {
        let keys = keyring();
        let signer = keys.get(&Name::from_ascii("transfer.").unwrap()).unwrap();
        let now = 1_700_000_000;
        let (raw, parsed) = signed_query(signer, now);
        let Verdict::Signed(session) = verify(&keys, &raw, &parsed, now + 10) else {
            panic!("not accepted");
        };
        let mut answers = Vec::new();
        for i in 0..3u8 {
            let mut response = Message::response(77, parsed.metadata.op_code);
            response.add_query(parsed.queries[0].clone());
            response.metadata.authoritative = i == 0;
            answers.push(response.to_vec().unwrap());
        }
        let signed = session.sign(answers, now + 11);
        assert_eq!(signed.len(), 3);
        // The client side of the chain, as a secondary checks it (hickory's verifier).
        let mut message = Message::query();
        message.metadata.id = 77;
        message.add_query(parsed.queries[0].clone());
        let mut verifier = sign_request(signer, &mut message, now).unwrap();
        // Re-sign the same request at the same time: the verifier needs the MAC the server answered to.
        assert_eq!(message.to_vec().unwrap(), raw);
        for bytes in &signed {
            verifier.verify(bytes).unwrap();
        }
    }

    #[test]
    fn unknown_keys_bad_macs_and_stale_times_are_rejected_with_notauth() {
        let keys = keyring();
        let signer = keys.get(&Name::from_ascii("transfer.").unwrap()).unwrap();
        let now = 1_700_000_000;

        let other =
            Keyring::new(parse_keys(&format!("hmac-sha256:stranger:{SECRET}")).unwrap()).unwrap();
        let stranger = other.get(&Name::from_ascii("stranger.").unwrap()).unwrap();
        let (raw, parsed) = signed_query(stranger, now);
        let Verdict::Rejected(rejection) = verify(&keys, &raw, &parsed, now) else {
            panic!("unknown key accepted");
        };
        assert_eq!(rejection.reason, "BADKEY");
        let answer = Message::from_vec(&rejection.response(parsed.clone()).unwrap()).unwrap();
        assert_eq!(answer.metadata.response_code, ResponseCode::NotAuth);
        assert_eq!(
            answer.signature().unwrap().data.error,
            Some(TsigError::BadKey)
        );

        // The question changed in transit: `test.org` became `uest.org`.
        let (mut raw, _) = signed_query(signer, now);
        raw[13] ^= 0x01;
        let tampered = Message::from_vec(&raw).unwrap();
        assert!(matches!(
            verify(&keys, &raw, &tampered, now),
            Verdict::Rejected(Rejection {
                reason: "BADSIG",
                ..
            })
        ));

        let (raw, parsed) = signed_query(signer, now);
        assert!(matches!(
            verify(&keys, &raw, &parsed, now + u64::from(FUDGE) + 1),
            Verdict::Rejected(Rejection {
                reason: "BADTIME",
                ..
            })
        ));
    }
}
