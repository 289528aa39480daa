//! Keeps the container logs of Pods that are gone.
//!
//! The kubelet deletes a Pod's log directory with the Pod, so after a rollout or a deleted Pod the logs that
//! explain a failure (the old speaker's last words, the old leader's hand-over) are gone by the time a test
//! fails. A [`LogKeeper`] hard-links every container log file it sees into a `kept-pod-logs` directory next to
//! the node's `var-log` a few times a second: the link keeps the file (and everything written to it later) when
//! the kubelet removes its own name for it. No copying, so nothing is lost between two polls but a container
//! that lived less than one poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the log directories are scanned.
const POLL: Duration = Duration::from_millis(200);

/// Links the logs below each `(live, kept)` directory pair until dropped.
#[derive(Debug)]
pub struct LogKeeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogKeeper {
    /// Starts keeping the files below each pair's first directory in its second.
    pub fn start(pairs: Vec<(PathBuf, PathBuf)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                for (live, kept) in &pairs {
                    keep(live, live, kept);
                }
                std::thread::sleep(POLL);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LogKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Hard-links every file below `dir` (inside `root`) that `kept` lacks.
fn keep(root: &Path, dir: &Path, kept: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            keep(root, &path, kept);
        } else if kind.is_file()
            && let Ok(relative) = path.strip_prefix(root)
        {
            let target = kept.join(relative);
            if !target.exists()
                && let Some(parent) = target.parent()
                && std::fs::create_dir_all(parent).is_ok()
            {
                // Gone since the scan, or linked by a racing scan: either way nothing to keep.
                let _ = std::fs::hard_link(&path, &target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_removed_after_it_was_seen_is_kept_with_what_was_written_after() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("pods");
        let kept = dir.path().join("kept");
        let log = live.join("ns_pod_uid/container/0.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "first\n").unwrap();
        let keeper = LogKeeper::start(vec![(live.clone(), kept.clone())]);
        let kept_log = kept.join("ns_pod_uid/container/0.log");
        crate::wait::until_blocking("the log to be kept", Duration::from_secs(5), || {
            kept_log.exists().then_some(()).ok_or("not yet".to_owned())
        })
        .unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"last\n")
            .unwrap();
        std::fs::remove_dir_all(&live).unwrap();
        drop(keeper);
        assert_eq!(std::fs::read_to_string(kept_log).unwrap(), "first\nlast\n");
    }
}
