//! The README's first command, end to end: `lab up` brings the whole system up with the seed scenario and
//! prints what a user wants to see (the Service's address, the announcing node, `dig` and HTTP from the
//! client namespace); the lab keeps running after `up` returns; `lab down` leaves no process and no
//! namespace behind.
//!
//! Runs the `lab` binary with its own state directory, so it never touches a lab the user runs
//! (`/run/groundwork-lab`); its namespaces carry its own supervisor's PID. Needs root and the daemons'
//! binaries (`cargo test --workspace` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use integration_tests::lab::state::{StateDir, alive};
use integration_tests::process::workspace_binary;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn lab(dir: &Path, action: &str) -> Output {
    Command::new(LAB)
        .args([action, "--state-dir"])
        .arg(dir)
        .env_remove("GROUNDWORK_LAB_DIR")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Brings the lab down when the test ends, whatever happened.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = lab(self.0, "down");
    }
}

fn namespaces() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn lab_up_shows_the_seed_scenario_working_and_lab_down_leaves_nothing() {
    for daemon in ["lb-controller", "lb-speaker", "dns-sync", "dns-server"] {
        workspace_binary(daemon).unwrap_or_else(|e| panic!("{e}"));
    }
    let dir = tempfile::Builder::new()
        .prefix("groundwork-lab-test-")
        .tempdir()
        .unwrap();
    let _down = Down(dir.path());

    let started = std::time::Instant::now();
    let up = lab(dir.path(), "up");
    let printed = text(&up);
    println!("{printed}");
    assert!(up.status.success(), "lab up failed:\n{printed}");
    println!("lab up took {:?}", started.elapsed());
    for expected in [
        "external address: 10.10.39.200",
        "dig nginx.test.org from client: 10.10.39.200",
        "dig @10.10.40.10 nginx.test.org (dns-server on m1): 10.10.39.200 (NOERROR, aa)",
        "dig @10.10.40.110 nginx.test.org (dns-server on n1): 10.10.39.200 (NOERROR, aa)",
        "http://10.10.39.200/ from client: 200 \"groundwork lab: served by ",
        "answered by ",
        "kubeconfig: ",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in:\n{printed}"
        );
    }
    let announcer = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("announcing node: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an announcing node line")
        .to_owned();
    assert!(["m1", "n1", "n2"].contains(&announcer.as_str()));
    assert!(
        printed.contains(&format!("served by {announcer}\"")),
        "the HTTP answer came from another node than {announcer}:\n{printed}"
    );

    // `up` has returned; the lab keeps running, recorded in the state directory.
    let state = StateDir::new(dir.path()).read().expect("a state file");
    assert!(alive(&state.supervisor));
    assert!(
        state.processes.len() >= 14,
        "tracked: {:?}",
        state.processes
    );
    for process in &state.processes {
        assert!(alive(process), "{} is not running", process.name);
    }
    let listed = namespaces();
    for ns in &state.namespaces {
        assert!(listed.contains(ns.as_str()), "namespace {ns} missing");
    }
    let kubeconfig = state.kubeconfig.clone().expect("a kubeconfig");
    assert!(Path::new(&kubeconfig).is_file());
    let status = lab(dir.path(), "status");
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("external address: 10.10.39.200"));

    // And it still answers after `up` returned: DNS from the client namespace.
    let client = state
        .namespaces
        .iter()
        .find(|ns| ns.ends_with("-client"))
        .unwrap();
    let dig = Command::new("ip")
        .args([
            "netns",
            "exec",
            client,
            "dig",
            "+short",
            "@10.10.40.10",
            "nginx.test.org",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.10.39.200");

    let down = lab(dir.path(), "down");
    assert!(down.status.success(), "lab down failed:\n{}", text(&down));
    println!("{}", text(&down));
    assert!(!alive(&state.supervisor), "the supervisor still runs");
    for process in &state.processes {
        assert!(!alive(process), "{} still runs after down", process.name);
    }
    let listed = namespaces();
    for ns in &state.namespaces {
        assert!(!listed.contains(ns.as_str()), "namespace {ns} left behind");
    }
    assert!(StateDir::new(dir.path()).read().is_none());
    assert!(!Path::new(&kubeconfig).exists());
    assert!(!lab(dir.path(), "status").status.success());
}
