//! The real etcd the tests use: reads, writes and watches work, and its TLS mode really demands client
//! certificates (the DNS record store runs with TLS by default).

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, TlsOptions, WatchOptions};
use integration_tests::etcd::Etcd;

async fn put_get_and_watch(etcd: &Etcd) {
    let mut client = etcd.client().await.unwrap();
    let put = client
        .put(
            "/skydns/org/test/nginx/a",
            r#"{"host":"10.10.39.200"}"#,
            None,
        )
        .await
        .unwrap();
    let revision = put.header().unwrap().revision();

    let got = client
        .get("/skydns/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 1);
    assert_eq!(
        got.kvs()[0].value_str().unwrap(),
        r#"{"host":"10.10.39.200"}"#
    );

    // A watch from the next revision sees the later write and nothing before it.
    let mut watch = client
        .watch(
            "/skydns/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .unwrap();
    client
        .put(
            "/skydns/org/test/nginx/b",
            r#"{"host":"10.10.39.201"}"#,
            None,
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = watch.message().await.unwrap().expect("watch ended");
            if let Some(event) = response.events().first() {
                return event.clone();
            }
        }
    })
    .await
    .expect("no watch event within 5 s");
    assert_eq!(event.event_type(), EventType::Put);
    assert_eq!(
        event.kv().unwrap().key_str().unwrap(),
        "/skydns/org/test/nginx/b"
    );
}

#[tokio::test]
async fn plain_etcd_serves_put_get_and_watch() {
    let etcd = Etcd::start().await.unwrap();
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    put_get_and_watch(&etcd).await;
}

#[tokio::test]
async fn tls_etcd_serves_put_get_and_watch_to_a_client_with_a_certificate() {
    let etcd = Etcd::start_tls().await.unwrap();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    put_get_and_watch(&etcd).await;
}

#[tokio::test]
async fn tls_etcd_refuses_a_client_without_a_certificate() {
    let etcd = Etcd::start_tls().await.unwrap();
    let ca = std::fs::read(&etcd.client_tls().unwrap().ca).unwrap();
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2))
        .with_tls(TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)));
    let result = async {
        let mut client = Client::connect([etcd.endpoint()], Some(options)).await?;
        client.status().await
    }
    .await;
    assert!(
        result.is_err(),
        "etcd answered a client without a certificate"
    );
}

#[tokio::test]
async fn etcd_keeps_its_data_across_a_crash_and_restart() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client
        .put("/skydns/org/test/kept", "{}", None)
        .await
        .unwrap();
    etcd.restart().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let got = client.get("/skydns/org/test/kept", None).await.unwrap();
    assert_eq!(got.kvs().len(), 1);
}
