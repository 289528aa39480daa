//! The supervisor: brings the whole system up on the test bed's parts, applies the seed scenario, checks
//! it from the client namespace, then holds every handle until told to stop (SIGTERM), keeping the
//! speakers' forwarders pointed at the leading controller and the Node objects' heartbeats fresh.
//!
//! Every handle here stops its process or removes its namespace on drop, so leaving [`supervise`] (normal
//! stop, failed bring-up, interrupted bring-up) tears down whatever exists; the state file lets `lab down`
//! finish the job by PID when the supervisor itself was killed.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::seed;
use super::state::{LabState, Phase, StateDir, Tracked, start_time};
use crate::certs::{Ca, Usage};
use crate::daemon::{Daemon, etcd_flags};
use crate::etcd::Etcd;
use crate::forward::Forward;
use crate::kube::KubeCluster;
use crate::netlab::{Host, LabNetwork, LabSpec};
use crate::process::{Process, free_port};
use crate::{HarnessError, Result, http, io_err, wait};

/// The seed's node names.
pub const NODES: [&str; 3] = ["m1", "n1", "n2"];
/// Nodes running a dns-server replica (on their lab address, port 53).
pub const DNS_NODES: [&str; 2] = ["m1", "n1"];
/// The name the seed scenario publishes.
pub const HOSTNAME: &str = "nginx.test.org";
/// The address the seed scenario expects for it.
pub const EXPECTED_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 200);
/// How long each condition of the bring-up is waited for.
const WAIT: Duration = Duration::from_secs(60);

/// Progress lines and the state file, written as the bring-up goes.
pub struct Recorder {
    dir: StateDir,
    state: LabState,
    started: Instant,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn new(dir: StateDir, stop: Arc<AtomicBool>) -> Result<Self> {
        std::fs::create_dir_all(dir.files())
            .map_err(io_err(format!("creating {}", dir.files().display())))?;
        let _ = std::fs::remove_file(dir.progress_file());
        let mut state = LabState::new_for_self();
        state.supervisor.log = dir.supervisor_log().display().to_string();
        let recorder = Self {
            dir,
            state,
            started: Instant::now(),
            stop,
        };
        recorder.dir.write(&recorder.state)?;
        Ok(recorder)
    }

    /// Appends a progress line; fails if a stop was requested meanwhile (the bring-up is abandoned).
    fn step(&mut self, message: &str) -> Result<()> {
        self.note(message);
        if self.stop.load(Ordering::SeqCst) {
            return Err(HarnessError::Setup(
                "stopped on request during bring-up".to_owned(),
            ));
        }
        Ok(())
    }

    /// Appends a progress line.
    fn note(&self, message: &str) {
        use std::io::Write;
        let line = format!(
            "[{:6.1}s] {message}\n",
            self.started.elapsed().as_secs_f64()
        );
        if let Ok(mut file) = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.progress_file())
        {
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn track(&mut self, process: &Process) -> Result<()> {
        self.state.processes.push(Tracked {
            name: process.name().to_owned(),
            pid: process.pid(),
            start_time: start_time(process.pid()).unwrap_or_default(),
            log: process.log_path().display().to_string(),
        });
        self.dir.write(&self.state)
    }

    fn save(&self) -> Result<()> {
        self.dir.write(&self.state)
    }
}

/// The whole system. Fields drop in order: the data plane's helpers and the daemons first, then the
/// control plane, the namespaces last.
struct Lab {
    http: Vec<Process>,
    dns_servers: Vec<Process>,
    _dns_forwards: Vec<Forward>,
    dns_sync: Daemon,
    speakers: Vec<Process>,
    forwards: Vec<Forward>,
    controllers: Vec<(Daemon, SocketAddr)>,
    leader: usize,
    _dns_etcd: Etcd,
    cluster: KubeCluster,
    network: LabNetwork,
    runtime: Runtime,
}

/// Runs the supervisor in `dir` until SIGTERM/SIGINT: brings the lab up, records it, keeps it running,
/// tears it down. Bring-up failures are recorded in the state (phase `failed`) and returned.
pub fn supervise(dir: StateDir) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("starting the async runtime"))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let _guard = runtime.enter();
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
        let flag = stop.clone();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    // The terminal that ran `lab up` may go away; the lab stays.
                    _ = hup.recv() => continue,
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
    }
    let mut recorder = Recorder::new(dir, stop.clone())?;
    let mut lab = match bring_up(&mut recorder, runtime) {
        Ok(lab) => lab,
        Err(e) => {
            recorder.note(&format!("FAILED: {e}"));
            recorder.state.phase = Phase::Failed;
            recorder.state.error = Some(e.to_string());
            recorder.save()?;
            return Err(e);
        }
    };
    recorder.state.phase = Phase::Ready;
    recorder.save()?;
    recorder.note("ready");
    run(&mut lab, &mut recorder, &stop);
    recorder.note("stopping: daemons, control plane, namespaces");
    recorder.state.phase = Phase::Stopping;
    recorder.save()?;
    drop(lab);
    recorder.note("stopped");
    Ok(())
}

fn bring_up(rec: &mut Recorder, runtime: Runtime) -> Result<Lab> {
    let files = rec.dir.files();
    let binary = |name: &str| -> Result<String> {
        Ok(crate::process::workspace_binary(name)?
            .display()
            .to_string())
    };
    let (controller_bin, speaker_bin, sync_bin, server_bin) = (
        binary("lb-controller")?,
        binary("lb-speaker")?,
        binary("dns-sync")?,
        binary("dns-server")?,
    );

    rec.step("lab network: a bridge with node namespaces m1, n1, n2 and a client namespace")?;
    let network = LabNetwork::create(&LabSpec::seed())?;
    rec.state.namespaces = network.hosts().iter().map(|h| h.netns.clone()).collect();
    rec.state.namespaces.push(network.switch_netns().to_owned());
    rec.save()?;
    let host = |name: &str| -> Result<Host> {
        network
            .host(name)
            .cloned()
            .ok_or_else(|| HarnessError::Setup(format!("no host {name} in the seed lab")))
    };

    rec.step("control plane: etcd, kube-apiserver, kube-controller-manager")?;
    let mut cluster = runtime.block_on(KubeCluster::start_with_controller_manager())?;
    rec.track(cluster.etcd().process())?;
    rec.track(cluster.apiserver())?;
    if let Some(kcm) = cluster.controller_manager() {
        rec.track(kcm)?;
    }
    rec.state.dirs.push(cluster.dir().display().to_string());
    let kubeconfig = rec.dir.path().join("kubeconfig");
    std::fs::copy(cluster.kubeconfig(), &kubeconfig).map_err(io_err(format!(
        "copying the kubeconfig to {}",
        kubeconfig.display()
    )))?;
    let kubeconfig = kubeconfig.display().to_string();
    rec.state.kubeconfig = Some(kubeconfig.clone());
    rec.save()?;
    let client = cluster.client();

    rec.step(
        "IPPool CRD, Node objects m1, n1, n2 (Ready, heartbeats kept fresh by the supervisor)",
    )?;
    runtime.block_on(seed::install_crd_and_nodes(&cluster, &NODES))?;

    rec.step("DNS etcd (TLS, client certificates)")?;
    let mut dns_etcd = runtime.block_on(Etcd::start_tls())?;
    rec.track(dns_etcd.process())?;

    rec.step("certificates for lb-controller <-> lb-speaker mutual TLS")?;
    let ca = Ca::new("groundwork lab CA")?;
    let server = ca.issue_files(&files, "lb-controller", &[], &["127.0.0.1"], Usage::Server)?;
    let speaker = ca.issue_files(&files, "lb-speaker", &[], &[], Usage::Client)?;

    rec.step("lb-controller: two replicas with leader election")?;
    let mut controllers = Vec::new();
    for replica in 0..2 {
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let pod = format!("lab-controller-{replica}");
        let args = [
            "--kubeconfig",
            &kubeconfig,
            "--grpc-listen",
            &grpc.to_string(),
            "--tls-cert",
            &server.cert.display().to_string(),
            "--tls-key",
            &server.key.display().to_string(),
            "--tls-ca",
            &server.ca.display().to_string(),
            "--leader-elect",
            "--pod-name",
            &pod,
        ]
        .map(str::to_owned);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut daemon = Daemon::start(&controller_bin, &args)?;
        rec.track(daemon.process())?;
        controllers.push((daemon, grpc));
    }
    let leader = wait::until_blocking("a controller replica to lead", WAIT, || {
        leading(&controllers).ok_or_else(|| "no replica ready".to_owned())
    })?;
    rec.step(&format!("lab-controller-{leader} leads"))?;

    rec.step("lb-speaker in m1, n1, n2 (mutual TLS, through a forwarder to the leader)")?;
    let mut forwards = Vec::new();
    let mut speakers = Vec::new();
    for node in NODES {
        let host = host(node)?;
        let forward = Forward::start(&host, controllers[leader].1)?;
        let mut command = host.command(&speaker_bin);
        command.args([
            "--controller",
            &format!("https://127.0.0.1:{}", forward.local().port()),
            "--node-name",
            node,
            "--ops-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--interfaces",
            "^eth0$",
            "--tls-cert",
            &speaker.cert.display().to_string(),
            "--tls-key",
            &speaker.key.display().to_string(),
            "--tls-ca",
            &speaker.ca.display().to_string(),
        ]);
        let process = Process::spawn(
            &format!("lb-speaker on {node}"),
            command,
            &files.join(format!("lb-speaker-{node}.log")),
        )?;
        rec.track(&process)?;
        forwards.push(forward);
        speakers.push(process);
    }

    rec.step("dns-sync (owner id lab, Services and Ingresses -> DNS etcd)")?;
    let mut sync_args = vec![
        "--kubeconfig".to_owned(),
        kubeconfig.clone(),
        "--owner-id".to_owned(),
        "lab".to_owned(),
        "--domain-filter".to_owned(),
        "test.org".to_owned(),
    ];
    sync_args.extend(etcd_flags(&dns_etcd));
    let sync_args: Vec<&str> = sync_args.iter().map(String::as_str).collect();
    let mut dns_sync = Daemon::start(&sync_bin, &sync_args)?;
    rec.track(dns_sync.process())?;
    dns_sync.wait_ready(WAIT)?;

    rec.step("dns-server: replicas in m1 and n1 on port 53, zone test.org, reading the DNS etcd")?;
    let etcd_addr: SocketAddr = dns_etcd
        .endpoint()
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| HarnessError::Setup(format!("etcd endpoint {}: {e}", dns_etcd.endpoint())))?;
    let tls = dns_etcd
        .client_tls()
        .cloned()
        .ok_or_else(|| HarnessError::Setup("the DNS etcd has no TLS files".to_owned()))?;
    let mut dns_forwards = Vec::new();
    let mut dns_servers = Vec::new();
    for node in DNS_NODES {
        let host = host(node)?;
        let forward = Forward::start(&host, etcd_addr)?;
        let mut command = host.command(&server_bin);
        command.args([
            "--zone",
            "test.org",
            "--listen",
            &format!("{}:53", host.ipv4),
            "--etcd-endpoints",
            &format!("https://127.0.0.1:{}", forward.local().port()),
            "--etcd-ca-file",
            &tls.ca.display().to_string(),
            "--etcd-cert-file",
            &tls.cert.display().to_string(),
            "--etcd-key-file",
            &tls.key.display().to_string(),
            "--ops-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        let process = Process::spawn(
            &format!("dns-server on {node}"),
            command,
            &files.join(format!("dns-server-{node}.log")),
        )?;
        rec.track(&process)?;
        dns_forwards.push(forward);
        dns_servers.push(process);
    }

    rec.step(
        "seed scenario: IPPool 10.10.39.200-10.10.39.220, ingress-nginx Service (LoadBalancer), demo Deployment + Service, Ingress nginx.test.org",
    )?;
    runtime.block_on(seed::apply(&client))?;
    let (address, announcer) = runtime.block_on(seed::wait_announced(&client, WAIT))?;
    rec.step(&format!(
        "ingress-nginx-controller got {address}, announced by {announcer}; writing it into the Ingress status"
    ))?;
    runtime.block_on(seed::set_ingress_status(&client, address))?;

    rec.step(&format!(
        "HTTP servers in the node namespaces ({address} on lo, arp_ignore=1 on eth0: only the speaker answers ARP)"
    ))?;
    let mut http_servers = Vec::new();
    for node in NODES {
        let host = host(node)?;
        for sysctl in [
            "net.ipv4.conf.eth0.arp_ignore=1",
            "net.ipv4.conf.eth0.arp_announce=2",
        ] {
            run_ok(host.command("sysctl").args(["-q", "-w", sysctl]))?;
        }
        crate::netlab::ip(&[
            "-n",
            &host.netns,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "lo",
        ])?;
        let www = files.join(format!("www-{node}"));
        std::fs::create_dir_all(&www).map_err(io_err(format!("creating {}", www.display())))?;
        std::fs::write(
            www.join("index.html"),
            format!("groundwork lab: served by {node}\n"),
        )
        .map_err(io_err("writing index.html"))?;
        let mut command = host.command("python3");
        command.args([
            "-m",
            "http.server",
            "80",
            "--bind",
            "0.0.0.0",
            "--directory",
            &www.display().to_string(),
        ]);
        let process = Process::spawn(
            &format!("http server on {node}"),
            command,
            &files.join(format!("http-{node}.log")),
        )?;
        rec.track(&process)?;
        http_servers.push(process);
    }

    let lab = Lab {
        http: http_servers,
        dns_servers,
        _dns_forwards: dns_forwards,
        dns_sync,
        speakers,
        forwards,
        controllers,
        leader,
        _dns_etcd: dns_etcd,
        cluster,
        network,
        runtime,
    };
    rec.step("checking from the client namespace: ARP, DNS, HTTP")?;
    let summary = check(&lab, rec, address, &announcer)?;
    rec.state.summary = summary;
    rec.save()?;
    Ok(lab)
}

/// The checks a user wants to see, run from the client namespace; returns the summary lines.
fn check(lab: &Lab, rec: &Recorder, address: Ipv4Addr, announcer: &str) -> Result<Vec<String>> {
    let client = lab
        .network
        .host("client")
        .ok_or_else(|| HarnessError::Setup("no client host".to_owned()))?;
    let announcer_host = lab.network.host(announcer).ok_or_else(|| {
        HarnessError::Setup(format!("announcing node {announcer} is no lab host"))
    })?;
    let announcer_mac = mac_text(announcer_host.mac()?);

    let macs = wait::until_blocking("ARP answers for the address from the client", WAIT, || {
        let macs = arping(client, address)?;
        if macs.is_empty() {
            Err("no reply".to_owned())
        } else {
            Ok(macs)
        }
    })?;
    if macs != [announcer_mac.clone()] {
        return Err(HarnessError::Setup(format!(
            "ARP for {address} answered by {macs:?}, expected only {announcer} ({announcer_mac})"
        )));
    }
    rec.note(&format!(
        "arping {address}: one MAC answers, {announcer_mac} ({announcer})"
    ));

    let mut dns_lines = Vec::new();
    for node in DNS_NODES {
        let server = lab
            .network
            .host(node)
            .map(|h| h.ipv4)
            .ok_or_else(|| HarnessError::Setup(format!("no host {node}")))?;
        let answer = wait::until_blocking(
            &format!("dns-server on {node} to answer {HOSTNAME} with {address}"),
            WAIT,
            || {
                let answer = dig(client, server)?;
                if answer.data_of("A") == [address.to_string()] {
                    Ok(answer)
                } else {
                    Err(format!("{} {:?}", answer.status, answer.data_of("A")))
                }
            },
        )?;
        let aa = if answer.has_flag("aa") { ", aa" } else { "" };
        rec.note(&format!("dig @{server} {HOSTNAME}: {address}{aa}"));
        dns_lines.push(format!(
            "  dig @{server} {HOSTNAME} (dns-server on {node}): {address} ({}{aa})",
            answer.status
        ));
    }

    let (status, body) =
        wait::until_blocking(&format!("HTTP from the client to {address}"), WAIT, || {
            let (status, body) = curl(client, address)?;
            if status == 200 {
                Ok((status, body))
            } else {
                Err(format!("HTTP {status}"))
            }
        })?;
    rec.note(&format!("curl http://{address}/: {status} {}", body.trim()));

    let mut lines = vec![
        format!(
            "kubeconfig: {}",
            rec.state.kubeconfig.clone().unwrap_or_default()
        ),
        format!("  (KUBECONFIG=... kubectl get svc -A; kubectl get ippools; kubectl get ingress)"),
        format!("service ingress-nginx/ingress-nginx-controller external address: {address}"),
        format!("announcing node: {announcer} (MAC {announcer_mac})"),
        format!("arping {address} from client: answered by {announcer_mac} only"),
        format!("dig {HOSTNAME} from client: {address}"),
    ];
    lines.extend(dns_lines);
    lines.push(format!(
        "http://{address}/ from client: {status} \"{}\"",
        body.trim()
    ));
    lines.push(format!(
        "controllers: lab-controller-0, lab-controller-1 (leader: lab-controller-{})",
        lab.leader
    ));
    let namespaces: Vec<String> = lab
        .network
        .hosts()
        .iter()
        .map(|h| format!("{}={}", h.name, h.netns))
        .collect();
    lines.push(format!(
        "namespaces: {} (e.g. ip netns exec <ns> dig @10.10.40.10 {HOSTNAME})",
        namespaces.join(" ")
    ));
    lines.push(format!("logs and state: {}", rec.dir.path().display()));
    Ok(lines)
}

/// Holds the lab until a stop is requested: forwarders follow the leader, node heartbeats stay fresh,
/// processes that exit are reported once.
fn run(lab: &mut Lab, rec: &mut Recorder, stop: &AtomicBool) {
    let mut last_heartbeat = Instant::now();
    let mut reported: Vec<String> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(leader) = leading(&lab.controllers)
            && leader != lab.leader
        {
            for forward in &lab.forwards {
                forward.set_upstream(lab.controllers[leader].1);
            }
            lab.leader = leader;
            rec.note(&format!(
                "lab-controller-{leader} leads now; the speakers' forwarders follow it"
            ));
        }
        if last_heartbeat.elapsed() > Duration::from_secs(10) {
            last_heartbeat = Instant::now();
            let client = lab.cluster.client();
            if let Err(e) = lab.runtime.block_on(seed::heartbeat_nodes(&client, &NODES)) {
                rec.note(&format!("node heartbeat failed: {e}"));
            }
        }
        let processes = lab
            .http
            .iter_mut()
            .chain(lab.dns_servers.iter_mut())
            .chain(lab.speakers.iter_mut())
            .chain(lab.controllers.iter_mut().map(|(d, _)| d.process()))
            .chain(std::iter::once(lab.dns_sync.process()));
        for process in processes {
            if let Some(status) = process.poll_exit()
                && !reported.contains(&process.name().to_owned())
            {
                reported.push(process.name().to_owned());
                rec.note(&format!(
                    "WARNING: {} exited ({status}); log {}",
                    process.name(),
                    process.log_path().display()
                ));
            }
        }
    }
}

/// The replica whose `/readyz` answers 200 (with leader election, only the leader is ready).
fn leading(controllers: &[(Daemon, SocketAddr)]) -> Option<usize> {
    controllers.iter().position(|(daemon, _)| {
        http::get(daemon.ops_addr(), "/readyz").is_ok_and(|r| r.status == 200)
    })
}

fn run_ok(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .map_err(io_err(format!("running {command:?}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: format!("{command:?}"),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `arping` from `client`: the MACs that answered (lower case, deduplicated).
fn arping(client: &Host, address: Ipv4Addr) -> std::result::Result<Vec<String>, String> {
    let out = client
        .command("arping")
        .args(["-c", "3", "-w", "3", "-I", "eth0", &address.to_string()])
        .output()
        .map_err(|e| format!("arping: {e}"))?;
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_ascii_lowercase()))
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// `dig @server nginx.test.org A` from `client`.
fn dig(client: &Host, server: Ipv4Addr) -> std::result::Result<crate::dig::Answer, String> {
    let out = client
        .command("dig")
        .args([
            &format!("@{server}"),
            HOSTNAME,
            "A",
            "+norecurse",
            "+time=2",
            "+tries=1",
        ])
        .output()
        .map_err(|e| format!("dig: {e}"))?;
    let raw = String::from_utf8_lossy(&out.stdout);
    crate::dig::parse(&raw).ok_or_else(|| format!("no answer: {}", raw.trim()))
}

/// `curl http://address/` from `client`: status and body.
fn curl(client: &Host, address: Ipv4Addr) -> std::result::Result<(u16, String), String> {
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
