//! CRDs from the Go modules of the peers (pinned in `integration-tests/peers/versions.env`, unpacked by
//! [`peers::go_module_dir`]): the resources users install with MetalLB, external-dns or the Gateway API, read
//! from the module as released, so tests apply what users apply.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::{HarnessError, Result, io_err, peers};

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
    let dir = peers::go_module_dir("sigs.k8s.io/external-dns", "EXTERNAL_DNS_VERSION")?;
    let mut crds = crds_in(&dir.join("config/crd/standard"), |name| {
        name == "dnsendpoints.externaldns.k8s.io.yaml"
    })?;
    crds.pop().ok_or_else(|| {
        HarnessError::Setup("external-dns's module has no DNSEndpoint CRD".to_owned())
    })
}
