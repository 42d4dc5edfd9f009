//! The Helm chart (charts/invoice-operator) on the local cluster: it lints and renders with
//! defaults and with every optional feature, the API server accepts what it renders, an
//! install runs and its ServiceAccount is allowed exactly enough to remediate (the operator
//! binary runs on the host with that ServiceAccount's token), and upgrade and uninstall work
//! while the CRD and existing InvoiceServices survive. With `watchNamespace` the namespaced
//! rights exist in that namespace only, and still suffice. The built-in `edit`, `view` and
//! `admin` roles reach InvoiceServices through the chart's aggregated ClusterRoles. The chart's
//! conventions (cert-manager's CRD value names, kubeVersion, metadata, security context IDs,
//! extra volumes, the default PodDisruptionBudget, NOTES, the generated values table) are
//! checked on what `helm template` renders, without a cluster. Runs `helm` and `kubectl` (from
//! `CLUSTER_BIN` or `PATH`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use invoice_operator::api::{ActionKind, InvoiceService};
use invoice_operator_e2e::{
    OperatorProcess, TestNamespace, adopt_crd, apply_crash_loop_service, client,
    cluster_kube_version, crash_and_wait_evicted, crd_and_namespace, deploy_invoice_api,
    disown_crd, eventually, install_crd, kubeconfig_for_token, run_ok as ok, run_tool,
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Pod, ServiceAccount},
        events::v1::Event,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_yaml::Value;

/// The chart under test.
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/invoice-operator");
/// The repository's CRD directory the chart copies (`make chart-crds`).
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
const CRD_NAME: &str = "invoiceservices.invoiceops.dev";
/// The release name every test uses (in its own namespace). It contains the chart name, so
/// the chart's objects are called just `invoice-operator`.
const RELEASE: &str = "invoice-operator";
/// `helm install --wait`: the operator's pods are scheduled on kwok nodes and marked Ready.
const HELM_TIMEOUT: &str = "120s";

/// The CRD is cluster-scoped and one release at a time can own it: tests that install the
/// chart with its CRD take turns.
static CRD_OWNER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Values turning every optional feature on (watchNamespace is added per test).
const ALL_FEATURES: &str = r#"
forceDryRun: true
prometheus:
  url: https://prometheus.monitoring:9090
  tokenSecret: {name: prometheus-token, key: token}
metricProfile:
  requests: app_requests_total
  requestDurationBucket: app_request_duration_seconds_bucket
  dbPoolActive: app_db_active
  dbPoolMax: app_db_max
  certificateExpiry: app_certificate_expiry
logLevel: debug
serviceMonitor: {enabled: true, labels: {release: kube-prometheus}, scrapeTimeout: 10s, relabelings: [{targetLabel: cluster, replacement: eu1}], metricRelabelings: [{sourceLabels: [__name__], regex: go_.*, action: drop}]}
podDisruptionBudget: {enabled: true, minAvailable: 1}
podSecurityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000}
extraVolumes: [{name: ca-bundle, configMap: {name: ca-bundle}}]
extraVolumeMounts: [{name: ca-bundle, mountPath: /etc/invoice-operator/ca, readOnly: true}]
networkPolicy:
  enabled: true
  metricsFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
podAnnotations: {example.com/team: billing}
podLabels: {team: billing}
priorityClassName: ""
extraEnv: [{name: EXTRA, value: "1"}]
"#;

/// `helm template` of the chart for the cluster's Kubernetes version with `extra` arguments:
/// (success, stdout, stderr).
fn try_template(extra: &[&str]) -> (bool, String, String) {
    let kube_version = cluster_kube_version();
    let mut args = vec!["template", RELEASE, CHART, "--kube-version", &kube_version];
    args.extend_from_slice(extra);
    run_tool("helm", &args, None)
}

/// Writes `values` to a temporary file named after `name` and returns its path.
fn values_file(name: &str, values: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("invoice-operator-{name}-values.yaml"));
    std::fs::write(&path, values).expect("write values file");
    path
}

/// The documents of a rendered manifest (empty ones dropped).
fn documents(manifest: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(manifest)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|document| !document.is_null())
        .collect()
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or_default()
}

fn to_manifest(documents: &[&Value]) -> String {
    documents
        .iter()
        .map(|document| serde_yaml::to_string(document).expect("serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// No wildcard anywhere and nothing on Secrets in every Role and ClusterRole rendered.
fn assert_least_privilege(documents: &[Value]) {
    let roles: Vec<&Value> = documents
        .iter()
        .filter(|document| matches!(kind(document), "Role" | "ClusterRole"))
        .collect();
    assert!(!roles.is_empty(), "no RBAC rendered");
    for role in roles {
        for rule in role["rules"].as_sequence().expect("rules") {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for entry in rule[field].as_sequence().into_iter().flatten() {
                    let entry = entry.as_str().expect("string");
                    assert!(!entry.contains('*'), "wildcard in {rule:?}");
                    assert!(!entry.starts_with("secrets"), "Secrets in {rule:?}");
                }
            }
        }
    }
}

/// Labels a namespace to enforce the restricted Pod Security Standard.
fn enforce_restricted(namespace: &str) {
    ok(
        "kubectl",
        &[
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
            "--overwrite",
        ],
        None,
    );
}

fn helm_install(namespace: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "install",
        RELEASE,
        CHART,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
    ];
    args.extend_from_slice(extra);
    ok("helm", &args, None)
}

/// `kubectl auth can-i` as the chart's ServiceAccount in `namespace` (the release namespace).
fn can_i(release_namespace: &str, verb: &str, resource: &str, scope: &[&str]) -> bool {
    let user = format!("system:serviceaccount:{release_namespace}:{RELEASE}");
    can_i_as(&user, verb, resource, scope)
}

/// `kubectl auth can-i` as `user` (impersonated by the test's admin kubeconfig).
fn can_i_as(user: &str, verb: &str, resource: &str, scope: &[&str]) -> bool {
    // `pods/eviction` is asked as resource `pods` with `--subresource=eviction`.
    let (resource_only, subresource) = match resource.split_once('/') {
        Some((resource, subresource)) => (resource, format!("--subresource={subresource}")),
        None => (resource, String::new()),
    };
    let mut args = vec!["auth", "can-i", verb, resource_only, "--as", user];
    if !subresource.is_empty() {
        args.push(&subresource);
    }
    args.extend_from_slice(scope);
    let (_, stdout, stderr) = run_tool("kubectl", &args, None);
    match stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {resource}: {other} {stderr}"),
    }
}

async fn create_service(client: &Client, namespace: &str) {
    apply_crash_loop_service(
        client,
        namespace,
        "mode: Enforce, cooldown: 30s, verifyWindow: 1m, ladder: [RestartPod]",
    )
    .await;
}

/// Asserts of each `(verb, resource, scope)` that the chart's ServiceAccount (release
/// namespace `release_namespace`) may do it when `allowed`, or may not when not.
fn assert_rights(release_namespace: &str, allowed: bool, checks: &[(&str, &str, &[&str])]) {
    for (verb, resource, scope) in checks {
        assert_eq!(
            can_i(release_namespace, verb, resource, scope),
            allowed,
            "the ServiceAccount may{} {verb} {resource} {scope:?}",
            if allowed { " not" } else { "" }
        );
    }
}

/// The chart's ServiceAccount (release namespace `ns`) may do none of `denied` and all of
/// `allowed`, and with just that remediates in `work`.
async fn assert_rights_suffice(
    client: &Client,
    ns: &str,
    work: &str,
    denied: &[(&str, &str, &[&str])],
    allowed: &[(&str, &str, &[&str])],
) {
    assert_rights(ns, false, denied);
    assert_rights(ns, true, allowed);
    remediate_as_the_service_account(client, ns, work).await;
}

/// `helm uninstall` of the release in `namespace`, waiting for its objects to go; its stdout.
fn helm_uninstall(namespace: &str) -> String {
    ok(
        "helm",
        &["uninstall", RELEASE, "--namespace", namespace, "--wait"],
        None,
    )
}

/// Sufficient: the operator binary, with only the chart ServiceAccount's token (release
/// namespace `ns`) and watching `work`, holds the Lease in `ns`, evicts a crash-looping pod,
/// writes status and Events, and logs nothing forbidden.
async fn remediate_as_the_service_account(client: &Client, ns: &str, work: &str) {
    let client = client.clone();
    let (ns, work) = (ns.to_owned(), work.to_owned());
    let token = ok(
        "kubectl",
        &[
            "create",
            "token",
            RELEASE,
            "--namespace",
            &ns,
            "--duration=1h",
        ],
        None,
    );
    let kubeconfig = std::env::temp_dir().join(format!("invoice-operator-{ns}.kubeconfig"));
    kubeconfig_for_token(&token, &kubeconfig);
    let pods_before = deploy_invoice_api(&client, &work, 3).await;
    create_service(&client, &work).await;
    let identity = format!("{ns}-host");
    let operator = OperatorProcess::start_with_env(
        &identity,
        &[
            format!("--namespace={work}"),
            "--leader-election=true".to_owned(),
            format!("--lease-namespace={ns}"),
            format!("--lease-name={RELEASE}"),
            "--evaluation-interval=5s".to_owned(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))],
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    eventually(
        Duration::from_secs(60),
        "the operator to hold the Lease",
        || {
            let leases = leases.clone();
            let identity = identity.clone();
            async move {
                let lease = leases.get_opt(RELEASE).await.ok()??;
                (lease.spec?.holder_identity? == identity).then_some(())
            }
        },
    )
    .await;
    let victim = pods_before[0].clone();
    crash_and_wait_evicted(&client, &work, &victim).await;
    let events: Api<Event> = Api::namespaced(client.clone(), &work);
    eventually(Duration::from_secs(30), "a PodRestarted event", || {
        let events = events.clone();
        let victim = victim.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|event| {
                    event.reason.as_deref() == Some("PodRestarted")
                        && event
                            .note
                            .as_deref()
                            .is_some_and(|note| note.contains(&victim))
                })
                .then_some(())
        }
    })
    .await;
    let services: Api<InvoiceService> = Api::namespaced(client.clone(), &work);
    let last_action = eventually(Duration::from_secs(30), "the action in status", || {
        let services = services.clone();
        async move { services.get("invoice-api").await.ok()?.status?.last_action }
    })
    .await;
    assert_eq!(last_action.action, ActionKind::RestartPod);
    assert_eq!(last_action.target, format!("pod/{victim}"));
    let log = operator.log();
    assert!(log.contains("remediating"), "{log}");
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");

    drop(operator);
    let _ = std::fs::remove_file(&kubeconfig);
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{CHART}/Chart.yaml")).expect("read Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    // This crate's version is `[workspace.package] version`, like the operator's.
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "set appVersion in charts/invoice-operator/Chart.yaml to the crate version"
    );
}

#[test]
fn every_value_is_documented_in_values_yaml() {
    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("read values.yaml");
    let lines: Vec<&str> = values.lines().collect();
    // (indentation, key) of the keys enclosing the current line.
    let mut path: Vec<(usize, &str)> = Vec::new();
    let mut undocumented = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indentation = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if trimmed.starts_with(['#', '-']) || !key.chars().all(char::is_alphanumeric) {
            continue;
        }
        while path.last().is_some_and(|(depth, _)| *depth >= indentation) {
            path.pop();
        }
        path.push((indentation, key));
        // The default resources are an example map, not keys of the chart.
        if path.len() > 1 && path[0].1 == "resources" {
            continue;
        }
        let previous = lines[..index]
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim_start());
        if !previous.is_some_and(|line| line.starts_with('#')) {
            let dotted: Vec<&str> = path.iter().map(|(_, key)| *key).collect();
            undocumented.push(dotted.join("."));
        }
    }
    assert!(
        undocumented.is_empty(),
        "values without a comment in values.yaml: {undocumented:?}"
    );
}

#[test]
fn chart_crds_are_an_exact_copy_of_crds() {
    let mut compared = 0;
    for entry in std::fs::read_dir(CRDS).expect("read crds/") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().expect("file name").to_string_lossy();
        let copy = format!("{CHART}/files/crds/{name}");
        assert_eq!(
            std::fs::read_to_string(&copy).unwrap_or_default(),
            std::fs::read_to_string(&path).expect("read the CRD"),
            "{copy} drifted from crds/{name}: run `make chart-crds`"
        );
        compared += 1;
    }
    assert!(compared > 0, "no CRD in crds/");
}

#[tokio::test]
async fn chart_lints_renders_and_the_api_server_accepts_what_it_renders() {
    let (_client, namespace) = crd_and_namespace("e2e-helm-render").await;
    let ns = namespace.name.clone();
    enforce_restricted(&ns);
    let all_features = values_file(&ns, &format!("{ALL_FEATURES}\nwatchNamespace: {ns}\n"));
    let all_features = all_features.to_str().expect("utf-8 path");

    ok("helm", &["lint", "--strict", CHART], None);
    ok(
        "helm",
        &["lint", "--strict", CHART, "-f", all_features],
        None,
    );
    // The schema refuses unknown keys and wrong types.
    for bad in ["unknownKey=1", "replicaCount=many", "logFormat=xml"] {
        let (success, stdout, stderr) =
            run_tool("helm", &["lint", "--strict", CHART, "--set", bad], None);
        assert!(!success, "lint accepted {bad}:\n{stdout}\n{stderr}");
    }
    // Two replicas without leader election would both act: rendering refuses it (helm lint
    // reports a template `fail` only as INFO, so this is checked with helm template).
    let kube_version = cluster_kube_version();
    let (success, _, stderr) = try_template(&["--set", "leaderElection.enabled=false"]);
    assert!(
        !success && stderr.contains("needs leaderElection.enabled=true"),
        "{stderr}"
    );

    // Defaults: everything is applied to the API server with --dry-run=server.
    let defaults = ok(
        "helm",
        &[
            "template",
            RELEASE,
            CHART,
            "--kube-version",
            &kube_version,
            "--namespace",
            &ns,
        ],
        None,
    );
    let default_documents = documents(&defaults);
    let kinds: Vec<&str> = default_documents.iter().map(kind).collect();
    for expected in [
        "ServiceAccount",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(&expected), "{expected} missing: {kinds:?}");
    }
    for optional in ["ServiceMonitor", "NetworkPolicy"] {
        assert!(!kinds.contains(&optional), "{optional} is on by default");
    }
    // Two replicas by default, so a PodDisruptionBudget too.
    assert!(kinds.contains(&"PodDisruptionBudget"), "{kinds:?}");
    assert_least_privilege(&default_documents);
    let crd = default_documents
        .iter()
        .find(|document| kind(document) == "CustomResourceDefinition")
        .expect("CRD");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep")
    );
    let deployment = default_documents
        .iter()
        .find(|document| kind(document) == "Deployment")
        .expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let (success, stdout, stderr) = run_tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm-e2e",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&defaults),
    );
    assert!(success, "server dry run (defaults):\n{stdout}\n{stderr}");
    // The namespace enforces (and warns about) the restricted Pod Security Standard.
    assert!(!stderr.contains("violate PodSecurity"), "{stderr}");

    // Every optional feature: the ServiceMonitor kind is not served on this cluster (no
    // Prometheus Operator CRDs), so it is checked here and left out of the server dry run.
    let all = ok(
        "helm",
        &[
            "template",
            RELEASE,
            CHART,
            "--kube-version",
            &kube_version,
            "--namespace",
            &ns,
            "-f",
            all_features,
        ],
        None,
    );
    let all_documents = documents(&all);
    assert_least_privilege(&all_documents);
    let service_monitor = all_documents
        .iter()
        .find(|document| kind(document) == "ServiceMonitor")
        .expect("ServiceMonitor rendered");
    assert_eq!(
        service_monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    // The per-service series carry their own `namespace`/`service` labels: kept as they are,
    // not renamed to `exported_namespace`/`exported_service` by the scrape.
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"].as_str(),
        Some("cluster")
    );
    assert_eq!(
        service_monitor["spec"]["endpoints"][0]["metricRelabelings"][0]["action"].as_str(),
        Some("drop")
    );
    // watchNamespace: the namespaced rules move into a Role there; only nodes stay
    // cluster-wide.
    let operator_role = format!("{RELEASE}-{ns}");
    let cluster_role = all_documents
        .iter()
        .find(|document| {
            kind(document) == "ClusterRole"
                && document["metadata"]["name"].as_str() == Some(operator_role.as_str())
        })
        .expect("ClusterRole");
    let cluster_resources: Vec<&str> = cluster_role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .flat_map(|rule| rule["resources"].as_sequence().expect("resources"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(cluster_resources, ["nodes"]);
    assert!(all_documents.iter().any(|document| {
        kind(document) == "Role"
            && document["metadata"]["namespace"].as_str() == Some(ns.as_str())
            && document["rules"]
                .as_sequence()
                .is_some_and(|rules| rules.len() > 5)
    }));
    // The token is a mounted file, never an API read.
    assert!(all.contains("PROMETHEUS_TOKEN_FILE"), "{all}");
    assert!(all.contains("secretName: prometheus-token"), "{all}");
    for kind_present in ["PodDisruptionBudget", "NetworkPolicy"] {
        assert!(all_documents.iter().any(|d| kind(d) == kind_present));
    }
    let served: Vec<&Value> = all_documents
        .iter()
        .filter(|document| kind(document) != "ServiceMonitor")
        .collect();
    let (success, stdout, stderr) = run_tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm-e2e",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&to_manifest(&served)),
    );
    assert!(
        success,
        "server dry run (all features):\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("violate PodSecurity"), "{stderr}");
    namespace.delete().await;
}

#[tokio::test]
async fn installed_service_account_may_remediate_and_nothing_more() {
    let client = client().await;
    let _owner = CRD_OWNER.lock().await;
    install_crd(&client).await;
    let release = TestNamespace::create(&client, "e2e-helm-install").await;
    let workloads = TestNamespace::create(&client, "e2e-helm-workload").await;
    let (ns, work) = (release.name.clone(), workloads.name.clone());
    enforce_restricted(&ns);
    adopt_crd(CRD_NAME, RELEASE, &ns);
    let notes = helm_install(&ns, &[]);
    assert!(notes.contains("kind: InvoiceService"), "{notes}");

    // What the chart created: the Deployment's pods on kwok nodes, the identity, its RBAC.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually(Duration::from_secs(60), "two ready operator pods", || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get(RELEASE).await.ok()?;
            (deployment.status?.ready_replicas == Some(2)).then_some(())
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let operator_pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=invoice-operator"))
        .await
        .expect("list pods");
    assert_eq!(operator_pods.items.len(), 2);
    for pod in &operator_pods.items {
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
        assert!(
            node.is_some_and(|node| node.starts_with("kwok-")),
            "{pod:?}"
        );
    }
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get(RELEASE)
        .await
        .expect("the ServiceAccount");
    let cluster_name = format!("{RELEASE}-{ns}");
    Api::<ClusterRole>::all(client.clone())
        .get(&cluster_name)
        .await
        .expect("the ClusterRole");
    Api::<ClusterRoleBinding>::all(client.clone())
        .get(&cluster_name)
        .await
        .expect("the ClusterRoleBinding");
    Api::<Role>::namespaced(client.clone(), &ns)
        .get(&format!("{RELEASE}-leader-election"))
        .await
        .expect("the leader-election Role");
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD_NAME)
        .await
        .expect("the CRD");
    assert_eq!(
        crd.annotations()
            .get("meta.helm.sh/release-namespace")
            .map(String::as_str),
        Some(ns.as_str()),
        "the CRD belongs to the release"
    );

    // Not excessive: no Secrets, no deletes, no RBAC, leases only in its own namespace.
    let everywhere = ["--all-namespaces"];
    let in_work = ["--namespace", work.as_str()];
    let in_release = ["--namespace", ns.as_str()];
    let excessive = [
        ("get", "secrets", &in_work[..]),
        ("get", "secrets", &in_release[..]),
        ("list", "secrets", &everywhere[..]),
        ("watch", "secrets", &everywhere[..]),
        ("delete", "deployments", &in_work[..]),
        ("create", "deployments", &in_work[..]),
        ("update", "deployments", &in_work[..]),
        ("delete", "pods", &in_work[..]),
        ("delete", "invoiceservices", &in_work[..]),
        ("delete", "configmaps", &in_work[..]),
        ("create", "clusterroles", &everywhere[..]),
        ("create", "rolebindings", &in_work[..]),
        ("patch", "nodes", &everywhere[..]),
        ("create", "leases", &in_work[..]),
        ("delete", "customresourcedefinitions", &everywhere[..]),
    ];
    // ...and the grants it does need are there.
    let needed = [
        ("create", "pods/eviction", &in_work[..]),
        ("patch", "deployments/scale", &in_work[..]),
        ("watch", "nodes", &everywhere[..]),
        ("patch", "invoiceservices/status", &in_work[..]),
        ("create", "events.events.k8s.io", &in_work[..]),
        ("create", "leases", &in_release[..]),
    ];
    assert_rights_suffice(&client, &ns, &work, &excessive, &needed).await;
    helm_uninstall(&ns);
    disown_crd(CRD_NAME);
    workloads.delete().await;
    release.delete().await;
}

#[tokio::test]
async fn upgrade_changes_the_deployment_and_uninstall_keeps_the_crd_and_services() {
    let client = client().await;
    let _owner = CRD_OWNER.lock().await;
    install_crd(&client).await;
    let namespace = TestNamespace::create(&client, "e2e-helm-upgrade").await;
    let ns = namespace.name.clone();
    enforce_restricted(&ns);
    adopt_crd(CRD_NAME, RELEASE, &ns);
    helm_install(&ns, &[]);
    create_service(&client, &ns).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let env_of = |deployment: &Deployment, name: &str| -> Option<String> {
        deployment.spec.template.spec.as_ref()?.containers[0]
            .env
            .as_ref()?
            .iter()
            .find(|variable| variable.name == name)?
            .value
            .clone()
    };
    let before = deployments.get(RELEASE).await.expect("the Deployment");
    assert_eq!(before.spec.replicas, Some(2));
    assert_eq!(env_of(&before, "FORCE_DRY_RUN").as_deref(), Some("false"));

    ok(
        "helm",
        &[
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            &ns,
            "--reuse-values",
            "--set",
            "forceDryRun=true",
            "--set",
            "replicaCount=1",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ],
        None,
    );
    let after = deployments.get(RELEASE).await.expect("the Deployment");
    assert_eq!(after.spec.replicas, Some(1));
    assert_eq!(env_of(&after, "FORCE_DRY_RUN").as_deref(), Some("true"));
    assert_eq!(env_of(&after, "RUST_LOG").as_deref(), Some("debug"));
    assert!(after.metadata.generation > before.metadata.generation);
    let status: serde_json::Value = serde_json::from_str(&ok(
        "helm",
        &["status", RELEASE, "--namespace", &ns, "--output", "json"],
        None,
    ))
    .expect("helm status is JSON");
    assert_eq!(status["version"], 2, "{status}");
    assert_eq!(status["info"]["status"], "deployed", "{status}");

    let uninstalled = helm_uninstall(&ns);
    assert!(
        deployments.get_opt(RELEASE).await.expect("get").is_none(),
        "the Deployment survived uninstall"
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&format!("{RELEASE}-{ns}"))
            .await
            .expect("get")
            .is_none(),
        "the ClusterRole survived uninstall"
    );
    // Kept by helm.sh/resource-policy: keep — and with it every InvoiceService.
    assert!(
        uninstalled.contains("kept due to the resource policy"),
        "{uninstalled}"
    );
    Api::<CustomResourceDefinition>::all(client.clone())
        .get(CRD_NAME)
        .await
        .expect("the CRD survives uninstall");
    Api::<InvoiceService>::namespaced(client.clone(), &ns)
        .get("invoice-api")
        .await
        .expect("the InvoiceService survives uninstall");
    disown_crd(CRD_NAME);
    namespace.delete().await;
}

#[tokio::test]
async fn watch_namespace_install_grants_namespaced_rights_only_there() {
    let client = client().await;
    // This release leaves the CRD to whoever manages it (crds.enabled=false).
    install_crd(&client).await;
    let release = TestNamespace::create(&client, "e2e-helm-scoped").await;
    let workloads = TestNamespace::create(&client, "e2e-helm-watched").await;
    let (ns, work) = (release.name.clone(), workloads.name.clone());
    enforce_restricted(&ns);
    let watch = format!("watchNamespace={work}");
    helm_install(&ns, &["--set", "crds.enabled=false", "--set", &watch]);

    // Only node reads stay cluster-wide; the rest is a Role in the watched namespace.
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(&format!("{RELEASE}-{ns}"))
        .await
        .expect("the ClusterRole");
    let rules = cluster_role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["nodes".to_owned()][..])
    );
    Api::<Role>::namespaced(client.clone(), &work)
        .get(RELEASE)
        .await
        .expect("the Role in the watched namespace");

    let everywhere = ["--all-namespaces"];
    let in_work = ["--namespace", work.as_str()];
    let in_release = ["--namespace", ns.as_str()];
    let elsewhere = ["--namespace", "default"];
    let outside_the_watched_namespace = [
        ("list", "pods", &everywhere[..]),
        ("list", "invoiceservices", &everywhere[..]),
        ("list", "pods", &elsewhere[..]),
        ("create", "pods/eviction", &elsewhere[..]),
        ("patch", "deployments", &elsewhere[..]),
        ("patch", "deployments", &in_release[..]),
        ("create", "events.events.k8s.io", &elsewhere[..]),
        ("get", "secrets", &in_work[..]),
    ];
    let in_the_watched_namespace = [
        ("list", "pods", &in_work[..]),
        ("create", "pods/eviction", &in_work[..]),
        ("patch", "deployments", &in_work[..]),
        ("list", "nodes", &everywhere[..]),
    ];
    let (denied, allowed) = (&outside_the_watched_namespace, &in_the_watched_namespace);
    assert_rights_suffice(&client, &ns, &work, denied, allowed).await;

    helm_uninstall(&ns);
    workloads.delete().await;
    release.delete().await;
}

/// InvoiceServices as `kubectl auth can-i` names them (resource and API group).
const INVOICESERVICES: &str = "invoiceservices.invoiceops.dev";

/// The built-in `edit`, `view` and `admin` ClusterRoles reach InvoiceServices through the
/// chart's aggregated ClusterRoles: ServiceAccounts bound to them in a namespace (a
/// RoleBinding, as people are usually given a namespace) may create, change and delete
/// InvoiceServices there (`edit`, `admin`) or only read them and their status (`view`);
/// nobody but the operator writes status. The aggregated ClusterRoles go with the release.
#[tokio::test]
async fn built_in_edit_and_view_roles_grant_invoiceservices_through_the_chart() {
    let client = client().await;
    // The release leaves the CRD to whoever manages it; only the roles matter here.
    install_crd(&client).await;
    let namespace = TestNamespace::create(&client, "e2e-helm-aggregate").await;
    let ns = namespace.name.clone();
    helm_install(
        &ns,
        &["--set", "crds.enabled=false", "--set", "replicaCount=1"],
    );
    let accounts = [
        ("editor", "edit"),
        ("viewer", "view"),
        ("administrator", "admin"),
    ];
    for (account, role) in accounts {
        ok(
            "kubectl",
            &["create", "serviceaccount", account, "--namespace", &ns],
            None,
        );
        ok(
            "kubectl",
            &[
                "create",
                "rolebinding",
                account,
                &format!("--clusterrole={role}"),
                &format!("--serviceaccount={ns}:{account}"),
                "--namespace",
                &ns,
            ],
            None,
        );
    }
    let user = |account: &str| format!("system:serviceaccount:{ns}:{account}");
    let (editor, viewer, administrator) = (user("editor"), user("viewer"), user("administrator"));
    let here = ["--namespace", ns.as_str()];
    // The API server's aggregation controller copies the rules into the built-in roles
    // asynchronously.
    eventually(
        Duration::from_secs(60),
        "edit, view and admin to cover InvoiceServices",
        || {
            let covered = can_i_as(&editor, "create", INVOICESERVICES, &here)
                && can_i_as(&viewer, "list", INVOICESERVICES, &here)
                && can_i_as(&administrator, "delete", INVOICESERVICES, &here);
            async move { covered.then_some(()) }
        },
    )
    .await;

    let status = "invoiceservices.invoiceops.dev/status";
    for verb in [
        "create",
        "get",
        "list",
        "watch",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ] {
        for user in [&editor, &administrator] {
            assert!(
                can_i_as(user, verb, INVOICESERVICES, &here),
                "{user} may not {verb}"
            );
        }
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            can_i_as(&viewer, verb, INVOICESERVICES, &here),
            "view may not {verb}"
        );
        assert!(
            can_i_as(&viewer, verb, status, &here),
            "view may not {verb} status"
        );
    }
    // view reads only; status is the operator's; a RoleBinding grants in its namespace only.
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        assert!(
            !can_i_as(&viewer, verb, INVOICESERVICES, &here),
            "view may {verb}"
        );
    }
    for user in [&editor, &viewer, &administrator] {
        assert!(
            !can_i_as(user, "patch", status, &here),
            "{user} may patch status"
        );
        assert!(
            !can_i_as(user, "create", INVOICESERVICES, &["--namespace", "default"]),
            "{user} may create InvoiceServices outside its namespace"
        );
    }

    helm_uninstall(&ns);
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    for suffix in ["view", "edit"] {
        let name = format!("{RELEASE}-{ns}-{suffix}");
        assert!(
            cluster_roles.get_opt(&name).await.expect("get").is_none(),
            "{name} survived uninstall"
        );
    }
    namespace.delete().await;
}

/// `invoice-operator rules` with `args`: the printed rules file.
fn print_rules(args: &[&str]) -> String {
    let binary = invoice_operator_e2e::workspace_binary("invoice-operator");
    let mut command = std::process::Command::new(&binary);
    command.arg("rules").args(args);
    // The metric flags and the evaluation interval also read the environment: print exactly
    // what `args` ask for.
    for variable in [
        "EVALUATION_INTERVAL",
        "METRIC_REQUESTS",
        "METRIC_REQUEST_DURATION_BUCKET",
        "METRIC_DB_POOL_ACTIVE",
        "METRIC_DB_POOL_MAX",
        "METRIC_CERTIFICATE_EXPIRY",
    ] {
        command.env_remove(variable);
    }
    let output = command.output().expect("run invoice-operator rules");
    assert!(
        output.status.success(),
        "invoice-operator rules {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 rules")
}

/// `promtool check rules` of `rules`, written to a file named after `name`: whether promtool
/// accepted them, its stdout and its stderr.
fn promtool_check(name: &str, rules: &str) -> (bool, String, String) {
    let path = std::env::temp_dir().join(format!("invoice-operator-{name}.rules.yaml"));
    std::fs::write(&path, rules).expect("write rules file");
    let checked = run_tool(
        "promtool",
        &["check", "rules", path.to_str().expect("utf-8 path")],
        None,
    );
    let _ = std::fs::remove_file(&path);
    checked
}

/// `promtool check rules` accepts `rules` (written to a file named after `name`).
fn assert_promtool_accepts(name: &str, rules: &str) {
    let (accepted, stdout, stderr) = promtool_check(name, rules);
    assert!(
        accepted,
        "`promtool check rules` ({name}) failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

/// The arguments placing a rendered release in the namespace `operators`.
const IN_OPERATORS: [&str; 2] = ["--namespace", "operators"];

/// The documents `helm template` renders with `values` (written to a file named after
/// `name`) and the `extra` arguments.
fn render_chart(name: &str, values: &str, extra: &[&str]) -> Vec<Value> {
    let values = values_file(name, values);
    let kube_version = cluster_kube_version();
    let mut args = vec!["template", RELEASE, CHART, "--kube-version", &kube_version];
    args.extend_from_slice(extra);
    args.extend(["-f", values.to_str().expect("utf-8 path")]);
    let manifest = ok("helm", &args, None);
    let _ = std::fs::remove_file(&values);
    documents(&manifest)
}

/// The document of `kind_of` named `name` among `documents`, if any.
fn find_named(documents: Vec<Value>, kind_of: &str, name: &str) -> Option<Value> {
    documents.into_iter().find(|document| {
        kind(document) == kind_of && document["metadata"]["name"].as_str() == Some(name)
    })
}

/// The rendered `object` stands in `namespace`, labelled `release: <release>` where given.
fn assert_placed(object: &Value, namespace: &str, release: Option<&str>) {
    assert_eq!(object["metadata"]["namespace"].as_str(), Some(namespace));
    if release.is_some() {
        assert_eq!(object["metadata"]["labels"]["release"].as_str(), release);
    }
}

/// `render` renders nothing with the values `off` (else the test fails saying
/// `rendered_when_off`) and, with `on`, the object in the namespace `operators`, returned.
fn rendered_only_when_enabled(
    render: fn(&str) -> Option<Value>,
    off: &str,
    on: &str,
    rendered_when_off: &str,
) -> Value {
    assert!(render(off).is_none(), "{rendered_when_off}");
    let object = render(on).expect("rendered");
    assert_placed(&object, "operators", None);
    object
}

/// The groups of the rendered PrometheusRule `rule` are exactly `printed` (else the test fails
/// saying `differs`), and pass `promtool check rules` (written as `name`).
fn assert_groups_are_printed(rule: &Value, printed: &str, differs: &str, name: &str) {
    let expected: Value = serde_yaml::from_str(printed).expect("printed rules parse");
    assert_eq!(rule["spec"], expected, "{differs}");
    assert_promtool_accepts(
        name,
        &serde_yaml::to_string(&rule["spec"]).expect("serialize"),
    );
}

/// The chart's PrometheusRule rendered with `values`, or `None` when it renders none.
fn rendered_prometheus_rule(values: &str) -> Option<Value> {
    render_chart("recording-rules", values, &IN_OPERATORS)
        .into_iter()
        .find(|document| kind(document) == "PrometheusRule")
}

/// The recording rules pass `promtool check rules`, both as printed by the binary and as the
/// chart's PrometheusRule renders them, whose groups are exactly what the binary prints for
/// the same interval and request metric. Needs `helm` and `promtool`, no cluster.
#[test]
fn recording_rules_pass_promtool_and_the_chart_renders_what_the_binary_prints() {
    let printed = print_rules(&[]);
    assert_promtool_accepts("printed", &printed);
    let custom = print_rules(&["--interval=1m", "--metric-requests=app_requests_total"]);
    assert_promtool_accepts("printed-custom", &custom);
    // The check has teeth: promtool refuses an unbalanced expression.
    let (accepted, _, _) = promtool_check("broken", &printed.replace("sum by (", "sum by (("));
    assert!(!accepted, "promtool accepted broken rules");

    let default = rendered_only_when_enabled(
        rendered_prometheus_rule,
        "{}",
        "recordingRules: {enabled: true}",
        "a PrometheusRule is rendered by default",
    );
    let differs = "the chart's groups differ from the binary's";
    assert_groups_are_printed(&default, &printed, differs, "chart");

    let tuned = rendered_prometheus_rule(
        "recordingRules: {enabled: true, interval: 1m, namespace: monitoring, \
         labels: {release: kube-prometheus-stack}}\n\
         metricProfile: {requests: app_requests_total}\n",
    )
    .expect("rendered");
    assert_placed(&tuned, "monitoring", Some("kube-prometheus-stack"));
    let ignored = "the chart ignores interval or metric";
    assert_groups_are_printed(&tuned, &custom, ignored, "chart-custom");
    assert_eq!(tuned["spec"]["groups"][0]["interval"].as_str(), Some("1m"));
    assert_eq!(tuned["spec"]["groups"][1]["interval"].as_str(), Some("1h"));
}

/// The promtool unit tests of the alerting rules (input series that fire each alert and
/// series that do not), run against `rules_file` written beside them.
const ALERT_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../operator/src/prometheus/alerts/promtool-tests.yaml"
);

/// `promtool test rules` of [`ALERT_TESTS`] against `rules`: whether every test passed, and
/// promtool's output.
fn promtool_test_alerts(name: &str, rules: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("invoice-operator-alerts-{name}"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    std::fs::write(dir.join("alerting-rules.yaml"), rules).expect("write rules");
    let tests = dir.join("promtool-tests.yaml");
    std::fs::copy(ALERT_TESTS, &tests).expect("copy promtool tests");
    let (passed, stdout, stderr) = run_tool(
        "promtool",
        &["test", "rules", tests.to_str().expect("utf-8 path")],
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
    (passed, format!("{stdout}{stderr}"))
}

/// The chart's alerting PrometheusRule rendered with `values`, or `None` when it renders none.
fn rendered_alert_rule(values: &str) -> Option<Value> {
    find_named(
        render_chart("alerting-rules", values, &IN_OPERATORS),
        "PrometheusRule",
        "invoice-operator-alerts",
    )
}

/// The alerting rules pass `promtool check rules` and `promtool test rules` (each alert fires
/// for the series made to fire it, with its labels and annotations, and not for the series
/// beside them), as printed by the binary and as the chart's PrometheusRule renders them,
/// which is what the binary prints for the same job, runbook URL and thresholds. Needs `helm`
/// and `promtool`, no cluster.
#[test]
fn alerting_rules_pass_promtool_check_and_test_and_the_chart_renders_what_the_binary_prints() {
    let printed = print_rules(&["--alerts"]);
    assert_promtool_accepts("alerts-printed", &printed);
    let (passed, output) = promtool_test_alerts("printed", &printed);
    assert!(passed, "promtool test rules failed:\n{output}");
    // The tests have teeth: a page threshold nothing reaches fires nothing.
    let (passed, _) = promtool_test_alerts("broken", &printed.replace("> 14.4 and", "> 1000 and"));
    assert!(!passed, "promtool tests pass with a broken burn-rate alert");

    let default = rendered_only_when_enabled(
        rendered_alert_rule,
        "recordingRules: {enabled: true}",
        "alertingRules: {enabled: true}",
        "alerting rules are rendered by default",
    );
    // The chart's job defaults to its metrics Service, the job its ServiceMonitor gives.
    let for_service = print_rules(&["--alerts", "--operator-job=invoice-operator-metrics"]);
    let differs = "the chart's alerts differ from the binary's";
    assert_groups_are_printed(&default, &for_service, differs, "alerts-chart");

    let tuned = rendered_alert_rule(
        "alertingRules:\n  enabled: true\n  namespace: monitoring\n  operatorJob: invoice-operator\n  \
         labels: {release: kube-prometheus-stack}\n  runbookBaseUrl: https://docs.example/runbook.html\n  \
         for: {InvoiceServiceSignalsUntrusted: 2m}\n",
    )
    .expect("rendered");
    assert_placed(&tuned, "monitoring", Some("kube-prometheus-stack"));
    let custom = print_rules(&[
        "--evaluation-interval=30s",
        "--alerts",
        "--untrusted-intervals=4",
        "--runbook-url=https://docs.example/runbook.html",
    ]);
    let ignored = "the chart ignores job, runbook URL or for";
    assert_groups_are_printed(&tuned, &custom, ignored, "alerts-chart-tuned");
    // The chart's default rules, on the job the promtool tests' series carry, pass them.
    let chart = serde_yaml::to_string(&default["spec"]).expect("serialize");
    let (passed, output) = promtool_test_alerts(
        "chart",
        &chart.replace(
            "job=\"invoice-operator-metrics\"",
            "job=\"invoice-operator\"",
        ),
    );
    assert!(
        passed,
        "promtool test rules failed on the chart's rules:\n{output}"
    );
}

/// `grafanaDashboard.enabled` renders a ConfigMap labelled for Grafana's sidecar holding
/// exactly files/dashboard.json; off by default. Needs `helm`, no cluster.
#[test]
fn the_grafana_dashboard_configmap_holds_the_dashboard_json() {
    let render = |values: &str| {
        find_named(
            render_chart("dashboard", values, &[]),
            "ConfigMap",
            "invoice-operator-dashboard",
        )
    };
    assert!(
        render("{}").is_none(),
        "the dashboard is rendered by default"
    );
    let config_map =
        render("grafanaDashboard: {enabled: true, labels: {team: platform}}").expect("rendered");
    assert_eq!(
        config_map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    assert_eq!(
        config_map["metadata"]["labels"]["team"].as_str(),
        Some("platform")
    );
    let shipped =
        std::fs::read_to_string(format!("{CHART}/files/dashboard.json")).expect("dashboard.json");
    let rendered = config_map["data"]["invoice-operator.json"]
        .as_str()
        .expect("json key");
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
    assert_eq!(parse(rendered), parse(&shipped));
}

/// The documents `helm template` renders in the namespace `operators` with `args` (`--set`s,
/// `-f`) over the defaults.
fn render_with(args: &[&str]) -> Vec<Value> {
    let kube_version = cluster_kube_version();
    let mut all = vec!["template", RELEASE, CHART, "--namespace", "operators"];
    all.extend_from_slice(&["--kube-version", &kube_version]);
    all.extend_from_slice(args);
    documents(&ok("helm", &all, None))
}

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read a directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// The release notes (NOTES.txt) an install in the namespace `operators` with `args` prints,
/// rendered without a cluster: `helm install --dry-run` asks the API server, and `helm
/// template` leaves the notes out, so a copy of the chart renders NOTES.txt with `tpl` (the
/// same values, release and named templates) into a ConfigMap.
fn render_notes(args: &[&str]) -> String {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let copy = std::env::temp_dir().join(format!(
        "invoice-operator-notes-{}-{}",
        std::process::id(),
        COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(Path::new(CHART), &copy);
    std::fs::copy(
        copy.join("templates/NOTES.txt"),
        copy.join("files/NOTES.txt"),
    )
    .expect("copy NOTES.txt");
    let template = "templates/release-notes.yaml";
    std::fs::write(
        copy.join(template),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: release-notes\ndata:\n  \
         notes: {{ tpl (.Files.Get \"files/NOTES.txt\") . | toJson }}\n",
    )
    .expect("write the template");
    let chart = copy.to_str().expect("utf-8 path");
    let kube_version = cluster_kube_version();
    let mut all = vec!["template", RELEASE, chart, "--namespace", "operators"];
    all.extend_from_slice(&["--kube-version", &kube_version, "--show-only", template]);
    all.extend_from_slice(args);
    let rendered = ok("helm", &all, None);
    let _ = std::fs::remove_dir_all(&copy);
    let config_map = documents(&rendered).pop().expect("the notes' ConfigMap");
    config_map["data"]["notes"]
        .as_str()
        .expect("the notes")
        .to_owned()
}

/// The rendered CRD with `args`, if any.
fn rendered_crd(args: &[&str]) -> Option<Value> {
    render_with(args)
        .into_iter()
        .find(|document| kind(document) == "CustomResourceDefinition")
}

/// Whether the rendered CRD carries `helm.sh/resource-policy: keep`.
fn kept(crd: &Value) -> bool {
    crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str() == Some("keep")
}

/// `crds.enabled` / `crds.keep` (cert-manager's names) switch the CRD and its keep annotation;
/// the former `installCRDs` / `keepCRDs` still work, win while set, and make the notes say
/// they are deprecated. Needs `helm`, no cluster.
#[test]
fn crds_follow_cert_managers_value_names_and_the_old_names_still_work() {
    assert!(kept(&rendered_crd(&[]).expect("a CRD by default")));
    assert!(rendered_crd(&["--set", "crds.enabled=false"]).is_none());
    let unkept = rendered_crd(&["--set", "crds.keep=false"]).expect("the CRD");
    assert!(!kept(&unkept), "crds.keep=false ignored");

    assert!(rendered_crd(&["--set", "installCRDs=false"]).is_none());
    let unkept = rendered_crd(&["--set", "keepCRDs=false"]).expect("the CRD");
    assert!(!kept(&unkept), "keepCRDs=false ignored");
    let both = ["--set", "installCRDs=true", "--set", "crds.enabled=false"];
    assert!(rendered_crd(&both).is_some(), "installCRDs does not win");

    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("values.yaml");
    for old in ["installCRDs:", "keepCRDs:"] {
        // Defined, they could not tell "set by the user" from the default.
        assert!(
            !values.lines().any(|line| line.starts_with(old)),
            "{old} in values.yaml"
        );
    }
    let notes = render_notes(&[]);
    assert!(!notes.contains("DEPRECATED"), "{notes}");
    let notes = render_notes(&["--set", "installCRDs=false", "--set", "keepCRDs=true"]);
    assert!(
        notes.contains("DEPRECATED: installCRDs is now crds.enabled")
            && notes.contains("DEPRECATED: keepCRDs is now crds.keep"),
        "{notes}"
    );
}

/// Chart.yaml refuses Kubernetes before 1.28, the first whose API server takes the CRD's
/// validation rules with `fieldPath`. Needs `helm`, no cluster.
#[test]
fn chart_requires_kubernetes_1_28_which_the_crds_validation_rules_need() {
    let crd = std::fs::read_to_string(format!("{CRDS}/{CRD_NAME}.yaml")).expect("the CRD");
    assert!(crd.contains("x-kubernetes-validations:") && crd.contains("fieldPath:"));
    let template = |version: &str| {
        run_tool(
            "helm",
            &["template", RELEASE, CHART, "--kube-version", version],
            None,
        )
    };
    let (success, _, stderr) = template("1.27.16");
    assert!(!success && stderr.contains("kubeVersion"), "{stderr}");
    for version in ["1.28.0", "1.35.4"] {
        let (success, _, stderr) = template(version);
        assert!(success, "refused on {version}: {stderr}");
    }
}

/// The chart's aggregated ClusterRoles: `<name>-view` (aggregated into view, edit and admin)
/// reads InvoiceServices and their status and nothing else; `<name>-edit` (into edit and
/// admin) writes InvoiceServices, never their status. `rbac.aggregateClusterRoles=false`
/// renders neither. Needs `helm`, no cluster (the cluster test binds them).
#[test]
fn aggregated_cluster_roles_extend_the_built_in_roles() {
    let role = |documents: &[Value], suffix: &str| {
        let name = format!("{RELEASE}-operators-{suffix}");
        documents
            .iter()
            .find(|document| {
                kind(document) == "ClusterRole"
                    && document["metadata"]["name"].as_str() == Some(name.as_str())
            })
            .cloned()
    };
    let strings = |value: &Value| -> Vec<String> {
        let items = value.as_sequence().expect("a list");
        items
            .iter()
            .map(|item| item.as_str().expect("string").to_owned())
            .collect()
    };
    let aggregated_to = |role: &Value| -> Vec<String> {
        let labels = role["metadata"]["labels"].as_mapping().expect("labels");
        let mut to: Vec<String> = labels
            .iter()
            .filter(|(_, value)| value.as_str() == Some("true"))
            .filter_map(|(key, _)| {
                let key = key.as_str()?;
                Some(
                    key.strip_prefix("rbac.authorization.k8s.io/aggregate-to-")?
                        .to_owned(),
                )
            })
            .collect();
        to.sort();
        to
    };
    let defaults = render_with(&[]);
    assert_least_privilege(&defaults);

    let view = role(&defaults, "view").expect("the view role");
    assert_eq!(aggregated_to(&view), ["admin", "edit", "view"]);
    let rules = view["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strings(&rules[0]["apiGroups"]), ["invoiceops.dev"]);
    assert_eq!(
        strings(&rules[0]["resources"]),
        ["invoiceservices", "invoiceservices/status"]
    );
    assert_eq!(strings(&rules[0]["verbs"]), ["get", "list", "watch"]);

    let edit = role(&defaults, "edit").expect("the edit role");
    assert_eq!(aggregated_to(&edit), ["admin", "edit"]);
    let rules = edit["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strings(&rules[0]["resources"]), ["invoiceservices"]);
    assert_eq!(
        strings(&rules[0]["verbs"]),
        ["create", "update", "patch", "delete", "deletecollection"]
    );

    for off in ["rbac.aggregateClusterRoles=false", "rbac.create=false"] {
        let documents = render_with(&["--set", off, "--set", "serviceAccount.name=operator"]);
        for suffix in ["view", "edit"] {
            assert!(
                role(&documents, suffix).is_none(),
                "{suffix} rendered with {off}"
            );
        }
    }
}

/// The pod's `securityContext` of the Deployment rendered with `args`.
fn pod_security_context(args: &[&str]) -> Value {
    let deployment = find_named(render_with(args), "Deployment", RELEASE).expect("Deployment");
    deployment["spec"]["template"]["spec"]["securityContext"].clone()
}

/// The pod's user and group IDs are values (65532, the image's user, by default), and each
/// may be left unset for the platform to assign (OpenShift); the rest of the restricted
/// profile stays. Needs `helm`, no cluster.
#[test]
fn pod_user_and_group_ids_are_values_and_may_be_left_unset() {
    let ids = ["runAsUser", "runAsGroup", "fsGroup"];
    let defaults = pod_security_context(&[]);
    for id in ids {
        assert_eq!(defaults[id].as_i64(), Some(65532), "{id}: {defaults:?}");
    }
    let chosen = pod_security_context(&[
        "--set",
        "podSecurityContext.runAsUser=1000",
        "--set",
        "podSecurityContext.runAsGroup=2000",
        "--set",
        "podSecurityContext.fsGroup=3000",
    ]);
    let values: Vec<Option<i64>> = ids.iter().map(|id| chosen[id].as_i64()).collect();
    assert_eq!(values, [Some(1000), Some(2000), Some(3000)]);
    // An OpenShift-sized ID from a values file (a float to Helm) stays an integer.
    let large = values_file("large-uid", "podSecurityContext: {runAsUser: 1000680000}\n");
    let context = pod_security_context(&["-f", large.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&large);
    assert_eq!(
        context["runAsUser"].as_i64(),
        Some(1_000_680_000),
        "{context:?}"
    );

    let unset = pod_security_context(&[
        "--set",
        "podSecurityContext.runAsUser=null",
        "--set",
        "podSecurityContext.runAsGroup=null",
        "--set",
        "podSecurityContext.fsGroup=null",
    ]);
    let fields = unset.as_mapping().expect("a securityContext");
    for id in ids {
        assert!(!fields.contains_key(id), "{id} set: {unset:?}");
    }
    assert_eq!(unset["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        unset["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    // Unset from a values file too.
    let openshift = values_file(
        "openshift",
        "podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}\n",
    );
    let unset = pod_security_context(&["-f", openshift.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&openshift);
    for id in ids {
        assert!(unset.get(id).is_none(), "{id} set: {unset:?}");
    }
}

/// `extraVolumes` and `extraVolumeMounts` reach the pod and the operator container, beside
/// the Prometheus token's volume; `extraEnv` reaches the container. Needs `helm`, no cluster.
#[test]
fn extra_volumes_mounts_and_env_reach_the_operator_pod() {
    let values = values_file(
        "extra-volumes",
        "prometheus: {tokenSecret: {name: prometheus-token}}\n\
         extraVolumes: [{name: ca-bundle, configMap: {name: corporate-ca}}]\n\
         extraVolumeMounts: [{name: ca-bundle, mountPath: /etc/invoice-operator/ca, readOnly: true}]\n\
         extraEnv: [{name: SSL_CERT_DIR, value: /etc/invoice-operator/ca}]\n",
    );
    let path = values.to_str().expect("utf-8 path");
    let deployment =
        find_named(render_with(&["-f", path]), "Deployment", RELEASE).expect("Deployment");
    let _ = std::fs::remove_file(&values);
    let pod = &deployment["spec"]["template"]["spec"];
    let names = |list: &Value| -> Vec<String> {
        let items = list.as_sequence().expect("a list");
        items
            .iter()
            .map(|item| item["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(names(&pod["volumes"]), ["prometheus-token", "ca-bundle"]);
    assert_eq!(
        pod["volumes"][1]["configMap"]["name"].as_str(),
        Some("corporate-ca")
    );
    let container = &pod["containers"][0];
    assert_eq!(
        names(&container["volumeMounts"]),
        ["prometheus-token", "ca-bundle"]
    );
    assert_eq!(
        container["volumeMounts"][1]["mountPath"].as_str(),
        Some("/etc/invoice-operator/ca")
    );
    assert!(names(&container["env"]).contains(&"SSL_CERT_DIR".to_owned()));

    // Without the token: only the extra ones; with neither: no volumes at all.
    let values = values_file(
        "extra-volumes-only",
        "extraVolumes: [{name: scratch, emptyDir: {}}]\n\
         extraVolumeMounts: [{name: scratch, mountPath: /tmp}]\n",
    );
    let path = values.to_str().expect("utf-8 path");
    let deployment =
        find_named(render_with(&["-f", path]), "Deployment", RELEASE).expect("Deployment");
    let _ = std::fs::remove_file(&values);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(names(&pod["volumes"]), ["scratch"]);
    assert_eq!(names(&pod["containers"][0]["volumeMounts"]), ["scratch"]);
    let deployment = find_named(render_with(&[]), "Deployment", RELEASE).expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod.get("volumes").is_none() && pod["containers"][0].get("volumeMounts").is_none());
}

/// A PodDisruptionBudget (one pod available) is rendered by default, since the default is two
/// replicas; never for a single replica (it would block every node drain), nor when off.
/// Needs `helm`, no cluster.
#[test]
fn pod_disruption_budget_is_on_by_default_with_more_than_one_replica() {
    let pdb = |args: &[&str]| find_named(render_with(args), "PodDisruptionBudget", RELEASE);
    let default = pdb(&[]).expect("a PodDisruptionBudget by default");
    assert_eq!(default["spec"]["minAvailable"].as_i64(), Some(1));
    assert_eq!(
        default["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"].as_str(),
        Some(RELEASE)
    );
    assert!(pdb(&["--set", "replicaCount=3"]).is_some());
    assert!(
        pdb(&["--set", "replicaCount=1"]).is_none(),
        "a PDB for one replica"
    );
    assert!(pdb(&["--set", "podDisruptionBudget.enabled=false"]).is_none());
}

/// The release notes name no file of the repository (a chart user has none of them): the
/// InvoiceService to start with is inline and valid, and the way to the CRD when the chart
/// does not install it is the chart itself. Needs `helm`, no cluster.
#[test]
fn notes_name_no_repository_paths() {
    let cases: [&[&str]; 4] = [
        &[],
        &["--set", "crds.enabled=false", "--set", "forceDryRun=true"],
        &["--set", "watchNamespace=invoicing"],
        &[
            "--set",
            "prometheus.tokenSecret.name=token",
            "--set",
            "crds.keep=false",
        ],
    ];
    for args in cases {
        let notes = render_notes(args);
        for path in [
            "examples/",
            "crds/",
            "charts/",
            "docs/",
            "tests/",
            "make crds",
        ] {
            assert!(
                !notes.contains(path),
                "the notes name {path:?} with {args:?}:\n{notes}"
            );
        }
        // The inline InvoiceService parses as one once its placeholders are filled in.
        let (_, manifest) = notes.split_once("<<'YAML'\n").expect("an inline manifest");
        let (manifest, _) = manifest.split_once("\nYAML\n").expect("its end");
        let manifest = manifest
            .replace("<name>", "payments-api")
            .replace("<namespace of the Deployment>", "invoicing")
            .replace("<the Deployment>", "payments-api");
        let service: InvoiceService =
            serde_yaml::from_str(&manifest).unwrap_or_else(|error| panic!("{error}:\n{manifest}"));
        assert_eq!(service.metadata.namespace.as_deref(), Some("invoicing"));
    }
    let without_crd = render_notes(&["--set", "crds.enabled=false"]);
    assert!(
        without_crd.contains("--show-only templates/crds.yaml"),
        "{without_crd}"
    );
}

/// Chart.yaml's metadata: kubeVersion, maintainers, the license (Cargo.toml's) and the
/// default image (values.yaml's repository at appVersion) for Artifact Hub; `helm lint
/// --strict` passes. Needs `helm`, no cluster.
#[test]
fn chart_metadata_names_license_maintainers_and_the_image() {
    let read = |path: &str| std::fs::read_to_string(path).expect("read");
    let chart: Value =
        serde_yaml::from_str(&read(&format!("{CHART}/Chart.yaml"))).expect("Chart.yaml");
    let values: Value =
        serde_yaml::from_str(&read(&format!("{CHART}/values.yaml"))).expect("values.yaml");
    assert_eq!(chart["kubeVersion"].as_str(), Some(">=1.28.0-0"));
    let maintainers = chart["maintainers"].as_sequence().expect("maintainers");
    assert!(!maintainers.is_empty() && maintainers.iter().all(|m| m["name"].is_string()));

    let cargo = read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    let license = cargo
        .lines()
        .find_map(|line| line.strip_prefix("license = "))
        .expect("the workspace license")
        .trim_matches('"');
    let annotations = &chart["annotations"];
    assert_eq!(
        annotations["artifacthub.io/license"].as_str(),
        Some(license)
    );
    let images: Value = serde_yaml::from_str(
        annotations["artifacthub.io/images"]
            .as_str()
            .expect("artifacthub.io/images"),
    )
    .expect("the images parse");
    let expected = format!(
        "{}:{}",
        values["image"]["repository"]
            .as_str()
            .expect("image.repository"),
        chart["appVersion"].as_str().expect("appVersion")
    );
    assert_eq!(images[0]["image"].as_str(), Some(expected.as_str()));
    ok("helm", &["lint", "--strict", CHART], None);
}

/// values.schema.json knows every new value and refuses typos and wrong types in them.
/// Needs `helm`, no cluster.
#[test]
fn the_schema_takes_the_new_values_and_refuses_typos_in_them() {
    let lint = |args: &[&str]| {
        let mut all = vec!["lint", "--strict", CHART];
        all.extend_from_slice(args);
        run_tool("helm", &all, None)
    };
    let good = values_file(
        "schema-good",
        "crds: {enabled: false, keep: false}\ninstallCRDs: true\nkeepCRDs: true\n\
         rbac: {create: true, aggregateClusterRoles: false}\n\
         podSecurityContext: {runAsUser: 1000, runAsGroup: null, fsGroup: 1000}\n\
         podDisruptionBudget: {enabled: true, minAvailable: 1}\n\
         extraVolumes: [{name: ca, configMap: {name: ca}}]\n\
         extraVolumeMounts: [{name: ca, mountPath: /etc/ca}]\n",
    );
    let (success, stdout, stderr) = lint(&["-f", good.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&good);
    assert!(success, "{stdout}\n{stderr}");
    for bad in [
        "crds.enable=false",
        "crds.enabled=maybe",
        "installCRDs=maybe",
        "rbac.aggregateClusterRole=true",
        "podSecurityContext.runAsUser=-1",
        "podSecurityContext.privileged=true",
        "extraVolumeMounts[0].name=ca",
        "extraVolumes[0].configMap.name=ca",
    ] {
        let (success, stdout, stderr) = lint(&["--set", bad]);
        assert!(!success, "lint accepted {bad}:\n{stdout}\n{stderr}");
    }
}

/// The chart README's values table is what helm-docs generates from values.yaml (`make
/// chart-docs`), and the check notices a value it does not show. Needs Go (the first time,
/// helm-docs is built from its module cache), no cluster.
#[test]
fn chart_readme_values_table_is_what_helm_docs_generates() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/chart/docs.sh");
    let (success, stdout, stderr) = run_tool(script, &["--check"], None);
    assert!(success, "{stdout}\n{stderr}");

    // A copy with one more value: the README no longer matches.
    let copy = std::env::temp_dir().join("invoice-operator-chart-docs");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("create the copy");
    for file in ["Chart.yaml", "values.yaml", "README.md", "README.md.gotmpl"] {
        std::fs::copy(format!("{CHART}/{file}"), copy.join(file)).expect("copy");
    }
    let values = copy.join("values.yaml");
    let mut text = std::fs::read_to_string(&values).expect("values.yaml");
    text.push_str("# -- A value the README does not show.\nundocumentedInReadme: true\n");
    std::fs::write(&values, text).expect("write values.yaml");
    let copy_path = copy.to_str().expect("utf-8 path");
    let (success, _, stderr) = run_tool(script, &["--check", copy_path], None);
    let _ = std::fs::remove_dir_all(&copy);
    assert!(
        !success && stderr.contains("undocumentedInReadme"),
        "{stderr}"
    );
}

#[test]
fn prometheus_tls_headers_and_label_names_reach_the_operator() {
    let values = values_file(
        "prometheus-connection",
        "prometheus:\n  headers: {X-Scope-OrgID: billing, X-Note: 'a,b=c'}\n  \
         tls: {caConfigMap: {name: prometheus-ca, key: bundle.pem}, clientCertSecret: prometheus-client}\n\
         metricProfile: {labels: {service: app, code: status}}\n",
    );
    let path = values.to_str().expect("utf-8 path");
    let deployment =
        find_named(render_with(&["-f", path]), "Deployment", RELEASE).expect("Deployment");
    let _ = std::fs::remove_file(&values);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // One flag per header (sorted by name), so a value may hold commas and equals signs.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("a string"))
        .collect();
    assert_eq!(
        args,
        [
            "--prometheus-header=X-Note=a,b=c",
            "--prometheus-header=X-Scope-OrgID=billing"
        ]
    );
    let env = |name: &str| {
        container["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|item| item["name"].as_str() == Some(name))
            .and_then(|item| item["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        env("PROMETHEUS_CA_FILE").as_deref(),
        Some("/var/run/secrets/invoiceops.dev/prometheus-ca/bundle.pem")
    );
    assert_eq!(
        env("PROMETHEUS_CLIENT_CERT_FILE").as_deref(),
        Some("/var/run/secrets/invoiceops.dev/prometheus-client/tls.crt")
    );
    assert_eq!(
        env("PROMETHEUS_CLIENT_KEY_FILE").as_deref(),
        Some("/var/run/secrets/invoiceops.dev/prometheus-client/tls.key")
    );
    assert_eq!(env("LABEL_SERVICE").as_deref(), Some("app"));
    assert_eq!(env("LABEL_CODE").as_deref(), Some("status"));
    assert_eq!(env("LABEL_POD"), None, "an unset label keeps the default");
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|volume| volume["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    assert_eq!(
        volume("prometheus-ca")["configMap"]["name"].as_str(),
        Some("prometheus-ca")
    );
    assert_eq!(
        volume("prometheus-client")["secret"]["secretName"].as_str(),
        Some("prometheus-client")
    );
    // Nothing of it by default.
    let default = find_named(render_with(&[]), "Deployment", RELEASE).expect("Deployment");
    let container = &default["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"].is_null());
    let env = serde_yaml::to_string(&container["env"]).expect("serialize");
    assert!(
        !env.contains("PROMETHEUS_CA_FILE") && !env.contains("LABEL_"),
        "{env}"
    );

    // The schema refuses an Authorization header and a label that is no label name; the
    // chart's recording rules refuse renamed labels (they would not match) and say what to do.
    let (accepted, _, _) = try_template(&["--set", "prometheus.headers.Authorization=Bearer x"]);
    assert!(!accepted, "an Authorization header was accepted");
    let (accepted, _, _) = try_template(&["--set", "metricProfile.labels.zone=topology.zone"]);
    assert!(!accepted, "a dotted label name was accepted");
    let (accepted, _, stderr) = try_template(&[
        "--set",
        "recordingRules.enabled=true",
        "--set",
        "metricProfile.labels.service=app",
    ]);
    assert!(!accepted);
    assert!(
        stderr.contains("invoice-operator rules --label-service app"),
        "{stderr}"
    );
}
