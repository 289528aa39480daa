//! The lab's state directory: what the supervisor started (every PID with its start time, every
//! namespace), how far it got, and the summary it printed. `lab down`, `lab status` and the leftovers sweep
//! of the next `lab up` read it; nothing else is ever stopped or removed, so a machine's other processes
//! and namespaces are never touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::netlab;
use crate::nodes::{cgroup, mountns};
use crate::{HarnessError, Result, io_err};

/// Where the lab keeps its state unless told otherwise (`--state-dir`, `GROUNDWORK_LAB_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/run/groundwork-lab";

/// How far the supervisor got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bringing the system up.
    Starting,
    /// Everything is up and the seed scenario checked out.
    Ready,
    /// Bring-up failed (the error is in the state).
    Failed,
    /// Tearing down.
    Stopping,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Starting, Self::Ready, Self::Failed, Self::Stopping]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// What it is (`lb-speaker on n1`).
    pub name: String,
    /// Its PID.
    pub pid: u32,
    /// Its start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`), so that a recycled PID
    /// is never mistaken for it.
    pub start_time: u64,
    /// Where its output goes.
    pub log: String,
}

/// The state file's content.
#[derive(Debug, Clone)]
pub struct LabState {
    /// The supervisor's PID and start time.
    pub supervisor: Tracked,
    /// How far it got.
    pub phase: Phase,
    /// Why it failed.
    pub error: Option<String>,
    /// Network namespaces created.
    pub namespaces: Vec<String>,
    /// Processes started (not counting the supervisor).
    pub processes: Vec<Tracked>,
    /// Directories to delete once everything is stopped.
    pub dirs: Vec<String>,
    /// Cgroups of real nodes (`--kubelets`): whatever is left inside is killed, then they are removed.
    pub cgroups: Vec<String>,
    /// Mounts (mount namespace files, their private directory) to undo, last first.
    pub mounts: Vec<String>,
    /// The admin kubeconfig.
    pub kubeconfig: Option<String>,
    /// The summary lines printed by `lab up` and `lab status`.
    pub summary: Vec<String>,
}

impl LabState {
    /// A fresh state for the calling process as supervisor.
    pub fn new_for_self() -> Self {
        let pid = std::process::id();
        Self {
            supervisor: Tracked {
                name: "lab supervisor".to_owned(),
                pid,
                start_time: start_time(pid).unwrap_or_default(),
                log: String::new(),
            },
            phase: Phase::Starting,
            error: None,
            namespaces: Vec::new(),
            processes: Vec::new(),
            dirs: Vec::new(),
            cgroups: Vec::new(),
            mounts: Vec::new(),
            kubeconfig: None,
            summary: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let tracked = |t: &Tracked| json!({"name": t.name, "pid": t.pid, "start_time": t.start_time, "log": t.log});
        json!({
            "supervisor": tracked(&self.supervisor),
            "phase": self.phase.as_str(),
            "error": self.error,
            "namespaces": self.namespaces,
            "processes": self.processes.iter().map(tracked).collect::<Vec<_>>(),
            "dirs": self.dirs,
            "cgroups": self.cgroups,
            "mounts": self.mounts,
            "kubeconfig": self.kubeconfig,
            "summary": self.summary,
        })
    }

    fn from_json(value: &Value) -> Option<Self> {
        let tracked = |v: &Value| -> Option<Tracked> {
            Some(Tracked {
                name: v.get("name")?.as_str()?.to_owned(),
                pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
                start_time: v.get("start_time")?.as_u64()?,
                log: v.get("log")?.as_str()?.to_owned(),
            })
        };
        let strings = |key: &str| -> Vec<String> {
            value
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Self {
            supervisor: tracked(value.get("supervisor")?)?,
            phase: Phase::parse(value.get("phase")?.as_str()?)?,
            error: value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            namespaces: strings("namespaces"),
            processes: value
                .get("processes")?
                .as_array()?
                .iter()
                .filter_map(tracked)
                .collect(),
            dirs: strings("dirs"),
            cgroups: strings("cgroups"),
            mounts: strings("mounts"),
            kubeconfig: value
                .get("kubeconfig")
                .and_then(Value::as_str)
                .map(str::to_owned),
            summary: strings("summary"),
        })
    }
}

/// The state directory and its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir` (created when written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The progress lines the supervisor writes as it goes (`lab up` prints them).
    pub fn progress_file(&self) -> PathBuf {
        self.dir.join("progress.log")
    }

    /// The supervisor's own stdout/stderr.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// Where the supervisor keeps certificates, logs and the HTTP servers' pages.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Reads the state, if there is one.
    pub fn read(&self) -> Option<LabState> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        LabState::from_json(&serde_json::from_str(&text).ok()?)
    }

    /// Writes the state atomically (a reader never sees half a file).
    pub fn write(&self, state: &LabState) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        let tmp = self.dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(&state.to_json())
            .map_err(|e| HarnessError::Setup(format!("encoding the lab state: {e}")))?;
        std::fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, self.state_file())
            .map_err(io_err(format!("writing {}", self.state_file().display())))
    }
}

/// The start time of `pid` in clock ticks since boot, if it runs.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process recorded as `tracked` still runs (same PID, same start time, not a zombie).
pub fn alive(tracked: &Tracked) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{}/stat", tracked.pid))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(false);
    start_time(tracked.pid) == Some(tracked.start_time) && !zombie
}

fn signal(tracked: &Tracked, signal: Signal) {
    if alive(tracked) {
        let pid = Pid::from_raw(i32::try_from(tracked.pid).unwrap_or(i32::MAX));
        let _ = kill(pid, signal);
    }
}

/// Waits up to `timeout` for every process in `tracked` to be gone; returns those still running.
fn wait_gone(tracked: &[Tracked], timeout: Duration) -> Vec<Tracked> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left: Vec<Tracked> = tracked.iter().filter(|t| alive(t)).cloned().collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What [`tear_down`] did.
#[derive(Debug, Default)]
pub struct TearDown {
    /// Whether a supervisor was running and stopped on request.
    pub supervisor_stopped: bool,
    /// Processes that had to be stopped one by one (the supervisor was gone or did not finish).
    pub stopped: Vec<String>,
    /// Namespaces deleted one by one.
    pub namespaces_removed: Vec<String>,
}

/// Stops the lab recorded in `dir`: asks its supervisor to stop everything (SIGTERM, up to `grace`), then
/// stops by PID whatever recorded process is left and deletes whatever recorded namespace is left, then
/// sweeps namespaces of dead test-bed runs and removes the state. Safe to run on a crashed lab or none.
pub fn tear_down(dir: &StateDir, grace: Duration) -> Result<TearDown> {
    let mut done = TearDown::default();
    if let Some(state) = dir.read() {
        if alive(&state.supervisor) {
            signal(&state.supervisor, Signal::SIGTERM);
            done.supervisor_stopped =
                wait_gone(std::slice::from_ref(&state.supervisor), grace).is_empty();
            if !done.supervisor_stopped {
                signal(&state.supervisor, Signal::SIGKILL);
            }
        }
        let left: Vec<Tracked> = state
            .processes
            .iter()
            .filter(|t| alive(t))
            .cloned()
            .collect();
        for t in &left {
            signal(t, Signal::SIGTERM);
        }
        for t in wait_gone(&left, Duration::from_secs(5)) {
            signal(&t, Signal::SIGKILL);
        }
        wait_gone(&left, Duration::from_secs(5));
        done.stopped = left.into_iter().map(|t| t.name).collect();
        // Shims and containers of real nodes are no process the lab started itself: their cgroup holds them.
        for name in &state.cgroups {
            let _ = cgroup::kill_and_remove(name);
        }
        for mount in state.mounts.iter().rev() {
            mountns::release(Path::new(mount));
        }
        let existing = netlab::ip(&["netns", "list"]).unwrap_or_default();
        for ns in &state.namespaces {
            let exists = existing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str()));
            if exists && netlab::ip(&["netns", "del", ns]).is_ok() {
                done.namespaces_removed.push(ns.clone());
            }
        }
        for d in &state.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if !done.supervisor_stopped {
            // A crashed supervisor could not remove the test bed's scratch directories (certificates,
            // data, logs under the temp dir); each recorded log sits in its process's own one.
            for t in &state.processes {
                if let Some(scratch) = Path::new(&t.log).parent()
                    && scratch.parent() == Some(std::env::temp_dir().as_path())
                    && scratch
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("groundwork-"))
                {
                    let _ = std::fs::remove_dir_all(scratch);
                }
            }
        }
    }
    netlab::sweep_leftovers()?;
    cgroup::sweep_leftovers()?;
    mountns::sweep_leftovers()?;
    for file in [
        dir.state_file(),
        dir.progress_file(),
        dir.path().join("kubeconfig"),
    ] {
        let _ = std::fs::remove_file(file);
    }
    let _ = std::fs::remove_dir_all(dir.files());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = StateDir::new(dir.path());
        let mut state = LabState::new_for_self();
        state.phase = Phase::Ready;
        state.namespaces = vec!["gwlab-1-0-m1".to_owned()];
        state.processes.push(Tracked {
            name: "x".to_owned(),
            pid: 7,
            start_time: 9,
            log: "/tmp/x.log".to_owned(),
        });
        state.kubeconfig = Some("/k".to_owned());
        state.summary = vec!["a".to_owned()];
        state.cgroups = vec!["gwlab-1-0-m1".to_owned()];
        state.mounts = vec!["/run/x-mntns".to_owned(), "/run/x-mntns/m1".to_owned()];
        state_dir.write(&state).unwrap();
        let read = state_dir.read().unwrap();
        assert_eq!(read.phase, Phase::Ready);
        assert_eq!(read.namespaces, state.namespaces);
        assert_eq!(read.processes, state.processes);
        assert_eq!(read.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(read.summary, ["a"]);
        assert_eq!(read.cgroups, state.cgroups);
        assert_eq!(read.mounts, state.mounts);
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = LabState::new_for_self().supervisor;
        assert!(alive(&me));
        let recycled = Tracked {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!alive(&recycled));
    }
}
