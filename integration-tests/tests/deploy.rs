//! The install artefacts under `deploy/`: the Helm chart renders for each component alone and all together,
//! lints clean and refuses bad values; its CRD is the generated one; the kustomize bases are the chart rendered
//! per component (checked for drift); everything applies to a real kube-apiserver (server-side apply, dry run)
//! and each daemon's RBAC grants exactly the contract listed here, asked of the apiserver's own authorizer.
//!
//! No YAML parser is a dependency of the test bed, and none is needed: the apiserver takes server-side apply
//! bodies as YAML (`application/apply-patch+yaml`) and answers JSON. The few fields needed to address an object
//! (apiVersion, kind, metadata.name/namespace) are read from the top of each document, which the chart and the
//! bases write in one fixed layout.
//!
//! Regenerate the checked-in copies (chart CRD, kustomize bases): `GROUNDWORK_WRITE_DEPLOY=1 cargo test -p
//! integration-tests --test deploy`.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::{DnsSync, Flags, Launcher, LbController};
use integration_tests::{peers, process, wait, workspace_root};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, Resource};

const RELEASE: &str = "groundwork";
const NAMESPACE: &str = "groundwork";
const SPEAKER_NAMESPACE: &str = "groundwork-speaker";
const FIELD_MANAGER: &str = "groundwork-deploy-test";

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm").join("groundwork")
}

fn helm() -> PathBuf {
    peers::binary("helm").unwrap_or_else(|e| panic!("{e}"))
}

/// `helm template` of the chart as release `groundwork` in namespace `groundwork`: stdout, or stderr on failure.
fn render(args: &[&str]) -> Result<String, String> {
    let output = Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn render_ok(args: &[&str]) -> String {
    render(args).unwrap_or_else(|e| panic!("helm template {args:?} failed:\n{e}"))
}

/// Turns every component off, so a test switches on only the ones it names.
const ALL_OFF: &[&str] = &[
    "--set",
    "lbController.enabled=false",
    "--set",
    "lbSpeaker.enabled=false",
    "--set",
    "dnsSync.enabled=false",
    "--set",
    "dnsServer.enabled=false",
    "--set",
    "etcd.enabled=false",
];

/// The DNS components pointed at an etcd outside the release (the bundled one's client Service and each
/// component's own client Secret, so the kustomize bases fit together).
const EXTERNAL_ETCD: &[&str] = &[
    "--set",
    "etcd.external.endpoints={https://groundwork-etcd-client.groundwork.svc:2379}",
    "--set",
    "dnsSync.etcdTLSSecretName=groundwork-etcd-dns-sync-tls",
    "--set",
    "dnsServer.etcdTLSSecretName=groundwork-etcd-dns-server-tls",
];

/// Values rendering one component alone.
fn alone(component: &str) -> Vec<String> {
    let mut args: Vec<String> = ALL_OFF.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--set".to_owned(), format!("{component}.enabled=true")]);
    if component == "dnsSync" || component == "dnsServer" {
        args.extend(EXTERNAL_ETCD.iter().map(|s| (*s).to_owned()));
    }
    args
}

/// One YAML document of a rendered stream, with what it takes to address it.
#[derive(Debug, Clone)]
struct Doc {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    text: String,
}

impl Doc {
    fn id(&self) -> String {
        format!(
            "{} {}/{}",
            self.kind,
            self.namespace.as_deref().unwrap_or("-"),
            self.name
        )
    }
}

/// Splits a YAML stream on `---` lines; documents holding only comments are dropped.
fn documents(stream: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for text in stream.split("\n---").map(|d| d.trim_start_matches("---")) {
        let top = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        let (Some(api_version), Some(kind)) = (top("apiVersion"), top("kind")) else {
            continue;
        };
        // metadata's own keys are indented by exactly two spaces, up to the next top-level key.
        let metadata: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "metadata:")
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.is_empty())
            .collect();
        let field = |key: &str| {
            metadata
                .iter()
                .find_map(|l| l.strip_prefix(&format!("  {key}: ")))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        docs.push(Doc {
            api_version,
            kind,
            name: field("name").unwrap_or_else(|| panic!("a document without a name:\n{text}")),
            namespace: field("namespace"),
            text: text.to_owned(),
        });
    }
    docs
}

fn kinds_and_names(docs: &[Doc]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| format!("{} {}", d.kind, d.name))
        .collect()
}

#[test]
fn chart_renders_each_component_alone_and_all_together() {
    let expectations: &[(&str, &[&str])] = &[
        (
            "lbController",
            &[
                "ServiceAccount groundwork-lb-controller",
                "ClusterRole groundwork-lb-controller",
                "ClusterRoleBinding groundwork-lb-controller",
                "Role groundwork-lb-controller-leader-election",
                "Deployment groundwork-lb-controller",
                "Service groundwork-lb-controller",
                "PodDisruptionBudget groundwork-lb-controller",
                "NetworkPolicy groundwork-lb-controller",
                "Secret groundwork-lb-controller-tls",
            ],
        ),
        (
            "lbSpeaker",
            &[
                "Namespace groundwork-speaker",
                "ServiceAccount groundwork-lb-speaker",
                "DaemonSet groundwork-lb-speaker",
                "Secret groundwork-lb-speaker-tls",
            ],
        ),
        (
            "dnsSync",
            &[
                "ServiceAccount groundwork-dns-sync",
                "ClusterRole groundwork-dns-sync",
                "Deployment groundwork-dns-sync",
            ],
        ),
        (
            "dnsServer",
            &[
                "ServiceAccount groundwork-dns-server",
                "Deployment groundwork-dns-server",
                "Service groundwork-dns-server",
            ],
        ),
        (
            "etcd",
            &[
                "StatefulSet groundwork-etcd",
                "Service groundwork-etcd-client",
                "PodDisruptionBudget groundwork-etcd",
                "NetworkPolicy groundwork-etcd",
                "Secret groundwork-etcd-server-tls",
                "Secret groundwork-etcd-root-tls",
            ],
        ),
    ];
    let components = [
        "lb-controller",
        "lb-speaker",
        "dns-sync",
        "dns-server",
        "etcd",
    ];
    for (i, (component, expected)) in expectations.iter().enumerate() {
        let args = alone(component);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let docs = documents(&render_ok(&args));
        let got = kinds_and_names(&docs);
        for object in *expected {
            assert!(
                got.contains(*object),
                "{component} alone lacks {object}: {got:#?}"
            );
        }
        // Nothing of another component comes along (each is usable alone).
        for other in components.iter().enumerate().filter(|(j, _)| *j != i) {
            let prefix = format!("groundwork-{}", other.1);
            let stray: Vec<_> = docs
                .iter()
                .filter(|d| d.name.starts_with(&prefix) && d.kind != "Namespace")
                .map(Doc::id)
                .collect();
            assert!(stray.is_empty(), "{component} alone renders {stray:?}");
        }
    }

    let all = documents(&render_ok(&[]));
    for (_, expected) in expectations {
        for object in *expected {
            assert!(
                kinds_and_names(&all).contains(*object),
                "all together lack {object}"
            );
        }
    }
    // With cert-manager, Certificates replace the generated Secrets; the ServiceMonitors render too.
    let with_operators = documents(&render_ok(&[
        "--set",
        "certManager.enabled=true",
        "--set",
        "certManager.issuerRef.name=groundwork-ca",
        "--set",
        "serviceMonitor.enabled=true",
    ]));
    let kinds: BTreeSet<_> = with_operators.iter().map(|d| d.kind.as_str()).collect();
    assert!(kinds.contains("Certificate") && kinds.contains("ServiceMonitor"));
    assert!(
        !with_operators.iter().any(|d| d.kind == "Secret"),
        "cert-manager issues every certificate"
    );
}

/// dns-sync is granted what its sources read, and nothing more: Nodes and `DNSEndpoint`s only when a source
/// (or a Service type) needs them.
#[test]
fn dns_sync_rbac_and_flags_follow_its_values() {
    let defaults = documents(&render_ok(&[]));
    let names = kinds_and_names(&defaults);
    assert!(
        !names.contains("ClusterRole groundwork-dns-sync-nodes"),
        "{names:?}"
    );
    let role = defaults
        .iter()
        .find(|d| d.kind == "ClusterRole" && d.name == "groundwork-dns-sync")
        .unwrap();
    assert!(!role.text.contains("dnsendpoints"), "{}", role.text);

    let with_sources = documents(&render_ok(&[
        "--set",
        "dnsSync.sources={service,crd,node}",
        "--set",
        "dnsSync.excludeUnschedulable=false",
        "--set",
        "dnsSync.excludeDomains={lab.test.org}",
    ]));
    let names = kinds_and_names(&with_sources);
    assert!(
        names.contains("ClusterRole groundwork-dns-sync-nodes"),
        "{names:?}"
    );
    let role = with_sources
        .iter()
        .find(|d| d.kind == "ClusterRole" && d.name == "groundwork-dns-sync")
        .unwrap();
    assert!(role.text.contains("dnsendpoints/status"), "{}", role.text);
    let deployment = with_sources
        .iter()
        .find(|d| d.kind == "Deployment" && d.name == "groundwork-dns-sync")
        .unwrap();
    for flag in [
        "--source=crd",
        "--source=node",
        "--exclude-unschedulable=false",
        "--exclude-domains=lab.test.org",
    ] {
        assert!(
            deployment.text.contains(flag),
            "{flag}: {}",
            deployment.text
        );
    }
}

#[test]
fn helm_lint_is_clean() {
    let output = Command::new(helm())
        .args(["lint", "--strict"])
        .arg(chart_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "helm lint failed:\n{text}");
    assert!(
        !text.contains("[WARNING]") && !text.contains("[ERROR]"),
        "helm lint:\n{text}"
    );
}

#[test]
fn values_schema_rejects_bad_values_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "lbController.replicas=two"],
            "/lbController/replicas",
        ),
        (&["--set", "dnsServr.enabled=true"], "dnsServr"),
        (&["--set", "lbSpeaker.hostNetwork=false"], "hostNetwork"),
        (
            &["--set", "dnsSync.policy=delete-everything"],
            "/dnsSync/policy",
        ),
        (&["--set-json", "dnsServer.zones=[]"], "/dnsServer/zones"),
        (
            &["--set", "lbController.grpcPort=70000"],
            "/lbController/grpcPort",
        ),
        (&["--set", "etcd.replicas=2"], "/etcd/replicas"),
        // Checks a schema cannot express fail in the templates, naming the value too.
        (
            &["--set", "certManager.enabled=true"],
            "certManager.issuerRef.name",
        ),
        (&["--set", "etcd.enabled=false"], "etcd.external.endpoints"),
        (
            &["--set", "dnsServer.tsig.notifyKey=transfer.test.org"],
            "dnsServer.tsig.secretName",
        ),
    ];
    for (args, field) in cases {
        match render(args) {
            Ok(_) => panic!("helm template {args:?} succeeded; the values are bad"),
            Err(message) => assert!(
                message.contains(field),
                "the error for {args:?} does not name {field}:\n{message}"
            ),
        }
    }
}

#[test]
fn a_tsig_secret_is_mounted_for_dns_server_and_its_keys_named_in_the_flags() {
    let rendered = render_ok(&[
        "--set",
        "dnsServer.tsig.secretName=dns-tsig",
        "--set",
        "dnsServer.tsig.transferKeys={transfer.test.org}",
        "--set",
        "dnsServer.tsig.notifyKey=transfer.test.org",
    ]);
    for expected in [
        "- --tsig-key-file=/etc/groundwork/tsig/tsig.key",
        "- --transfer-key=transfer.test.org",
        "- --notify-key=transfer.test.org",
        "- {name: tsig, mountPath: /etc/groundwork/tsig, readOnly: true}",
        "secretName: dns-tsig",
    ] {
        assert!(
            rendered.contains(expected),
            "{expected} missing:\n{rendered}"
        );
    }
    assert!(
        !render_ok(&[]).contains("--tsig-key-file"),
        "no TSIG unless a Secret is given"
    );
}

/// Compares `path` with `expected`, or rewrites it under `GROUNDWORK_WRITE_DEPLOY=1`.
fn check_or_write(path: &Path, expected: &str) {
    if std::env::var_os("GROUNDWORK_WRITE_DEPLOY").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is stale; regenerate: GROUNDWORK_WRITE_DEPLOY=1 cargo test -p integration-tests --test deploy",
        path.display()
    );
}

#[test]
fn chart_and_kustomize_crds_are_byte_identical_to_the_generated_crds() {
    for file in [
        "ippools.groundwork.dev.yaml",
        "bgppeers.groundwork.dev.yaml",
        "bgpadvertisements.groundwork.dev.yaml",
        "bfdprofiles.groundwork.dev.yaml",
        "bgpsessionstates.groundwork.dev.yaml",
    ] {
        let generated = std::fs::read_to_string(deploy_dir().join("crds").join(file)).unwrap();
        check_or_write(&chart_dir().join("crds").join(file), &generated);
        check_or_write(&deploy_dir().join("kustomize/crds").join(file), &generated);
    }
}

/// The kustomize base of each component: the chart rendered for it alone, without Helm's labels and without
/// generated certificates (the bases expect the Secrets; docs/install.md says how to make them).
fn kustomize_base(component: &str) -> String {
    let mut args = alone(component);
    args.extend(
        ["--set", "helmLabels=false", "--set", "certs.generate=false"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    format!(
        "# Rendered from deploy/helm/groundwork for {component} alone; do not edit by hand.\n\
         # Regenerate: GROUNDWORK_WRITE_DEPLOY=1 cargo test -p integration-tests --test deploy\n{}",
        render_ok(&args)
    )
}

const BASES: &[(&str, &str)] = &[
    ("lbController", "lb-controller"),
    ("lbSpeaker", "lb-speaker"),
    ("dnsSync", "dns-sync"),
    ("dnsServer", "dns-server"),
    ("etcd", "etcd"),
];

#[test]
fn kustomize_bases_are_the_chart_rendered_per_component() {
    for (component, dir) in BASES {
        let path = deploy_dir()
            .join("kustomize")
            .join(dir)
            .join("resources.yaml");
        check_or_write(&path, &kustomize_base(component));
        let rendered = std::fs::read_to_string(&path).unwrap();
        assert!(
            !rendered.contains("kind: Secret\n"),
            "{dir}: the bases must not carry private keys"
        );
    }
}

/// The files a kustomization lists under `resources:`, directories followed recursively (there is no
/// kustomize binary here; our kustomizations only list resources, which is all this reads).
fn kustomize_files(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let unsupported = [
        "patches:",
        "patchesStrategicMerge:",
        "namePrefix:",
        "namespace:",
    ];
    for key in unsupported {
        assert!(
            !text.lines().any(|l| l.starts_with(key)),
            "{}: `{key}` needs a real kustomize; this test reads only resources",
            dir.display()
        );
    }
    let mut files = Vec::new();
    let mut in_resources = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_resources = line.trim_end() == "resources:";
            continue;
        }
        if let Some(entry) = line.trim().strip_prefix("- ").filter(|_| in_resources) {
            let path = dir.join(entry.trim());
            if path.is_dir() {
                files.extend(kustomize_files(&path));
            } else {
                assert!(
                    path.is_file(),
                    "{} lists a missing {}",
                    dir.display(),
                    path.display()
                );
                files.push(path);
            }
        }
    }
    files
}

/// Server-side applies one document (as YAML, the way kubectl sends it) and returns the object the server
/// answered with.
async fn apply(
    client: &Client,
    discovery: &Discovery,
    doc: &Doc,
    dry_run: bool,
) -> Result<serde_json::Value, String> {
    let (group, version) = doc
        .api_version
        .split_once('/')
        .unwrap_or(("", doc.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &doc.kind);
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| format!("the apiserver does not serve {gvk:?}"))?;
    let namespace = match capabilities.scope {
        Scope::Namespaced => Some(
            doc.namespace
                .clone()
                .ok_or("namespaced object without a namespace")?,
        ),
        Scope::Cluster => None,
    };
    let url = DynamicObject::url_path(&resource, namespace.as_deref());
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    let mut request = kube::core::Request::new(url)
        .patch(&doc.name, &params, &Patch::Apply(()))
        .map_err(|e| e.to_string())?;
    *request.body_mut() = doc.text.clone().into_bytes();
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/apply-patch+yaml"),
    );
    let body = client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// Applies `docs` for real when `for_real(doc)`, the rest as a dry run; returns each document's answer and
/// the failures as "object: error" lines.
async fn apply_all(
    client: &Client,
    docs: &[Doc],
    for_real: impl Fn(&Doc) -> bool,
) -> (Vec<(Doc, serde_json::Value)>, Vec<String>) {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    // Namespaces first, for real: the dry-run of an object in a namespace that does not exist fails.
    let (first, rest): (Vec<&Doc>, Vec<&Doc>) = docs.iter().partition(|d| d.kind == "Namespace");
    for doc in first.into_iter().chain(rest) {
        match apply(
            client,
            &discovery,
            doc,
            !for_real(doc) && doc.kind != "Namespace",
        )
        .await
        {
            Ok(answer) => answers.push((doc.clone(), answer)),
            Err(e) => failures.push(format!("{}: {e}", doc.id())),
        }
    }
    (answers, failures)
}

async fn install_crd(cluster: &KubeCluster) {
    cluster
        .install_crd_files(&[
            chart_dir().join("crds/ippools.groundwork.dev.yaml"),
            chart_dir().join("crds/bgppeers.groundwork.dev.yaml"),
            chart_dir().join("crds/bgpadvertisements.groundwork.dev.yaml"),
            chart_dir().join("crds/bfdprofiles.groundwork.dev.yaml"),
            chart_dir().join("crds/bgpsessionstates.groundwork.dev.yaml"),
        ])
        .await
        .unwrap();
}

/// The release namespace, labelled to enforce Pod Security `restricted` (as docs/install.md asks).
fn restricted_namespace() -> Doc {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    \
         pod-security.kubernetes.io/enforce: restricted\n"
    );
    documents(&text).remove(0)
}

/// Dry-run creates a Pod from a workload's pod template in `namespace`: Pod Security admission judges Pods,
/// not their controllers. Returns the apiserver's refusal, if any.
async fn admit_pod(
    client: &Client,
    namespace: &str,
    workload: &serde_json::Value,
) -> Result<(), String> {
    let name = workload["metadata"]["name"].as_str().unwrap();
    let mut template = workload["spec"]["template"].clone();
    // A StatefulSet's pods get a volume per claim template, as its controller adds them.
    for claim in workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim_name = claim["metadata"]["name"].as_str().unwrap();
        let volume = serde_json::json!({
            "name": claim_name,
            "persistentVolumeClaim": {"claimName": format!("{claim_name}-{name}-0")},
        });
        template["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(volume);
    }
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{name}-probe"), "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    // The ServiceAccount admission plugin reads a cache that may not hold a just-created account yet.
    let mut last = Ok(());
    for _ in 0..50 {
        last = api
            .create(&params, &pod)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        match &last {
            Err(e) if e.contains("error looking up service account") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break,
        }
    }
    last
}

#[tokio::test]
async fn chart_and_kustomize_output_apply_to_a_real_apiserver_and_pass_pod_security() {
    let cluster = KubeCluster::start().await.unwrap();
    let client = cluster.client();
    install_crd(&cluster).await;

    let mut docs = vec![restricted_namespace()];
    docs.extend(documents(&render_ok(&[])));
    // The speaker's account also in the restricted namespace, to show its pod would be refused there.
    docs.extend(documents(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: groundwork-lb-speaker\n  namespace: {NAMESPACE}\n"
    )));
    // ServiceAccounts for real: the Pod admission below looks them up.
    let (answers, failures) = apply_all(&client, &docs, |d| d.kind == "ServiceAccount").await;
    assert!(
        failures.is_empty(),
        "the chart does not apply:\n{}",
        failures.join("\n")
    );

    // Every workload's pods are admitted where they run; the speaker's would not be in a restricted namespace.
    for (doc, answer) in &answers {
        if !["Deployment", "StatefulSet", "DaemonSet"].contains(&doc.kind.as_str()) {
            continue;
        }
        let namespace = doc.namespace.as_deref().unwrap();
        admit_pod(&client, namespace, answer)
            .await
            .unwrap_or_else(|e| panic!("{} is refused by Pod Security: {e}", doc.id()));
        if doc.kind == "DaemonSet" {
            assert_eq!(namespace, SPEAKER_NAMESPACE);
            let refused = admit_pod(&client, NAMESPACE, answer).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains("restricted")),
                "the speaker's pod should need a privileged namespace: {refused:?}"
            );
        }
    }

    // The kustomize bases and the seed overlay, file by file as kustomize would list them.
    let seed = deploy_dir().join("kustomize").join("seed");
    let mut docs = vec![restricted_namespace()];
    for file in kustomize_files(&seed) {
        docs.extend(documents(&std::fs::read_to_string(&file).unwrap()));
    }
    for (_, dir) in BASES {
        assert!(
            docs.iter()
                .any(|d| d.name.starts_with(&format!("groundwork-{dir}"))),
            "the seed overlay leaves out the {dir} base"
        );
    }
    let (answers, failures) = apply_all(&client, &docs, |_| false).await;
    assert!(
        failures.is_empty(),
        "the kustomize output does not apply:\n{}",
        failures.join("\n")
    );
    let pool = answers
        .iter()
        .find(|(d, _)| d.kind == "IPPool")
        .map(|(_, a)| a)
        .expect("the seed overlay has an IPPool");
    assert_eq!(
        pool["spec"]["addresses"],
        serde_json::json!(["10.10.39.200-10.10.39.220"])
    );
}

/// One permission a daemon needs: (verb, API group, resource, subresource, namespace, name).
type Permission = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// What lb-controller does with the API (lb-controller/src/controller.rs, ops::kube leader election, the
/// kube-runtime event recorder): the contract its RBAC must meet.
const LB_CONTROLLER_NEEDS: &[Permission] = &[
    ("list", "", "services", "", "", ""),
    ("watch", "", "services", "", "", ""),
    ("patch", "", "services", "status", "demo", "nginx-ingress"),
    ("list", "groundwork.dev", "ippools", "", "", ""),
    ("watch", "groundwork.dev", "ippools", "", "", ""),
    (
        "patch",
        "groundwork.dev",
        "ippools",
        "status",
        "",
        "default",
    ),
    ("list", "", "nodes", "", "", ""),
    ("watch", "", "nodes", "", "", ""),
    ("list", "discovery.k8s.io", "endpointslices", "", "", ""),
    ("watch", "discovery.k8s.io", "endpointslices", "", "", ""),
    ("list", "", "namespaces", "", "", ""),
    ("watch", "", "namespaces", "", "", ""),
    ("create", "events.k8s.io", "events", "", "demo", ""),
    ("patch", "events.k8s.io", "events", "", "demo", "x"),
    (
        "get",
        "coordination.k8s.io",
        "leases",
        "",
        NAMESPACE,
        "groundwork-lb-controller",
    ),
    ("create", "coordination.k8s.io", "leases", "", NAMESPACE, ""),
    (
        "patch",
        "coordination.k8s.io",
        "leases",
        "",
        NAMESPACE,
        "groundwork-lb-controller",
    ),
    // --leader-service: the leader server-side applies the speakers' Service's one EndpointSlice.
    (
        "get",
        "discovery.k8s.io",
        "endpointslices",
        "",
        NAMESPACE,
        "groundwork-lb-controller-leader",
    ),
    (
        "patch",
        "discovery.k8s.io",
        "endpointslices",
        "",
        NAMESPACE,
        "groundwork-lb-controller-leader",
    ),
    // --metallb-configmap metallb-system/config: a watch on that one object.
    ("list", "", "configmaps", "", "metallb-system", "config"),
    ("watch", "", "configmaps", "", "metallb-system", "config"),
    // BGP mode: our peers, advertisements and BFD profiles, read-only.
    ("list", "groundwork.dev", "bgppeers", "", "", ""),
    ("watch", "groundwork.dev", "bgpadvertisements", "", "", ""),
    ("watch", "groundwork.dev", "bfdprofiles", "", "", ""),
    // ...and each node's sessions as it reports them, one object per (node, peer).
    (
        "patch",
        "groundwork.dev",
        "bgpsessionstates",
        "",
        "",
        "n1-tor",
    ),
    (
        "patch",
        "groundwork.dev",
        "bgpsessionstates",
        "status",
        "",
        "n1-tor",
    ),
    (
        "delete",
        "groundwork.dev",
        "bgpsessionstates",
        "",
        "",
        "n1-tor",
    ),
    // --metallb-namespace metallb-system: MetalLB's own resources there, read-only.
    (
        "list",
        "metallb.io",
        "ipaddresspools",
        "",
        "metallb-system",
        "",
    ),
    (
        "watch",
        "metallb.io",
        "l2advertisements",
        "",
        "metallb-system",
        "",
    ),
    ("watch", "metallb.io", "bgppeers", "", "metallb-system", ""),
    (
        "watch",
        "metallb.io",
        "communities",
        "",
        "metallb-system",
        "",
    ),
    // Which node a speaker session may speak for: TokenReview of the speaker pod's projected token.
    (
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        "",
        "",
        "",
    ),
];

const LB_CONTROLLER_MUST_NOT: &[Permission] = &[
    // Not even patch: a Service's spec (its selector) is not the controller's to change.
    ("patch", "", "services", "", "demo", "nginx-ingress"),
    ("delete", "", "services", "", "demo", "nginx-ingress"),
    ("update", "", "services", "", "demo", "nginx-ingress"),
    ("create", "", "services", "", "demo", ""),
    (
        "get",
        "",
        "secrets",
        "",
        NAMESPACE,
        "groundwork-lb-controller-tls",
    ),
    ("list", "", "secrets", "", "", ""),
    ("patch", "", "nodes", "", "", "node-a"),
    ("create", "groundwork.dev", "ippools", "", "", ""),
    ("patch", "groundwork.dev", "ippools", "", "", "default"),
    ("list", "", "configmaps", "", "metallb-system", "other"),
    ("list", "", "configmaps", "", "kube-system", ""),
    ("patch", "groundwork.dev", "bgppeers", "", "", "tor"),
    ("list", "metallb.io", "bgppeers", "", "kube-system", ""),
    (
        "patch",
        "metallb.io",
        "ipaddresspools",
        "",
        "metallb-system",
        "public",
    ),
    (
        "get",
        "coordination.k8s.io",
        "leases",
        "",
        "kube-system",
        "kube-controller-manager",
    ),
    (
        "delete",
        "coordination.k8s.io",
        "leases",
        "",
        NAMESPACE,
        "groundwork-lb-controller",
    ),
    // Only the one EndpointSlice: another Service's traffic is not its to steer.
    (
        "patch",
        "discovery.k8s.io",
        "endpointslices",
        "",
        NAMESPACE,
        "groundwork-dns-server-abcde",
    ),
    (
        "create",
        "discovery.k8s.io",
        "endpointslices",
        "",
        NAMESPACE,
        "",
    ),
];

/// What dns-sync does with the API (dns-sync/src/controller.rs): watch the sources, record events, elect.
const DNS_SYNC_NEEDS: &[Permission] = &[
    ("list", "", "services", "", "", ""),
    ("watch", "", "services", "", "", ""),
    ("list", "networking.k8s.io", "ingresses", "", "", ""),
    ("watch", "networking.k8s.io", "ingresses", "", "", ""),
    ("list", GATEWAY_API, "httproutes", "", "", ""),
    ("watch", GATEWAY_API, "udproutes", "", "", ""),
    ("list", GATEWAY_API, "gateways", "", "", ""),
    ("watch", GATEWAY_API, "gateways", "", "", ""),
    ("list", "", "namespaces", "", "", ""),
    ("watch", "", "namespaces", "", "", ""),
    ("create", "events.k8s.io", "events", "", "demo", ""),
    ("patch", "events.k8s.io", "events", "", "demo", "x"),
    (
        "get",
        "coordination.k8s.io",
        "leases",
        "",
        NAMESPACE,
        "groundwork-dns-sync",
    ),
    ("create", "coordination.k8s.io", "leases", "", NAMESPACE, ""),
    DNS_SYNC_RENEWS_ITS_LEASE,
];

/// The Gateway API's group (dns-sync's gateway-*route sources).
const GATEWAY_API: &str = "gateway.networking.k8s.io";

/// dns-sync's leader election renewing its Lease.
const DNS_SYNC_RENEWS_ITS_LEASE: Permission = (
    "patch",
    "coordination.k8s.io",
    "leases",
    "",
    NAMESPACE,
    "groundwork-dns-sync",
);

const DNS_SYNC_MUST_NOT: &[Permission] = &[
    ("patch", "", "services", "", "demo", "nginx-ingress"),
    ("patch", "", "services", "status", "demo", "nginx-ingress"),
    (
        "patch",
        "networking.k8s.io",
        "ingresses",
        "status",
        "demo",
        "nginx",
    ),
    (
        "get",
        "",
        "secrets",
        "",
        NAMESPACE,
        "groundwork-etcd-client-tls",
    ),
    ("list", "", "nodes", "", "", ""),
    // Only with dnsSync.serviceTypeFilter naming NodePort or ClusterIP (headless Services).
    ("list", "discovery.k8s.io", "endpointslices", "", "", ""),
    ("list", "groundwork.dev", "ippools", "", "", ""),
    (
        "patch",
        "coordination.k8s.io",
        "leases",
        "",
        NAMESPACE,
        "groundwork-lb-controller-x",
    ),
    // Reading routes, not writing them (a gateway controller writes their status), nor Gateways.
    ("patch", GATEWAY_API, "httproutes", "status", "demo", "web"),
    ("patch", GATEWAY_API, "gateways", "", "demo", "edge"),
    ("patch", "", "namespaces", "", "", "demo"),
];

/// Asks the apiserver's authorizer (RBAC, as it runs here) whether `user` may do `permission`.
async fn allowed(client: &Client, user: &str, permission: &Permission) -> bool {
    let (verb, group, resource, subresource, namespace, name) = *permission;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource: non_empty(subresource),
                namespace: non_empty(namespace),
                name: non_empty(name),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

async fn assert_contract(
    client: &Client,
    service_account: &str,
    needs: &[Permission],
    must_not: &[Permission],
) {
    let user = format!("system:serviceaccount:{NAMESPACE}:{service_account}");
    let mut wrong = Vec::new();
    for permission in needs {
        if !allowed(client, &user, permission).await {
            wrong.push(format!("denied but needed: {permission:?}"));
        }
    }
    for permission in must_not {
        if allowed(client, &user, permission).await {
            wrong.push(format!("allowed but not needed: {permission:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{service_account}'s RBAC:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn rbac_grants_each_daemon_its_contract_and_nothing_more() {
    let cluster = KubeCluster::start().await.unwrap();
    let client = cluster.client();
    install_rbac(
        &client,
        &[
            "--set",
            "lbController.metallbConfigMap=metallb-system/config",
            "--set",
            "lbController.metallbNamespace=metallb-system",
        ],
    )
    .await;

    assert_contract(
        &client,
        "groundwork-lb-controller",
        LB_CONTROLLER_NEEDS,
        LB_CONTROLLER_MUST_NOT,
    )
    .await;
    assert_contract(
        &client,
        "groundwork-dns-sync",
        DNS_SYNC_NEEDS,
        DNS_SYNC_MUST_NOT,
    )
    .await;

    // The speaker and dns-server never call the API: their accounts may do nothing at all.
    let nothing: Vec<Permission> = LB_CONTROLLER_NEEDS
        .iter()
        .chain(DNS_SYNC_NEEDS)
        .copied()
        .collect();
    assert_contract(&client, "groundwork-dns-server", &[], &nothing).await;
    let speaker = format!("system:serviceaccount:{SPEAKER_NAMESPACE}:groundwork-lb-speaker");
    for permission in &nothing {
        assert!(
            !allowed(&client, &speaker, permission).await,
            "the speaker may {permission:?}"
        );
    }
}

/// An apiserver with namespace `demo`, and a client of it.
async fn cluster_with_demo_namespace() -> (KubeCluster, Client) {
    let cluster = KubeCluster::start().await.unwrap();
    let client = cluster.client();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let demo = serde_json::from_value(serde_json::json!({"metadata": {"name": "demo"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &demo)
        .await
        .unwrap();
    (cluster, client)
}

#[tokio::test]
async fn with_a_namespace_dns_sync_is_granted_that_namespace_only() {
    let (_cluster, client) = cluster_with_demo_namespace().await;
    install_rbac(&client, &["--set", "dnsSync.namespace=demo"]).await;
    let needs: &[Permission] = &[
        ("list", "", "services", "", "demo", ""),
        ("watch", "", "services", "", "demo", ""),
        ("list", "networking.k8s.io", "ingresses", "", "demo", ""),
        ("watch", "networking.k8s.io", "ingresses", "", "demo", ""),
        ("list", GATEWAY_API, "tcproutes", "", "demo", ""),
        // Routes attach to Gateways in any namespace, and allowedRoutes selects namespaces by label.
        ("watch", GATEWAY_API, "gateways", "", "", ""),
        ("list", "", "namespaces", "", "", ""),
        ("create", "events.k8s.io", "events", "", "demo", ""),
        DNS_SYNC_RENEWS_ITS_LEASE,
    ];
    let must_not: &[Permission] = &[
        ("list", "", "services", "", "", ""),
        ("list", GATEWAY_API, "httproutes", "", "", ""),
        ("watch", "", "services", "", "other", ""),
        ("list", "networking.k8s.io", "ingresses", "", "", ""),
        ("create", "events.k8s.io", "events", "", "other", ""),
    ];
    assert_contract(&client, "groundwork-dns-sync", needs, must_not).await;
}

#[tokio::test]
async fn node_port_and_headless_services_grant_dns_sync_nodes_and_endpointslices_to_read_only() {
    let (_cluster, client) = cluster_with_demo_namespace().await;
    install_rbac(
        &client,
        &[
            "--set",
            "dnsSync.namespace=demo",
            "--set",
            "dnsSync.serviceTypeFilter={ClusterIP,NodePort}",
        ],
    )
    .await;
    // Nodes are cluster-scoped: read everywhere; EndpointSlices only where the Services are read.
    let needs: &[Permission] = &[
        ("list", "", "nodes", "", "", ""),
        ("watch", "", "nodes", "", "", ""),
        ("list", "discovery.k8s.io", "endpointslices", "", "demo", ""),
        (
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            "",
            "demo",
            "",
        ),
        ("list", "", "services", "", "demo", ""),
    ];
    let must_not: &[Permission] = &[
        ("patch", "", "nodes", "", "", "n1"),
        ("get", "", "nodes", "", "", "n1"),
        ("list", "discovery.k8s.io", "endpointslices", "", "", ""),
        (
            "list",
            "discovery.k8s.io",
            "endpointslices",
            "",
            "other",
            "",
        ),
        (
            "create",
            "discovery.k8s.io",
            "endpointslices",
            "",
            "demo",
            "",
        ),
        ("list", "", "pods", "", "demo", ""),
        ("list", "", "services", "", "", ""),
    ];
    assert_contract(&client, "groundwork-dns-sync", needs, must_not).await;
}

/// Applies the chart's RBAC objects (and their namespaces) for real.
async fn install_rbac(client: &Client, values: &[&str]) {
    let rendered = render_ok(values);
    let rbac_kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let mut docs = vec![restricted_namespace()];
    docs.extend(documents(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n",
    ));
    docs.extend(
        documents(&rendered)
            .into_iter()
            .filter(|d| rbac_kinds.contains(&d.kind.as_str()) || d.kind == "Namespace"),
    );
    let (_, failures) = apply_all(client, &docs, |_| true).await;
    assert!(
        failures.is_empty(),
        "RBAC does not apply:\n{}",
        failures.join("\n")
    );
}

/// A kubeconfig authenticating as `service_account` in the release namespace, with a token from the
/// apiserver's TokenRequest API: exactly what the pod would get mounted.
async fn service_account_kubeconfig(
    cluster: &KubeCluster,
    service_account: &str,
    dir: &Path,
) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client(), NAMESPACE);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc".to_owned()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    // JSON is valid YAML.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server_url(),
            "certificate-authority": cluster.dir().join("ca.crt"),
        }}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": service_account}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("{service_account}.kubeconfig"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn lb_controller(binary: &str, kubeconfig: &Path) -> LbController {
    LbController::new(binary, kubeconfig)
        .grpc("127.0.0.1:0")
        .leader_elect()
        .lease_name("groundwork-lb-controller")
        .lease_namespace(NAMESPACE)
        .pod_name("groundwork-lb-controller-0")
        .leader_service("groundwork-lb-controller", "10.244.0.9")
        .metallb_configmap("metallb-system/config")
}

/// Starts the daemon `launcher` runs and asserts it says "forbidden" in its log within `within` and, with
/// `never_ready`, that it is not ready then.
fn assert_fails_loudly<D: Flags>(launcher: &Launcher<D>, within: Duration, never_ready: bool) {
    let binary = launcher.binary();
    let mut daemon = match launcher.start() {
        Ok(daemon) => daemon,
        // Exiting at once with the refusal is loud enough.
        Err(e) => {
            assert!(e.to_string().to_lowercase().contains("forbidden"), "{e}");
            return;
        }
    };
    let log_path = daemon.process().log_path().to_owned();
    let said = wait::until_blocking("a 'forbidden' in the log", within, || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.to_lowercase().contains("forbidden") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    assert!(
        said.is_ok(),
        "{binary} without its rights said nothing:\n{}",
        daemon.process().log_tail(20)
    );
    if never_ready {
        let ready = daemon.get("/readyz").map(|r| r.status);
        assert_ne!(ready, Ok(200), "{binary} is ready without its rights");
    }
}

#[tokio::test]
async fn daemons_run_with_their_service_accounts_rights_and_fail_loudly_without_them() {
    let cluster = KubeCluster::start().await.unwrap();
    let client = cluster.client();
    install_crd(&cluster).await;
    install_rbac(
        &client,
        &[
            "--set",
            "lbController.metallbConfigMap=metallb-system/config",
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let lb_controller_bin = process::workspace_binary("lb-controller")
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string();
    let dns_sync = process::workspace_binary("dns-sync")
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string();

    // lb-controller as its ServiceAccount: every watch syncs and it wins the Lease, so it becomes ready; as
    // leader it points the speakers' Service (the chart's, without a selector) at itself.
    let kubeconfig =
        service_account_kubeconfig(&cluster, "groundwork-lb-controller", scratch.path()).await;
    let speakers_service: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "groundwork-lb-controller", "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "grpc", "port": 7472, "protocol": "TCP"}]}
        }))
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), NAMESPACE)
        .create(&Default::default(), &speakers_service)
        .await
        .unwrap();
    // The chart creates the slice empty; the leader may only fill it.
    let empty_slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "groundwork-lb-controller-leader", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": "groundwork-lb-controller"}},
            "addressType": "IPv4", "endpoints": [],
            "ports": [{"name": "grpc", "port": 7472, "protocol": "TCP"}]
        }))
        .unwrap();
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), NAMESPACE)
        .create(&Default::default(), &empty_slice)
        .await
        .unwrap();
    {
        let mut daemon = lb_controller(&lb_controller_bin, &kubeconfig)
            .start()
            .unwrap();
        daemon
            .wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.process().log_tail(30)));
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(client.clone(), NAMESPACE);
        wait::until(
            "the leader's EndpointSlice for the speakers' Service",
            Duration::from_secs(30),
            || {
                let slices = slices.clone();
                async move {
                    let slice = slices
                        .get("groundwork-lb-controller-leader")
                        .await
                        .map_err(|e| e.to_string())?;
                    let addresses: Vec<String> = slice
                        .endpoints
                        .unwrap_or_default()
                        .iter()
                        .flat_map(|e| e.addresses.clone())
                        .collect();
                    (addresses == ["10.244.0.9"])
                        .then_some(())
                        .ok_or_else(|| format!("addresses {addresses:?}"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.process().log_tail(30)));
    }

    // dns-sync as its ServiceAccount, against a real etcd.
    let etcd = Etcd::start().await.unwrap();
    let dns_kubeconfig =
        service_account_kubeconfig(&cluster, "groundwork-dns-sync", scratch.path()).await;
    let single = DnsSync::new(&dns_sync, "groundwork", &dns_kubeconfig, &etcd);
    {
        let mut daemon = single
            .clone()
            .leader_elect()
            .lease_name("groundwork-dns-sync")
            .lease_namespace(NAMESPACE)
            .pod_name("groundwork-dns-sync-0")
            .start()
            .unwrap();
        daemon
            .wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.process().log_tail(30)));
    }
    // With every Gateway API source too, once their CRDs are installed: the chart's grants suffice.
    let gateway_api = integration_tests::kube::gateway_api_crds(
        integration_tests::kube::GatewayApiChannel::Experimental,
    )
    .unwrap();
    cluster.install_crds(&gateway_api).await.unwrap();
    {
        let sources = "service,ingress,gateway-httproute,gateway-grpcroute,gateway-tlsroute,\
                       gateway-tcproute,gateway-udproute";
        let mut daemon = single.clone().flag("--source", sources).start().unwrap();
        daemon
            .wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.process().log_tail(30)));
    }
    // Publishing NodePort and headless Services, it also reads Nodes and EndpointSlices: the chart grants
    // that with dnsSync.serviceTypeFilter, and it is ready with those rights alone.
    install_rbac(
        &client,
        &["--set", "dnsSync.serviceTypeFilter={ClusterIP,NodePort}"],
    )
    .await;
    {
        let mut daemon = single
            .clone()
            .service_type("ClusterIP")
            .service_type("NodePort")
            .start()
            .unwrap();
        daemon
            .wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", daemon.process().log_tail(30)));
    }

    // Without their cluster-wide grants (the ClusterRoleBindings removed), neither may pass for working.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    for name in ["groundwork-lb-controller", "groundwork-dns-sync"] {
        bindings.delete(name, &Default::default()).await.unwrap();
    }
    // The RBAC authorizer reads bindings from a cache; wait until the refusal is visible.
    let user = format!("system:serviceaccount:{NAMESPACE}:groundwork-lb-controller");
    wait::until(
        "the binding removal to take effect",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let user = user.clone();
            async move {
                let permission: Permission = ("list", "", "services", "", "", "");
                if allowed(&client, &user, &permission).await {
                    Err("still allowed".to_owned())
                } else {
                    Ok(())
                }
            }
        },
    )
    .await
    .unwrap();
    assert_fails_loudly(
        &lb_controller(&lb_controller_bin, &kubeconfig),
        Duration::from_secs(15),
        true,
    );
    // Without --leader-elect: a standby is ready by design (it does nothing), so the active path is what shows.
    // It logs the refusal and stays unready: it never reports a view it could not list.
    assert_fails_loudly(&single, Duration::from_secs(15), true);
}

/// Runs `helm <args>` against `cluster` with its own Helm home under `home`; panics with stderr on failure.
fn helm_on(cluster: &KubeCluster, home: &Path, args: &[&str]) -> String {
    peers::helm(cluster.kubeconfig(), home, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The data of every Secret the chart generates, by `namespace/name`.
async fn generated_secrets(
    client: &Client,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>> {
    use k8s_openapi::api::core::v1::Secret;
    let mut found = std::collections::BTreeMap::new();
    for (namespace, name) in [
        (NAMESPACE, "groundwork-lb-ca"),
        (NAMESPACE, "groundwork-lb-controller-tls"),
        (SPEAKER_NAMESPACE, "groundwork-lb-speaker-tls"),
        (NAMESPACE, "groundwork-etcd-ca"),
        (NAMESPACE, "groundwork-etcd-server-tls"),
        (NAMESPACE, "groundwork-etcd-dns-server-tls"),
        (NAMESPACE, "groundwork-etcd-dns-sync-tls"),
        (NAMESPACE, "groundwork-etcd-root-tls"),
    ] {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        if let Some(secret) = api.get_opt(name).await.unwrap() {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            found.insert(format!("{namespace}/{name}"), data);
        }
    }
    found
}

/// A real `helm install`, `upgrade` and `uninstall` against the test bed's apiserver. The certificates the
/// chart generates (no cert-manager) are kept across upgrades, so controller and speakers keep trusting
/// each other; a deleted leaf Secret is issued again by the same CA. Pods never start here (no kubelet);
/// what is tested is what Helm writes.
#[tokio::test]
async fn helm_install_and_upgrade_keep_the_generated_certificates() {
    let cluster = KubeCluster::start().await.unwrap();
    let client = cluster.client();
    let home = tempfile::tempdir().unwrap();
    let chart = chart_dir().display().to_string();
    let install = [
        "install",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
    ];
    helm_on(&cluster, home.path(), &install);

    let first = generated_secrets(&client).await;
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        [
            "groundwork-speaker/groundwork-lb-speaker-tls",
            "groundwork/groundwork-etcd-ca",
            "groundwork/groundwork-etcd-dns-server-tls",
            "groundwork/groundwork-etcd-dns-sync-tls",
            "groundwork/groundwork-etcd-root-tls",
            "groundwork/groundwork-etcd-server-tls",
            "groundwork/groundwork-lb-ca",
            "groundwork/groundwork-lb-controller-tls",
        ],
        "the chart did not write every certificate Secret"
    );
    let lb_ca = &first["groundwork/groundwork-lb-ca"]["tls.crt"];
    for leaf in [
        "groundwork/groundwork-lb-controller-tls",
        "groundwork-speaker/groundwork-lb-speaker-tls",
    ] {
        assert_eq!(&first[leaf]["ca.crt"], lb_ca, "{leaf} names another CA");
        assert!(!first[leaf]["tls.key"].is_empty());
    }
    // etcd's server certificate names 127.0.0.1 as an IP address (a DNS name "127.0.0.1" matches no client
    // dialling the address), as cert-manager's does: members' local clients (etcd-auth, backups) use it.
    let server_crt = home.path().join("etcd-server.crt");
    std::fs::write(
        &server_crt,
        &first["groundwork/groundwork-etcd-server-tls"]["tls.crt"],
    )
    .unwrap();
    let sans = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&server_crt)
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&sans.stdout);
    assert!(sans.contains("IP Address:127.0.0.1"), "{sans}");
    assert!(sans.contains("DNS:localhost"), "{sans}");
    // The IPPool CRD came with the chart (crds/).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("ippools.groundwork.dev")
            .await
            .unwrap()
            .is_some()
    );

    // An upgrade with other values regenerates nothing.
    let upgrade = [
        "upgrade",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "lbController.replicas=3",
    ];
    helm_on(&cluster, home.path(), &upgrade);
    let second = generated_secrets(&client).await;
    assert_eq!(first, second, "an upgrade replaced certificates");

    // A leaf Secret deleted by hand is issued again, by the same CA.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), SPEAKER_NAMESPACE);
    secrets
        .delete("groundwork-lb-speaker-tls", &Default::default())
        .await
        .unwrap();
    helm_on(&cluster, home.path(), &upgrade);
    let third = generated_secrets(&client).await;
    let speaker = &third["groundwork-speaker/groundwork-lb-speaker-tls"];
    assert_ne!(
        speaker["tls.crt"],
        first["groundwork-speaker/groundwork-lb-speaker-tls"]["tls.crt"]
    );
    assert_eq!(
        &speaker["ca.crt"], lb_ca,
        "the re-issued certificate has another CA"
    );
    assert_eq!(
        third["groundwork/groundwork-lb-controller-tls"],
        first["groundwork/groundwork-lb-controller-tls"]
    );

    let status = helm_on(&cluster, home.path(), &["status", RELEASE, "-n", NAMESPACE]);
    assert!(status.contains("REVISION: 3"), "{status}");

    helm_on(
        &cluster,
        home.path(),
        &["uninstall", RELEASE, "-n", NAMESPACE],
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), NAMESPACE);
    wait::until(
        "the release's Deployments to be gone",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            async move {
                let left = deployments
                    .list(&Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
                left.items
                    .is_empty()
                    .then_some(())
                    .ok_or_else(|| format!("{} left", left.items.len()))
            }
        },
    )
    .await
    .unwrap();
}
