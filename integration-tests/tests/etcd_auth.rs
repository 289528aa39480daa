//! The chart's least-privilege etcd identities, against a real TLS etcd: `etcd-auth` run with the very
//! identities the chart's etcd StatefulSet gives it (read from `helm template`) makes etcd take each client
//! certificate's CN as its user; then dns-server's certificate may only read the records, dns-sync's may write
//! them and nothing else, an unknown CN may do nothing, and the real dns-server and dns-sync binaries still do
//! their work with those certificates. No kubelets: the real-node lab (`lab_kubelets`) runs the same in Pods.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use integration_tests::certs::TlsFiles;
use integration_tests::daemon::{self, Daemon};
use integration_tests::etcd::Etcd;
use integration_tests::kube::{KubeCluster, create_lb_service};
use integration_tests::launch::{DnsServer, DnsSync};
use integration_tests::{dig, peers, process, wait, workspace_root};
use nix::sys::signal::Signal;
use serde::Deserialize;

/// The identity flags (`--read-only=...`, `--read-write=...`) of the `etcd-auth` container in the chart's etcd
/// StatefulSet, rendered with the chart's defaults.
fn chart_identities() -> Vec<String> {
    let helm = peers::binary("helm").unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(helm)
        .args(["template", "groundwork"])
        .arg(workspace_root().join("deploy/helm/groundwork"))
        .args(["--namespace", "groundwork"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stream = String::from_utf8(output.stdout).unwrap();
    for document in serde_yaml::Deserializer::from_str(&stream) {
        let object = serde_yaml::Value::deserialize(document).unwrap();
        if object["kind"] != "StatefulSet" {
            continue;
        }
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        let auth = containers
            .iter()
            .find(|c| c["name"] == "etcd-auth")
            .expect("the etcd StatefulSet has an etcd-auth container");
        return auth["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .filter(|a| a.starts_with("--read-only=") || a.starts_with("--read-write="))
            .collect();
    }
    panic!("no StatefulSet in the chart's output");
}

fn binary(name: &str) -> String {
    process::workspace_binary(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

fn etcd_flags(etcd: &Etcd, identity: &TlsFiles) -> Vec<String> {
    daemon::etcd_flags_as(etcd, Some(identity))
}

fn start(binary: &str, args: &[String]) -> Daemon {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(binary, &args).unwrap()
}

/// Asserts that etcd refused `result` for lack of permission (not for any other reason).
#[track_caller]
fn assert_denied<T: std::fmt::Debug>(what: &str, result: Result<T, etcd_client::Error>) {
    match result {
        Err(error) => assert!(
            error.to_string().contains("permission denied"),
            "{what}: refused for another reason: {error}"
        ),
        Ok(answer) => panic!("{what}: allowed ({answer:?})"),
    }
}

async fn keys_under(client: &mut Client, prefix: &str) -> Vec<String> {
    client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect()
}

/// Opens a watch on `prefix` and reads etcd's first answer: `Err(reason)` when etcd cancelled it.
async fn watch_first_answer(client: &mut Client, prefix: &str) -> Result<(), String> {
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let first = stream
        .message()
        .await
        .unwrap()
        .expect("a first watch answer");
    if first.canceled() {
        Err(first.cancel_reason().to_owned())
    } else {
        Ok(())
    }
}

#[tokio::test]
async fn etcd_auth_leaves_dns_server_read_only_and_dns_sync_writing_only_the_records() {
    let etcd = Etcd::start_tls().await.unwrap();
    // Before auth, any certificate of the CA may do anything: the test's own seeds the data.
    let mut before = etcd.client().await.unwrap();
    before
        .put("/skydns/org/test/www/a", r#"{"host":"192.0.2.10"}"#, None)
        .await
        .unwrap();
    before.put("/outside/key", "x", None).await.unwrap();
    before.put("/skydnsfoo/key", "x", None).await.unwrap();
    let issue = |cn: &str| etcd.issue_client(cn).unwrap().unwrap();
    let (root, server_id, sync_id, stranger) = (
        issue("root"),
        issue("dns-server"),
        issue("dns-sync"),
        issue("stranger"),
    );

    // etcd-auth as the chart runs it beside each member: ready once etcd enforces the identities; stops on
    // SIGTERM.
    let identities = chart_identities();
    assert_eq!(
        identities,
        [
            "--read-only=dns-server=/skydns",
            "--read-write=dns-sync=/skydns"
        ],
        "the chart's identities"
    );
    let etcd_auth = binary("etcd-auth");
    let mut args = etcd_flags(&etcd, &root);
    args.extend(identities.iter().cloned());
    let mut bootstrap = start(&etcd_auth, &args);
    bootstrap
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", bootstrap.process().log_tail(30)));
    bootstrap.process().signal(Signal::SIGTERM).unwrap();
    let status = bootstrap.process().wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // Run again (a restarted member, another member's etcd-auth): nothing left to change.
    args.push("--once".to_owned());
    let mut again = start(&etcd_auth, &args);
    let status = again.process().wait_exit(Duration::from_secs(30));
    let log = again.process().log_tail(30);
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert!(
        log.contains(r#""changes":0"#),
        "a second run changed etcd:\n{log}"
    );

    // dns-server's identity reads (range and watch) and writes nothing, anywhere.
    let mut server = etcd.client_as(&server_id).await.unwrap();
    assert_eq!(
        keys_under(&mut server, "/skydns/").await,
        ["/skydns/org/test/www/a"]
    );
    watch_first_answer(&mut server, "/skydns/")
        .await
        .unwrap_or_else(|reason| panic!("dns-server's watch was refused: {reason}"));
    assert_denied(
        "dns-server putting a record",
        server
            .put("/skydns/org/test/www/b", r#"{"host":"192.0.2.66"}"#, None)
            .await,
    );
    assert_denied(
        "dns-server deleting a record",
        server.delete("/skydns/org/test/www/a", None).await,
    );
    assert_denied(
        "dns-server reading outside the prefix",
        server.get("/outside/key", None).await,
    );

    // dns-sync's identity writes the records the way dns-sync does (guarded transactions), nothing else.
    let mut sync = etcd.client_as(&sync_id).await.unwrap();
    let created = sync
        .txn(
            Txn::new()
                .when([Compare::create_revision(
                    "/skydns/org/test/www/b",
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    "/skydns/org/test/www/b",
                    r#"{"host":"192.0.2.11"}"#,
                    None,
                )]),
        )
        .await
        .unwrap();
    assert!(created.succeeded());
    sync.delete("/skydns/org/test/www/b", None).await.unwrap();
    assert_denied(
        "dns-sync writing outside the prefix",
        sync.put("/outside/key", "y", None).await,
    );
    assert_denied(
        "dns-sync writing a sibling of the prefix",
        sync.put("/skydnsfoo/key", "y", None).await,
    );
    assert_denied(
        "dns-sync reading outside the prefix",
        sync.get("/outside/key", None).await,
    );

    // A certificate of the same CA with an unknown CN (the test's own included) may do nothing.
    for (who, files) in [
        ("stranger", &stranger),
        ("client", etcd.client_tls().unwrap()),
    ] {
        let mut client = etcd.client_as(files).await.unwrap();
        assert_denied(
            &format!("{who} reading"),
            client
                .get("/skydns/", Some(GetOptions::new().with_prefix()))
                .await,
        );
        assert_denied(
            &format!("{who} writing"),
            client.put("/skydns/org/test/www/c", "{}", None).await,
        );
        // Admin requests are checked against the user first: etcd answers that it knows no such user.
        let added = client.user_add("x", "x", None).await;
        assert!(
            added
                .as_ref()
                .is_err_and(|e| e.to_string().contains("user name not found")),
            "{who} adding a user: {added:?}"
        );
        let watch = watch_first_answer(&mut client, "/skydns/").await;
        assert!(
            watch
                .as_ref()
                .is_err_and(|r| r.contains("permission denied")),
            "{who} watching: {watch:?}"
        );
    }

    // The real daemons with their certificates: dns-server answers the seeded record, dns-sync publishes a
    // Service's name, and dns-server (watching) answers that too.
    let mut dns_server = DnsServer::new(binary("dns-server"), &etcd)
        .etcd_identity(&server_id)
        .start()
        .unwrap();
    let dns = dns_server
        .logged_addr("dns_addr", Duration::from_secs(10))
        .unwrap();
    dns_server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", dns_server.process().log_tail(30)));
    let answer = dig::query(dns, "www.test.org", "A", &[]).unwrap();
    assert_eq!(answer.data_of("A"), ["192.0.2.10"], "{}", answer.raw);

    let cluster = KubeCluster::start().await.unwrap();
    let mut dns_sync = DnsSync::new(binary("dns-sync"), "gw", cluster.kubeconfig(), &etcd)
        .domain_filter("test.org")
        .etcd_identity(&sync_id)
        .start()
        .unwrap();
    dns_sync
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", dns_sync.process().log_tail(30)));
    create_lb_service(
        &cluster.client(),
        "default",
        "web",
        &[("external-dns.alpha.kubernetes.io/hostname", "web.test.org")],
        "192.0.2.20",
    )
    .await
    .unwrap();
    wait::until(
        "dns-server to answer the name dns-sync wrote",
        Duration::from_secs(30),
        || async move {
            let answer = dig::query(dns, "web.test.org", "A", &[]).map_err(|e| e.to_string())?;
            (answer.data_of("A") == ["192.0.2.20"])
                .then_some(())
                .ok_or(answer.raw)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dns_sync.process().log_tail(30)));
}
