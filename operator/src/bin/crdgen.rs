//! Prints the InvoiceService CustomResourceDefinition as YAML on stdout. No cluster access.

fn main() {
    print!("{}", invoice_operator::api::crd_yaml());
}
