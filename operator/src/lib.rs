//! invoice-operator: keeps invoice services inside their SLOs without a human in the loop.
//!
//! The crate is organised along the reconcile pipeline (see DESIGN.md, "The loop"):
//! - [`api`]: the `InvoiceService` custom resource and its validation (pure).

pub mod api;

/// The field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "invoice-operator";
