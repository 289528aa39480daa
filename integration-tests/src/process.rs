//! A program started by a test: its output goes to a log file, it is checked for early exit, and it is
//! stopped (SIGTERM, then SIGKILL) by PID when the handle is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{HarnessError, Result, io_err};

/// How long a process gets to exit after SIGTERM when dropped.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// A running child process owned by a test.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(io_err(format!("opening log {}", log_path.display())))?;
        let err_log = log
            .try_clone()
            .map_err(io_err(format!("opening log {}", log_path.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(io_err(format!("starting {name} ({command:?})")))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
            exited: None,
        })
    }

    /// The program's name as given to [`Process::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails with [`HarnessError::Exited`] if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.poll_exit() {
            return Err(HarnessError::Exited {
                name: self.name.clone(),
                status,
                log_path: self.log_path.display().to_string(),
                tail: self.log_tail(30),
            });
        }
        Ok(())
    }

    /// The exit status if the process has exited, without blocking.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid()).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|errno| HarnessError::Io {
            what: format!("sending {signal} to {} (pid {pid})", self.name),
            source: errno.into(),
        })
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::until_blocking(&format!("{} to exit", self.name), timeout, || {
            self.poll_exit().ok_or_else(|| "still running".to_owned())
        })
        .ok()
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.poll_exit() {
            return Some(status);
        }
        let _ = self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        self.kill()
    }

    /// SIGKILL at once (a crash, as far as peers can tell); returns the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.exited
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(DROP_GRACE);
    }
}

/// Runs `command` to completion; its stdout, or [`HarnessError::Command`] with the command line and its stderr.
pub fn run_ok(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .map_err(io_err(format!("running {command:?}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: format!("{command:?}"),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// A free TCP port on 127.0.0.1 at the time of the call. The port is released before it is returned, so a
/// concurrent test could take it; programs that fail to bind are reported with their log.
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

/// A scratch directory for one test's programs; kept (and its path printed) if the test panics, so the
/// logs of a failed run can be read.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
}

impl Scratch {
    /// Creates a directory named after `what` under the system temp dir.
    pub fn new(what: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("groundwork-{what}-"))
            .tempdir()
            .map_err(io_err(format!("creating a scratch dir for {what}")))?;
        Ok(Self { dir: Some(dir) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        // `dir` is only taken in Drop.
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test failed: logs kept in {}", dir.keep().display());
        }
    }
}

/// The path of one of this workspace's binaries (`lb-controller`, `lb-speaker`...), for tests of another
/// package that need it as a process. `cargo test --workspace` builds every binary before any test runs;
/// a binary that is missing, or older than its crate's sources, is an error that says how to build it
/// (a test cannot run cargo itself: the build directory is locked while tests run).
pub fn workspace_binary(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("locating the running binary"))?;
    // A test or bench runs from target/<profile>/deps/, a binary (the lab) from target/<profile>/.
    let dir = exe.parent().ok_or_else(|| {
        crate::HarnessError::Setup(format!("no directory above {}", exe.display()))
    })?;
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let binary = profile_dir.join(name);
    let hint = format!("run `cargo build -p {name}` (or `cargo test --workspace`) first");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .map_err(|_| {
            crate::HarnessError::Setup(format!("{} is missing: {hint}", binary.display()))
        })?;
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src");
    if let Some(newest) = newest_mtime(&sources)
        && newest > built
    {
        return Err(crate::HarnessError::Setup(format!(
            "{} is older than {}: {hint}",
            binary.display(),
            sources.display()
        )));
    }
    Ok(binary)
}

/// The newest modification time of any file below `dir`.
pub(crate) fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}
