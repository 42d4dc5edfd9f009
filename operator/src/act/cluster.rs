//! The API writes of each action, in the service's namespace: evictions, the restart
//! annotation (a Rollout's `spec.restartAt`), the scale subresource of the Deployment or
//! Rollout (through the autoscaler where there is one), the mode key and the node affinity.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::ConfigMap,
    core::v1::Pod,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, EvictParams, ListParams, ObjectMeta, Patch, PatchParams},
    core::Status,
};
use serde_json::json;

use super::{
    ActError, ActOutcome, FLOOR_BEFORE_ANNOTATION, Floor, RESTARTED_AT_ANNOTATION, affinity, keda,
    refused_by, scale_target_is,
};
use crate::{
    FIELD_MANAGER,
    api::{InvoiceService, WorkloadKind},
};

/// The API of the service's namespace.
pub(super) struct Cluster<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    /// What the workload names: Deployments or Argo Rollouts.
    pub kind: WorkloadKind,
}

impl Cluster<'_> {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// The API of the workload's kind (Deployments or Rollouts).
    fn workloads(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            self.namespace,
            &self.kind.api_resource(),
        )
    }

    /// Evicts the pods in order. Stops at the first refusal: the same PodDisruptionBudget
    /// most likely covers the rest. Refused only if no pod was evicted; otherwise the action
    /// happened (and the refusal is logged).
    pub(super) async fn evict_pods(&self, names: &[String]) -> Result<ActOutcome, ActError> {
        let pods: Api<Pod> = self.api();
        let mut evicted = 0;
        for name in names {
            match pods.evict(name, &EvictParams::default()).await {
                Ok(_) => evicted += 1,
                // Already gone: the restart the action wanted has happened.
                Err(kube::Error::Api(status)) if status.is_not_found() => evicted += 1,
                Err(kube::Error::Api(status)) if is_too_many_requests(&status) => {
                    let reason = refusal(&status);
                    if evicted == 0 {
                        return Ok(ActOutcome::Refused {
                            by: refuser(&status),
                            reason,
                        });
                    }
                    tracing::info!(pod = %name, %reason, evicted, "eviction refused; stopping");
                    break;
                }
                Err(source) => {
                    return Err(ActError::EvictPod {
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(ActOutcome::Applied)
    }

    pub(super) async fn restart_deployment(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<(), ActError> {
        let error = |source| ActError::RestartDeployment {
            kind: self.kind,
            name: name.to_owned(),
            source,
        };
        match self.kind {
            WorkloadKind::Deployment => {
                let deployments: Api<Deployment> = self.api();
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                    RESTARTED_AT_ANNOTATION: restarted_at(now)
                }}}}});
                deployments
                    .patch(name, &patch_params(), &Patch::Strategic(patch))
                    .await
                    .map_err(error)?;
            }
            // Argo Rollouts restarts every pod created before `spec.restartAt`, one at a time
            // within its maxUnavailable, without a new revision. (Strategic merge is not
            // served for custom resources: a merge patch.)
            WorkloadKind::Rollout => {
                let patch = json!({"spec": {"restartAt": restarted_at(now)}});
                self.workloads()
                    .patch(name, &patch_params(), &Patch::Merge(patch))
                    .await
                    .map_err(error)?;
            }
        }
        Ok(())
    }

    /// Lists the namespace's autoscalers and KEDA ScaledObjects once for all the Deployments
    /// of one action. Without KEDA (no such resource: 404) there are no ScaledObjects; when
    /// they cannot be listed otherwise (e.g. 403) and an autoscaler belongs to one, the action
    /// fails: a write to KEDA's autoscaler would be undone.
    pub(super) async fn scaler(&self) -> Result<Scaler, ActError> {
        let autoscalers: Api<HorizontalPodAutoscaler> = self.api();
        let list = autoscalers
            .list(&ListParams::default())
            .await
            .map_err(|source| ActError::ListAutoscalers { source })?;
        let scaled_objects: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &keda::resource());
        let keda = match scaled_objects.list(&ListParams::default()).await {
            Ok(found) => found.items,
            Err(kube::Error::Api(status)) if status.is_not_found() => Vec::new(),
            Err(source) => {
                let keda_owned = list.items.iter().any(|autoscaler| {
                    keda::owns(
                        autoscaler
                            .metadata
                            .owner_references
                            .as_deref()
                            .unwrap_or_default(),
                    )
                });
                if keda_owned {
                    return Err(ActError::ListScaledObjects { source });
                }
                tracing::debug!(error = %source, "cannot list KEDA ScaledObjects; none of the autoscalers is KEDA's");
                Vec::new()
            }
        };
        Ok(Scaler {
            kind: self.kind,
            workloads: self.workloads(),
            autoscalers,
            existing: list.items,
            scaled_objects,
            keda,
        })
    }

    pub(super) async fn switch_mode(
        &self,
        service: &InvoiceService,
        read_only: bool,
    ) -> Result<ActOutcome, ActError> {
        let policy = service
            .spec
            .remediation
            .read_only
            .as_ref()
            .ok_or(ActError::ReadOnlyNotConfigured)?;
        let switch = &policy.switch.config_map;
        let value = if read_only {
            &switch.read_only
        } else {
            &switch.read_write
        };
        // Only the key: server-side apply leaves the user's other keys (and owners) alone. A
        // missing ConfigMap is created with just this key, so the switch works before the app
        // ever wrote it. (Renaming `switch.configMap.key` later makes the next apply drop the
        // old key, which this field manager then owned alone.)
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(switch.name.clone()),
                namespace: Some(self.namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(switch.key.clone(), value.clone())])),
            ..ConfigMap::default()
        };
        let config_maps: Api<ConfigMap> = self.api();
        config_maps
            .patch(
                &switch.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config_map),
            )
            .await
            .map_err(|source| ActError::ApplyModeSwitch {
                name: switch.name.clone(),
                source,
            })?;
        Ok(ActOutcome::Applied)
    }

    /// Adds (failover) or removes (fail-back) our zone exclusion in the Deployment's pod
    /// template. Reads first, writes only on a change, and guards the write with a `test` op.
    pub(super) async fn steer(
        &self,
        name: &str,
        label: &str,
        zone: &str,
        failing_over: bool,
    ) -> Result<ActOutcome, ActError> {
        let deployments: Api<Deployment> = self.api();
        let deployment = deployments
            .get(name)
            .await
            .map_err(|source| ActError::GetDeployment {
                name: name.to_owned(),
                source,
            })?;
        let current = deployment.spec.template.spec.and_then(|pod| pod.affinity);
        let wanted = if failing_over {
            Some(affinity::exclude_zone(current.as_ref(), label, zone))
        } else {
            affinity::allow_zone(current.as_ref(), label, zone)
        };
        let Some(patch) = affinity::affinity_patch(current.as_ref(), wanted.as_ref()) else {
            return Ok(ActOutcome::Applied);
        };
        deployments
            .patch(name, &patch_params(), &Patch::<()>::Json(patch))
            .await
            .map_err(|source| ActError::PatchAffinity {
                name: name.to_owned(),
                source,
            })?;
        Ok(ActOutcome::Applied)
    }
}

/// Sets replica counts, through the autoscaler (or KEDA's ScaledObject) where there is one.
pub(super) struct Scaler {
    kind: WorkloadKind,
    /// Deployments or Rollouts: both serve `/scale`.
    workloads: Api<DynamicObject>,
    autoscalers: Api<HorizontalPodAutoscaler>,
    existing: Vec<HorizontalPodAutoscaler>,
    scaled_objects: Api<DynamicObject>,
    keda: Vec<DynamicObject>,
}

impl Scaler {
    /// The autoscalers whose scale target is the Deployment (or Rollout) `name`, but KEDA's
    /// (written through their ScaledObject instead).
    fn autoscalers_of<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a HorizontalPodAutoscaler> + 'a {
        self.existing.iter().filter(move |autoscaler| {
            let target = &autoscaler.spec.scale_target_ref;
            scale_target_is(
                &target.kind,
                target.api_version.as_deref(),
                &target.name,
                self.kind,
                name,
            ) && !keda::owns(
                autoscaler
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default(),
            )
        })
    }

    /// Sets the Deployment `name`, scaled by the KEDA ScaledObject `object`, to `replicas`
    /// ([`keda::patch`]); `/scale` as with an autoscaler: to 0 for a drain, raised when below.
    async fn scale_with_keda(
        &self,
        object: &DynamicObject,
        name: &str,
        replicas: i32,
        floor: Floor,
    ) -> Result<(), ActError> {
        if let Some(patch) = keda::patch(object, replicas, floor) {
            let object_name = object.name_any();
            self.scaled_objects
                .patch(&object_name, &patch_params(), &Patch::Merge(patch))
                .await
                .map_err(|source| ActError::PatchScaledObject {
                    name: object_name,
                    source,
                })?;
        }
        if replicas == 0 {
            return self.patch_scale(name, 0).await;
        }
        self.raise_scale(name, replicas).await
    }

    /// Sets the Deployment `name` to `replicas`.
    ///
    /// Without an autoscaler: a merge patch of `/scale`. With one and `replicas > 0`: its
    /// `minReplicas` becomes `replicas` (and `maxReplicas` at least that), and `/scale` is
    /// raised to `replicas` only if it is below — the autoscaler would do the same on its next
    /// sync, but does nothing at all for a Deployment at 0 (e.g. a failed-over zone). With one
    /// and `replicas == 0` (zone failover): `/scale` is set to 0, since `minReplicas` cannot be
    /// 0 and an autoscaler leaves a Deployment scaled to zero alone.
    /// `floor` says what the autoscaler's floor becomes ([`Floor`]).
    pub(super) async fn scale(
        &self,
        name: &str,
        replicas: i32,
        floor: Floor,
    ) -> Result<(), ActError> {
        if let Some(object) = self
            .keda
            .iter()
            .find(|object| keda::targets(object, self.kind, name))
        {
            return self.scale_with_keda(object, name, replicas, floor).await;
        }
        let autoscalers: Vec<_> = self.autoscalers_of(name).collect();
        if autoscalers.is_empty() || replicas == 0 {
            return self.patch_scale(name, replicas).await;
        }
        for autoscaler in autoscalers {
            let autoscaler_name = autoscaler.name_any();
            let patch = autoscaler_patch(autoscaler, replicas, floor);
            self.autoscalers
                .patch(&autoscaler_name, &patch_params(), &Patch::Merge(patch))
                .await
                .map_err(|source| ActError::PatchAutoscaler {
                    name: autoscaler_name,
                    source,
                })?;
        }
        self.raise_scale(name, replicas).await
    }

    /// Raises `/scale` of the Deployment `name` to `replicas` if it is below (the autoscaler
    /// would, on its next sync, but not for a Deployment at 0); never lowers it.
    async fn raise_scale(&self, name: &str, replicas: i32) -> Result<(), ActError> {
        let scale = self
            .workloads
            .get_scale(name)
            .await
            .map_err(|source| ActError::GetScale {
                kind: self.kind,
                name: name.to_owned(),
                source,
            })?;
        let current = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
        if current < replicas {
            self.patch_scale(name, replicas).await?;
        }
        Ok(())
    }

    async fn patch_scale(&self, name: &str, replicas: i32) -> Result<(), ActError> {
        let patch = json!({"spec": {"replicas": replicas}});
        self.workloads
            .patch_scale(name, &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|source| ActError::ScaleDeployment {
                kind: self.kind,
                name: name.to_owned(),
                source,
            })?;
        Ok(())
    }
}

/// The merge patch of an autoscaler's bounds for `replicas`: `minReplicas` set (raised,
/// or put back to the floor remembered before the first raise, see [`Floor`]), `maxReplicas`
/// raised when below it.
fn autoscaler_patch(
    autoscaler: &HorizontalPodAutoscaler,
    replicas: i32,
    floor: Floor,
) -> serde_json::Value {
    // An autoscaler without minReplicas has a floor of 1.
    let current = autoscaler.spec.min_replicas.unwrap_or(1);
    let (minimum, remembered) = floor.next(
        i64::from(replicas),
        i64::from(current),
        autoscaler.annotations(),
    );
    let mut patch = json!({"spec": {"minReplicas": minimum}});
    if let Some(remembered) = remembered {
        patch["metadata"] = json!({"annotations": {FLOOR_BEFORE_ANNOTATION: remembered}});
    }
    if i64::from(autoscaler.spec.max_replicas) < minimum {
        patch["spec"]["maxReplicas"] = json!(minimum);
    }
    patch
}

/// Parameters of every non-apply patch: the field manager names the operator in
/// `managedFields`, so a user can see who changed what.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// `now` in RFC 3339 at whole seconds, as `kubectl rollout restart` writes it.
fn restarted_at(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second())
        .expect("a timestamp truncated to seconds is in range")
        .to_string()
}

/// 429 Too Many Requests: a PodDisruptionBudget allows no disruption now (or the API server
/// is shedding load). Either way: not now, try again later.
fn is_too_many_requests(status: &Status) -> bool {
    status.code == 429 || status.reason == "TooManyRequests"
}

/// Who refused an eviction: a PodDisruptionBudget names itself in the causes
/// (`DisruptionBudget`); otherwise the API server was shedding load.
fn refuser(status: &Status) -> &'static str {
    let budget = status
        .details
        .iter()
        .flat_map(|details| &details.causes)
        .any(|cause| cause.reason == "DisruptionBudget");
    if budget {
        refused_by::POD_DISRUPTION_BUDGET
    } else {
        refused_by::TOO_MANY_REQUESTS
    }
}

/// The API server's explanation of a refusal, with the causes it lists (which name the
/// PodDisruptionBudget).
fn refusal(status: &Status) -> String {
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|details| &details.causes)
        .map(|cause| cause.message.as_str())
        .filter(|message| !message.is_empty())
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        format!("{} ({})", status.message, causes.join("; "))
    }
}
