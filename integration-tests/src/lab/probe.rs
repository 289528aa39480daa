//! What a client on the lab's segment sees, asked with the real tools from inside its namespace: who
//! answers ARP (`arping`) and Neighbor Discovery (`ndisc6`) for an address, what a dns-server answers
//! (`dig`), what HTTP returns (`curl`), and [`ArpWatch`], `arping` run back to back recording every reply,
//! so a fault test can measure the longest silence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dig::Answer;
use crate::netlab::{HOST_INTERFACE, Host};

/// `arping` from `client`: the MACs that answered (lower case, deduplicated, sorted).
pub fn arping(client: &Host, address: Ipv4Addr) -> std::result::Result<Vec<String>, String> {
    let out = client
        .command("arping")
        .args([
            "-c",
            "3",
            "-w",
            "3",
            "-I",
            HOST_INTERFACE,
            &address.to_string(),
        ])
        .output()
        .map_err(|e| format!("arping: {e}"))?;
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(reply_mac)
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// The MAC of an `arping` reply line (`Unicast reply from 10.10.39.200 [02:..]  0.6ms`).
fn reply_mac(line: &str) -> Option<String> {
    if !line.contains("reply from") {
        return None;
    }
    Some(
        line.split('[')
            .nth(1)?
            .split(']')
            .next()?
            .to_ascii_lowercase(),
    )
}

/// Neighbor Solicitations from `client` (`ndisc6 -m`, three attempts): the MACs that answered with a
/// Neighbor Advertisement (lower case, deduplicated, sorted).
pub fn ndisc(client: &Host, address: Ipv6Addr) -> std::result::Result<Vec<String>, String> {
    let out = client
        .command("ndisc6")
        .args([
            "-m",
            "-n",
            "-q",
            "-r",
            "3",
            "-w",
            "500",
            &address.to_string(),
            HOST_INTERFACE,
        ])
        .output()
        .map_err(|e| format!("ndisc6 (install ndisc6): {e}"))?;
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| l.len() == 17 && l.matches(':').count() == 5)
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// `dig @server name rtype` from `client`, without recursion.
pub fn dig(
    client: &Host,
    server: IpAddr,
    name: &str,
    rtype: &str,
) -> std::result::Result<Answer, String> {
    let out = client
        .command("dig")
        .args([
            &format!("@{server}"),
            name,
            rtype,
            "+norecurse",
            "+time=1",
            "+tries=1",
        ])
        .output()
        .map_err(|e| format!("dig: {e}"))?;
    let raw = String::from_utf8_lossy(&out.stdout);
    crate::dig::parse(&raw).ok_or_else(|| format!("no answer: {}", raw.trim()))
}

/// `curl http://address/` from `client`: status and body.
pub fn curl(client: &Host, address: Ipv4Addr) -> std::result::Result<(u16, String), String> {
    let out = client
        .command("curl")
        .args([
            "-s",
            "-m",
            "3",
            "-w",
            "\n%{http_code}",
            &format!("http://{address}/"),
        ])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let status = code
        .trim()
        .parse()
        .map_err(|_| format!("curl: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    Ok((status, body.to_owned()))
}

/// `mac` as `arping` and `ndisc6` print it: lower-case hex pairs joined by colons.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `arping` from a client namespace, run again and again on a thread (one request each, answered within
/// a few milliseconds while a node announces the address), recording each reply: when, and from which
/// MAC. One process per probe, because `arping` does not flush its output to a pipe. Stopped on drop.
pub struct ArpWatch {
    replies: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArpWatch {
    /// Starts probing `address` from `client`.
    pub fn start(client: &Host, address: Ipv4Addr) -> Self {
        let replies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped, client) = (replies.clone(), stop.clone(), client.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                // -b: broadcast, as a client that has no neighbour entry yet; -w 1: wait up to 1 s.
                let Ok(out) = client
                    .command("arping")
                    .args(["-b", "-c", "1", "-w", "1", "-I", HOST_INTERFACE])
                    .arg(address.to_string())
                    .output()
                else {
                    continue;
                };
                let at = Instant::now();
                let text = String::from_utf8_lossy(&out.stdout);
                if let Ok(mut replies) = sink.lock() {
                    replies.extend(text.lines().filter_map(reply_mac).map(|mac| (at, mac)));
                }
            }
        });
        Self {
            replies,
            stop,
            thread: Some(thread),
        }
    }

    /// Every reply so far.
    pub fn replies(&self) -> Vec<(Instant, String)> {
        self.replies.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The longest time between two consecutive replies.
    pub fn longest_silence(&self) -> Duration {
        self.replies()
            .windows(2)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .unwrap_or_default()
    }

    /// The distinct MACs that answered.
    pub fn macs(&self) -> Vec<String> {
        let mut macs: Vec<String> = self.replies().into_iter().map(|(_, m)| m).collect();
        macs.sort();
        macs.dedup();
        macs
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arping_reply_lines_give_the_mac() {
        assert_eq!(
            reply_mac("Unicast reply from 10.10.39.200 [02:AB:00:11:22:33]  0.611ms").as_deref(),
            Some("02:ab:00:11:22:33")
        );
        assert_eq!(
            reply_mac("ARPING 10.10.39.200 from 10.10.40.200 eth0"),
            None
        );
    }
}
