//! A node's private mount namespace, kept alive by a bind mount of its namespace file (as `ip netns` keeps
//! network namespaces), that the node's containerd, kubelet and kube-proxy all enter.
//!
//! Why one per node: the kubelet mounts Pod volumes (Secrets are tmpfs) that the node's containerd must see to
//! hand them to runc, so the two share one mount namespace; and what a node writes where a real node keeps its
//! state goes to that node's own directory instead of the machine's:
//!
//! - `/run` is a fresh tmpfs (containerd's sockets and runc state, the Pods' network namespaces), with the
//!   cluster's own directory bound back in when it lies under `/run` (the lab's state directory);
//! - `/var/lib` and `/var/log` are the node's directories (containerd's images, the kubelet's Pods, CNI
//!   leases, Pod logs);
//! - the global sysctls the kubelet insists on setting (`vm.overcommit_memory`, `kernel.panic`...) are
//!   files holding the values it wants, so the machine's own values never change.
//!
//! Unmounting the namespace file and stopping the last process in it frees everything mounted inside.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netlab::of_a_dead_run;
use crate::process::run_ok as run;
use crate::{Result, io_err};

/// The global (not per network namespace) sysctls the kubelet sets when `protectKernelDefaults` is off, with
/// the values it sets (kubelet's `setupKernelTunables`).
pub const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The empty directory of a node's `/var/lib` where the cluster's directory waits while `/run` is replaced.
const PARKING: &str = ".groundwork-parking";

/// A persistent mount namespace, unmounted (and so freed once its processes are gone) on drop.
#[derive(Debug)]
pub struct MountNamespace {
    file: PathBuf,
    released: bool,
}

impl MountNamespace {
    /// Creates the namespace, pinned at `file` (whose directory must not be a shared mount: see
    /// [`private_dir`]), with the node's `/run`, `/var/lib`, `/var/log` and sysctl files from `node_dir`.
    pub fn create(file: &Path, node_dir: &Path) -> Result<Self> {
        std::fs::write(file, b"").map_err(io_err(format!("creating {}", file.display())))?;
        run(Command::new("unshare")
            .arg(format!("--mount={}", file.display()))
            .args(["--propagation", "private", "true"]))?;
        let ns = Self {
            file: file.to_owned(),
            released: false,
        };
        for (dir, target) in [("var-lib", "/var/lib"), ("var-log", "/var/log")] {
            let source = node_dir.join(dir);
            std::fs::create_dir_all(&source)
                .map_err(io_err(format!("creating {}", source.display())))?;
            ns.mount(&["--bind", &source.display().to_string(), target])?;
        }
        let sysctl = node_dir.join("sysctl");
        std::fs::create_dir_all(&sysctl)
            .map_err(io_err(format!("creating {}", sysctl.display())))?;
        for (name, value) in KUBELET_SYSCTLS {
            let file = sysctl.join(name.replace('/', "."));
            std::fs::write(&file, format!("{value}\n"))
                .map_err(io_err(format!("writing {}", file.display())))?;
            ns.mount(&[
                "--bind",
                &file.display().to_string(),
                &format!("/proc/sys/{name}"),
            ])?;
        }
        // The cluster's own files (configurations, images, this node's directories) under /run, as the lab's
        // `/run/groundwork-lab` puts them, would be hidden by the fresh /run. A bind from the machine's
        // namespace is refused once inside (EINVAL), so park them on an empty directory of the node's
        // `/var/lib` first and move them back onto the fresh /run after. Not recursive: the directory
        // pinning the namespaces must not be pinned inside one of them.
        let cluster_dir = node_dir.parent().filter(|d| d.starts_with("/run"));
        if let Some(cluster_dir) = cluster_dir {
            let parking = node_dir.join("var-lib").join(PARKING);
            std::fs::create_dir_all(&parking)
                .map_err(io_err(format!("creating {}", parking.display())))?;
            ns.mount(&[
                "--bind",
                &cluster_dir.display().to_string(),
                &format!("/var/lib/{PARKING}"),
            ])?;
        }
        ns.mount(&["-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"])?;
        if let Some(cluster_dir) = cluster_dir {
            let path = cluster_dir.display().to_string();
            ns.run_inside("mkdir", &["-p", &path])?;
            ns.mount(&["--move", &format!("/var/lib/{PARKING}"), &path])?;
        }
        Ok(ns)
    }

    /// `program` to be run in this mount namespace and the network namespace `netns` (a name under
    /// `/run/netns`). `nsenter` opens both before entering either, and then execs: the process's PID is the
    /// program's own.
    pub fn command(&self, netns: &str, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--mount={}", self.file.display()))
            .arg(format!("--net=/run/netns/{netns}"))
            .arg("--")
            .arg(program);
        command
    }

    /// The file the namespace is pinned at.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn mount(&self, args: &[&str]) -> Result<()> {
        self.run_inside("mount", args)
    }

    /// Runs `program` with `args` inside this mount namespace (and no other).
    fn run_inside(&self, program: &str, args: &[&str]) -> Result<()> {
        run(Command::new("nsenter")
            .arg(format!("--mount={}", self.file.display()))
            .arg("--")
            .arg(program)
            .args(args))
        .map(|_| ())
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        if !self.released {
            release(&self.file);
        }
    }
}

/// Unpins a mount namespace (lazily: it goes when its last process does) and deletes its file.
pub fn release(file: &Path) {
    let _ = Command::new("umount").arg("--lazy").arg(file).output();
    let _ = std::fs::remove_file(file);
}

/// A directory bind-mounted on itself with private propagation, where namespace files may be pinned even on
/// machines whose root is a shared mount (systemd's default), as `ip netns` does for `/run/netns`.
#[derive(Debug)]
pub struct PrivateDir {
    dir: PathBuf,
}

/// Makes `dir` a private mount (see [`PrivateDir`]); undone on drop.
pub fn private_dir(dir: &Path) -> Result<PrivateDir> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let path = dir.display().to_string();
    run(Command::new("mount").args(["--bind", &path, &path]))?;
    let private = PrivateDir {
        dir: dir.to_owned(),
    };
    run(Command::new("mount").args(["--make-private", &path]))?;
    Ok(private)
}

impl PrivateDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).output();
    }
}

/// Unmounts what lab runs whose process is gone left mounted (a node's pinned namespaces and their private
/// directory, `.../gwlab-<dead pid>-<n>-mntns[/<node>]`), deepest first; returns the mount points.
pub fn sweep_leftovers() -> Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|point| {
            point
                .components()
                .any(|c| of_a_dead_run(&c.as_os_str().to_string_lossy()))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in &points {
        let _ = Command::new("umount").arg("--lazy").arg(point).output();
    }
    Ok(points)
}
