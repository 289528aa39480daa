//! What an Internet-facing dns-server does against clients that take more than their share, with a real
//! etcd and real TCP connections on loopback.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use integration_tests::daemon::start_dns_server;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::wait;

/// Whether the server closed `stream` (a read sees the end) rather than keeping it open.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

/// One A question over an open connection, RFC 1035 framing; returns the answer's length.
fn ask_over(stream: &mut TcpStream) -> usize {
    let query: [u8; 32] = [
        0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
        5, b'n', b'g', b'i', b'n', b'x', 4, b't', b'e', b's', b't', 3, b'o', b'r', b'g',
        0, // name
        0x00, 0x01, 0x00, 0x01, // A IN
    ];
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&query).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).unwrap();
    answer.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_hold_more_tcp_connections_than_its_quota_and_others_still_get_in() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client
        .put("/skydns/org/test/nginx", r#"{"host":"10.10.39.200"}"#, None)
        .await
        .unwrap();
    let (server, dns) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &["--tcp-max-per-client", "2", "--tcp-max-clients", "3"],
    )
    .unwrap();
    let connect = |from: [u8; 4]| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&dns.into()).unwrap();
        TcpStream::from(socket)
    };
    // Two idle connections from 127.0.0.1 are held; a third is closed at once.
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect([127, 0, 0, 1])).collect();
    assert!(ask_over(&mut held[0]) > 12);
    let mut third = connect([127, 0, 0, 1]);
    assert!(
        closed_by_server(&mut third),
        "a third connection from one client was kept"
    );
    // Another client still gets in, up to the total.
    let mut other = connect([127, 0, 0, 2]);
    assert!(ask_over(&mut other) > 12);
    let mut fourth = connect([127, 0, 0, 3]);
    assert!(
        closed_by_server(&mut fourth),
        "a connection over the total was kept"
    );
    // A place given back is taken again.
    drop(held.pop());
    let mut again =
        wait::until_blocking("a freed place to be taken", Duration::from_secs(5), || {
            let mut stream = connect([127, 0, 0, 3]);
            if closed_by_server(&mut stream) {
                Err("still full".to_owned())
            } else {
                Ok(stream)
            }
        })
        .unwrap();
    assert!(ask_over(&mut again) > 12);
    // UDP is not affected.
    let answer = dig::query(dns, "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(answer.data_of("A"), ["10.10.39.200"]);
    let metrics = server.get("/metrics").unwrap().body;
    for quota in ["per_client", "total"] {
        let sample = format!("groundwork_dns_tcp_refused_total{{quota=\"{quota}\"}}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&sample) && !l.ends_with(" 0")),
            "no {sample} in {metrics}"
        );
    }
}
