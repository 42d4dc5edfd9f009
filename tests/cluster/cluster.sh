#!/usr/bin/env bash
# A real local Kubernetes control plane without containers, for the end-to-end tests.
#
#   tests/cluster/cluster.sh up       build (cached) and start everything; reuse a healthy cluster
#   tests/cluster/cluster.sh down     stop every recorded process, remove .cluster/
#   tests/cluster/cluster.sh status   exit 0 iff the cluster is healthy
#   tests/cluster/cluster.sh smoke    run tests/cluster/smoke.sh against the running cluster
#   tests/cluster/cluster.sh import-image ARCHIVE...   OCI archives into the real node's containerd
#
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler are built from the
# Kubernetes Go modules (build.sh); kwok fakes 6 nodes in 3 zones and their pods; Debian's
# Prometheus scrapes itself and any target dropped into $PROMETHEUS_TARGETS_DIR/*.json.
# Everything listens on 127.0.0.1 only, on these non-default ports:
#
#   etcd client / peer        23790 / 23800  (plain http, loopback)
#   kube-apiserver            16443          (https, client-cert auth, RBAC)
#   kube-controller-manager   20257          (https /healthz)
#   kube-scheduler            20259          (https /healthz)
#   kwok                      20247          (http /healthz, /metrics)
#   prometheus                19090          (http)
#   kubelet (real node)       20250 / 20248  (https API / http /healthz)
#   containerd (real node)    unix socket .cluster/real-node/containerd/containerd.sock
#                             (+ its CRI streaming server on a random 127.0.0.1 port)
#
# With CLUSTER_REAL_NODE=1 (the default) one real node, `real-1`, joins beside the kwok
# nodes: kubelet + containerd + runc, pods on a CNI bridge (invops0, 10.244.100.0/24) or
# on the host network. It is tainted invoiceops.dev/real-node=true:NoSchedule and
# labelled type=real; kwok manages every node except type=real. CLUSTER_REAL_NODE=0
# leaves it out.
#
# State lives in <repo>/.cluster/ (git-ignored): pki/, kubeconfig, env, logs/<name>.log,
# pids/<name>.pid, etcd data, prometheus config and TSDB.
set -euo pipefail

CLUSTER_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "$CLUSTER_SH")/env.sh"
ROOT=$(cd "$CLUSTER_DIR/../.." && pwd)
STATE=$ROOT/.cluster
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids

ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
KCM_PORT=20257
SCHEDULER_PORT=20259
KWOK_PORT=20247
PROMETHEUS_PORT=19090
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248

SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16
ZONES=(az1 az2 az3)
NODES_PER_ZONE=2

# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok prometheus)

# The real node (see real-node.sh, sourced below).
REAL_NODE=real-1
REAL_NODE_ZONE=az1
REAL_NODE_POD_CIDR=10.244.100.0/24
REAL_NODE_GATEWAY=10.244.100.1
REAL_NODE_BRIDGE=invops0
REAL_NODE_TAINT=invoiceops.dev/real-node
RN=$STATE/real-node
# (api-forward and prometheus-forward: see real-node.sh, "The API server for pods")
REAL_COMPONENTS=(containerd kubelet api-forward prometheus-forward)

KUBECONFIG_ADMIN=$STATE/kubeconfig
APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT

# --- helpers -------------------------------------------------------------------

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%5.1fs", b - a }'; }
T0=$(now)
T_STEP=$T0
log() { echo "[cluster $(elapsed "$T0")] $*" >&2; }
# step "description": report how long the previous step took, then announce the next one.
step() {
  [[ -n ${STEP_NAME:-} ]] && log "   done: $STEP_NAME ($(elapsed "$T_STEP"))"
  STEP_NAME=$1
  T_STEP=$(now)
  [[ -n $1 ]] && log "-> $1"
  return 0
}
die() { echo "cluster.sh: $*" >&2; exit 1; }

kc() { kubectl --kubeconfig="$KUBECONFIG_ADMIN" "$@"; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      echo "timed out after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

# wait_up NAME DESCRIPTION TIMEOUT_SECONDS COMMAND...: like wait_for, but give up at once
# if component NAME's process has exited.
wait_up() {
  local name=$1 what=$2 timeout=$3; shift 3
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    # (plain kill -0: right after start the process may still be exec'ing via setsid/env)
    if ! kill -0 "$(<"$PIDS/$name.pid")" 2>/dev/null; then
      echo "$name exited while waiting for $what (see $LOGS/$name.log)" >&2
      return 1
    fi
    if (( $(date +%s) >= deadline )); then
      echo "timed out after ${timeout}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_of NAME: the recorded PID if that process is alive and is still our binary.
pid_of() {
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against PID reuse: argv[0] must be the component's binary.
  local argv0=
  IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" 2>/dev/null || true
  [[ ${argv0##*/} == "$1" ]] || return 1
  echo "$pid"
}

# start NAME [VAR=VALUE...] BINARY ARGS...: run detached (own session, so a Ctrl-C in the
# caller's terminal does not reach it) with a clean environment (etcd turns any ETCD_*
# variable into a flag, kwok reads KWOK_*, clients read KUBECONFIG), log to
# logs/NAME.log, record the PID in pids/NAME.pid (setsid and env exec, so it is the
# server's own PID).
start() {
  local name=$1; shift
  setsid env -i HOME="$HOME" PATH="$PATH" LANG=C.UTF-8 "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

# stop NAME: TERM, wait up to 10 s, then KILL. Only ever the recorded PID.
stop() {
  local name=$1 pid i t
  pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
  t=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  $name (pid $pid) ignored TERM for 10s, sending KILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
  echo "  stopped $name (pid $pid) in $(elapsed "$t")" >&2
}

curl_admin() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"
}

apiserver_ready() { [[ $(curl_admin "$APISERVER_URL/readyz" 2>/dev/null) == ok ]]; }

# shellcheck source-path=SCRIPTDIR source=real-node.sh
. "$CLUSTER_DIR/real-node.sh"

# --- health --------------------------------------------------------------------

healthy() {
  local c
  [[ -f $KUBECONFIG_ADMIN && -f $STATE/env ]] || return 1
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  apiserver_ready || return 1
  curl -fsS --max-time 5 "$PROMETHEUS_URL/-/ready" >/dev/null 2>&1 || return 1
  curl -fsS --max-time 5 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null 2>&1 || return 1
  # The real node is checked if this cluster was started with it (whatever CLUSTER_REAL_NODE
  # says now: `status` and `smoke` need not repeat the variable).
  if [[ -d $RN ]]; then
    for c in "${REAL_COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
    curl -fsS --max-time 5 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null 2>&1 || return 1
  fi
}

cmd_status() {
  local c pid ok=0
  if [[ ! -d $STATE ]]; then
    echo "cluster: not running (no $STATE)"
    return 1
  fi
  for c in "${COMPONENTS[@]}" "${REAL_COMPONENTS[@]}"; do
    if [[ " ${REAL_COMPONENTS[*]} " == *" $c "* && ! -d $RN ]]; then continue; fi
    if pid=$(pid_of "$c"); then echo "  $c: running (pid $pid)"; else echo "  $c: NOT running"; fi
  done
  if healthy; then
    echo "cluster: healthy"
    kc get nodes -L topology.kubernetes.io/zone 2>/dev/null | sed 's/^/  /' || true
    echo "  KUBECONFIG=$KUBECONFIG_ADMIN  PROMETHEUS_URL=$PROMETHEUS_URL"
  else
    echo "cluster: NOT healthy (logs in $LOGS)"
    ok=1
  fi
  return $ok
}

# --- down ----------------------------------------------------------------------

# Stop every component in reverse start order. Everything that talks to etcd gets its
# TERM first (in reverse order, then they shut down in parallel: ~3 s instead of ~12 s);
# etcd goes last so the API server never loses its storage mid-shutdown.
stop_all() {
  local i stoppers=()
  # The real node first (kubelet, containers, containerd, then mounts, netns, cgroups),
  # while the API server still answers; whatever is left of it (from an earlier run with
  # CLUSTER_REAL_NODE=1) is cleaned even when it is off now.
  if [[ -d $RN ]]; then stop_real_node; fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 1; i--)); do
    stop "${COMPONENTS[i]}" &
    stoppers+=($!)
  done
  wait "${stoppers[@]}"  # only these: after a failed `up` the servers are our children too
  stop "${COMPONENTS[0]}"
}

cmd_down() {
  if [[ ! -d $STATE ]]; then
    echo "cluster: nothing to stop" >&2
    return 0
  fi
  stop_all
  rm -rf "$STATE"
  echo "cluster: down, $STATE removed" >&2
}

# Stop whatever was started, keep the logs for the post-mortem.
kill_all_keep_logs() { stop_all; }

# --- PKI -----------------------------------------------------------------------

# sign NAME SUBJECT EXTENSIONS: RSA key + certificate signed by the cluster CA.
sign() {
  local name=$1 subj=$2 ext=$3
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  printf '%b\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=invoice-operator-test-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$PKI/ca.crt"
  local leaf='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nauthorityKeyIdentifier=keyid'
  local apiserver_names="IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
  # With the real node, pods reach the API server through the forwarder on the bridge's
  # address (see real-node.sh, "The API server for pods").
  if (( CLUSTER_REAL_NODE )); then apiserver_names+=",IP:$REAL_NODE_GATEWAY"; fi
  sign apiserver "/CN=kube-apiserver" "$leaf\nextendedKeyUsage=serverAuth\nsubjectAltName=$apiserver_names"
  sign admin "/O=system:masters/CN=admin" "$leaf\nextendedKeyUsage=clientAuth"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$leaf\nextendedKeyUsage=clientAuth"
  sign kube-scheduler "/CN=system:kube-scheduler" "$leaf\nextendedKeyUsage=clientAuth"
  sign kwok "/O=system:masters/CN=kwok-controller" "$leaf\nextendedKeyUsage=clientAuth"
  if (( CLUSTER_REAL_NODE )); then
    # kubelet: client (Node authorizer identity) and serving certificate; the API server's
    # client certificate for kubelet (logs, exec).
    sign kubelet-client "/O=system:nodes/CN=system:node:$REAL_NODE" "$leaf\nextendedKeyUsage=clientAuth"
    sign kubelet "/CN=$REAL_NODE" "$leaf\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:$REAL_NODE"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$leaf\nextendedKeyUsage=clientAuth"
  fi
  # Service-account token signing key pair.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
}

# write_kubeconfig OUT CERT_NAME USER: kubeconfig with embedded CA, client cert and key.
write_kubeconfig() {
  local out=$1 name=$2 user=$3
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: invoice-operator
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
contexts:
- name: invoice-operator
  context:
    cluster: invoice-operator
    user: $user
current-context: invoice-operator
EOF
  chmod 600 "$out"
}

# --- components ----------------------------------------------------------------

start_etcd() {
  start etcd "$CLUSTER_BIN/etcd" \
    --name=invoice-operator \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="invoice-operator=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --quota-backend-bytes=4294967296 \
    --log-level=warn
  wait_up etcd "etcd /health" 60 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  local extra=(--authorization-mode=RBAC)
  if (( CLUSTER_REAL_NODE )); then
    # The Node authorizer gives kubelet (system:node:real-1) its rights; the API server
    # reaches kubelet (logs, exec) with its own client certificate and checks kubelet's.
    extra=(--authorization-mode=Node,RBAC
      --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
      --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$PKI/ca.crt"
      --kubelet-preferred-address-types=InternalIP,Hostname)
  fi
  start kube-apiserver "$CLUSTER_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    "${extra[@]}" \
    --endpoint-reconciler-type=none \
    --default-not-ready-toleration-seconds=10 \
    --default-unreachable-toleration-seconds=10 \
    --allow-privileged=true \
    --max-requests-inflight=800 \
    --max-mutating-requests-inflight=400 \
    --profiling=false \
    --cert-dir="$STATE/apiserver-certs"
  wait_up kube-apiserver "kube-apiserver /readyz" 120 apiserver_ready
}

start_controller_manager() {
  start kube-controller-manager "$CLUSTER_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$STATE/kube-controller-manager-certs" \
    --leader-elect=false \
    --controllers='*' \
    --root-ca-file="$PKI/ca.crt" \
    --service-account-private-key-file="$PKI/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allocate-node-cidrs=false \
    --node-monitor-period=2s \
    --node-monitor-grace-period=20s \
    --kube-api-qps=200 \
    --kube-api-burst=400 \
    --profiling=false
}

start_scheduler() {
  start kube-scheduler "$CLUSTER_BIN/kube-scheduler" \
    --kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHEDULER_PORT" \
    --cert-dir="$STATE/kube-scheduler-certs" \
    --leader-elect=false \
    --kube-api-qps=200 \
    --kube-api-burst=400 \
    --profiling=false
}

kwok_module_dir() {
  local dir
  dir=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$CLUSTER_KWOK_VERSION
  if [[ ! -d $dir/kustomize ]]; then
    (cd /tmp && GOFLAGS='' go mod download "sigs.k8s.io/kwok@$CLUSTER_KWOK_VERSION")
  fi
  echo "$dir"
}

install_kwok_stages() {
  local k s files=()
  k=$(kwok_module_dir)/kustomize
  kc apply -f "$k/crd/bases/kwok.x-k8s.io_stages.yaml" >/dev/null
  kc wait --for=condition=Established --timeout=60s crd/stages.kwok.x-k8s.io >/dev/null
  # Upstream stages, read from the module cache (never copied into the repository) ...
  for s in \
    node/fast/node-initialize.yaml \
    node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    node/chaos/node-not-ready.yaml \
    pod/fast/pod-ready.yaml \
    pod/fast/pod-complete.yaml \
    pod/fast/pod-delete.yaml \
    pod/chaos/pod-container-running-failed.yaml; do
    files+=(-f "$k/stage/$s")
  done
  # ... and ours.
  kc apply "${files[@]}" -f "$CLUSTER_DIR/stages/" >/dev/null
}

start_kwok() {
  mkdir -p "$STATE/kwok"
  # --config points into our state folder so a personal ~/.kwok/kwok.yaml is never read
  # (the file does not exist: all stages come from the Stage CRs).
  # kwok manages every node but the real one: `type!=real` rather than `type=kwok`, so the
  # nodes tests create with other labels (smoke.sh's type=kwok-smoke) stay fake.
  start kwok KWOK_WORKDIR="$STATE/kwok" "$CLUSTER_BIN/kwok" \
    --kubeconfig="$STATE/kwok.kubeconfig" \
    --config="$STATE/kwok/kwok.yaml" \
    --enable-crds=Stage \
    --manage-nodes-with-label-selector='type!=real' \
    --cidr="$POD_CIDR" \
    --node-ip=127.0.0.1 \
    --node-port="$KWOK_PORT" \
    --server-address="127.0.0.1:$KWOK_PORT" \
    --node-lease-duration-seconds=20
  wait_up kwok "kwok /healthz" 60 curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
}

create_nodes() {
  local i=0 zone n name
  {
    for zone in "${ZONES[@]}"; do
      for ((n = 1; n <= NODES_PER_ZONE; n++)); do
        i=$((i + 1))
        name=kwok-$zone-$n
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: $zone
    topology.kubernetes.io/region: local
    type: kwok
spec:
  podCIDR: 10.244.$i.0/24
  podCIDRs: [10.244.$i.0/24]
status:
  addresses:
  - {type: InternalIP, address: 192.0.2.$i}
  - {type: Hostname, address: $name}
  allocatable: {cpu: "32", memory: 256Gi, pods: "250"}
  capacity: {cpu: "32", memory: 256Gi, pods: "250"}
  nodeInfo: {architecture: amd64, operatingSystem: linux}
EOF
      done
    done
  } | kc apply -f - >/dev/null
}

write_prometheus_config() {
  mkdir -p "$STATE/prometheus/targets" "$STATE/prometheus/rules" "$STATE/prometheus/data"
  cat >"$STATE/prometheus/prometheus.yml" <<EOF
# Generated by tests/cluster/cluster.sh. Drop file_sd JSON files into
# $STATE/prometheus/targets/ to add scrape targets (picked up within 5 s), e.g.
#   [{"targets": ["127.0.0.1:18080"], "labels": {"service": "fleet-sim"}}]
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
# Rule files dropped here are loaded on POST /-/reload (make bench loads recording rules).
rule_files: ["$STATE/prometheus/rules/*.yml"]
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ["127.0.0.1:$PROMETHEUS_PORT"]
- job_name: kwok
  static_configs:
  - targets: ["127.0.0.1:$KWOK_PORT"]
- job_name: file_sd
  file_sd_configs:
  - files: ["$STATE/prometheus/targets/*.json"]
    refresh_interval: 5s
EOF
}

start_prometheus() {
  write_prometheus_config
  start prometheus "$(command -v prometheus)" \
    --config.file="$STATE/prometheus/prometheus.yml" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --storage.tsdb.path="$STATE/prometheus/data" \
    --storage.tsdb.retention.time=40d --storage.tsdb.retention.size=4GB \
    --web.enable-lifecycle
}

# KEY=value lines with an `export ` prefix, so a plain `source .cluster/env` works in a shell
# (the Makefile and README do that); dotenv parsers accept the prefix too.
write_env() {
  cat >"$STATE/env" <<EOF
export KUBECONFIG=$KUBECONFIG_ADMIN
export PROMETHEUS_URL=$PROMETHEUS_URL
export CLUSTER_BIN=$CLUSTER_BIN
export PROMETHEUS_TARGETS_DIR=$STATE/prometheus/targets
export PROMETHEUS_RULES_DIR=$STATE/prometheus/rules
export PROMETHEUS_DATA_DIR=$STATE/prometheus/data
export CLUSTER_REAL_NODE=$( [[ -d $RN ]] && echo 1 || echo 0)
EOF
  if [[ -d $RN ]]; then
    # What a pod on the real node uses instead of the kubernetes Service's ClusterIP (no
    # kube-proxy here) and of 127.0.0.1: the forwarders on the bridge's address.
    cat >>"$STATE/env" <<EOF
export CLUSTER_REAL_NODE_API_HOST=$REAL_NODE_GATEWAY
export CLUSTER_REAL_NODE_API_PORT=$APISERVER_PORT
export CLUSTER_REAL_NODE_PROMETHEUS_URL=http://$REAL_NODE_GATEWAY:$PROMETHEUS_PORT
export CLUSTER_REAL_NODE_POD_LOGS=$RN/pod-logs
EOF
  fi
}

nodes_ready() {
  local want=$(( ${#ZONES[@]} * NODES_PER_ZONE )) ready
  ready=$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  (( ready == want ))
}

# --- up ------------------------------------------------------------------------

on_up_failure() {
  local rc=$? c
  trap - EXIT
  if (( rc != 0 )); then
    echo >&2
    echo "cluster.sh up FAILED (exit $rc) during: ${STEP_NAME:-?}" >&2
    for c in "${COMPONENTS[@]}" "${REAL_COMPONENTS[@]}"; do
      [[ -s $LOGS/$c.log ]] || continue
      echo "---- last lines of $LOGS/$c.log" >&2
      tail -n 15 "$LOGS/$c.log" >&2
    done
    echo "---- stopping what was started; logs kept in $LOGS ('cluster.sh down' removes them)" >&2
    kill_all_keep_logs
  fi
  exit "$rc"
}

# 0 iff the running cluster has the real node exactly when CLUSTER_REAL_NODE asks for it.
real_node_as_asked() {
  if (( CLUSTER_REAL_NODE )); then [[ -d $RN ]]; else [[ ! -d $RN ]]; fi
}

cmd_up() {
  if healthy && ! real_node_as_asked; then
    log "the running cluster $( [[ -d $RN ]] && echo has || echo lacks) the real node, CLUSTER_REAL_NODE=$CLUSTER_REAL_NODE: restarting it"
    cmd_down
  fi
  if healthy; then
    log "cluster already up and healthy: reusing it (KUBECONFIG=$KUBECONFIG_ADMIN)"
    write_env
    return 0
  fi
  if [[ -d $STATE ]]; then
    log "found a stale or unhealthy $STATE: cleaning it up first"
    cmd_down
  fi

  step "build binaries (build.sh; a no-op when cached)"
  "$CLUSTER_DIR/build.sh" >/dev/null
  local p
  local ports=($ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT $KWOK_PORT $PROMETHEUS_PORT)
  if (( CLUSTER_REAL_NODE )); then ports+=($KUBELET_PORT $KUBELET_HEALTHZ_PORT); fi
  for p in "${ports[@]}"; do
    ! port_in_use "$p" || die "port 127.0.0.1:$p is already in use by another process"
  done

  # Before anything starts: a machine that cannot run containers fails here, with the reason.
  if (( CLUSTER_REAL_NODE )); then
    step "real node preflight (root, runc, cgroups, overlayfs)"
    real_node_preflight
  fi

  mkdir -p "$STATE" "$LOGS" "$PIDS"
  trap on_up_failure EXIT

  step "PKI (openssl)"
  make_pki
  write_kubeconfig "$KUBECONFIG_ADMIN" admin admin
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager system:kube-controller-manager
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
  write_kubeconfig "$STATE/kwok.kubeconfig" kwok kwok-controller

  step "etcd on 127.0.0.1:$ETCD_PORT"
  start_etcd

  step "kube-apiserver on 127.0.0.1:$APISERVER_PORT"
  start_apiserver

  step "kube-controller-manager (:$KCM_PORT), kube-scheduler (:$SCHEDULER_PORT), prometheus (:$PROMETHEUS_PORT)"
  start_controller_manager
  start_scheduler
  start_prometheus

  step "kwok stages (CRD + upstream stages from the module cache + stages/)"
  install_kwok_stages

  step "kwok on 127.0.0.1:$KWOK_PORT"
  start_kwok

  step "${#ZONES[@]}x$NODES_PER_ZONE fake nodes, waiting for Ready"
  create_nodes
  wait_for "all nodes Ready" 120 nodes_ready

  step "controllers: default ServiceAccount, scheduler and controller-manager healthy"
  wait_for "ServiceAccount default/default" 120 kc -n default get serviceaccount default
  wait_up kube-controller-manager "kube-controller-manager /healthz" 60 curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
  wait_up kube-scheduler "kube-scheduler /healthz" 60 curl -fsSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz"

  if (( CLUSTER_REAL_NODE )); then
    step "real node $REAL_NODE: containerd, pause image, a test container, kubelet, Ready"
    start_real_node
  fi

  step "prometheus ready"
  wait_up prometheus "prometheus /-/ready" 60 curl -fsS --max-time 2 "$PROMETHEUS_URL/-/ready"
  write_env

  step ""
  trap - EXIT
  healthy || die "cluster started but the health check fails; see $LOGS"
  log "cluster up in $(elapsed "$T0")"
  echo "KUBECONFIG=$KUBECONFIG_ADMIN" >&2
  echo "PROMETHEUS_URL=$PROMETHEUS_URL" >&2
  echo "(all of it in $STATE/env)" >&2
}

# import-image ARCHIVE...: import OCI archives (tests/image/build.sh, make image) into the
# real node's containerd, where pods find them by name (never pulled).
cmd_import_image() {
  local archive out
  (( $# > 0 )) || die "usage: $0 import-image ARCHIVE.tar..."
  [[ -d $RN ]] && pid_of containerd >/dev/null ||
    die "the real node is not running (make cluster-up with CLUSTER_REAL_NODE=1)"
  for archive in "$@"; do
    [[ -s $archive ]] || die "no image archive at $archive (make image / make image-app build them)"
    # (ctr's stderr carries a cgroup v1 deprecation warning on every call: shown on failure only)
    out=$(ctr_rn images import "$archive" 2>&1) ||
      die "ctr images import $archive failed: $out"
    grep -v DEPRECATION <<<"$out" >&2 || true
  done
}

case ${1:-} in
  up) cmd_up ;;
  import-image) shift; cmd_import_image "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  smoke) healthy || die "cluster is not healthy; run '$0 up' first"
         exec "$CLUSTER_DIR/smoke.sh" ;;
  *) echo "usage: $0 up|down|status|smoke|import-image ARCHIVE..." >&2; exit 2 ;;
esac
