//! `kubectl invsvc` (kubectl finds `kubectl-invsvc` on PATH): the InvoiceServices of a cluster
//! as their users look at them — a readable tree per service, the audit trail from status with
//! Events merged, why the last decision was what it was — and the switches a human flips:
//! pause, resume, fail back. Reads the same kubeconfig as kubectl.

mod render;

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::TryStreamExt as _;
use invoice_operator::{
    api::InvoiceService,
    controller::{FAIL_BACK_ANNOTATION, PAUSED_ANNOTATION},
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

/// kubectl plugin for InvoiceServices.
#[derive(Debug, Parser)]
#[command(name = "kubectl-invsvc", version, about)]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One service as a tree (phase, SLO, conditions, ladder, zones, last actions), or a table
    /// of all.
    Get {
        /// The InvoiceService; all of the namespace when left out.
        name: Option<String>,
        /// Every namespace (without NAME).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Print again on every change.
        #[arg(short, long)]
        watch: bool,
    },
    /// The audit trail: actions from status and Events, newest first.
    History {
        /// The InvoiceService.
        name: String,
    },
    /// Pause remediation of a service (the operator keeps observing and reporting).
    Pause {
        /// The InvoiceService.
        name: String,
    },
    /// Resume remediation paused with `pause`.
    Resume {
        /// The InvoiceService.
        name: String,
    },
    /// Ask the operator to fail a failed-over zone back now (it still checks the zone first).
    FailBack {
        /// The InvoiceService.
        name: String,
    },
    /// Why the last decision was what it was: symptoms, gates, timers, evidence.
    Explain {
        /// The InvoiceService.
        name: String,
    },
}

#[tokio::main]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<InvoiceService> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Get {
            name,
            all_namespaces,
            watch,
        } => {
            if all_namespaces && name.is_some() {
                bail!("a NAME and --all-namespaces do not go together");
            }
            let api = if all_namespaces {
                Api::all(client.clone())
            } else {
                api
            };
            get(
                &api,
                &namespace,
                name.as_deref(),
                all_namespaces,
                watch,
                cli.output,
            )
            .await
        }
        Command::History { name } => {
            let service = fetch(&api, &name, &namespace).await?;
            let events: Api<Event> = Api::namespaced(client, &namespace);
            let selector = format!("involvedObject.kind=InvoiceService,involvedObject.name={name}");
            let events = events
                .list(&ListParams::default().fields(&selector))
                .await
                .context("cannot list the service's Events")?;
            let entries = render::history(&service, &events.items);
            print(cli.output, &entries, || render::history_text(&entries))
        }
        Command::Pause { name } => {
            annotate(&api, &name, &namespace, PAUSED_ANNOTATION, Some("true")).await?;
            println!(
                "invoiceservice {namespace}/{name} paused: no action until `kubectl invsvc resume {name}`"
            );
            Ok(())
        }
        Command::Resume { name } => {
            annotate(&api, &name, &namespace, PAUSED_ANNOTATION, None).await?;
            println!("invoiceservice {namespace}/{name} resumed");
            Ok(())
        }
        Command::FailBack { name } => {
            let service = fetch(&api, &name, &namespace).await?;
            let Some(failover) = service
                .status
                .as_ref()
                .and_then(|status| status.failover.as_ref())
            else {
                bail!("invoiceservice {namespace}/{name} is not failed over: nothing to fail back");
            };
            let zone = failover.zone.clone();
            annotate(&api, &name, &namespace, FAIL_BACK_ANNOTATION, Some("true")).await?;
            println!(
                "invoiceservice {namespace}/{name}: fail-back of {zone} requested; the operator fails back once {zone} is healthy (watch with `kubectl invsvc get {name} --watch`)"
            );
            Ok(())
        }
        Command::Explain { name } => {
            let service = fetch(&api, &name, &namespace).await?;
            let explanation = render::explain(&service, Timestamp::now());
            print(cli.output, &explanation, || {
                render::explanation_text(&service, &explanation)
            })
        }
    }
}

async fn fetch(
    api: &Api<InvoiceService>,
    name: &str,
    namespace: &str,
) -> anyhow::Result<InvoiceService> {
    api.get_opt(name)
        .await
        .with_context(|| format!("cannot read invoiceservice {namespace}/{name}"))?
        .with_context(|| format!("invoiceservice {namespace}/{name} not found"))
}

/// Sets (or with `None` removes) one annotation with a merge patch.
async fn annotate(
    api: &Api<InvoiceService>,
    name: &str,
    namespace: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    fetch(api, name, namespace).await?;
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cannot annotate invoiceservice {namespace}/{name}"))?;
    Ok(())
}

fn print<T: serde::Serialize>(
    output: Output,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?,
        Output::Text => write!(stdout, "{}", text())?,
    }
    stdout.flush()?;
    Ok(())
}

async fn get(
    api: &Api<InvoiceService>,
    namespace: &str,
    name: Option<&str>,
    all_namespaces: bool,
    watch: bool,
    output: Output,
) -> anyhow::Result<()> {
    let show = |services: &[InvoiceService]| -> anyhow::Result<()> {
        let now = Timestamp::now();
        match (name, services.first()) {
            (Some(_), Some(service)) => print(output, service, || render::tree(service, now)),
            (Some(name), None) => {
                println!("invoiceservice {namespace}/{name} is gone");
                Ok(())
            }
            (None, _) => print(output, &services, || {
                render::table(services, all_namespaces, now)
            }),
        }
    };
    if !watch {
        return match name {
            Some(name) => show(&[fetch(api, name, namespace).await?]),
            None => {
                let mut services = api.list(&ListParams::default()).await?.items;
                services.sort_by_key(|service| (service.namespace(), service.name_any()));
                show(&services)
            }
        };
    }
    if let Some(name) = name {
        fetch(api, name, namespace).await?;
    }
    let config = match name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    // The services as the watch last showed them; printed after the first complete list and
    // on every change after it.
    let mut store: Vec<InvoiceService> = Vec::new();
    let mut synced = false;
    let stream = watcher(api.clone(), config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.try_next().await? {
        match event {
            watcher::Event::Init => {
                store.clear();
                synced = false;
                continue;
            }
            watcher::Event::InitApply(service) => {
                store.push(service);
                continue;
            }
            watcher::Event::InitDone => synced = true,
            watcher::Event::Apply(service) => {
                store.retain(|known| known.uid() != service.uid());
                store.push(service);
            }
            watcher::Event::Delete(service) => {
                store.retain(|known| known.uid() != service.uid());
            }
        }
        if synced {
            store.sort_by_key(|service| (service.namespace(), service.name_any()));
            if output == Output::Text {
                println!("--- {}", Timestamp::now().strftime("%H:%M:%S"));
            }
            show(&store)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
