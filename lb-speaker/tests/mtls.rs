//! Mutual TLS between speaker and controller: a speaker with a certificate from the cluster's CA gets a
//! session; one with a certificate from another CA is refused by the controller, and a speaker refuses a
//! controller whose certificate its CA did not sign. Refusals are logged with the TLS reason and retried.
//! Runs in lab namespaces (root): the stand-in controller listens on m1, speakers run on n1 and n2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use integration_tests::certs::{Ca, TlsFiles, Usage};
use integration_tests::launch::LbSpeaker;
use integration_tests::netlab::{LabNetwork, LabSpec};
use integration_tests::process::Scratch;
use integration_tests::wait;
use support::*;

const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");

fn refused_log(process: &mut integration_tests::process::Process) -> String {
    wait::until_blocking("the refusal to be logged", Duration::from_secs(20), || {
        process.check_running().map_err(|e| e.to_string())?;
        let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("cannot open a session with the controller"))
            .map(str::to_owned)
            .ok_or_else(|| "not yet".to_owned())
    })
    .unwrap()
}

#[test]
fn only_speakers_and_controllers_certified_by_the_cluster_ca_talk_to_each_other() {
    let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new("lb-speaker-mtls").unwrap();
    let m1 = lab.host("m1").unwrap();
    let cluster = Ca::new("groundwork cluster CA").unwrap();
    let stranger = Ca::new("some other CA").unwrap();
    let server = cluster
        .issue("lb-controller", &[], &[&m1.ipv4.to_string()], Usage::Server)
        .unwrap();
    let controller = StandIn::start_in(
        m1,
        Some(StandInTls {
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
            client_ca_pem: cluster.cert_pem().to_owned(),
        }),
    );
    let dir = |name: &str| {
        let path = scratch.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let good = cluster
        .issue_files(&dir("good"), "speaker", &[], &[], Usage::Client)
        .unwrap();
    let foreign = stranger
        .issue_files(&dir("foreign"), "speaker", &[], &[], Usage::Client)
        .unwrap();
    // The stand-in checks certificates only; tokens are lb-controller's (tests/identity.rs there).
    let token = scratch.join("token");
    std::fs::write(&token, "stand-in-token").unwrap();
    let tls = |cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        let files = TlsFiles {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let token = token.clone();
        move |speaker: LbSpeaker| speaker.token_file(&token).tls(&files)
    };
    let url = controller.url("https");

    // A speaker certified by the cluster CA gets its session.
    let args = tls(&good.cert, &good.key, &good.ca);
    let _n1 = start_speaker(SPEAKER, lab.host("n1").unwrap(), &scratch, &url, args);
    controller.wait_session("n1", 0, Duration::from_secs(20));

    // A speaker whose client certificate comes from another CA is refused by the controller.
    let args = tls(&foreign.cert, &foreign.key, &good.ca);
    let mut n2 = start_speaker(SPEAKER, lab.host("n2").unwrap(), &scratch, &url, args);
    let line = refused_log(&mut n2);
    assert!(
        line.to_lowercase().contains("certificate") || line.to_lowercase().contains("alert"),
        "the refusal does not say why: {line}"
    );

    // A speaker refuses a controller its CA did not sign, saying so.
    let args = tls(&good.cert, &good.key, &foreign.ca);
    let mut client = start_speaker(SPEAKER, lab.host("client").unwrap(), &scratch, &url, args);
    let line = refused_log(&mut client);
    assert!(
        line.contains("invalid peer certificate") || line.contains("UnknownIssuer"),
        "the refusal does not name the certificate problem: {line}"
    );
    assert!(
        controller.sessions().iter().all(|s| s.node == "n1"),
        "only n1 may hold a session"
    );
}
