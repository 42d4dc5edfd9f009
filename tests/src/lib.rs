//! Shared harness for the end-to-end tests: a client for the local control plane started by
//! `tests/cluster/cluster.sh` (via `make test`), throwaway namespaces, and CRD installation.
//! Everything here does IO against a real API server.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};

use invoice_operator::{FIELD_MANAGER, api::InvoiceService};

/// How long a test waits for the API server to settle something (CRD established,
/// namespace created). Generous: the control plane shares two cores with the test build.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the local cluster. Panics with the fix when the cluster is not there:
/// these tests are meant to run through `make test`, which starts it.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the end-to-end tests with `make test` \
         (or `make cluster-up` and `source .cluster/env`)"
    );
    Client::try_default()
        .await
        .expect("failed to build a client from KUBECONFIG")
}

/// Installs (or updates) the InvoiceService CRD from the code and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = InvoiceService::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("failed to apply the InvoiceService CRD");
    tokio::time::timeout(
        SETTLE_TIMEOUT,
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD not established in time")
    .expect("failed to watch the CRD");
}

/// A namespace of its own for one test, deleted by [`TestNamespace::delete`].
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a namespace named after the test with a unique suffix.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis()
            % 1_000_000;
        let name = format!("{prefix}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"invoiceops.dev/e2e": "true"}}
        }))
        .expect("namespace literal is valid");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("failed to create namespace {name}: {error}"));
        Self {
            name,
            client: client.clone(),
        }
    }

    /// Deletes the namespace and everything in it.
    pub async fn delete(self) {
        let namespaces: Api<Namespace> = Api::all(self.client);
        // Ignore NotFound: a test may already have removed it.
        let _ = namespaces
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}
