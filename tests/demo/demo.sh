#!/usr/bin/env bash
# make demo: the operator healing a simulated invoice fleet on the local cluster.
#
# Brings up the cluster (building what it needs), deploys the three-zone billing API
# (examples/invoice-app/deploy) and its InvoiceService with demo timings
# (examples/billing-api-demo.yaml), starts fleet-sim (per-pod metrics that react to what the
# operator does) and the operator as host processes, then injects the outages invoicing
# platforms suffer one after another and prints a live timeline:
# fault injected -> action -> recovered, with times.
#
#   tests/demo/demo.sh           run every scenario, stop the operator and simulator, keep the cluster
#   DEMO_KEEP=1 tests/demo/demo.sh   same, then keep everything running until Ctrl-C
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
NAMESPACE=invoicing
SERVICE=billing-api
SIM_ADDRESS=127.0.0.1:18080
METRICS_ADDRESS=127.0.0.1:18081
DEMO_DIR=$ROOT/.cluster/demo
# Longest wait for one step; the slowest (scale-in after the surge) needs about a minute.
STEP_TIMEOUT=${DEMO_STEP_TIMEOUT:-240}

START=$(date +%s%3N)
# Seconds since $1 (milliseconds since the epoch), one decimal.
elapsed_since() { awk -v now="$(date +%s%3N)" -v then="$1" 'BEGIN { printf "%.1f", (now - then) / 1000 }'; }
say() { printf '[%6ss] %s\n' "$(elapsed_since "$START")" "$*"; }

PIDS=()
cleanup() {
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
"$TARGET_DIR/debug/invoice-operator" --namespace "$NAMESPACE" --leader-election=false \
  --prometheus-url "$PROMETHEUS_URL" --evaluation-interval 5s --detection-window 30s \
  --metrics-address "$METRICS_ADDRESS" --log-format text >"$DEMO_DIR/operator.log" 2>&1 &
PIDS+=($!)
say "fleet-sim serves metrics on $SIM_ADDRESS; the operator runs (log: .cluster/demo/operator.log)"

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
      say "  gave up waiting for $description after ${STEP_TIMEOUT}s (see .cluster/demo/*.log)"
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
  curl -s http://$METRICS_ADDRESS/metrics | grep invoiceops_remediations
  logs: .cluster/demo/operator.log, .cluster/demo/fleet-sim.log
EOF
kubectl get invsvc -n "$NAMESPACE"
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  say "operator and simulator keep running; Ctrl-C to stop them (the cluster stays up: make cluster-down)"
  wait
else
  say "stopping the operator and the simulator; the cluster stays up (make cluster-down)"
fi
