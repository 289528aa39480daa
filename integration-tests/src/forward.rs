//! A TCP forwarder from a lab namespace's loopback to a port on the test machine's loopback.
//!
//! Lab namespaces have no route off the lab bridge, by design. A daemon that runs on the "control plane"
//! (the kube-apiserver, lb-controller) listens on the root namespace's 127.0.0.1; a speaker inside node
//! namespace n1 reaches it through a [`Forward`] listening on n1's own 127.0.0.1. Traffic stays on
//! loopback on both sides. [`Forward::pause`] stops moving bytes while keeping every connection open: a
//! partition between the node and the control plane (the data link stays up), which is what a lease must
//! fence against. [`Forward::start_at`] listens on a lab address instead: the real-node lab's kubelets and
//! Pods reach the kube-apiserver on m1's address that way.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::netlab::Host;
use crate::{HarnessError, Result};

/// A running forwarder; stops accepting (and closes its connections) on drop.
#[derive(Debug)]
pub struct Forward {
    local: SocketAddr,
    upstream: Arc<std::sync::Mutex<SocketAddr>>,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Forward {
    /// Listens on 127.0.0.1 (free port) inside `host`'s namespace and forwards each connection to
    /// `upstream` on the root namespace's loopback.
    pub fn start(host: &Host, upstream: SocketAddr) -> Result<Self> {
        Self::start_at(host, ([127, 0, 0, 1], 0).into(), upstream)
    }

    /// Listens on `listen` inside `host`'s namespace (its lab address, say, so that other hosts reach it
    /// across the bridge) and forwards each connection to `upstream` on the root namespace's loopback.
    pub fn start_at(host: &Host, listen: SocketAddr, upstream: SocketAddr) -> Result<Self> {
        let listener = host
            .run(move || TcpListener::bind(listen))?
            .map_err(|source| HarnessError::Io {
                what: format!("binding a forwarder to {listen} in {}", host.netns),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| HarnessError::Io {
            what: "forwarder address".to_owned(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| HarnessError::Io {
                what: "forwarder listener".to_owned(),
                source,
            })?;
        let forward = Self {
            local,
            upstream: Arc::new(std::sync::Mutex::new(upstream)),
            paused: Arc::new(AtomicBool::new(false)),
            stopped: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
        };
        let (paused, stopped, connections, target) = (
            forward.paused.clone(),
            forward.stopped.clone(),
            forward.connections.clone(),
            forward.upstream.clone(),
        );
        // Threads spawned here start in the root namespace, so upstream sockets are opened there.
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let inbound = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => return,
                };
                let upstream = target.lock().map_or(upstream, |t| *t);
                let Ok(outbound) = TcpStream::connect(upstream) else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = inbound.set_nonblocking(false);
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                for stream in [&inbound, &outbound] {
                    if let Ok(clone) = stream.try_clone()
                        && let Ok(mut list) = connections.lock()
                    {
                        list.push(clone);
                    }
                }
                for (from, to) in [(&inbound, &outbound), (&outbound, &inbound)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let paused = paused.clone();
                    std::thread::spawn(move || pump(from, to, &paused));
                }
            }
        });
        Ok(forward)
    }

    /// The address to dial inside the namespace.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sends new connections to `upstream` from now on (existing ones stay where they are), as a Service
    /// does when its ready endpoint changes (a new leader).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        if let Ok(mut target) = self.upstream.lock() {
            *target = upstream;
        }
    }

    /// Stops moving bytes (connections stay open): the node is cut off from the control plane.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Ok(list) = self.connections.lock() {
            for stream in list.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to`; while paused, holds what it read and waits.
fn pump(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
