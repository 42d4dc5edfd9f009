//! Pre-flight: what a valid spec cannot know about itself and the cluster can refute. A
//! Deployment it names does not exist (`WorkloadNotFound`), a zone it names is carried by no
//! node (`ZoneNotFound`), or an older InvoiceService already claims one of its Deployments
//! (`Conflict`). Such a service could never act, or would act on a Deployment another
//! service manages; it is marked `Ready=False` with the reason and the field named, and is
//! never acted on until the cluster (or the spec) changes. Pure: the controller gathers the
//! facts from its caches (`controller/preflight.rs`), no IO here.

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::{
    api::{InvoiceServiceSpec, SpecProblem, WorkloadKind},
    report::reasons,
};

/// An InvoiceService, as far as the claim on its Deployments goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.creationTimestamp`; the API server always sets it.
    pub created: Option<Timestamp>,
    /// The Deployments its spec names.
    pub deployments: Vec<&'a str>,
}

impl<'a> Claim<'a> {
    /// The order in which claims came: the earlier creation time first, the name breaking a
    /// tie (creation times have a resolution of one second).
    fn order(&self) -> (Option<Timestamp>, &'a str) {
        (self.created, self.name)
    }
}

/// What the cluster says, as far as the operator's caches know it. A fact the caches cannot
/// tell yet (still listing) is `None`, and nothing is judged on it: a cache that has not
/// synced would otherwise report every Deployment missing after each operator start.
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts<'a> {
    /// Those of the service's Deployments (or Rollouts) that exist in its namespace.
    pub existing_deployments: Option<BTreeSet<&'a str>>,
    /// The API server does not serve the workload's kind: Argo Rollouts is not installed (for
    /// `workload.kind: Rollout`). Every workload is then missing.
    pub kind_not_served: bool,
    /// The values of the service's zone label carried by at least one node; `None` also when
    /// the node cache holds no node at all.
    pub node_zones: Option<BTreeSet<&'a str>>,
    /// The other InvoiceServices of the namespace.
    pub others: Vec<Claim<'a>>,
}

/// Why a service with a valid spec is not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The `Ready` condition's reason (and the Warning Event's): the most serious problem's,
    /// `Conflict` before `WorkloadNotFound` before `ZoneNotFound`.
    pub reason: &'static str,
    /// Every problem found, the most serious first, each with the field at fault.
    pub problems: Vec<SpecProblem>,
}

/// The problems the cluster finds with `service`, whose spec `spec` is already valid; `None`
/// when there are none. `service.deployments` is not read: the spec names them, with fields.
pub fn check(
    service: &Claim<'_>,
    spec: &InvoiceServiceSpec,
    cluster: &ClusterFacts<'_>,
) -> Option<Refusal> {
    let (deployment_fields, zone_fields) = named_fields(spec);
    let conflicts = conflicts(service, spec, &deployment_fields, &cluster.others);
    let kind = spec.workload.kind;
    let missing = if cluster.kind_not_served {
        absent_from(&deployment_fields, &BTreeSet::new(), |name| {
            format!(
                "{} {name:?} cannot exist: the API server does not serve {}.{} (install Argo \
                 Rollouts; the operator looks for it again every minute)",
                kind.as_str(),
                kind.plural(),
                kind.group()
            )
        })
    } else {
        cluster
            .existing_deployments
            .as_ref()
            .map(|existing| missing_deployments(kind, &deployment_fields, existing))
            .unwrap_or_default()
    };
    let unknown_zones = cluster
        .node_zones
        .as_ref()
        .map(|node_zones| unknown_zones(spec, &zone_fields, node_zones))
        .unwrap_or_default();

    let reason = [
        (reasons::CONFLICT, &conflicts),
        (reasons::WORKLOAD_NOT_FOUND, &missing),
        (reasons::ZONE_NOT_FOUND, &unknown_zones),
    ]
    .into_iter()
    .find(|(_, problems)| !problems.is_empty())
    .map(|(reason, _)| reason)?;
    let problems = conflicts
        .into_iter()
        .chain(missing)
        .chain(unknown_zones)
        .collect();
    Some(Refusal { reason, problems })
}

/// The field of each Deployment name and of each zone of the spec, in declaration order.
fn named_fields(spec: &InvoiceServiceSpec) -> (Vec<Named<'_>>, Vec<Named<'_>>) {
    match (&spec.workload.deployments, &spec.workload.deployment) {
        (Some(deployments), _) => deployments
            .iter()
            .enumerate()
            .map(|(index, deployment)| {
                let field = format!("spec.workload.deployments[{index}]");
                (
                    (format!("{field}.name"), deployment.name.as_str()),
                    (format!("{field}.zone"), deployment.zone.as_str()),
                )
            })
            .unzip(),
        (None, Some(name)) => (
            vec![("spec.workload.deployment".to_owned(), name.as_str())],
            spec.workload
                .zones
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, zone)| (format!("spec.workload.zones[{index}]"), zone.as_str()))
                .collect(),
        ),
        (None, None) => (Vec::new(), Vec::new()),
    }
}

/// The Deployments an older InvoiceService already claims.
fn conflicts(
    service: &Claim<'_>,
    spec: &InvoiceServiceSpec,
    deployment_fields: &[Named<'_>],
    others: &[Claim<'_>],
) -> Vec<SpecProblem> {
    let mut conflicts = Vec::new();
    for (field, deployment) in deployment_fields {
        let first_claim = others
            .iter()
            .filter(|other| other.name != service.name && other.order() < service.order())
            .filter(|other| other.deployments.contains(deployment))
            .min_by_key(|other| other.order());
        if let Some(other) = first_claim {
            conflicts.push(problem(
                field,
                format!(
                    "{kind} {deployment:?} is already managed by InvoiceService {:?}, \
                     created first; two services acting on one {kind} would each scale \
                     and restart it (delete one of them, or point it at another {kind})",
                    other.name,
                    kind = spec.workload.kind.as_str(),
                ),
            ));
        }
    }
    conflicts
}

fn missing_deployments(
    kind: WorkloadKind,
    deployment_fields: &[Named<'_>],
    existing: &BTreeSet<&str>,
) -> Vec<SpecProblem> {
    absent_from(deployment_fields, existing, |deployment| {
        format!(
            "{} {deployment:?} does not exist in the namespace",
            kind.as_str()
        )
    })
}

fn unknown_zones(
    spec: &InvoiceServiceSpec,
    zone_fields: &[Named<'_>],
    node_zones: &BTreeSet<&str>,
) -> Vec<SpecProblem> {
    absent_from(zone_fields, node_zones, |zone| {
        format!(
            "no node carries {}={zone} (zones on nodes: {})",
            spec.workload.zone_label,
            node_zones.iter().copied().collect::<Vec<_>>().join(", ")
        )
    })
}

/// A problem for each named value the cluster does not have, described by `message`.
fn absent_from(
    fields: &[Named<'_>],
    present: &BTreeSet<&str>,
    message: impl Fn(&str) -> String,
) -> Vec<SpecProblem> {
    fields
        .iter()
        .filter(|(_, value)| !present.contains(value))
        .map(|(field, value)| problem(field, message(value)))
        .collect()
}

/// A value of the spec with the path of its field.
type Named<'a> = (String, &'a str);

fn problem(field: &str, message: String) -> SpecProblem {
    SpecProblem {
        field: field.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests;
