//! Keeps the index equal to etcd: one revisioned range read of the whole prefix, then a watch from the next
//! revision. On compaction, a broken watch or a lost connection it re-lists and resumes, with backoff.
//! Until a new read succeeds the last known data keeps being served: a failed read never empties a zone.

use std::sync::PoisonError;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use ops::CancellationToken;
use ops::endpoint::Health;
use ops::etcd::EtcdConnection;
use proto::skydns::KeyLayout;
use tokio::sync::watch;

use super::SharedIndex;
use super::index::is_at_or_below;
use super::record::StoredRecord;
use super::serial::{self, CountAt};
use crate::metrics::StoreMetrics;

/// Where the records are.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    /// How to reach etcd.
    pub connection: EtcdConnection,
    /// Key layout (prefix).
    pub layout: KeyLayout,
}

/// Why one sync round ended.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch compacted at revision {0}; re-listing")]
    Compacted(i64),
    #[error("watch closed by etcd")]
    WatchClosed,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Follows etcd until `shutdown`; never returns early.
pub async fn follow(
    source: EtcdSource,
    index: SharedIndex,
    health: Health,
    metrics: StoreMetrics,
    revisions: watch::Sender<i64>,
    shutdown: CancellationToken,
) {
    let mut backoff = ops::backoff::Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = sync(&source, &index, &health, &metrics, &revisions, &mut backoff) => result,
        };
        let Err(error) = result;
        metrics.etcd_up.set(0);
        metrics.etcd_errors.inc();
        let (loaded, revision) = {
            let index = index.read().unwrap_or_else(PoisonError::into_inner);
            (index.revision() > 0, index.revision())
        };
        if loaded {
            health.set_ready(format!(
                "serving last known data (etcd revision {revision}); etcd: {error}"
            ));
        } else {
            health.set_not_ready(format!("no data loaded yet; etcd: {error}"));
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %error, retry_in = ?delay, endpoints = ?source.connection.endpoints, "etcd sync interrupted");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// What a read says about one zone's keys: how many, and the newest write among them (0: none).
#[derive(Debug, Clone, Copy, Default)]
struct ZoneKeys {
    count: i64,
    newest: i64,
}

/// Reads every record under `prefix` as of one revision, skipping (and counting) invalid values, and
/// tallies the keys of each zone in `zone_dirs` (valid or not: a serial follows etcd's content).
async fn list(
    client: &mut Client,
    prefix: &str,
    zone_dirs: &[String],
    metrics: &StoreMetrics,
) -> Result<(Vec<StoredRecord>, i64, Vec<ZoneKeys>), SyncError> {
    let (kvs, revision) = ops::etcd::list_prefix(client, prefix).await?;
    let mut records = Vec::with_capacity(kvs.len());
    let mut zones = vec![ZoneKeys::default(); zone_dirs.len()];
    for kv in &kvs {
        let key = String::from_utf8_lossy(kv.key());
        for (dir, zone) in zone_dirs.iter().zip(zones.iter_mut()) {
            if is_at_or_below(&key, dir) {
                zone.count += 1;
                zone.newest = zone.newest.max(kv.mod_revision());
            }
        }
        match StoredRecord::parse(&key, kv.value(), kv.mod_revision()) {
            Ok(record) => records.push(record),
            Err(error) => {
                metrics.invalid_records.inc();
                tracing::warn!(key = %key, error = %error, "skipping invalid record");
            }
        }
    }
    Ok((records, revision, zones))
}

/// The revision of the last change to the zone at `dir` as of `revision` (see [`serial`]).
async fn last_change(
    client: &mut Client,
    dir: &str,
    keys: ZoneKeys,
    revision: i64,
) -> Result<i64, SyncError> {
    serial::last_change(keys.newest, keys.count, revision, |at| {
        let mut client = client.clone();
        async move {
            let mut keys = 0;
            // The apex's own key, then everything below it (a plain prefix would take `test-x` too).
            for (key, prefix) in [(dir.to_owned(), false), (format!("{dir}/"), true)] {
                let mut options = GetOptions::new().with_count_only().with_revision(at);
                if prefix {
                    options = options.with_prefix();
                }
                match client.get(key, Some(options)).await {
                    Ok(response) => keys += response.count(),
                    Err(error) if error.to_string().contains("compacted") => {
                        return Ok(CountAt::Compacted);
                    }
                    Err(error) => return Err(SyncError::from(error)),
                }
            }
            Ok(CountAt::Keys(keys))
        }
    })
    .await
}

/// One round: connect, list, watch. Only returns with an error.
async fn sync(
    source: &EtcdSource,
    index: &SharedIndex,
    health: &Health,
    metrics: &StoreMetrics,
    revisions: &watch::Sender<i64>,
    backoff: &mut ops::backoff::Backoff,
) -> Result<std::convert::Infallible, SyncError> {
    let mut client = source.connection.connect().await?;
    let prefix = source.layout.range_prefix();
    let zone_dirs = index
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .zone_dirs();
    let (records, revision, zones) = list(&mut client, &prefix, &zone_dirs, metrics).await?;
    let mut changes = Vec::with_capacity(zone_dirs.len());
    for (dir, keys) in zone_dirs.iter().zip(zones) {
        changes.push(last_change(&mut client, dir, keys, revision).await?);
    }
    let count = records.len();
    {
        let mut index = index.write().unwrap_or_else(PoisonError::into_inner);
        index.replace_all(records, revision);
        for (dir, change) in zone_dirs.iter().zip(changes) {
            index.note_change(dir, change);
        }
        metrics
            .records
            .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
    }
    revisions.send_replace(revision);
    metrics.etcd_up.set(1);
    metrics.etcd_revision.set(revision);
    metrics.relists.inc();
    if count == 0 {
        tracing::warn!(prefix = %prefix, revision, "no records under the prefix");
    } else {
        tracing::info!(prefix = %prefix, revision, records = count, "loaded records from etcd");
    }
    health.set_ready(format!(
        "serving {count} records from etcd revision {revision}"
    ));
    backoff.reset();

    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1)
        .with_progress_notify();
    let mut watch = client.watch(prefix, Some(options)).await?;
    loop {
        let Some(response) = watch.message().await? else {
            return Err(SyncError::WatchClosed);
        };
        if response.compact_revision() > 0 {
            return Err(SyncError::Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Err(SyncError::WatchClosed);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        let mut index = index.write().unwrap_or_else(PoisonError::into_inner);
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            // Any event changes the zone's content in etcd, served or not: the serial follows etcd, as a
            // replica reading afresh computes it.
            index.note_change(&key, kv.mod_revision());
            match event.event_type() {
                EventType::Put => match StoredRecord::parse(&key, kv.value(), kv.mod_revision()) {
                    Ok(record) => index.put(record, kv.mod_revision()),
                    Err(error) => {
                        // The key no longer holds a usable value: stop serving what it held before.
                        metrics.invalid_records.inc();
                        tracing::warn!(key = %key, error = %error, "skipping invalid record");
                        index.delete(&key, kv.mod_revision());
                    }
                },
                EventType::Delete => {
                    index.delete(&key, kv.mod_revision());
                }
            }
        }
        metrics
            .records
            .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
        metrics.etcd_revision.set(revision.max(index.revision()));
        let applied = index.revision();
        drop(index);
        revisions.send_replace(applied);
    }
}
