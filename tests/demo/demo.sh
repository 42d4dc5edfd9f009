#!/usr/bin/env bash
# make demo: the operator healing a simulated invoice fleet on the local cluster.
#
# Brings up the cluster (building what it needs), deploys the three-zone billing API
# (examples/invoice-app/deploy) and its InvoiceService with demo timings
# (examples/billing-api-demo.yaml), starts fleet-sim (per-pod metrics that react to what the
# operator does) on this host, and the operator: installed with its Helm chart (`helm upgrade
# --install`, the image built here from the Dockerfile and imported into the node) as a real
# container on the cluster's real node when the cluster has one, else as a host process (the
# demo says which ran). Then injects the outages invoicing platforms suffer one after another
# and prints a live timeline: fault injected -> action -> recovered, with times.
#
#   tests/demo/demo.sh           run every scenario, stop the operator and simulator, keep the cluster
#   DEMO_KEEP=1 tests/demo/demo.sh   same, then keep everything running until Ctrl-C
#   DEMO_OPERATOR=host|chart     where the operator runs (default: chart when the real node is up)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
NAMESPACE=invoicing
SERVICE=billing-api
SIM_ADDRESS=127.0.0.1:18080
METRICS_ADDRESS=127.0.0.1:18081
# The chart's release, in its own namespace.
RELEASE=invoice-operator
RELEASE_NAMESPACE=invoice-operator
CRD=invoiceservices.invoiceops.dev
OPERATOR_MODE=${DEMO_OPERATOR:-auto}
case $OPERATOR_MODE in
  auto | host | chart) ;;
  *) echo "DEMO_OPERATOR must be host or chart (got $OPERATOR_MODE)" >&2; exit 2 ;;
esac
DEMO_DIR=$ROOT/.cluster/demo
# Longest wait for one step; the slowest (scale-in after the surge) needs about a minute.
STEP_TIMEOUT=${DEMO_STEP_TIMEOUT:-240}

START=$(date +%s%3N)
# Seconds since $1 (milliseconds since the epoch), one decimal.
elapsed_since() { awk -v now="$(date +%s%3N)" -v then="$1" 'BEGIN { printf "%.1f", (now - then) / 1000 }'; }
say() { printf '[%6ss] %s\n' "$(elapsed_since "$START")" "$*"; }

PIDS=()
CHART_INSTALLED=0
cleanup() {
  if (( CHART_INSTALLED )) && [[ "${DEMO_KEEP:-0}" != 1 ]]; then
    helm uninstall "$RELEASE" --namespace "$RELEASE_NAMESPACE" --wait >/dev/null 2>&1 || true
  fi
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends curl >/dev/null; }

say "starting the local cluster (the first run builds Kubernetes from source: ~12 min)"
tests/cluster/cluster.sh up
# shellcheck source=/dev/null
source .cluster/env
export PATH="$CLUSTER_BIN:$PATH"

say "building the operator and the fleet simulator"
cargo build --quiet -p invoice-operator -p fleet-sim --bins
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

say "installing the CRD and the billing API (3 zones x 3 pods)"
kubectl apply --server-side -f crds/invoiceservices.invoiceops.dev.yaml >/dev/null
kubectl wait --for=condition=Established crd/invoiceservices.invoiceops.dev --timeout=60s >/dev/null
# A previous run's InvoiceService carries the operator's deletion finalizer and its operator
# is gone: release it, or the namespace would wait for it for good.
for service in $(kubectl get invoiceservices -n "$NAMESPACE" -o name 2>/dev/null); do
  kubectl patch -n "$NAMESPACE" "$service" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
done
kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NAMESPACE" >/dev/null
kubectl apply -n "$NAMESPACE" -f examples/invoice-app/deploy/billing-api.yaml >/dev/null
kubectl apply -f examples/billing-api-demo.yaml >/dev/null
for zone in az1 az2 az3; do
  kubectl -n "$NAMESPACE" rollout status "deployment/$SERVICE-$zone" --timeout=120s >/dev/null
done

mkdir -p "$DEMO_DIR"
"$TARGET_DIR/debug/fleet-sim" --namespace "$NAMESPACE" --listen "$SIM_ADDRESS" \
  --targets-dir "$PROMETHEUS_TARGETS_DIR" --job fleet-sim-demo >"$DEMO_DIR/fleet-sim.log" 2>&1 &
PIDS+=($!)
OPERATOR_LOG=.cluster/demo/operator.log
OPERATOR_METRICS=$METRICS_ADDRESS

# The operator from its Helm chart on the real node: the image of the binary built above
# (tests/image/build.sh, the shipped Dockerfile; tagged by the binary's time so a pod never
# runs a stale one), imported into the node's containerd, the chart installed with it. The
# pod reaches the API server and Prometheus through the harness' forwarders on the node's
# bridge. Returns non-zero (having said why) when a step fails.
start_chart() {
  local binary=$TARGET_DIR/debug/invoice-operator tag image archive values pod ip
  tag=demo-$(stat -c %Y "$binary")
  image=localhost/invoiceops/invoice-operator:$tag
  archive=$TARGET_DIR/images/invoice-operator-$tag.tar
  say "building the operator image from the Dockerfile (buildah) and importing it into real-1"
  mkdir -p "$TARGET_DIR/images"
  if [[ ! -s $archive ]]; then
    rm -f "$TARGET_DIR"/images/invoice-operator-demo-*.tar
    tests/image/build.sh Dockerfile "$binary" "$image" "$archive" >"$DEMO_DIR/image.log" 2>&1 ||
      { say "  the image build failed (.cluster/demo/image.log)"; return 1; }
  fi
  tests/cluster/cluster.sh import-image "$archive" >>"$DEMO_DIR/image.log" 2>&1 ||
    { say "  importing the image failed (.cluster/demo/image.log)"; return 1; }
  # The CRD applied above (or by an earlier host-mode run) becomes the release's, as a user
  # who applied it first does before `helm install`.
  kubectl label crd "$CRD" app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
  kubectl annotate crd "$CRD" "meta.helm.sh/release-name=$RELEASE" \
    "meta.helm.sh/release-namespace=$RELEASE_NAMESPACE" --overwrite >/dev/null
  values=$DEMO_DIR/values.yaml
  cat >"$values" <<EOF
replicaCount: 1
image: {repository: "${image%:*}", tag: "$tag", pullPolicy: Never}
nodeSelector: {type: real}
tolerations:
  - {key: invoiceops.dev/real-node, operator: Equal, value: "true", effect: NoSchedule}
watchNamespace: $NAMESPACE
prometheus: {url: "$CLUSTER_REAL_NODE_PROMETHEUS_URL"}
evaluation: {interval: 5s, detectionWindow: 30s}
extraEnv:
  - {name: KUBERNETES_SERVICE_HOST, value: "$CLUSTER_REAL_NODE_API_HOST"}
  - {name: KUBERNETES_SERVICE_PORT, value: "$CLUSTER_REAL_NODE_API_PORT"}
EOF
  say "helm upgrade --install $RELEASE charts/invoice-operator -n $RELEASE_NAMESPACE (values: .cluster/demo/values.yaml)"
  helm upgrade --install "$RELEASE" charts/invoice-operator --namespace "$RELEASE_NAMESPACE" \
    --create-namespace -f "$values" --wait --timeout 180s >"$DEMO_DIR/helm.log" 2>&1 ||
    { say "  helm failed (.cluster/demo/helm.log)"; return 1; }
  CHART_INSTALLED=1
  pod=$(kubectl -n "$RELEASE_NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE" \
    --field-selector status.phase=Running -o jsonpath='{.items[0].metadata.name}')
  ip=$(kubectl -n "$RELEASE_NAMESPACE" get pod "$pod" -o jsonpath='{.status.podIP}')
  # kubectl logs needs the API server to reach kubelet, which listens on loopback here: the
  # container's log is read where kubelet writes it.
  OPERATOR_LOG="$CLUSTER_REAL_NODE_POD_LOGS/${RELEASE_NAMESPACE}_${pod}_*/operator/*.log"
  OPERATOR_METRICS=$ip:8080
  say "the operator runs IN THE CLUSTER from its Helm chart: pod $RELEASE_NAMESPACE/$pod on real-1, image $image"
}

start_host() {
  "$TARGET_DIR/debug/invoice-operator" --namespace "$NAMESPACE" --leader-election=false \
    --prometheus-url "$PROMETHEUS_URL" --evaluation-interval 5s --detection-window 30s \
    --metrics-address "$METRICS_ADDRESS" --log-format text >"$DEMO_DIR/operator.log" 2>&1 &
  PIDS+=($!)
  say "the operator runs ON THIS HOST (log: .cluster/demo/operator.log)"
}

if [[ $OPERATOR_MODE == host ]]; then
  start_host
elif [[ "${CLUSTER_REAL_NODE:-0}" != 1 ]]; then
  if [[ $OPERATOR_MODE == chart ]]; then
    say "DEMO_OPERATOR=chart needs the real node (this cluster runs without it: CLUSTER_REAL_NODE=0)"
    exit 1
  fi
  say "no real node in this cluster: the operator runs on this host instead of from its chart"
  start_host
elif ! start_chart; then
  [[ $OPERATOR_MODE == chart ]] && exit 1
  say "the chart could not be installed: falling back to the operator on this host"
  start_host
fi
say "fleet-sim serves metrics on $SIM_ADDRESS"

status() { kubectl -n "$NAMESPACE" get invsvc "$SERVICE" -o jsonpath="$1" 2>/dev/null || true; }
action_count() { status '{range .status.history[*]}{.action}{"\n"}{end}' | grep -cx "$1" || true; }

LAST_SEEN=""
LAST_PHASE=""
# Prints what changed since the last call: a new action (with its reason) or a new phase.
report_changes() {
  local latest phase
  latest=$(status '{.status.history[0].at} {.status.history[0].action} {.status.history[0].target}: {.status.history[0].reason}')
  if [[ -n "$(status '{.status.history[0].action}')" && "$latest" != "$LAST_SEEN" ]]; then
    LAST_SEEN=$latest
    say "  action   ${latest#* }"
  fi
  phase=$(status '{.status.phase}')
  if [[ -n "$phase" && "$phase" != "$LAST_PHASE" ]]; then
    LAST_PHASE=$phase
    say "  phase    $phase"
  fi
}

# wait_until DESCRIPTION COMMAND...: polls every 2 s, printing changes, until COMMAND succeeds.
wait_until() {
  local description=$1 deadline
  shift
  deadline=$(( $(date +%s) + STEP_TIMEOUT ))
  until "$@"; do
    report_changes
    if (( $(date +%s) > deadline )); then
      say "  gave up waiting for $description after ${STEP_TIMEOUT}s (see $OPERATOR_LOG, .cluster/demo/fleet-sim.log)"
      return 1
    fi
    sleep 2
  done
  report_changes
}

count_grew() { (( $(action_count "$1") > $2 )); }
closed_incidents() { local closed; closed=$(status '{.status.incidents.closed}'); echo "${closed:-0}"; }
incidents_closed_beyond() { (( $(closed_incidents) > $1 )); }
open_incident_has() { [[ " $(status '{.status.incidents.open.symptoms[*]}') " == *" $1 "* ]]; }
# incident_summary CLOSED_BEFORE: waits for the outage's incident to close (healthy for
# slos.recovery.settleFor) and prints its summary, as its IncidentClosed Event says it.
incident_summary() {
  wait_until "the incident to close" incidents_closed_beyond "$1" || return 0
  say "  incident $(status '{.status.incidents.recent[0].summary}')"
}
attention_is() { [[ "$(status '{.status.conditions[?(@.type=="NeedsAttention")].reason}')" == "$1" ]]; }
phase_is() { [[ "$(status '{.status.phase}')" == "$1" ]]; }

inject() { curl -fsS -X POST "http://$SIM_ADDRESS/faults" -H 'content-type: application/json' -d "$1" >/dev/null; }
clear_faults() { curl -fsS -X DELETE "http://$SIM_ADDRESS/faults" >/dev/null; }

# scenario TITLE FAULT_JSON ACTION REVERSAL: inject, wait for ACTION, clear, wait for REVERSAL
# (or for Healthy when REVERSAL is empty), printing the times.
scenario() {
  local title=$1 fault=$2 action=$3 reversal=$4 before reversed injected acted closed
  echo
  say "== $title"
  closed=$(closed_incidents)
  before=$(action_count "$action")
  reversed=$( [[ -n "$reversal" ]] && action_count "$reversal" || echo 0 )
  injected=$(date +%s%3N)
  inject "$fault"
  say "  fault    $fault"
  wait_until "$action" count_grew "$action" "$before" || return 0
  acted=$(elapsed_since "$injected")
  clear_faults
  say "  cleared  the fault ($action ${acted}s after it was injected)"
  if [[ -n "$reversal" ]]; then
    wait_until "$reversal" count_grew "$reversal" "$reversed" || return 0
  fi
  wait_until "Healthy" phase_is Healthy || return 0
  say "  recovered $(elapsed_since "$injected")s after the fault"
  incident_summary "$closed"
}

say "waiting for the first healthy evaluation (Prometheus needs a few scrapes)"
wait_until "Healthy" phase_is Healthy

victim=$(kubectl -n "$NAMESPACE" get pods -l zone=az1 -o jsonpath='{.items[0].metadata.name}')
scenario "1. one pod leaks connections: its 5xx ratio climbs" \
  "{\"namespace\":\"$NAMESPACE\",\"service\":\"$SERVICE\",\"kind\":\"pod-errors\",\"pod\":\"$victim\"}" \
  RestartPod ""
scenario "2. sale-day surge: 6x traffic, p99 over 200 ms" \
  "{\"namespace\":\"$NAMESPACE\",\"service\":\"$SERVICE\",\"kind\":\"surge\",\"factor\":6}" \
  ScaleOut ScaleIn
scenario "3. database pool exhausted: 215 connections wanted, 200 available" \
  "{\"namespace\":\"$NAMESPACE\",\"service\":\"$SERVICE\",\"kind\":\"db-pool\",\"factor\":1.075}" \
  EnterReadOnly ExitReadOnly
scenario "4. zone az2 loses its network" \
  "{\"namespace\":\"$NAMESPACE\",\"service\":\"$SERVICE\",\"kind\":\"zone-down\",\"zone\":\"az2\"}" \
  ZoneFailover ZoneFailBack

echo
say "== 5. a firewall rule answers 403 to half the requests: no restart fixes that"
closed=$(closed_incidents)
inject "{\"namespace\":\"$NAMESPACE\",\"service\":\"$SERVICE\",\"kind\":\"client-errors\",\"ratio\":0.5}"
# NeedsAttention says RecoveryObjectiveAtRisk at once (no rung fixes a 4xx spike, and the
# demo's service has an RTO), naming ClientErrorSpike in its message.
if wait_until "NeedsAttention" open_incident_has ClientErrorSpike; then
  wait_until "NeedsAttention" attention_is RecoveryObjectiveAtRisk || true
  say "  NeedsAttention=True ($(status '{.status.conditions[?(@.type=="NeedsAttention")].reason}')) and Warning events ClientErrorSpike, RecoveryObjectiveAtRisk; nothing restarted"
fi
clear_faults
incident_summary "$closed"

echo
say "done. Where to look:"
cat <<EOF
  source .cluster/env; export PATH=\$CLUSTER_BIN:\$PATH
  kubectl get invsvc -n $NAMESPACE
  kubectl describe invsvc $SERVICE -n $NAMESPACE
  kubectl get events -n $NAMESPACE --field-selector involvedObject.kind=InvoiceService
  curl -s http://$OPERATOR_METRICS/metrics | grep invoiceops_remediations
  logs: $OPERATOR_LOG, .cluster/demo/fleet-sim.log
EOF
kubectl get invsvc -n "$NAMESPACE"
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  say "operator and simulator keep running; Ctrl-C to stop them (the cluster stays up: make cluster-down)"
  if (( CHART_INSTALLED )); then say "the chart stays installed: helm uninstall $RELEASE -n $RELEASE_NAMESPACE"; fi
  wait
else
  say "stopping the operator and the simulator; the cluster stays up (make cluster-down)"
  if (( CHART_INSTALLED )); then say "uninstalling the chart (helm uninstall keeps the CRD)"; fi
fi
