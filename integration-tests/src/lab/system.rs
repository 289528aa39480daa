//! The lab's bring-up and its handle, [`Lab`]: the whole system on the test bed's parts, the seed scenario
//! applied and checked from the client namespace. The supervisor ([`supervise`]) holds one until told to
//! stop (SIGTERM); the end-to-end and fault suites (`integration-tests/tests/lab_*.rs`) start their own,
//! with their own state directory, and drive it in-process.
//!
//! While a [`Lab`] lives, a keeper thread points the speakers' forwarders at the leading controller and
//! keeps the Node objects' heartbeats fresh. Every handle here stops its process or removes its namespace
//! on drop, so dropping a [`Lab`] (normal stop, failed bring-up, interrupted bring-up, a failed test)
//! tears down whatever exists; the state file lets `lab down` finish the job by PID when the supervisor
//! itself was killed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::probe::{mac_text, wait_dig_a, wait_http_ok, wait_sole_answerer};
use super::seed;
use super::state::{LabState, Phase, StateDir, Tracked, start_time};
use crate::certs::{Ca, Usage};
use crate::daemon::Daemon;
use crate::etcd::Etcd;
use crate::forward::Forward;
use crate::kube::KubeCluster;
use crate::launch::{DnsServer, DnsSync, LbController, LbSpeaker};
use crate::netlab::{Host, LabNetwork, LabSpec};
use crate::process::{Process, free_port, run_ok};
use crate::speaker_identity::SpeakerAccount;
use crate::{HarnessError, Result, http, io_err, wait};

/// The seed's node names.
pub use crate::nodes::NODES;
/// Nodes running a dns-server replica (on their lab address, port 53).
pub const DNS_NODES: [&str; 2] = ["m1", "n1"];
/// The name the seed scenario publishes.
pub const HOSTNAME: &str = "nginx.test.org";
/// The address the seed scenario expects for it.
pub const EXPECTED_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 200);
/// How long each condition of the bring-up is waited for.
const WAIT: Duration = Duration::from_secs(60);
/// How often the keeper refreshes the Node objects' heartbeats (kube-controller-manager marks a node
/// NotReady after 40-50 s without one).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Appends timestamped progress lines to the state directory's `progress.log`.
#[derive(Debug, Clone)]
pub struct Progress {
    file: PathBuf,
    started: Instant,
}

impl Progress {
    /// Appends a progress line.
    pub fn note(&self, message: &str) {
        use std::io::Write;
        let line = format!(
            "[{:6.1}s] {message}\n",
            self.started.elapsed().as_secs_f64()
        );
        if let Ok(mut file) = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.file)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Progress lines and the state file, written as the bring-up goes.
pub(super) struct Recorder {
    pub(super) dir: StateDir,
    pub(super) state: LabState,
    pub(super) progress: Progress,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub(super) fn new(dir: StateDir, stop: Arc<AtomicBool>) -> Result<Self> {
        std::fs::create_dir_all(dir.files())
            .map_err(io_err(format!("creating {}", dir.files().display())))?;
        let _ = std::fs::remove_file(dir.progress_file());
        let mut state = LabState::new_for_self();
        state.supervisor.log = dir.supervisor_log().display().to_string();
        let recorder = Self {
            progress: Progress {
                file: dir.progress_file(),
                started: Instant::now(),
            },
            dir,
            state,
            stop,
        };
        recorder.dir.write(&recorder.state)?;
        Ok(recorder)
    }

    /// Appends a progress line; fails if a stop was requested meanwhile (the bring-up is abandoned).
    pub(super) fn step(&mut self, message: &str) -> Result<()> {
        self.note(message);
        if self.stop.load(Ordering::SeqCst) {
            return Err(HarnessError::Setup(
                "stopped on request during bring-up".to_owned(),
            ));
        }
        Ok(())
    }

    /// Appends a progress line.
    pub(super) fn note(&self, message: &str) {
        self.progress.note(message);
    }

    pub(super) fn track(&mut self, process: &Process) -> Result<()> {
        self.state.processes.push(Tracked {
            name: process.name().to_owned(),
            pid: process.pid(),
            start_time: start_time(process.pid()).unwrap_or_default(),
            log: process.log_path().display().to_string(),
        });
        self.dir.write(&self.state)
    }

    pub(super) fn save(&self) -> Result<()> {
        self.dir.write(&self.state)
    }

    /// Records how the bring-up ended (phase `ready` with the lab's summary, or `failed` with the error) and
    /// passes it on.
    pub(super) fn finish<L>(
        &mut self,
        result: Result<L>,
        summary: impl FnOnce(&L) -> Vec<String>,
    ) -> Result<L> {
        match result {
            Ok(lab) => {
                self.state.phase = Phase::Ready;
                self.state.summary = summary(&lab);
                self.save()?;
                self.note("ready");
                Ok(lab)
            }
            Err(e) => {
                self.note(&format!("FAILED: {e}"));
                self.state.phase = Phase::Failed;
                self.state.error = Some(e.to_string());
                self.save()?;
                Err(e)
            }
        }
    }
}

/// A dns-server replica, with what it takes to start it again.
struct DnsReplica {
    node: String,
    host: Host,
    launcher: DnsServer,
    log: PathBuf,
    process: Process,
}

impl DnsReplica {
    fn spawn(node: &str, host: &Host, launcher: DnsServer, log: PathBuf) -> Result<Self> {
        let process = Process::spawn(
            &format!("dns-server on {node}"),
            launcher.command_in(host),
            &log,
        )?;
        Ok(Self {
            node: node.to_owned(),
            host: host.clone(),
            launcher,
            log,
            process,
        })
    }
}

/// Follows the leading controller with the speakers' forwarders and keeps the Node heartbeats fresh,
/// on its own thread until dropped.
struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn start(
        controllers: Vec<(SocketAddr, SocketAddr)>,
        forwards: Arc<Vec<Forward>>,
        leader: Arc<AtomicUsize>,
        runtime: tokio::runtime::Handle,
        client: kube::Client,
        progress: Progress,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let ops: Vec<SocketAddr> = controllers.iter().map(|(ops, _)| *ops).collect();
            let mut last_heartbeat = Instant::now();
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                if let Some(now) = leading(&ops)
                    && now != leader.load(Ordering::SeqCst)
                {
                    for forward in forwards.iter() {
                        forward.set_upstream(controllers[now].1);
                    }
                    leader.store(now, Ordering::SeqCst);
                    progress.note(&format!(
                        "lab-controller-{now} leads now; the speakers' forwarders follow it"
                    ));
                }
                if last_heartbeat.elapsed() > HEARTBEAT_EVERY {
                    last_heartbeat = Instant::now();
                    // The timer is made inside the runtime: it needs the runtime's clock.
                    let beat = runtime.block_on(async {
                        tokio::time::timeout(
                            Duration::from_secs(5),
                            seed::heartbeat_nodes(&client, &NODES),
                        )
                        .await
                    });
                    match beat {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => progress.note(&format!("node heartbeat failed: {e}")),
                        Err(_) => progress.note("node heartbeat failed: no answer within 5 s"),
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The whole system, running. Fields drop in order: the keeper, the data plane's helpers and the daemons
/// first, then the control plane, the namespaces last.
pub struct Lab {
    _keeper: Keeper,
    http: Vec<Process>,
    dns_servers: Vec<DnsReplica>,
    _dns_forwards: Vec<Forward>,
    dns_sync: Daemon,
    speakers: Vec<Process>,
    _forwards: Arc<Vec<Forward>>,
    controllers: Vec<(Daemon, SocketAddr)>,
    leader: Arc<AtomicUsize>,
    dns_etcd: Etcd,
    cluster: KubeCluster,
    network: LabNetwork,
    kubeconfig: PathBuf,
    address: Ipv4Addr,
    announcer: String,
    summary: Vec<String>,
    progress: Progress,
    runtime: Runtime,
}

impl Lab {
    /// Brings the lab up with its state, progress and logs in `dir` (a test passes a temporary directory
    /// of its own, so it never touches a user's lab), applies the seed scenario and checks it from the
    /// client namespace. Needs root and the daemons' binaries.
    pub fn start(dir: StateDir) -> Result<Self> {
        let mut recorder = Recorder::new(dir, Arc::new(AtomicBool::new(false)))?;
        let lab = bring_up(&mut recorder, new_runtime()?);
        recorder.finish(lab, |lab| lab.summary.clone())
    }

    /// An admin client of the lab's kube-apiserver.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// The admin kubeconfig (in the state directory).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `future` on the lab's async runtime (its kube client lives there).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The lab's namespaces.
    pub fn network(&self) -> &LabNetwork {
        &self.network
    }

    /// The host (node or `client`) called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.network.find(name)
    }

    /// The control plane (etcd, kube-apiserver, kube-controller-manager), for fault tests.
    pub fn cluster(&mut self) -> &mut KubeCluster {
        &mut self.cluster
    }

    /// The DNS etcd dns-sync writes and the dns-servers read, for fault tests.
    pub fn dns_etcd(&mut self) -> &mut Etcd {
        &mut self.dns_etcd
    }

    /// Kills kube-apiserver (SIGKILL), as in a crash.
    pub fn kill_apiserver(&mut self) {
        self.cluster.kill_apiserver();
        self.progress.note("kube-apiserver killed");
    }

    /// Starts kube-apiserver again after [`Lab::kill_apiserver`] and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<()> {
        self.runtime.block_on(self.cluster.start_apiserver())?;
        self.progress.note("kube-apiserver started again");
        Ok(())
    }

    /// Kills the DNS etcd (SIGKILL), as in a crash.
    pub fn kill_dns_etcd(&mut self) {
        self.dns_etcd.kill();
        self.progress.note("DNS etcd killed");
    }

    /// Starts the DNS etcd again on its ports and data after [`Lab::kill_dns_etcd`], and waits until it
    /// answers.
    pub fn start_dns_etcd(&mut self) -> Result<()> {
        self.runtime.block_on(self.dns_etcd.start_again())?;
        self.progress.note("DNS etcd started again");
        Ok(())
    }

    /// The dns-server replica on `node` (one of [`DNS_NODES`]).
    pub fn dns_server(&mut self, node: &str) -> Result<&mut Process> {
        self.dns_servers
            .iter_mut()
            .find(|d| d.node == node)
            .map(|d| &mut d.process)
            .ok_or_else(|| HarnessError::Setup(format!("no dns-server on {node}")))
    }

    /// Starts the dns-server replica on `node` again, with the same flags (after it was killed).
    pub fn restart_dns_server(&mut self, node: &str) -> Result<()> {
        let server = self
            .dns_servers
            .iter_mut()
            .find(|d| d.node == node)
            .ok_or_else(|| HarnessError::Setup(format!("no dns-server on {node}")))?;
        server.process.kill();
        let command = server.launcher.command_in(&server.host);
        server.process = Process::spawn(&format!("dns-server on {node}"), command, &server.log)?;
        self.progress
            .note(&format!("dns-server on {node} started again"));
        Ok(())
    }

    /// The address the seed's ingress controller Service got.
    pub fn seed_address(&self) -> Ipv4Addr {
        self.address
    }

    /// The node that announced it when the lab came up.
    pub fn seed_announcer(&self) -> &str {
        &self.announcer
    }

    /// The summary `lab up` prints.
    pub fn summary(&self) -> &[String] {
        &self.summary
    }

    /// The index of the controller replica currently leading (`lab-controller-<n>`).
    pub fn leader(&self) -> usize {
        self.leader.load(Ordering::SeqCst)
    }

    /// Appends a line to the lab's progress log.
    pub fn note(&self, message: &str) {
        self.progress.note(message);
    }

    /// Processes that have exited (each with its status and log), checked now.
    pub fn exited(&mut self) -> Vec<(String, std::process::ExitStatus, PathBuf)> {
        let processes = self
            .http
            .iter_mut()
            .chain(self.dns_servers.iter_mut().map(|d| &mut d.process))
            .chain(self.speakers.iter_mut())
            .chain(self.controllers.iter_mut().map(|(d, _)| d.process()))
            .chain(std::iter::once(self.dns_sync.process()));
        processes
            .filter_map(|p| {
                p.poll_exit()
                    .map(|status| (p.name().to_owned(), status, p.log_path().to_owned()))
            })
            .collect()
    }
}

pub(super) fn new_runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("starting the async runtime"))
}

/// Which lab a supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The daemons as processes in the node namespaces (the fast default).
    Processes,
    /// Real nodes (containerd, kubelet, kube-proxy per node namespace) with the Helm chart installed from the
    /// image archive given ([`super::kubelets`]).
    Kubelets(PathBuf),
}

/// Runs the supervisor in `dir` until SIGTERM/SIGINT: brings the lab up, records it, keeps it running,
/// tears it down. Bring-up failures are recorded in the state (phase `failed`) and returned.
pub fn supervise(dir: StateDir, kind: Kind) -> Result<()> {
    let runtime = new_runtime()?;
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
    match kind {
        Kind::Processes => {
            let lab = bring_up(&mut recorder, runtime);
            let mut lab = recorder.finish(lab, |lab| lab.summary.clone())?;
            let progress = recorder.progress.clone();
            run(&stop, &|line| progress.note(line), &mut || lab.exited());
            stopping(&mut recorder)?;
            drop(lab);
        }
        Kind::Kubelets(image) => {
            let lab = super::kubelets::bring_up(&mut recorder, runtime, &image);
            let mut lab = recorder.finish(lab, |lab| lab.summary().to_vec())?;
            let progress = recorder.progress.clone();
            run(&stop, &|line| progress.note(line), &mut || lab.exited());
            stopping(&mut recorder)?;
            drop(lab);
        }
    }
    recorder.note("stopped");
    Ok(())
}

fn stopping(recorder: &mut Recorder) -> Result<()> {
    recorder.note("stopping: daemons, control plane, namespaces");
    recorder.state.phase = Phase::Stopping;
    recorder.save()
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
    let kubeconfig_path = kubeconfig;
    let kubeconfig = kubeconfig_path.display().to_string();
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

    rec.step(
        "speaker identities: ServiceAccount groundwork-speakers/lb-speaker, a Pod of it bound to each node, its token",
    )?;
    let account = SpeakerAccount::default();
    let mut tokens = std::collections::BTreeMap::new();
    for node in NODES {
        let path = runtime.block_on(account.token_file(&client, node, &files))?;
        tokens.insert(node, path);
    }

    rec.step("lb-controller: two replicas with leader election")?;
    let mut controllers = Vec::new();
    for replica in 0..2 {
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let pod = format!("lab-controller-{replica}");
        let mut daemon = LbController::new(&controller_bin, &kubeconfig_path)
            .grpc(grpc)
            .tls(&server)
            .speaker_account(&account)
            .leader_elect()
            .pod_name(&pod)
            .start()?;
        rec.track(daemon.process())?;
        controllers.push((daemon, grpc));
    }
    let leader = wait::until_blocking("a controller replica to lead", WAIT, || {
        let ops: Vec<SocketAddr> = controllers.iter().map(|(d, _)| d.ops_addr()).collect();
        leading(&ops).ok_or_else(|| "no replica ready".to_owned())
    })?;
    rec.step(&format!("lab-controller-{leader} leads"))?;

    rec.step("lb-speaker in m1, n1, n2 (mutual TLS, through a forwarder to the leader)")?;
    let mut forwards = Vec::new();
    let mut speakers = Vec::new();
    for node in NODES {
        let host = host(node)?;
        let forward = Forward::start(&host, controllers[leader].1)?;
        let command = LbSpeaker::new(&speaker_bin, node)
            .controller(&format!("https://127.0.0.1:{}", forward.local().port()))
            .interfaces("^eth0$")
            .tls(&speaker)
            .token_file(&tokens[node])
            .ops_in_args()
            .command_in(&host);
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
    let mut dns_sync = DnsSync::new(&sync_bin, "lab", &kubeconfig_path, &dns_etcd)
        .domain_filter("test.org")
        .start()?;
    rec.track(dns_sync.process())?;
    dns_sync.wait_ready(WAIT)?;

    rec.step("dns-server: replicas in m1 and n1 on port 53, zone test.org, reading the DNS etcd")?;
    let etcd_addr: SocketAddr = dns_etcd
        .endpoint()
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| HarnessError::Setup(format!("etcd endpoint {}: {e}", dns_etcd.endpoint())))?;
    if dns_etcd.client_tls().is_none() {
        return Err(HarnessError::Setup(
            "the DNS etcd has no TLS files".to_owned(),
        ));
    }
    let mut dns_forwards = Vec::new();
    let mut dns_servers = Vec::new();
    for node in DNS_NODES {
        let host = host(node)?;
        let forward = Forward::start(&host, etcd_addr)?;
        let launcher = DnsServer::new(&server_bin, &dns_etcd)
            .listen(format!("{}:53", host.ipv4))
            .etcd_through(&forward)
            .ops_in_args();
        let server = DnsReplica::spawn(
            node,
            &host,
            launcher,
            files.join(format!("dns-server-{node}.log")),
        )?;
        rec.track(&server.process)?;
        dns_forwards.push(forward);
        dns_servers.push(server);
    }

    rec.step(
        "seed scenario: IPPool 10.10.39.200-10.10.39.220, ingress-nginx Service (LoadBalancer), demo Deployment + Service, Ingress nginx.test.org",
    )?;
    runtime.block_on(seed::apply(&client, seed::Workloads::Placeholder))?;
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

    let leader_index = Arc::new(AtomicUsize::new(leader));
    let forwards = Arc::new(forwards);
    let keeper = Keeper::start(
        controllers
            .iter()
            .map(|(daemon, grpc)| (daemon.ops_addr(), *grpc))
            .collect(),
        forwards.clone(),
        leader_index.clone(),
        runtime.handle().clone(),
        client,
        rec.progress.clone(),
    );
    let mut lab = Lab {
        _keeper: keeper,
        http: http_servers,
        dns_servers,
        _dns_forwards: dns_forwards,
        dns_sync,
        speakers,
        _forwards: forwards,
        controllers,
        leader: leader_index,
        dns_etcd,
        cluster,
        network,
        kubeconfig: kubeconfig_path,
        address,
        announcer,
        summary: Vec::new(),
        progress: rec.progress.clone(),
        runtime,
    };
    rec.step("checking from the client namespace: ARP, DNS, HTTP")?;
    lab.summary = check(&lab, rec)?;
    Ok(lab)
}

/// The checks a user wants to see, run from the client namespace; returns the summary lines.
fn check(lab: &Lab, rec: &Recorder) -> Result<Vec<String>> {
    let (address, announcer) = (lab.address, lab.announcer.as_str());
    let client = lab.host("client")?;
    let announcer_mac = mac_text(lab.host(announcer)?.mac()?);

    wait_sole_answerer(client, address, announcer, &announcer_mac, WAIT)?;
    rec.note(&format!(
        "arping {address}: one MAC answers, {announcer_mac} ({announcer})"
    ));

    let mut dns_lines = Vec::new();
    for node in DNS_NODES {
        let server = lab.host(node)?.ipv4;
        let answer = wait_dig_a(client, (server, 53).into(), HOSTNAME, address, WAIT)?;
        let aa = if answer.has_flag("aa") { ", aa" } else { "" };
        rec.note(&format!("dig @{server} {HOSTNAME}: {address}{aa}"));
        dns_lines.push(format!(
            "  dig @{server} {HOSTNAME} (dns-server on {node}): {address} ({}{aa})",
            answer.status
        ));
    }

    let body = wait_http_ok(client, address, |_| true, WAIT)?;
    rec.note(&format!("curl http://{address}/: 200 {body}"));

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
    lines.push(format!("http://{address}/ from client: 200 \"{body}\""));
    lines.push(format!(
        "controllers: lab-controller-0, lab-controller-1 (leader: lab-controller-{})",
        lab.leader()
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

/// Holds a lab until a stop is requested, reporting (with `note`) each process `exited` lists, once.
fn run(
    stop: &AtomicBool,
    note: &dyn Fn(&str),
    exited: &mut dyn FnMut() -> Vec<(String, std::process::ExitStatus, PathBuf)>,
) {
    let mut reported: Vec<String> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        for (name, status, log) in exited() {
            if !reported.contains(&name) {
                note(&format!(
                    "WARNING: {name} exited ({status}); log {}",
                    log.display()
                ));
                reported.push(name);
            }
        }
    }
}

impl crate::nodes::Tracker for Recorder {
    fn step(&mut self, message: &str) -> Result<()> {
        Recorder::step(self, message)
    }
    fn process(&mut self, process: &Process) -> Result<()> {
        self.track(process)
    }
    fn namespaces(&mut self, names: &[String]) -> Result<()> {
        self.state.namespaces.extend(names.iter().cloned());
        self.save()
    }
    fn cgroup(&mut self, name: &str) -> Result<()> {
        self.state.cgroups.push(name.to_owned());
        self.save()
    }
    fn mount(&mut self, path: &Path) -> Result<()> {
        self.state.mounts.push(path.display().to_string());
        self.save()
    }
}

/// The replica that leads, by its `groundwork_lb_controller_leader` gauge, given the replicas' ops addresses
/// (a standby is ready too: readiness says it could take over, not that it leads).
fn leading(ops: &[SocketAddr]) -> Option<usize> {
    ops.iter().position(|addr| {
        http::get(*addr, "/metrics").is_ok_and(|r| {
            r.status == 200
                && r.body
                    .lines()
                    .any(|l| l.trim() == "groundwork_lb_controller_leader 1")
        })
    })
}
