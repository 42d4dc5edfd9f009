#!/usr/bin/env bash
# Smoke test of the local cluster (tests/cluster/cluster.sh smoke). Every check has a
# timeout and a real assertion; everything happens in a throwaway namespace (deleted
# afterwards) plus one extra node `smoke-node` for the NotReady check, so the 6 zone
# nodes and anything else running on the cluster are left alone.
# Last line: "N passed, M failed"; exit status non-zero if any check failed.
set -uo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)
[[ -f $ROOT/.cluster/env ]] || { echo "no $ROOT/.cluster/env: run tests/cluster/cluster.sh up" >&2; exit 1; }
set -a
# .cluster/env is written by cluster.sh up
# shellcheck source=/dev/null
. "$ROOT/.cluster/env"
set +a

NS=smoke-$(date +%s)-$RANDOM
SMOKE_NODE=smoke-node
CRASH_LABEL="pod-crashloop.stage.invoiceops.dev"
NOT_READY_LABEL="node-not-ready.stage.kwok.x-k8s.io"
PASSED=0
FAILED=0

kc() { kubectl "$@"; }
kn() { kubectl -n "$NS" "$@"; }
note() { echo "    $*"; }

# poll TIMEOUT DESCRIPTION COMMAND...: retry COMMAND every second until it succeeds.
poll() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      note "timed out after ${timeout}s: $what"
      return 1
    fi
    sleep 1
  done
}

# check NAME FUNCTION: run FUNCTION in a subshell with errexit, so any failing command
# (or a failed poll) fails the check.
check() {
  local name=$1 fn=$2 t0=$SECONDS rc
  echo "--- $name"
  ( set -e; "$fn" )
  rc=$?
  if (( rc == 0 )); then
    PASSED=$((PASSED + 1)); echo "PASS $name ($((SECONDS - t0))s)"
  else
    FAILED=$((FAILED + 1)); echo "FAIL $name ($((SECONDS - t0))s)"
  fi
}

cleanup() {
  kc delete namespace "$NS" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  kc delete node "$SMOKE_NODE" --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Pods of app=web that are Running, Ready and not being deleted: "name node" lines.
ready_pods() {
  kn get pods -l app=web -o json | jq -r '.items[]
    | select(.metadata.deletionTimestamp == null and .status.phase == "Running")
    | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))
    | "\(.metadata.name) \(.spec.nodeName)"'
}
count_ready() { ready_pods | wc -l; }
ready_is() { [[ $(count_ready) -eq $1 ]]; }
ready_replicas_is() { [[ $(kn get deploy web -o jsonpath='{.status.readyReplicas}') == "$1" ]]; }
# exactly N pods exist (none terminating) and all N are ready
settled_at() {
  [[ $(kn get pods -l app=web -o name | wc -l) -eq $1 ]] && ready_is "$1" &&
    ready_replicas_is "$1"
}
pod_gone() { ! kn get pod "$1"; }
zone_of() { kc get node "$1" -o jsonpath='{.metadata.labels.topology\.kubernetes\.io/zone}'; }

evict() {
  kc create --raw "/api/v1/namespaces/$NS/pods/$1/eviction" -f - 2>&1 <<EOF
{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"$1","namespace":"$NS"}}
EOF
}

# --- checks --------------------------------------------------------------------

check_a_spread() {
  kn apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeSelector: {type: kwok}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: web}
      containers:
      - name: web
        image: registry.invalid/invoice-web:smoke
        resources:
          requests: {cpu: 100m, memory: 64Mi}
EOF
  poll 90 "3 Running+Ready pods" settled_at 3
  local zones
  zones=$(ready_pods | while read -r _ node; do zone_of "$node"; echo; done | sort -u | grep -c .)
  note "pods: $(ready_pods | tr '\n' ' ')"
  note "distinct zones: $zones"
  [[ $zones -eq 3 ]]
}

check_b_replace() {
  local victim before
  before=$(ready_pods | awk '{print $1}' | sort)
  victim=$(head -1 <<<"$before")
  note "deleting pod $victim"
  kn delete pod "$victim" --wait=false >/dev/null
  poll 60 "pod $victim gone" pod_gone "$victim"
  poll 60 "3 ready pods again" settled_at 3
  local after
  after=$(ready_pods | awk '{print $1}' | sort)
  note "now: $(tr '\n' ' ' <<<"$after")"
  if grep -qx "$victim" <<<"$after"; then note "$victim is still there"; return 1; fi
  # exactly one new name
  [[ $(comm -13 <(echo "$before") <(echo "$after") | wc -l) -eq 1 ]]
}

check_c_scale() {
  kn scale deployment web --replicas=5 >/dev/null
  [[ $(kn get --raw "/apis/apps/v1/namespaces/$NS/deployments/web/scale" | jq .spec.replicas) -eq 5 ]]
  poll 60 "5 ready pods" settled_at 5
  note "scaled to 5: $(count_ready) ready"
  kn patch deployment web --subresource=scale --type=merge -p '{"spec":{"replicas":3}}' >/dev/null
  poll 60 "back to 3 pods" settled_at 3
  note "scaled back to 3 via the scale subresource: $(count_ready) ready"
  [[ $(kn get --raw "/apis/apps/v1/namespaces/$NS/deployments/web/scale" | jq .status.replicas) -eq 3 ]]
}

pdb_allows() {
  [[ $(kn get pdb web -o jsonpath='{.status.currentHealthy}/{.status.disruptionsAllowed}') == "$1" ]]
}

check_d_eviction() {
  kn apply -f - >/dev/null <<EOF
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 3
  selector:
    matchLabels: {app: web}
EOF
  poll 30 "PDB sees 3 healthy, 0 disruptions allowed" pdb_allows 3/0
  local victim out
  victim=$(ready_pods | awk 'NR == 1 {print $1}')
  out=$(evict "$victim") && { note "eviction unexpectedly allowed: $out"; return 1; }
  note "refused as expected: $out"
  grep -qE '429|TooManyRequests|Cannot evict' <<<"$out"
  [[ -z $(kn get pod "$victim" -o jsonpath='{.metadata.deletionTimestamp}') ]] # not being deleted

  kn patch pdb web --type=merge -p '{"spec":{"minAvailable":2}}' >/dev/null
  poll 30 "PDB sees 3 healthy, 1 disruption allowed" pdb_allows 3/1
  out=$(evict "$victim") || { note "eviction refused: $out"; return 1; }
  note "eviction with minAvailable=2 accepted"
  poll 60 "evicted pod $victim gone" pod_gone "$victim"
  poll 60 "3 ready pods again" settled_at 3
  kn delete pdb web >/dev/null
}

node_cond() { kc get node "$SMOKE_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'; }
node_ready_is() { [[ $(node_cond) == "$1" ]]; }
node_tainted_not_ready() {
  kc get node "$SMOKE_NODE" -o jsonpath='{.spec.taints[*].key}' | grep -qw node.kubernetes.io/not-ready
}

node_untainted() { ! node_tainted_not_ready; }

check_e_node_not_ready() {
  # A dedicated node (tainted so no workload lands on it) keeps the 6 zone nodes undisturbed.
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $SMOKE_NODE
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: $SMOKE_NODE, kubernetes.io/os: linux, type: kwok-smoke}
spec:
  taints:
  - {key: smoke.invoiceops.dev/test-only, value: "true", effect: NoSchedule}
status:
  allocatable: {cpu: "4", memory: 8Gi, pods: "10"}
  capacity: {cpu: "4", memory: 8Gi, pods: "10"}
EOF
  poll 60 "$SMOKE_NODE Ready" node_ready_is True
  kc label node "$SMOKE_NODE" "$NOT_READY_LABEL=true" >/dev/null
  poll 30 "$SMOKE_NODE NotReady" node_ready_is False
  note "labelled: Ready=$(node_cond), reason $(kc get node "$SMOKE_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')"
  poll 30 "controller-manager taints it node.kubernetes.io/not-ready" node_tainted_not_ready
  note "controller-manager added the node.kubernetes.io/not-ready taint"
  kc label node "$SMOKE_NODE" "$NOT_READY_LABEL-" >/dev/null
  poll 30 "$SMOKE_NODE Ready again after removing the label" node_ready_is True
  poll 30 "not-ready taint removed" node_untainted
  note "label removed: Ready=$(node_cond), taint gone"
  kc delete node "$SMOKE_NODE" >/dev/null
}

crash_state() {
  kn get pod "$1" -o json | jq -r '[.status.containerStatuses[0].restartCount,
    .status.containerStatuses[0].state.waiting.reason // "-",
    (.status.conditions[] | select(.type == "Ready") | .status)] | join(" ")'
}
crashlooping() {
  local rc reason ready
  read -r rc reason ready < <(crash_state "$1")
  (( rc >= ${2:-1} )) && [[ $reason == CrashLoopBackOff && $ready == False ]]
}

recovered() {
  kn get pod "$1" -o json |
    jq -e '.status.containerStatuses[0].state.running and (.status.conditions[] | select(.type == "Ready") | .status == "True")'
}

check_f_crashloop() {
  local pod
  pod=$(ready_pods | awk 'NR == 1 {print $1}')
  note "labelling $pod $CRASH_LABEL=true (1-2s delay via annotations)"
  kn annotate pod "$pod" "$CRASH_LABEL/delay=1s" "$CRASH_LABEL/jitter-delay=2s" >/dev/null
  kn label pod "$pod" "$CRASH_LABEL=true" >/dev/null
  poll 45 "restartCount > 0 and waiting CrashLoopBackOff" crashlooping "$pod" 1
  note "restartCount/waiting/Ready: $(crash_state "$pod")"
  poll 45 "restartCount keeps rising (>= 2)" crashlooping "$pod" 2
  note "restartCount/waiting/Ready: $(crash_state "$pod")"
  poll 15 "deployment readyReplicas=2" ready_replicas_is 2
  note "deployment readyReplicas=2 while the pod crash-loops"
  kn label pod "$pod" "$CRASH_LABEL-" >/dev/null
  poll 30 "pod recovers after removing the label" recovered "$pod"
  note "label removed: $(crash_state "$pod")"
}

prom_up() {
  curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/query" --data-urlencode 'query=up{job="prometheus"}' |
    jq -e '.status == "success" and (.data.result | length) == 1 and .data.result[0].value[1] == "1"'
}

check_g_prometheus() {
  poll 30 'up{job="prometheus"} == 1' prom_up
  note "query: $(curl -fsS "$PROMETHEUS_URL/api/v1/query" --data-urlencode 'query=up{job="prometheus"}' | jq -c '.data.result')"
}

# The real node (CLUSTER_REAL_NODE=1): pods that tolerate its taint and select type=real
# run real containers (runc) from the locally built pause image, never pulled.
REAL_NODE=real-1
REAL_POD_CIDR_PREFIX=10.244.100.

real_pod() {
  local name=$1 host_network=$2
  kn apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
spec:
  hostNetwork: $host_network
  nodeSelector: {type: real}
  tolerations:
  - {key: invoiceops.dev/real-node, operator: Exists, effect: NoSchedule}
  terminationGracePeriodSeconds: 2
  automountServiceAccountToken: false
  containers:
  - name: pause
    image: $CLUSTER_PAUSE_IMAGE
    imagePullPolicy: Never
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {memory: 32Mi}
EOF
}
pod_ready() {
  kn get pod "$1" -o json |
    jq -e '.status.phase == "Running" and any(.status.conditions[]?; .type == "Ready" and .status == "True")'
}
pod_summary() {
  kn get pod "$1" -o json | jq -r '"node=\(.spec.nodeName) podIP=\(.status.podIP) hostIP=\(.status.hostIP) container=\(.status.containerStatuses[0].containerID)"'
}

check_h_real_node_bridge() {
  real_pod real-bridge false
  poll 60 "pod real-bridge Running+Ready" pod_ready real-bridge
  local summary ip pid
  summary=$(pod_summary real-bridge)
  note "$summary"
  [[ $summary == "node=$REAL_NODE podIP=$REAL_POD_CIDR_PREFIX"* ]]
  [[ $summary == *"container=containerd://"* ]]
  # A real process: the container's PID 1 is our pause binary, in its own network namespace.
  pid=$(pgrep -n -x pause) || { note "no pause process on the host"; return 1; }
  [[ $(readlink "/proc/$pid/ns/net") != "$(readlink /proc/self/ns/net)" ]]
  note "the host sees pause as pid $pid, in its own network namespace"
  ip=$(kn get pod real-bridge -o jsonpath='{.status.podIP}')
  # Host -> pod over the bridge: nothing listens in the pod, so a quick "connection
  # refused" (not a timeout) proves the pod's network stack answered.
  local out
  out=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ip/9" 2>&1) || true
  note "connect from the host to $ip:9: ${out##*: }"
  [[ $out == *"refused"* ]]
  kn delete pod real-bridge --wait=true --timeout=30s >/dev/null
}

check_i_real_node_host_network() {
  real_pod real-hostnet true
  poll 60 "pod real-hostnet Running+Ready" pod_ready real-hostnet
  local summary
  summary=$(pod_summary real-hostnet)
  note "$summary"
  [[ $summary == "node=$REAL_NODE "* && $summary == *"container=containerd://"* ]]
  kn delete pod real-hostnet --wait=true --timeout=30s >/dev/null
}

check_j_nothing_else_on_real_node() {
  local n
  n=$(kc get pods -A --field-selector "spec.nodeName=$REAL_NODE" -o json |
    jq '[.items[] | select(all(.spec.tolerations[]?; .key != "invoiceops.dev/real-node"))] | length')
  note "pods on $REAL_NODE without its toleration: $n"
  [[ $n -eq 0 ]]
}

# --- run -----------------------------------------------------------------------

echo "smoke test in namespace $NS (KUBECONFIG=$KUBECONFIG)"
kc create namespace "$NS" >/dev/null
poll 30 "ServiceAccount $NS/default" kn get serviceaccount default || true

check "a) Deployment of 3 spread over 3 zones, all Running+Ready" check_a_spread
check "b) deleted pod is replaced by its ReplicaSet" check_b_replace
check "c) /scale subresource: 3 -> 5 -> 3" check_c_scale
check "d) eviction refused by PDB (429), allowed by a looser PDB" check_d_eviction
check "e) kwok node-not-ready stage: NotReady, then Ready again" check_e_node_not_ready
check "f) our CrashLoopBackOff stage: restartCount rises, waiting reason" check_f_crashloop
check "g) Prometheus answers up{job=\"prometheus\"} == 1" check_g_prometheus
if kc get node "$REAL_NODE" >/dev/null 2>&1; then
  check "h) real node: a pod on the CNI bridge runs a real container, Ready" check_h_real_node_bridge
  check "i) real node: a hostNetwork pod runs a real container, Ready" check_i_real_node_host_network
  check "j) real node: no pod without its toleration landed there" check_j_nothing_else_on_real_node
else
  echo "(no node $REAL_NODE: real node checks skipped; CLUSTER_REAL_NODE=0?)"
fi

echo "$PASSED passed, $FAILED failed"
(( FAILED == 0 ))
