//! The lab: the whole groundwork system on one machine, built from the test bed's parts, with the seed
//! scenario applied and checked from a client namespace (issue 7's `lab up`).
//!
//! `lab up` starts a detached supervisor (`lab supervise`, its own session) and prints its progress until
//! it reports ready; the supervisor owns every process and namespace and records them in a state
//! directory ([`state`]); `lab down` asks it to stop and then stops by PID and deletes by name whatever it
//! recorded and is still there. See `docs/lab.md`.

pub mod kubelets;
pub mod probe;
pub mod seed;
pub mod state;
pub mod system;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use state::{Phase, StateDir, alive};

use crate::{HarnessError, Result, io_err};

/// How long `lab up` waits for the supervisor to report ready (real nodes take longer than processes: their
/// Pods start one image at a time per node on two cores).
const UP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the supervisor gets to stop everything after SIGTERM.
pub const DOWN_GRACE: Duration = Duration::from_secs(60);

/// `lab up`: clears what a crashed lab left, starts the supervisor detached (running `kind`), relays its
/// progress to `out`, and returns the summary once it is ready (or its error).
pub fn up(
    dir: &StateDir,
    kind: &system::Kind,
    out: &mut dyn std::io::Write,
) -> Result<Vec<String>> {
    crate::require_root("create network namespaces for the lab")?;
    if let Some(state) = dir.read()
        && alive(&state.supervisor)
    {
        return Err(HarnessError::Setup(format!(
            "a lab is already running (supervisor pid {}, state in {}); `scripts/lab status` shows it, `scripts/lab down` stops it",
            state.supervisor.pid,
            dir.path().display()
        )));
    }
    let swept = state::tear_down(dir, DOWN_GRACE)?;
    if !swept.stopped.is_empty() || !swept.namespaces_removed.is_empty() {
        let _ = writeln!(
            out,
            "cleaned up a previous lab: stopped {:?}, removed namespaces {:?}",
            swept.stopped, swept.namespaces_removed
        );
    }
    std::fs::create_dir_all(dir.path())
        .map_err(io_err(format!("creating {}", dir.path().display())))?;
    let exe = std::env::current_exe().map_err(io_err("locating the lab binary"))?;
    let log = std::fs::File::create(dir.supervisor_log()).map_err(io_err(format!(
        "creating {}",
        dir.supervisor_log().display()
    )))?;
    let err_log = log
        .try_clone()
        .map_err(io_err("opening the supervisor log"))?;
    // setsid(1): the supervisor gets its own session, so closing the terminal or Ctrl-C in it leaves the
    // lab running. Its PID is the supervisor's own (setsid execs without forking when it can).
    let mut command = Command::new("setsid");
    command
        .arg(&exe)
        .arg("supervise")
        .arg("--state-dir")
        .arg(dir.path());
    if let system::Kind::Kubelets(image) = kind {
        command.arg("--kubelets").arg("--image").arg(image);
    }
    let mut supervisor = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(io_err("starting the lab supervisor (setsid, util-linux)"))?;
    let started = Instant::now();
    let mut printed = 0usize;
    loop {
        printed += relay(&dir.progress_file(), printed, out);
        let state = dir.read();
        if let Some(state) = &state
            && state.supervisor.pid == supervisor.id()
        {
            match state.phase {
                Phase::Ready => {
                    relay(&dir.progress_file(), printed, out);
                    return Ok(state.summary.clone());
                }
                Phase::Failed => {
                    let _ = supervisor.wait();
                    relay(&dir.progress_file(), printed, out);
                    return Err(HarnessError::Setup(format!(
                        "the lab did not come up: {}\n(supervisor log: {})",
                        state.error.clone().unwrap_or_default(),
                        dir.supervisor_log().display()
                    )));
                }
                Phase::Starting | Phase::Stopping => {}
            }
        }
        if let Ok(Some(status)) = supervisor.try_wait() {
            relay(&dir.progress_file(), printed, out);
            let log = std::fs::read_to_string(dir.supervisor_log()).unwrap_or_default();
            return Err(HarnessError::Setup(format!(
                "the lab supervisor exited ({status}):\n{log}"
            )));
        }
        if started.elapsed() > UP_TIMEOUT {
            return Err(HarnessError::Setup(format!(
                "the lab was not ready after {UP_TIMEOUT:?}; `scripts/lab down` cleans up; see {}",
                dir.supervisor_log().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the progress file's lines from `skip` on; returns how many it printed.
fn relay(file: &Path, skip: usize, out: &mut dyn std::io::Write) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    // Only whole lines: the supervisor may be half-way through one.
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    let mut n = 0;
    for line in complete.lines().skip(skip) {
        let _ = writeln!(out, "{line}");
        n += 1;
    }
    let _ = out.flush();
    n
}

/// `lab status`: the summary of a running lab, or why there is none.
pub fn status(dir: &StateDir) -> Result<Vec<String>> {
    let Some(state) = dir.read() else {
        return Err(HarnessError::Setup(format!(
            "no lab state in {}: the lab is not up",
            dir.path().display()
        )));
    };
    if !alive(&state.supervisor) {
        return Err(HarnessError::Setup(format!(
            "the lab's supervisor (pid {}) is gone; `scripts/lab down` cleans up what is left",
            state.supervisor.pid
        )));
    }
    let mut lines = match state.phase {
        Phase::Ready => state.summary.clone(),
        other => vec![format!("the lab is {other:?}")],
    };
    let running = state.processes.iter().filter(|p| alive(p)).count();
    lines.push(format!(
        "processes: {running} of {} running (supervisor pid {})",
        state.processes.len(),
        state.supervisor.pid
    ));
    for p in state.processes.iter().filter(|p| !alive(p)) {
        lines.push(format!("  not running: {} (log {})", p.name, p.log));
    }
    Ok(lines)
}
