//! Reading our view of etcd and applying a [`Plan`] in guarded transactions: a create only if the key is
//! still absent, an update or delete only if the key is still at the revision we planned from. Whatever
//! changed under us in between is left alone and the caller re-plans.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use proto::skydns::{KeyLayout, SkydnsRecord};

use crate::plan::{Change, Existing};

/// Operations per transaction (etcd's default `--max-txn-ops` is 128; each change is one compare and one
/// operation).
const CHANGES_PER_TXN: usize = 100;

/// etcd trouble while syncing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A guard failed: a key changed since it was read.
    #[error("a key changed in etcd while this change was planned; re-planning")]
    Raced,
}

/// Every key under the prefix that holds a decodable record (undecodable keys are not ours to judge; they
/// are skipped and counted by the caller through the returned number).
pub async fn read_state(
    client: &mut Client,
    layout: &KeyLayout,
) -> Result<(Vec<Existing>, usize), WriteError> {
    let (kvs, _revision) = ops::etcd::list_prefix(client, &layout.range_prefix()).await?;
    let mut skipped = 0;
    let existing = kvs
        .iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match SkydnsRecord::from_etcd(&key, kv.value()) {
                Ok(record) => Some(Existing {
                    key,
                    mod_revision: kv.mod_revision(),
                    record,
                }),
                Err(_) => {
                    skipped += 1;
                    None
                }
            }
        })
        .collect();
    Ok((existing, skipped))
}

/// Applies `changes`, a guarded transaction per chunk; returns the number of writes.
pub async fn apply(client: &mut Client, changes: &[Change]) -> Result<usize, WriteError> {
    let mut written = 0;
    for chunk in changes.chunks(CHANGES_PER_TXN) {
        let mut guards = Vec::with_capacity(chunk.len());
        let mut ops = Vec::with_capacity(chunk.len());
        for change in chunk {
            match change {
                Change::Create { key, record } => {
                    guards.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(key.as_str(), record.to_json(), None));
                }
                Change::Update {
                    key,
                    mod_revision,
                    record,
                } => {
                    guards.push(Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        *mod_revision,
                    ));
                    ops.push(TxnOp::put(key.as_str(), record.to_json(), None));
                }
                Change::Delete {
                    key, mod_revision, ..
                } => {
                    guards.push(Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        *mod_revision,
                    ));
                    ops.push(TxnOp::delete(key.as_str(), None));
                }
            }
        }
        let response = client.txn(Txn::new().when(guards).and_then(ops)).await?;
        if !response.succeeded() {
            return Err(WriteError::Raced);
        }
        written += chunk.len();
    }
    Ok(written)
}
