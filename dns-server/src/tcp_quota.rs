//! How many TCP connections the server holds, in all and per client address: each one costs a task and a
//! 64 KiB buffer, and a client that opens connections without end must not take them from everyone else
//! (BIND's `tcp-clients` and NSD's `tcp-count` bound the total; per client is our addition). A connection
//! over quota is closed as soon as it is accepted, which also frees the listen backlog.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once, from everyone.
    pub total: usize,
    /// Connections open at once from one address.
    pub per_client: usize,
}

/// Open connections, by client address.
#[derive(Debug, Clone)]
pub struct TcpQuota {
    limits: TcpLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `total` connections.
    Full,
    /// This client holds `per_client` connections.
    ClientFull,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct Admission {
    client: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl TcpQuota {
    /// An empty quota with `limits`.
    pub fn new(limits: TcpLimits) -> Self {
        Self {
            limits,
            open: Arc::default(),
        }
    }

    /// Admits a connection from `client`, or says why not.
    pub fn admit(&self, client: IpAddr) -> Result<Admission, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.limits.total {
            return Err(Refusal::Full);
        }
        let mine = open.by_client.entry(client).or_default();
        if *mine >= self.limits.per_client {
            return Err(Refusal::ClientFull);
        }
        *mine += 1;
        open.total += 1;
        Ok(Admission {
            client,
            open: self.open.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                // The map holds only clients with open connections: it cannot grow with spoofed sources.
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_client_cannot_take_every_connection_and_places_come_back() {
        let quota = TcpQuota::new(TcpLimits {
            total: 3,
            per_client: 2,
        });
        let first = quota.admit(ip(1)).unwrap();
        let _second = quota.admit(ip(1)).unwrap();
        assert_eq!(quota.admit(ip(1)).unwrap_err(), Refusal::ClientFull);
        let _other = quota.admit(ip(2)).unwrap();
        assert_eq!(quota.admit(ip(3)).unwrap_err(), Refusal::Full);
        drop(first);
        assert_eq!(quota.open(), 2);
        let _again = quota.admit(ip(3)).unwrap();
        assert_eq!(quota.admit(ip(4)).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn clients_without_connections_are_forgotten() {
        let quota = TcpQuota::new(TcpLimits {
            total: 10,
            per_client: 1,
        });
        for last in 0..=255 {
            drop(quota.admit(ip(last)).unwrap());
        }
        assert!(quota.open.lock().unwrap().by_client.is_empty());
    }
}
