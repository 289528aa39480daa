#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `IPPool` CRD YAML under `deploy/crds/` is generated from the Rust types; this test fails when the two
//! drift. Regenerate with `GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd`.

use kube::CustomResourceExt;
use lb_controller::pool::IPPool;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/crds/ippools.groundwork.dev.yaml"
);

fn generated() -> String {
    format!(
        "# Generated from lb-controller/src/pool.rs; do not edit by hand.\n# Regenerate: GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd\n{}",
        serde_yaml::to_string(&IPPool::crd()).unwrap()
    )
}

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let want = generated();
    if std::env::var_os("GROUNDWORK_WRITE_CRDS").is_some() {
        std::fs::write(PATH, &want).unwrap();
    }
    let have = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        have == want,
        "{PATH} is out of date; regenerate with GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd"
    );
}
