//! Files from the Go modules of the peers, pinned in `integration-tests/peers/versions.env`: the CRDs users
//! install with MetalLB, external-dns or the Gateway API, read from the module as released (fetched through
//! the Go module proxy when the cache lacks it), so tests apply what users apply.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::{HarnessError, Result, io_err, workspace_root};

/// A pin from `integration-tests/peers/versions.env` (`METALLB_CRD_VERSION`, `EXTERNAL_DNS_VERSION`, ...).
pub fn pin(name: &str) -> Result<String> {
    let path = workspace_root().join("integration-tests/peers/versions.env");
    let text =
        std::fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::Setup(format!("no {name} in {}", path.display())))
}

/// Where `module` at `version` is unpacked in the Go module cache, downloaded first if missing.
pub fn module_dir(module: &str, version: &str) -> Result<PathBuf> {
    let out = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .map_err(io_err("running `go env GOMODCACHE`"))?;
    let cache = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if cache.is_empty() {
        return Err(HarnessError::Setup(
            "`go env GOMODCACHE` printed nothing".to_owned(),
        ));
    }
    let dir = PathBuf::from(cache).join(format!("{module}@{version}"));
    if !dir.is_dir() {
        let module = format!("{module}@{version}");
        let out = std::process::Command::new("go")
            .args(["mod", "download", &module])
            .output()
            .map_err(io_err(format!("running `go mod download {module}`")))?;
        if !out.status.success() {
            return Err(HarnessError::Setup(format!(
                "go mod download {module}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    Ok(dir)
}

/// The CRDs in the YAML files of `dir` whose names `keep` accepts, in file name order.
pub fn crds_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<CustomResourceDefinition>> {
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(io_err(format!("reading {}", path.display())))?;
            serde_yaml::from_str(&text)
                .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// external-dns's `DNSEndpoint` CRD, from the pinned external-dns module.
pub fn dns_endpoint_crd() -> Result<CustomResourceDefinition> {
    let dir = module_dir("sigs.k8s.io/external-dns", &pin("EXTERNAL_DNS_VERSION")?)?;
    let mut crds = crds_in(&dir.join("config/crd/standard"), |name| {
        name == "dnsendpoints.externaldns.k8s.io.yaml"
    })?;
    crds.pop().ok_or_else(|| {
        HarnessError::Setup("external-dns's module has no DNSEndpoint CRD".to_owned())
    })
}
