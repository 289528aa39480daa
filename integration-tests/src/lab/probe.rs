//! What a client on the lab's segment sees, asked with the real tools from inside its namespace: who
//! answers ARP (`arping`) and Neighbor Discovery (`ndisc6`) for an address, what a dns-server answers
//! (`dig`), what HTTP returns (`curl`), and [`ArpProbe`], a steady stream of ARP requests from a raw socket
//! that records who answered each one and when: the one watcher of the fault and failover tests, timing
//! silences to within its interval and telling whether two nodes ever answered one request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    dig_at(client, server, 53, name, rtype)
}

/// `dig -p port @server name rtype` from `client`, without recursion (a dns-server behind a NodePort).
pub fn dig_at(
    client: &Host,
    server: IpAddr,
    port: u16,
    name: &str,
    rtype: &str,
) -> std::result::Result<Answer, String> {
    let out = client
        .command("dig")
        .args([
            "-p",
            &port.to_string(),
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

/// Waits until `client` gets an ARP answer for `address`, then requires that exactly `mac` (`node`'s) answered.
pub fn wait_sole_answerer(
    client: &Host,
    address: Ipv4Addr,
    node: &str,
    mac: &str,
    timeout: Duration,
) -> crate::Result<()> {
    let macs = crate::wait::until_blocking(
        "ARP answers for the address from the client",
        timeout,
        || {
            let macs = arping(client, address)?;
            if macs.is_empty() {
                Err("no reply".to_owned())
            } else {
                Ok(macs)
            }
        },
    )?;
    if macs == [mac] {
        Ok(())
    } else {
        Err(crate::HarnessError::Setup(format!(
            "ARP for {address} answered by {macs:?}, expected only {node} ({mac})"
        )))
    }
}

/// Waits until `dig -p port @server name A` from `client` answers exactly `address`; returns the answer.
pub fn wait_dig_a(
    client: &Host,
    server: SocketAddr,
    name: &str,
    address: Ipv4Addr,
    timeout: Duration,
) -> crate::Result<Answer> {
    crate::wait::until_blocking(
        &format!("{server} to answer {name} with {address}"),
        timeout,
        || {
            let answer = dig_at(client, server.ip(), server.port(), name, "A")?;
            if answer.data_of("A") == [address.to_string()] {
                Ok(answer)
            } else {
                Err(format!("{} {:?}", answer.status, answer.data_of("A")))
            }
        },
    )
}

/// Waits until `curl http://address/` from `client` answers 200 with a body `accept` takes; returns the body.
pub fn wait_http_ok(
    client: &Host,
    address: Ipv4Addr,
    accept: impl Fn(&str) -> bool,
    timeout: Duration,
) -> crate::Result<String> {
    crate::wait::until_blocking(
        &format!("HTTP from the client to {address}"),
        timeout,
        || {
            let (status, body) = curl(client, address)?;
            if status == 200 && accept(body.trim()) {
                Ok(body.trim().to_owned())
            } else {
                Err(format!("HTTP {status}: {}", body.trim()))
            }
        },
    )
}

/// `mac` as `arping` and `ndisc6` print it: lower-case hex pairs joined by colons.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A MAC address as the probes record it; [`mac_text`] prints it as `arping` does.
pub type Mac = [u8; 6];

/// A client asking who has an address at a steady rate, as a host does while it talks to it: one broadcast
/// ARP request every `every` from a raw socket in the client's namespace, recording every reply with the request
/// it answers. Its timing is the network's (unlike `arping` run again and again, which waits a whole second on a
/// request nobody answers): a silence is measured to within `every`, and two MACs answering one request means
/// two nodes announced the address at once, which a move from one node to the next never shows. Everything it
/// tells is worked out from the recorded [`ArpExchange`]s. Stopped on drop.
pub struct ArpProbe {
    exchanges: Arc<Mutex<Vec<ArpExchange>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The longest wait an [`ArpProbe`] saw: how long, from which request, and who answered before and after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArpWait {
    /// From the request to the first reply at or after it (or to now if none came).
    pub length: Duration,
    /// When that request went out.
    pub asked: Option<Instant>,
    /// Who answered it (or the next request that was answered); `None` if nobody has yet.
    pub answered_by: Option<Mac>,
    /// Who answered the last request answered before it.
    pub answered_before: Option<Mac>,
}

impl ArpWait {
    /// Says where the wait was, relative to `from`.
    pub fn describe(&self, from: Instant) -> String {
        match self.asked {
            Some(asked) => format!(
                "{:?} from a request {:.3} s after the start; answered before by {}, then by {}",
                self.length,
                asked.saturating_duration_since(from).as_secs_f64(),
                self.answered_before
                    .map_or_else(|| "nobody".to_owned(), mac_text),
                self.answered_by
                    .map_or_else(|| "nobody yet".to_owned(), mac_text),
            ),
            None => "no request sent".to_owned(),
        }
    }
}

/// One request and the replies that came before the next one.
#[derive(Clone, PartialEq, Eq)]
pub struct ArpExchange {
    /// When the request went out.
    pub sent: Instant,
    /// Each reply's arrival and sender MAC.
    pub replies: Vec<(Instant, Mac)>,
}

impl std::fmt::Debug for ArpExchange {
    // The MACs as `arping` prints them, so that a failed assertion reads like the tools' output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replies: Vec<(Instant, String)> = self
            .replies
            .iter()
            .map(|(at, mac)| (*at, mac_text(*mac)))
            .collect();
        f.debug_struct("ArpExchange")
            .field("sent", &self.sent)
            .field("replies", &replies)
            .finish()
    }
}

impl ArpProbe {
    /// Starts probing `address` from `client` every `every`.
    pub fn start(client: &Host, address: Ipv4Addr, every: Duration) -> crate::Result<Self> {
        use pnet::datalink::{self, Channel};
        let own_mac = client.mac()?;
        let channel = client.run(move || {
            let interface = datalink::interfaces()
                .into_iter()
                .find(|i| i.name == HOST_INTERFACE)?;
            let config = datalink::Config {
                read_timeout: Some(Duration::from_millis(2)),
                ..datalink::Config::default()
            };
            match datalink::channel(&interface, config) {
                Ok(Channel::Ethernet(tx, rx)) => Some((tx, rx)),
                _ => None,
            }
        })?;
        let (mut tx, mut rx) = channel.ok_or_else(|| {
            crate::HarnessError::Setup(format!(
                "no raw socket on {HOST_INTERFACE} in {}",
                client.netns
            ))
        })?;
        let request = arp_request(own_mac, client.ipv4, address);
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (exchanges.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if tx.send_to(&request, None).is_some_and(|r| r.is_ok())
                    && let Ok(mut all) = sink.lock()
                {
                    all.push(ArpExchange {
                        sent,
                        replies: Vec::new(),
                    });
                }
                while sent.elapsed() < every {
                    let Ok(frame) = rx.next() else { continue };
                    if let Some(mac) = arp_reply_from(frame, address, own_mac)
                        && let Ok(mut all) = sink.lock()
                        && let Some(last) = all.last_mut()
                    {
                        last.replies.push((Instant::now(), mac));
                    }
                }
            }
        });
        Ok(Self {
            exchanges,
            stop,
            thread: Some(thread),
        })
    }

    /// Every request so far, with its replies.
    pub fn exchanges(&self) -> Vec<ArpExchange> {
        self.exchanges.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Every reply so far, in the order they came: when, and from which MAC.
    pub fn replies(&self) -> Vec<(Instant, Mac)> {
        replies(&self.exchanges())
    }

    /// How many replies came.
    pub fn answers(&self) -> usize {
        self.exchanges().iter().map(|e| e.replies.len()).sum()
    }

    /// The distinct MACs that answered, in the order they first did.
    pub fn macs(&self) -> Vec<Mac> {
        let mut macs: Vec<Mac> = Vec::new();
        for (_, mac) in self.replies() {
            if !macs.contains(&mac) {
                macs.push(mac);
            }
        }
        macs
    }

    /// When `mac` last answered, if it ever did.
    pub fn last_reply_from(&self, mac: Mac) -> Option<Instant> {
        self.replies()
            .into_iter()
            .filter(|(_, m)| *m == mac)
            .map(|(at, _)| at)
            .max()
    }

    /// The longest time between two consecutive replies (zero before the second one). Unlike
    /// [`ArpProbe::longest_wait`], a stall of the probing thread itself counts as a silence.
    pub fn longest_silence(&self) -> Duration {
        self.replies()
            .windows(2)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .unwrap_or_default()
    }

    /// The longest a client asking at this rate waited for an answer: from a request to the first reply at or
    /// after it (its own or a later request's), or to now when none came. Measured from requests, not between
    /// replies, so that a stall of the probing thread itself (a busy machine) is not taken for a silence of
    /// the network; [`ArpProbe::longest_send_gap`] tells how steadily the requests went out.
    pub fn longest_wait(&self) -> ArpWait {
        let exchanges = self.exchanges();
        let mut longest = ArpWait::default();
        // Walking backwards, the first reply at or after each request is known when it is reached.
        let mut next_reply: Option<(Instant, Mac)> = None;
        let mut before: Vec<Option<Mac>> = Vec::with_capacity(exchanges.len());
        let mut last: Option<Mac> = None;
        for exchange in &exchanges {
            before.push(last);
            if let Some((_, mac)) = exchange.replies.last() {
                last = Some(*mac);
            }
        }
        for (exchange, answered_before) in exchanges.iter().zip(before).rev() {
            if let Some(first) = exchange.replies.first() {
                next_reply = Some(*first);
            }
            let until = next_reply.map_or_else(Instant::now, |(at, _)| at);
            let length = until.saturating_duration_since(exchange.sent);
            if length >= longest.length {
                longest = ArpWait {
                    length,
                    asked: Some(exchange.sent),
                    answered_by: next_reply.map(|(_, mac)| mac),
                    answered_before,
                };
            }
        }
        longest
    }

    /// The longest time between two requests going out (the prober's own steadiness; `every` when the
    /// machine keeps up).
    pub fn longest_send_gap(&self) -> Duration {
        self.exchanges()
            .windows(2)
            .map(|w| w[1].sent.saturating_duration_since(w[0].sent))
            .max()
            .unwrap_or_default()
    }

    /// Waits until some node answered a request (the probe sees the announcer before a fault is injected).
    pub fn wait_first_reply(&self, timeout: Duration) -> crate::Result<()> {
        crate::wait::until_blocking("the probe to see the announcer", timeout, || {
            (self.answers() > 0)
                .then_some(())
                .ok_or_else(|| "no reply yet".to_owned())
        })
    }

    /// Waits for a reply from a MAC other than `old`; returns the first such reply: when it came, and the MAC.
    pub fn wait_other_than(&self, old: Mac, timeout: Duration) -> crate::Result<(Instant, Mac)> {
        crate::wait::until_blocking("a reply from another node", timeout, || {
            self.replies()
                .into_iter()
                .find(|(_, m)| *m != old)
                .ok_or_else(|| "only the old node answers (or nobody)".to_owned())
        })
    }

    /// Without asserting: how many requests more than one MAC answered, and how many times the answering
    /// MAC changed from one answered request to the next (two nodes answering alternately show as many).
    /// Stricter than [`ArpProbe::double_answers`]: a handover within one request counts as two answering.
    pub fn two_answering(&self) -> (usize, usize) {
        two_answering(&self.exchanges())
    }

    /// Asserts that no two MACs ever answered at once: each request was answered by one MAC, and the
    /// answering MAC changed at most `max_changes` times (two nodes answering alternately would show as many
    /// changes). Panics with the offending request or sequence otherwise (an assertion helper for tests, like
    /// [`crate::daemon::assert_lifecycle`]).
    pub fn assert_never_two_answering(&self, max_changes: usize) {
        let exchanges = self.exchanges();
        for (request, exchange) in exchanges.iter().enumerate() {
            let distinct = distinct_macs(exchange);
            assert!(
                distinct.len() <= 1,
                "request {request} answered by {:?}",
                distinct.iter().map(|m| mac_text(*m)).collect::<Vec<_>>()
            );
        }
        let sequence = answering_sequence(&exchanges);
        assert!(
            sequence.len() <= max_changes + 1,
            "the answering node changed {} times: {:?}",
            sequence.len().saturating_sub(1),
            sequence.iter().map(|m| mac_text(*m)).collect::<Vec<_>>()
        );
    }

    /// The requests that more than one node answered as holders at once: see [`double_answers`].
    pub fn double_answers(&self) -> Vec<ArpExchange> {
        double_answers(&self.exchanges(), HANDOVER_QUIET)
    }
}

/// Every reply of `exchanges`, in order.
fn replies(exchanges: &[ArpExchange]) -> Vec<(Instant, Mac)> {
    exchanges
        .iter()
        .flat_map(|e| e.replies.iter().copied())
        .collect()
}

/// The MACs that answered `exchange`, in the order they first did.
fn distinct_macs(exchange: &ArpExchange) -> Vec<Mac> {
    let mut macs: Vec<Mac> = Vec::new();
    for (_, mac) in &exchange.replies {
        if !macs.contains(mac) {
            macs.push(*mac);
        }
    }
    macs
}

/// The first MAC to answer each answered request, with repeats collapsed: one entry per answering spell.
fn answering_sequence(exchanges: &[ArpExchange]) -> Vec<Mac> {
    let mut sequence: Vec<Mac> = exchanges
        .iter()
        .filter_map(|e| e.replies.first().map(|(_, mac)| *mac))
        .collect();
    sequence.dedup();
    sequence
}

/// See [`ArpProbe::two_answering`].
fn two_answering(exchanges: &[ArpExchange]) -> (usize, usize) {
    let doubled = exchanges
        .iter()
        .filter(|e| distinct_macs(e).len() > 1)
        .count();
    let changes = answering_sequence(exchanges).len().saturating_sub(1);
    (doubled, changes)
}

/// After a handover inside one request's window, how long the old holder must stay silent for the
/// exchange to count as a handover rather than two answerers.
const HANDOVER_QUIET: Duration = Duration::from_secs(1);

/// The exchanges that more than one MAC answered, except a clean handover: the old holder's replies all
/// came before the new holder's first one, and the old holder answered nothing in the `quiet` after. A
/// new holder may answer requests that waited in its socket from before it took over (a responder thread
/// the machine did not schedule for a few tens of milliseconds answers them when it runs, by then as the
/// holder); that is one answerer at a time. Two nodes answering as holders at once shows as replies that
/// interleave, or the old holder answering again.
fn double_answers(exchanges: &[ArpExchange], quiet: Duration) -> Vec<ArpExchange> {
    exchanges
        .iter()
        .enumerate()
        .filter(|(i, exchange)| {
            let macs = distinct_macs(exchange);
            let [old, new] = macs.as_slice() else {
                return macs.len() > 1;
            };
            let old_last = exchange
                .replies
                .iter()
                .filter(|(_, m)| m == old)
                .map(|(t, _)| *t)
                .max();
            let new_first = exchange
                .replies
                .iter()
                .filter(|(_, m)| m == new)
                .map(|(t, _)| *t)
                .min();
            let handed_over = old_last <= new_first;
            let until = exchange.sent + quiet;
            let old_again = exchanges[i + 1..]
                .iter()
                .take_while(|later| later.sent <= until)
                .any(|later| later.replies.iter().any(|(_, m)| m == old));
            !handed_over || old_again
        })
        .map(|(_, exchange)| exchange.clone())
        .collect()
}

impl Drop for ArpProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A broadcast ARP request from `mac`/`ip` asking who has `target`.
fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    use pnet::packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
    use pnet::packet::ethernet::{EtherTypes, MutableEthernetPacket};
    use pnet::util::MacAddr;
    let mut frame = vec![0u8; 42];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(MacAddr::broadcast());
        ethernet.set_source(MacAddr::from(mac));
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[14..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(MacAddr::from(mac));
        arp.set_sender_proto_addr(ip);
        arp.set_target_hw_addr(MacAddr::zero());
        arp.set_target_proto_addr(target);
    }
    frame
}

/// The sender MAC of `frame` if it is an ARP reply to `to` saying who has `address`.
fn arp_reply_from(frame: &[u8], address: Ipv4Addr, to: Mac) -> Option<Mac> {
    use pnet::packet::arp::{ArpOperations, ArpPacket};
    use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(&frame[14..])?;
    (arp.get_operation() == ArpOperations::Reply
        && arp.get_sender_proto_addr() == address
        && arp.get_target_hw_addr().octets() == to)
        .then(|| arp.get_sender_hw_addr().octets())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MAC named by one letter, for readable exchanges.
    fn mac(name: &str) -> Mac {
        [2, 0, 0, 0, 0, name.as_bytes().first().copied().unwrap_or(0)]
    }

    #[test]
    fn two_answerers_are_told_from_a_handover_within_one_request() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let exchange = |sent: u64, replies: &[(u64, &str)]| ArpExchange {
            sent: ms(sent),
            replies: replies.iter().map(|(t, m)| (ms(*t), mac(m))).collect(),
        };
        // The old holder answers, then the new one answers requests queued before it took over.
        let handover = vec![
            exchange(0, &[(0, "a")]),
            exchange(20, &[(20, "a"), (27, "b"), (27, "b")]),
            exchange(40, &[(40, "b")]),
            exchange(60, &[(60, "b")]),
        ];
        assert!(double_answers(&handover, Duration::from_secs(1)).is_empty());
        // Both answer the next request too: two holders.
        let mut both = handover.clone();
        both[2] = exchange(40, &[(40, "b"), (41, "a")]);
        assert_eq!(double_answers(&both, Duration::from_secs(1)).len(), 2);
        // Interleaved within one request.
        let interleaved = vec![exchange(0, &[(0, "a"), (1, "b"), (2, "a")])];
        assert_eq!(
            double_answers(&interleaved, Duration::from_secs(1)).len(),
            1
        );
        // The old holder answering again within the quiet time makes the first one a double too.
        let back = vec![
            exchange(0, &[(0, "a"), (5, "b")]),
            exchange(20, &[(20, "a")]),
        ];
        assert_eq!(double_answers(&back, Duration::from_secs(1)).len(), 1);
        // Three MACs for one request is never a handover.
        let three = vec![exchange(0, &[(0, "a"), (1, "b"), (2, "c")])];
        assert_eq!(double_answers(&three, Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn two_answering_counts_requests_with_two_macs_and_changes_of_answerer() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let exchange = |sent: u64, replies: &[(u64, &str)]| ArpExchange {
            sent: ms(sent),
            replies: replies.iter().map(|(t, m)| (ms(*t), mac(m))).collect(),
        };
        // A move with a handover inside one request: that request counts as two answering (strict), one change.
        let moved = vec![
            exchange(0, &[(0, "a")]),
            exchange(10, &[(10, "a"), (15, "b")]),
            exchange(20, &[]),
            exchange(30, &[(30, "b")]),
        ];
        assert_eq!(two_answering(&moved), (1, 1));
        assert_eq!(answering_sequence(&moved), [mac("a"), mac("b")]);
        // Taking turns, one MAC per request: no request doubled, but every turn is a change.
        let turns = vec![
            exchange(0, &[(0, "a")]),
            exchange(10, &[(10, "b")]),
            exchange(20, &[(20, "a")]),
        ];
        assert_eq!(two_answering(&turns), (0, 2));
        assert_eq!(
            replies(&turns),
            [(ms(0), mac("a")), (ms(10), mac("b")), (ms(20), mac("a"))]
        );
    }

    #[test]
    fn a_request_is_a_broadcast_arp_asking_for_the_address_and_its_reply_is_recognised() {
        let client = [2, 0, 0, 0, 0, 0xc8];
        let request = arp_request(
            client,
            Ipv4Addr::new(10, 10, 40, 200),
            Ipv4Addr::new(10, 10, 39, 200),
        );
        assert_eq!(request[..6], [0xff; 6]);
        assert_eq!(request[12..14], [0x08, 0x06]);
        // A reply: the node's MAC and the address as sender, the client as target.
        let node = [2, 0, 0, 0, 0, 0x0a];
        let mut reply = request.clone();
        reply[..6].copy_from_slice(&client);
        reply[6..12].copy_from_slice(&node);
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[22..28].copy_from_slice(&node);
        reply[28..32].copy_from_slice(&[10, 10, 39, 200]);
        reply[32..38].copy_from_slice(&client);
        reply[38..42].copy_from_slice(&[10, 10, 40, 200]);
        assert_eq!(
            arp_reply_from(&reply, Ipv4Addr::new(10, 10, 39, 200), client),
            Some(node)
        );
        assert_eq!(
            arp_reply_from(&reply, Ipv4Addr::new(10, 10, 39, 201), client),
            None
        );
        assert_eq!(
            arp_reply_from(&request, Ipv4Addr::new(10, 10, 39, 200), client),
            None
        );
    }

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
