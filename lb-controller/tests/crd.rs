#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CRD YAML under `deploy/crds/` is generated from the Rust types; this test fails when the two drift.
//! Regenerate with `GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd`.

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds");

#[test]
fn checked_in_crds_match_the_rust_types() {
    for (file, crd) in lb_controller::crds() {
        let want = format!(
            "# Generated from lb-controller/src (pool.rs, bgp/crd.rs); do not edit by hand.\n# Regenerate: GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd\n{}",
            serde_yaml::to_string(&crd).unwrap()
        );
        let path = format!("{DIR}/{file}");
        if std::env::var_os("GROUNDWORK_WRITE_CRDS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{path} is out of date; regenerate with GROUNDWORK_WRITE_CRDS=1 cargo test -p lb-controller --test crd"
        );
    }
}
