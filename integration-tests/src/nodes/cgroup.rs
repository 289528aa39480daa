//! A cgroup of the lab's own, in every hierarchy this machine mounts, holding one node's runtime: its
//! containerd (and so every shim it starts), its kubelet, its kube-proxy, and, as the kubelet's
//! `cgroupRoot`, every container of every Pod on it.
//!
//! That makes a node's processes findable without trusting any of them: [`Cgroup::kill_all`] kills whatever
//! is inside, even shims that outlived their containerd, and [`Cgroup::remove`] leaves the machine's cgroup
//! tree as it was. Names follow the lab's namespaces (`gwlab-<pid>-<n>-<node>`), so [`sweep_leftovers`] can
//! clean up after a run that died without doing it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netlab::of_a_dead_run;
use crate::{HarnessError, Result, io_err};

/// Where the machine's cgroup hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";
/// How long [`Cgroup::kill_all`] waits for the killed processes to leave.
const KILL_TIMEOUT: Duration = Duration::from_secs(20);

/// A cgroup directory present in every hierarchy, removed (after killing what is inside) on drop.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    removed: bool,
}

impl Cgroup {
    /// Creates `/<name>` in every mounted hierarchy (cpuset gets its parent's CPUs and memory nodes, without
    /// which nothing may join it).
    pub fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(HarnessError::Setup(format!(
                "cgroup name {name:?} must be one plain path element"
            )));
        }
        let cgroup = Self {
            name: name.to_owned(),
            removed: false,
        };
        for hierarchy in hierarchies()? {
            let dir = hierarchy.join(name);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = std::fs::read_to_string(hierarchy.join(file))
                        .map_err(io_err(format!("reading {}/{file}", hierarchy.display())))?;
                    std::fs::write(dir.join(file), value.trim())
                        .map_err(io_err(format!("writing {}/{file}", dir.display())))?;
                }
            }
        }
        Ok(cgroup)
    }

    /// The cgroup's path as the kubelet's `cgroupRoot` takes it (`/<name>`).
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Its name, a single path element.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves `pid` (and its threads) into this cgroup in every hierarchy; what it starts from now on is
    /// inside too.
    pub fn join(&self, pid: u32) -> Result<()> {
        for hierarchy in hierarchies()? {
            let procs = hierarchy.join(&self.name).join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(io_err(format!("moving pid {pid} into {}", procs.display())))?;
        }
        Ok(())
    }

    /// Every process anywhere below this cgroup.
    pub fn processes(&self) -> Vec<u32> {
        processes_below(&self.name)
    }

    /// SIGKILLs everything below this cgroup until nothing is left (processes started meanwhile included).
    pub fn kill_all(&self) -> Result<()> {
        kill_below(&self.name)
    }

    /// Kills everything inside, then removes the cgroup from every hierarchy, innermost first.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        kill_below(&self.name)?;
        remove_dirs(&self.name)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = kill_below(&self.name);
            let _ = remove_dirs(&self.name);
        }
    }
}

/// Kills what is inside the lab cgroup `name` and removes it, if it exists (for `lab down` after a crash).
pub fn kill_and_remove(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        return Ok(());
    }
    kill_below(name)?;
    remove_dirs(name)
}

/// Kills and removes lab cgroups whose creating process is gone (`gwlab-<dead pid>-*`); returns their names.
pub fn sweep_leftovers() -> Result<Vec<String>> {
    let mut swept = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for hierarchy in hierarchies()? {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names.into_iter().filter(|n| of_a_dead_run(n)) {
        kill_and_remove(&name)?;
        swept.push(name);
    }
    Ok(swept)
}

/// The mounted cgroup hierarchies (v1 controllers, named ones and the v2 `unified` one of a hybrid setup).
fn hierarchies() -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: ... mount point (5th) ... " - " fstype source options.
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            (matches!(fstype, "cgroup" | "cgroup2") && point.starts_with(CGROUP_FS))
                .then(|| PathBuf::from(point))
        })
        .collect();
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err(HarnessError::Setup(format!(
            "no cgroup hierarchy is mounted under {CGROUP_FS}"
        )));
    }
    Ok(found)
}

/// Every directory of `dir`'s subtree, deepest first.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&path));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_owned());
    }
    out
}

fn processes_below(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = hierarchies()
        .unwrap_or_default()
        .iter()
        .flat_map(|h| subtree(&h.join(name)))
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn kill_below(name: &str) -> Result<()> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = processes_below(name);
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Setup(format!(
                "processes {pids:?} in cgroup {name} survived SIGKILL for {KILL_TIMEOUT:?}"
            )));
        }
        for pid in pids {
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn remove_dirs(name: &str) -> Result<()> {
    let mut failed = Vec::new();
    for hierarchy in hierarchies()? {
        for dir in subtree(&hierarchy.join(name)) {
            // A cgroup whose last process just exited can be busy for a moment.
            let gone = crate::wait::until_blocking(
                &format!("removing {}", dir.display()),
                Duration::from_secs(5),
                || match std::fs::remove_dir(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
            );
            if let Err(e) = gone {
                failed.push(e.to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(HarnessError::Setup(failed.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_holds_what_joins_it_and_leaves_nothing_behind() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root to create cgroups; run the suite as root");
        }
        let name = format!(
            "{}{}-cgtest",
            crate::netlab::NAMESPACE_PREFIX,
            std::process::id()
        );
        let cgroup = Cgroup::create(&name).expect("create");
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        cgroup.join(child.id()).expect("join");
        assert_eq!(cgroup.processes(), [child.id()]);
        cgroup.remove().expect("remove");
        // Killed by the cgroup, reaped here.
        let status = child.wait().expect("wait");
        assert!(!status.success());
        for hierarchy in hierarchies().expect("hierarchies") {
            assert!(
                !hierarchy.join(&name).exists(),
                "{} left",
                hierarchy.display()
            );
        }
    }
}
