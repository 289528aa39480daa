//! The container images groundwork ships and the ones its real-node lab needs, built here from local files with
//! [`crate::oci`]: no registry is reachable from this machine, so nothing may come from one.
//!
//! - [`groundwork`]: the product's image, the four daemons and `etcd-auth` as static binaries (`scripts/image`).
//! - [`pause`]: the Pod sandbox, from Kubernetes' own `pause.c` compiled static with musl.
//! - [`etcd`]: etcd from the binary the test bed already runs (`etcd-bin-vendored`).
//! - [`httpd`]: the seed's demo backend, Debian's static busybox `httpd`.
//! - [`coredns`]: the cluster DNS, the CoreDNS peer `scripts/build-peers` builds (static Go).
//!
//! Each holds its program and nothing else: no shell, no package manager, no libraries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::ImageSpec;
use crate::process::run_ok as run;
use crate::{HarnessError, Result, io_err, peers};

/// The four daemons in the groundwork image, under `/usr/local/bin/`.
pub const DAEMONS: [&str; 4] = ["lb-controller", "lb-speaker", "dns-sync", "dns-server"];
/// The other programs in the groundwork image: `etcd-auth` (a binary of the dns-sync crate) makes the DNS
/// components' etcd identities beside each etcd member.
pub const TOOLS: [&str; 1] = ["etcd-auth"];
/// The chart's default image repository (`values.yaml`'s `image.repository`).
pub const GROUNDWORK_REPOSITORY: &str = "ghcr.io/groundwork/groundwork";
/// The musl target the image's binaries are built for (static, so the image needs no libc).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";
/// The uid and gid every container runs as unless its Pod says otherwise (distroless's `nonroot`).
pub const NONROOT: &str = "65532:65532";
/// What `scripts/image` writes.
pub const GROUNDWORK_ARCHIVE: &str = "target/images/groundwork.oci.tar";
/// The Pod sandbox image every node's containerd is configured with.
pub const PAUSE_REFERENCE: &str = "groundwork.local/pause:3.10";
/// The busybox demo backend.
pub const HTTPD_REFERENCE: &str = "groundwork.local/httpd:1.35";
/// The etcd image the lab's chart values name (the version of `etcd-bin-vendored`).
pub const ETCD_REPOSITORY: &str = "groundwork.local/etcd";
/// The cluster DNS image.
pub const COREDNS_REPOSITORY: &str = "groundwork.local/coredns";

/// The groundwork image `scripts/image` wrote, or an error saying to run it when it is missing or older than
/// the sources of the daemons and the crates they share (a test must not install a stale build).
pub fn groundwork_archive() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let archive = root.join(GROUNDWORK_ARCHIVE);
    let built = std::fs::metadata(&archive)
        .and_then(|m| m.modified())
        .map_err(|_| {
            HarnessError::Setup(format!(
                "{} is missing: run scripts/image (scripts/test does)",
                archive.display()
            ))
        })?;
    for crate_dir in DAEMONS.iter().chain(&["proto", "ops"]) {
        let sources = root.join(crate_dir).join("src");
        if crate::process::newest_mtime(&sources).is_some_and(|newest| newest > built) {
            return Err(HarnessError::Setup(format!(
                "{} is older than {}: run scripts/image",
                archive.display(),
                sources.display()
            )));
        }
    }
    Ok(archive)
}

/// Where `cargo build --release --target x86_64-unknown-linux-musl` leaves the daemons: under
/// `CARGO_TARGET_DIR` when it is set (as `scripts/image` builds them), else the workspace's `target/`.
pub fn static_binaries_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join(STATIC_TARGET)
        .join("release")
}

/// The groundwork image: the four daemons and the tools from `binaries` (a directory holding static builds of each) under
/// `/usr/local/bin`, run as 65532 by default, with OCI labels naming the version.
pub fn groundwork(binaries: &Path, reference: &str) -> Result<ImageSpec> {
    let mut image = ImageSpec::new(reference)
        .user(NONROOT)
        .env("PATH=/usr/local/bin")
        .workdir("/")
        .label("org.opencontainers.image.title", "groundwork")
        .label(
            "org.opencontainers.image.source",
            "https://github.com/groundwork-dev/groundwork",
        )
        .label(
            "org.opencontainers.image.version",
            crate::oci::split_reference(reference).1,
        );
    for daemon in DAEMONS.iter().chain(&TOOLS) {
        let binary = binaries.join(daemon);
        require_static(
            &binary,
            &format!(
                "build it with `cargo build --release --target {STATIC_TARGET}` of its crate (scripts/image does)"
            ),
        )?;
        image = image.file(&binary, &format!("/usr/local/bin/{daemon}"), 0o755);
    }
    Ok(image)
}

/// The Pod sandbox image: Kubernetes' `build/pause/linux/pause.c` from the pinned `k8s.io/kubernetes` module,
/// compiled static with `musl-gcc` into `work`.
pub fn pause(work: &Path) -> Result<ImageSpec> {
    let kubernetes = peers::go_module_dir("k8s.io/kubernetes", "KUBERNETES_VERSION")?;
    let source = kubernetes.join("build/pause/linux/pause.c");
    std::fs::create_dir_all(work).map_err(io_err(format!("creating {}", work.display())))?;
    let binary = work.join("pause");
    run(Command::new("musl-gcc")
        .args(["-Os", "-static", "-DVERSION=3.10-groundwork", "-o"])
        .arg(&binary)
        .arg(&source))?;
    Ok(ImageSpec::new(PAUSE_REFERENCE)
        .file(&binary, "/pause", 0o755)
        .user(NONROOT)
        .entrypoint(&["/pause"]))
}

/// etcd from the test bed's own binary, at `/usr/local/bin/etcd` (where the chart's StatefulSet runs it).
pub fn etcd() -> Result<ImageSpec> {
    let binary = etcd_bin_vendored::etcd_bin_path()
        .map_err(|e| HarnessError::Setup(format!("the vendored etcd binary: {e}")))?;
    require_static(binary, "etcd-bin-vendored ships it")?;
    Ok(
        ImageSpec::new(&format!("{ETCD_REPOSITORY}:{}", etcd_tag()?))
            .file(binary, "/usr/local/bin/etcd", 0o755)
            .user(NONROOT)
            .entrypoint(&["/usr/local/bin/etcd"]),
    )
}

/// The tag of the etcd image: the vendored binary's version (`v3.7.2`).
pub fn etcd_tag() -> Result<String> {
    let binary = etcd_bin_vendored::etcd_bin_path()
        .map_err(|e| HarnessError::Setup(format!("the vendored etcd binary: {e}")))?;
    let out = run(Command::new(binary).arg("--version"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| format!("v{}", v.trim()))
        .ok_or_else(|| HarnessError::Setup(format!("no version in `etcd --version`: {out}")))
}

/// The demo backend: busybox's `httpd` serving `/www` on port 8080 as 65532 (Debian's static busybox).
pub fn httpd() -> Result<ImageSpec> {
    let busybox = Path::new("/bin/busybox");
    require_static(
        busybox,
        "install Debian's busybox-static (scripts/install-deps does)",
    )?;
    Ok(ImageSpec::new(HTTPD_REFERENCE)
        .file(busybox, "/bin/busybox", 0o755)
        .dir("/www", 0o755)
        .user(NONROOT)
        .entrypoint(&[
            "/bin/busybox",
            "httpd",
            "-f",
            "-v",
            "-p",
            "8080",
            "-h",
            "/www",
        ]))
}

/// The cluster DNS: the CoreDNS peer binary at `/coredns`.
pub fn coredns() -> Result<ImageSpec> {
    let binary = peers::binary("coredns")?;
    require_static(&binary, "scripts/build-peers builds it with CGO_ENABLED=0")?;
    let version = peers::pinned_version("COREDNS_VERSION")?;
    Ok(ImageSpec::new(&format!("{COREDNS_REPOSITORY}:{version}"))
        .file(&binary, "/coredns", 0o755)
        .user(NONROOT)
        .entrypoint(&["/coredns"]))
}

/// Fails unless `binary` exists and is statically linked (an image with no libc cannot run anything else).
fn require_static(binary: &Path, hint: &str) -> Result<()> {
    let bytes = std::fs::read(binary)
        .map_err(|_| HarnessError::Setup(format!("{} is missing: {hint}", binary.display())))?;
    if has_interpreter(&bytes) {
        return Err(HarnessError::Setup(format!(
            "{} is dynamically linked, and the image has no libc: {hint}",
            binary.display()
        )));
    }
    Ok(())
}

/// Whether an ELF file names a program interpreter (a dynamic loader): a `PT_INTERP` program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only (the images are amd64).
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(count)).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| u32_at(off + i * usize::from(entsize)))
            == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // This test binary is linked against glibc; busybox-static and etcd are not.
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        assert!(has_interpreter(&me));
        let etcd = etcd_bin_vendored::etcd_bin_path().expect("etcd path");
        assert!(!has_interpreter(&std::fs::read(etcd).expect("read etcd")));
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }
}
