//! What the process sets up once before the controller runs: the Kubernetes client (and the
//! check that the InvoiceService CRD is served), and the client of the operator-wide
//! Prometheus with its bearer token. Does IO: reads the kubeconfig or the in-cluster
//! ServiceAccount, asks the API server for the CRD, reads the token file.

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;

use crate::{
    cli::Cli,
    kube_client,
    metrics::{Metrics, QueryMetrics},
    prometheus::{Limits, Prometheus},
};

/// The Kubernetes client, counting every request it sends (leader election's included) in
/// `metrics`. Fails with the install command when the InvoiceService CRD is not served.
pub async fn kubernetes(metrics: &Metrics) -> anyhow::Result<Client> {
    let config = kube::Config::infer()
        .await
        .context("failed to find a Kubernetes config (in cluster, or from KUBECONFIG)")?;
    let client =
        kube_client::build(config, metrics).context("failed to build a Kubernetes client")?;
    check_crd(&client).await?;
    Ok(client)
}

/// Exits with the install command when the InvoiceService API is not served.
async fn check_crd(client: &Client) -> anyhow::Result<()> {
    match client
        .list_api_group_resources("invoiceops.dev/v1alpha1")
        .await
    {
        Ok(resources)
            if resources
                .resources
                .iter()
                .any(|r| r.name == "invoiceservices") =>
        {
            Ok(())
        }
        Ok(_) | Err(kube::Error::Api(_)) => anyhow::bail!(
            "the InvoiceService CRD (invoiceservices.invoiceops.dev/v1alpha1) is not installed; \
             install it with `kubectl apply --server-side -f crds/invoiceservices.invoiceops.dev.yaml` \
             or `helm install invoice-operator charts/invoice-operator`"
        ),
        Err(error) => {
            Err(error).context("failed to ask the API server whether the CRD is installed")
        }
    }
}

/// The operator-wide Prometheus of `--prometheus-url`, reached as the `--prometheus-*` flags
/// say (CA bundle, client certificate, headers, token file), with the metric profile of the
/// flags and its queries observed by `metrics`.
pub fn prometheus(cli: &Cli, metrics: &Arc<Metrics>) -> anyhow::Result<Prometheus> {
    let prometheus = Prometheus::connect(
        &cli.prometheus_url,
        &cli.prometheus_connection(),
        cli.profile(),
        Limits::default(),
    )
    .context("failed to set up the Prometheus client")?
    .with_observer(Arc::new(QueryMetrics(Arc::clone(metrics))));
    Ok(prometheus)
}
