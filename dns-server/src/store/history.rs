//! The zone as it was at a past SOA serial, read from etcd's history: what an incremental transfer
//! (IXFR, RFC 1995) is computed from. A serial is the etcd revision of the zone's last change
//! ([`super::serial`]), so the keys as of that revision are exactly what a secondary holding that serial
//! was sent. etcd keeps old revisions until it compacts them; a compacted revision means "unknown", and the
//! caller falls back to the whole zone.
//!
//! Reads run only for allow-listed secondaries that are behind, a few per change; still, at most
//! [`CONCURRENT_READS`] run at once, so a burst of transfers cannot hold many copies of the keyspace.

use etcd_client::Client;
use tokio::sync::{OnceCell, Semaphore};

use super::follower::EtcdSource;
use super::index::Index;
use super::record::StoredRecord;

/// Past-revision reads running at once; further transfers wait their turn.
const CONCURRENT_READS: usize = 2;

/// Why a past zone could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// etcd failed (unreachable, or another error than compaction).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// Reads the keyspace as of past revisions, on a connection of its own (made on first use).
pub struct History {
    source: EtcdSource,
    zones: Vec<String>,
    client: OnceCell<Client>,
    reads: Semaphore,
}

impl History {
    /// Reads from `source`, building indexes for `zones` (names such as `test.org`).
    pub fn new(source: EtcdSource, zones: Vec<String>) -> Self {
        Self {
            source,
            zones,
            client: OnceCell::new(),
            reads: Semaphore::new(CONCURRENT_READS),
        }
    }

    /// The index as of `revision`, or `None` when etcd no longer keeps that revision (compacted) or does
    /// not have it yet. Values that do not parse are left out, as the follower leaves them out.
    pub async fn index_at(&self, revision: i64) -> Result<Option<Index>, HistoryError> {
        if revision < 1 {
            return Ok(None);
        }
        // Closed never: the semaphore lives as long as `self`.
        let Ok(_permit) = self.reads.acquire().await else {
            return Ok(None);
        };
        let mut client = self
            .client
            .get_or_try_init(|| self.source.connection.connect())
            .await?
            .clone();
        let prefix = self.source.layout.range_prefix();
        let kvs = match ops::etcd::list_prefix_at(&mut client, &prefix, revision).await {
            Ok((kvs, _)) => kvs,
            Err(error) if is_unavailable_revision(&error) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let records = kvs.iter().filter_map(|kv| {
            StoredRecord::parse(
                &String::from_utf8_lossy(kv.key()),
                kv.value(),
                kv.mod_revision(),
            )
            .ok()
        });
        let mut index = Index::new(self.source.layout.clone(), &self.zones);
        index.replace_all(records, revision);
        Ok(Some(index))
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("source", &self.source)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

/// etcd's answers for a revision it compacted away or has not reached.
fn is_unavailable_revision(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("compacted") || text.contains("future revision")
}
