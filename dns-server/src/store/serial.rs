//! SOA serials that every replica computes alike: the etcd revision of the last change to any key of the
//! zone, deletions included, so two servers holding the same zone report the same serial (Zonemaster's
//! `MULTIPLE_SOA_SERIALS`) and the serial moves only when the zone's content does.
//!
//! A read shows each key's last write (`mod_revision`) but not when a key was deleted. After the newest
//! write to the zone only deletions can have happened, so the number of keys the zone had at each later
//! revision only falls, reaching today's count at the last deletion: a bisection over counts read at past
//! revisions (`count_only`, cheap) finds it. Revisions etcd has compacted away cannot be read; they count as
//! "before the answer", which yields the first readable revision: the same on every replica between two
//! compactions, and never below a serial served before.

use std::future::Future;

/// How many keys a zone had at a revision, or that etcd no longer keeps that revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountAt {
    /// The zone held this many keys.
    Keys(i64),
    /// Compacted away.
    Compacted,
}

/// The revision of the last change to a zone whose newest key was written at `newest` (0: no key) and
/// which holds `now` keys at `revision`; `count_at` reads the number of keys at a past revision.
pub async fn last_change<E, F, Fut>(
    newest: i64,
    now: i64,
    revision: i64,
    mut count_at: F,
) -> Result<i64, E>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<CountAt, E>>,
{
    // Revision 0 means "the latest" to etcd; the first real one is 1.
    let mut low = newest.max(1);
    let mut high = revision;
    if low >= high {
        return Ok(high.max(newest));
    }
    // Invariant: the answer lies in [low, high]; at `high` the count is `now`.
    while low < high {
        let middle = low + (high - low) / 2;
        match count_at(middle).await? {
            CountAt::Keys(keys) if keys == now => high = middle,
            // More keys (a deletion is still to come), or unreadable: the answer is later.
            CountAt::Keys(_) | CountAt::Compacted => low = middle + 1,
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zone's key count over revisions 1..=history.len(), `None` where compacted.
    async fn run(history: &[Option<i64>], newest: i64) -> i64 {
        let revision = history.len() as i64;
        let now = history[history.len() - 1].unwrap();
        last_change::<(), _, _>(newest, now, revision, |r| {
            let at = history[(r - 1) as usize];
            async move { Ok(at.map_or(CountAt::Compacted, CountAt::Keys)) }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn without_deletions_the_newest_write_is_the_last_change() {
        // Written at 2 and 3; revisions 4..6 changed other zones.
        let history = [Some(1), Some(1), Some(2), Some(2), Some(2), Some(2)];
        assert_eq!(run(&history, 3).await, 3);
    }

    #[tokio::test]
    async fn the_last_deletion_after_the_newest_write_is_found() {
        // Newest write at 3 (4 keys), deletions at 5 and 8, other zones until 12.
        let mut history = vec![
            Some(2),
            Some(3),
            Some(4),
            Some(4),
            Some(3),
            Some(3),
            Some(3),
        ];
        history.extend([Some(2); 5]);
        assert_eq!(run(&history, 3).await, 8);
    }

    #[tokio::test]
    async fn a_zone_emptied_entirely_is_found_too() {
        let history = [Some(1), Some(1), Some(0), Some(0)];
        assert_eq!(run(&history, 0).await, 3);
    }

    #[tokio::test]
    async fn compacted_history_gives_the_first_readable_revision() {
        // The deletion at 5 was compacted away (1..=6 unreadable): every replica says 7.
        let mut history = vec![None; 6];
        history.extend([Some(2), Some(2), Some(2)]);
        assert_eq!(run(&history, 2).await, 7);
    }
}
