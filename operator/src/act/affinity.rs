//! Steering a single Deployment out of a zone with node affinity, and back. Pure: computes
//! the pod template's new affinity and the JSON patch that writes it; the caller does the IO.
//!
//! `nodeSelectorTerms` are ORed and the list is atomic for server-side apply, so our
//! requirement cannot be applied as a field of its own: it is appended to every term (a term
//! of our own when there is none), and written with a JSON patch whose `test` op guards the
//! value it was computed from, so a concurrent edit by the user fails the patch instead of
//! being overwritten. Removing it restores the affinity exactly as it was before.

use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation, jsonptr::PointerBuf,
};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};
use serde::Serialize;
use serde_json::Value;

/// Where a Deployment's pod template keeps its affinity.
const TEMPLATE_AFFINITY: [&str; 4] = ["spec", "template", "spec", "affinity"];

/// The requirement that keeps pods out of `zone`: `{key: label, operator: NotIn, values: [zone]}`.
pub fn zone_exclusion(label: &str, zone: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: label.to_owned(),
        operator: "NotIn".to_owned(),
        values: Some(vec![zone.to_owned()]),
    }
}

/// The affinity after excluding `zone`: our requirement in every required node selector term
/// (ANDed with the user's expressions of that term), or a term of its own when there is none.
/// Idempotent: a term that already has it is left alone.
pub fn exclude_zone(affinity: Option<&Affinity>, label: &str, zone: &str) -> Affinity {
    let ours = zone_exclusion(label, zone);
    let mut affinity = affinity.cloned().unwrap_or_default();
    let required = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm {
            match_expressions: Some(vec![ours]),
            match_fields: None,
        });
        return affinity;
    }
    for term in &mut required.node_selector_terms {
        let expressions = term.match_expressions.get_or_insert_with(Vec::new);
        if !expressions.contains(&ours) {
            expressions.push(ours.clone());
        }
    }
    affinity
}

/// The affinity after allowing `zone` again: exactly our requirement is removed from every
/// term. A term left empty was ours and is dropped (an empty term matches no node); levels
/// left empty (required, node affinity, affinity) are removed, so the template is the one from
/// before the failover. Unchanged when our requirement is not there.
pub fn allow_zone(affinity: Option<&Affinity>, label: &str, zone: &str) -> Option<Affinity> {
    let ours = zone_exclusion(label, zone);
    let mut changed = false;
    let mut next = affinity?.clone();
    if let Some(node) = next.node_affinity.as_mut() {
        if let Some(required) = node
            .required_during_scheduling_ignored_during_execution
            .as_mut()
        {
            required.node_selector_terms.retain_mut(|term| {
                let Some(expressions) = term.match_expressions.as_mut() else {
                    return true;
                };
                let before = expressions.len();
                expressions.retain(|expression| expression != &ours);
                if expressions.len() == before {
                    return true;
                }
                changed = true;
                if expressions.is_empty() {
                    term.match_expressions = None;
                }
                term.match_expressions.is_some()
                    || term
                        .match_fields
                        .as_ref()
                        .is_some_and(|fields| !fields.is_empty())
            });
            if required.node_selector_terms.is_empty() {
                node.required_during_scheduling_ignored_during_execution = None;
            }
        }
        if changed && *node == NodeAffinity::default() {
            next.node_affinity = None;
        }
    }
    if !changed {
        return affinity.cloned();
    }
    (next != Affinity::default()).then_some(next)
}

/// The JSON patch turning the pod template's affinity from `current` into `wanted` (`None`
/// when they are equal). It writes the smallest subtree that changes — the terms, or the
/// first level that appears or disappears — and `test`s that subtree's current value first
/// (`null` for an absent one), so the API server refuses the patch if anyone changed it since
/// it was read.
pub fn affinity_patch(current: Option<&Affinity>, wanted: Option<&Affinity>) -> Option<Patch> {
    if current == wanted {
        return None;
    }
    let mut path: Vec<&str> = TEMPLATE_AFFINITY.to_vec();
    let (before, after) = match (current, wanted) {
        (Some(current), Some(wanted))
            if current.pod_affinity == wanted.pod_affinity
                && current.pod_anti_affinity == wanted.pod_anti_affinity =>
        {
            path.push("nodeAffinity");
            match (&current.node_affinity, &wanted.node_affinity) {
                (Some(current), Some(wanted))
                    if current.preferred_during_scheduling_ignored_during_execution
                        == wanted.preferred_during_scheduling_ignored_during_execution =>
                {
                    path.push("requiredDuringSchedulingIgnoredDuringExecution");
                    let current = &current.required_during_scheduling_ignored_during_execution;
                    let wanted = &wanted.required_during_scheduling_ignored_during_execution;
                    match (current, wanted) {
                        (Some(current), Some(wanted)) => {
                            path.push("nodeSelectorTerms");
                            (
                                to_value(Some(&current.node_selector_terms)),
                                to_value(Some(&wanted.node_selector_terms)),
                            )
                        }
                        _ => (to_value(current.as_ref()), to_value(wanted.as_ref())),
                    }
                }
                (current, wanted) => (to_value(current.as_ref()), to_value(wanted.as_ref())),
            }
        }
        (current, wanted) => (to_value(current), to_value(wanted)),
    };
    let path = PointerBuf::from_tokens(path);
    let test = PatchOperation::Test(TestOperation {
        path: path.clone(),
        value: before.unwrap_or(Value::Null),
    });
    let write = match after {
        Some(value) => PatchOperation::Add(AddOperation { path, value }),
        None => PatchOperation::Remove(RemoveOperation { path }),
    };
    Some(Patch(vec![test, write]))
}

fn to_value<T: Serialize>(value: Option<&T>) -> Option<Value> {
    value.map(|value| serde_json::to_value(value).expect("affinity types always serialize"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LABEL: &str = "topology.kubernetes.io/zone";

    fn affinity(value: Value) -> Option<Affinity> {
        serde_json::from_value(value).expect("test affinity is valid")
    }

    /// The Deployment as stored, with `affinity` in its pod template (absent when null).
    fn deployment(affinity: &Value) -> Value {
        let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
        if !affinity.is_null() {
            spec["affinity"] = affinity.clone();
        }
        json!({"spec": {"replicas": 3, "template": {"spec": spec}}})
    }

    /// Runs `change`, applies the resulting patch to a Deployment holding `before`, and
    /// checks the Deployment now holds `after` (nothing else changed) and the patch's path.
    fn check(
        name: &str,
        before: Value,
        change: impl Fn(Option<&Affinity>) -> Option<Affinity>,
        after: Value,
        expected_path: Option<&str>,
    ) {
        let current = affinity(before.clone());
        let wanted = change(current.as_ref());
        assert_eq!(wanted, affinity(after.clone()), "{name}: affinity");
        let patch = affinity_patch(current.as_ref(), wanted.as_ref());
        let paths: Option<Vec<String>> = patch.as_ref().map(|patch| {
            patch
                .0
                .iter()
                .map(|operation| operation.path().to_string())
                .collect()
        });
        assert_eq!(
            paths,
            expected_path.map(|path| vec![path.to_owned(), path.to_owned()]),
            "{name}: patch paths"
        );
        let mut document = deployment(&before);
        if let Some(patch) = patch {
            apply_like_the_api_server(&mut document, &patch)
                .expect("patch applies to what it was computed from");
        }
        assert_eq!(document, deployment(&after), "{name}: patched deployment");
    }

    /// Applies `patch` as the API server does. RFC 6902 fails a `test` of an absent member;
    /// the API server's JSON patch library (evanphx/json-patch) passes it when the expected
    /// value is `null`, which is what our patches rely on to test "still absent".
    fn apply_like_the_api_server(
        document: &mut Value,
        patch: &Patch,
    ) -> Result<(), json_patch::PatchError> {
        for operation in &patch.0 {
            if let PatchOperation::Test(test) = operation
                && test.value.is_null()
                && document.pointer(test.path.as_str()).is_none()
            {
                continue;
            }
            json_patch::patch(document, std::slice::from_ref(operation))?;
        }
        Ok(())
    }

    fn ours(zone: &str) -> Value {
        json!({"key": LABEL, "operator": "NotIn", "values": [zone]})
    }

    #[test]
    fn excluding_a_zone_adds_our_requirement_to_every_term_exactly_once() {
        let user_term = json!({"key": "pool", "operator": "In", "values": ["invoices"]});
        let gpu = json!({"key": "gpu", "operator": "DoesNotExist"});
        let anti = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}});
        let preferred = json!([{"weight": 10, "preference": {"matchExpressions": [user_term]}}]);
        let cases = [
            (
                "no affinity: a term of our own",
                Value::Null,
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}}}),
                Some("/spec/template/spec/affinity"),
            ),
            (
                "only pod anti-affinity: node affinity added next to it",
                anti.clone(),
                json!({
                    "podAntiAffinity": anti["podAntiAffinity"],
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}}
                }),
                Some("/spec/template/spec/affinity/nodeAffinity"),
            ),
            (
                "only preferred node affinity: required block added, preferences kept",
                json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}),
                json!({"nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": preferred,
                    "requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}
                }}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                ),
            ),
            (
                "existing terms: appended to each, including a fields-only term",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term]},
                    {"matchExpressions": [gpu]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
                ]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term, ours("az1")]},
                    {"matchExpressions": [gpu, ours("az1")]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}],
                     "matchExpressions": [ours("az1")]}
                ]}}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                ),
            ),
            (
                "already present in every term: nothing to write",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term, ours("az1")]}
                ]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term, ours("az1")]}
                ]}}}),
                None,
            ),
            (
                "present in one term only: added to the other, not twice",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [ours("az1")]},
                    {"matchExpressions": [gpu]}
                ]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [ours("az1")]},
                    {"matchExpressions": [gpu, ours("az1")]}
                ]}}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                ),
            ),
            (
                "another zone already excluded: both kept",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az2")]}]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az2"), ours("az1")]}]}}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                ),
            ),
        ];
        for (name, before, after, path) in cases {
            check(
                name,
                before,
                |current| Some(exclude_zone(current, LABEL, "az1")),
                after,
                path,
            );
        }
    }

    #[test]
    fn allowing_a_zone_removes_only_our_requirement_and_keeps_user_terms() {
        let user_term = json!({"key": "pool", "operator": "In", "values": ["invoices"]});
        let fields = json!([{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]);
        let preferred = json!([{"weight": 10, "preference": {"matchExpressions": [user_term]}}]);
        let anti = json!({"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]});
        let cases = [
            (
                "our term alone: the whole affinity goes",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}}}),
                Value::Null,
                Some("/spec/template/spec/affinity"),
            ),
            (
                "our term next to pod anti-affinity: node affinity goes, anti-affinity stays",
                json!({"podAntiAffinity": anti, "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}}}),
                json!({"podAntiAffinity": anti}),
                Some("/spec/template/spec/affinity/nodeAffinity"),
            ),
            (
                "our term next to preferences: required block goes, preferences stay",
                json!({"nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": preferred,
                    "requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [ours("az1")]}]}
                }}),
                json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                ),
            ),
            (
                "user terms: our expression leaves each, user expressions and fields stay",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term, ours("az1")]},
                    {"matchFields": fields, "matchExpressions": [ours("az1")]}
                ]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [user_term]},
                    {"matchFields": fields}
                ]}}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                ),
            ),
            (
                "another zone's exclusion stays",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az2"), ours("az1")]}]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [ours("az2")]}]}}}),
                Some(
                    "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                ),
            ),
            (
                "not there: nothing to write",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [user_term]}]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [user_term]}]}}}),
                None,
            ),
            (
                "no affinity: nothing to write",
                Value::Null,
                Value::Null,
                None,
            ),
            (
                "a user requirement that only looks like ours (In, not NotIn) stays",
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": LABEL, "operator": "In", "values": ["az1"]}]}
                ]}}}),
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": LABEL, "operator": "In", "values": ["az1"]}]}
                ]}}}),
                None,
            ),
        ];
        for (name, before, after, path) in cases {
            check(
                name,
                before,
                |current| allow_zone(current, LABEL, "az1"),
                after,
                path,
            );
        }
    }

    #[test]
    fn fail_back_restores_the_affinity_from_before_the_failover() {
        let user_affinities = [
            Value::Null,
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["invoices"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
            ]}}}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "cache"}}}]}}),
        ];
        for before in user_affinities {
            let original = affinity(before);
            let failed_over = exclude_zone(original.as_ref(), LABEL, "az1");
            let failed_over_twice = exclude_zone(Some(&failed_over), LABEL, "az1");
            assert_eq!(failed_over_twice, failed_over, "failover is idempotent");
            let failed_back = allow_zone(Some(&failed_over), LABEL, "az1");
            assert_eq!(failed_back, original);
            assert_eq!(allow_zone(failed_back.as_ref(), LABEL, "az1"), original);
        }
    }

    #[test]
    fn patch_tests_the_value_it_was_computed_from() {
        let current = affinity(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]}}}),
        );
        let wanted = exclude_zone(current.as_ref(), LABEL, "az1");
        let patch = affinity_patch(current.as_ref(), Some(&wanted)).expect("a change");
        let path = "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "test", "path": path,
                 "value": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]},
                {"op": "add", "path": path,
                 "value": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}, ours("az1")]}]}
            ])
        );
        // A user edit after the read makes the test op fail, so the edit is not overwritten.
        let mut edited = deployment(
            &json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}}),
        );
        let untouched = edited.clone();
        assert!(apply_like_the_api_server(&mut edited, &patch).is_err());
        assert_eq!(edited, untouched);
    }
}
