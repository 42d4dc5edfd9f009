//! The invoice-operator process. The reconcile loop arrives with the controller work; until
//! then the binary only reports its version and the API it serves.

use clap::Parser;

/// Command-line interface of the operator.
#[derive(Debug, Parser)]
#[command(version, about = "Keeps invoice services inside their SLOs")]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "the reconcile loop is not built yet; `crdgen` prints the InvoiceService CRD (group invoiceops.dev/v1alpha1)"
    )
}
