//! Every contract that crosses a process boundary in groundwork, in one place, so that the two ends of each
//! conversation compile against the same definition:
//!
//! - [`announce`]: the gRPC service between `lb-controller` and `lb-speaker` (generated from
//!   `proto/groundwork/announce/v1/announce.proto`).
//! - [`skydns`]: the etcd record schema shared by `dns-sync` (writer) and `dns-server` (reader), which is the
//!   format CoreDNS's etcd plugin reads and external-dns's CoreDNS provider writes.
//! - [`service_status`]: what `lb-controller` writes into a Service's status for users (and tests) to read.
//! - [`speaker_messages`]: a speaker's messages built from their parts, for whatever plays a speaker in
//!   tests, fuzzing and benchmarks.

pub mod service_status;
pub mod skydns;
pub mod speaker_messages;

/// The controller<->speaker gRPC service, version 1.
pub mod announce {
    /// Generated messages, client and server for `groundwork.announce.v1`.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("groundwork.announce.v1");
    }
}
