# shellcheck shell=bash
# The real node of the local cluster, sourced by cluster.sh (uses its helpers and
# variables): containerd (own root, state and socket under .cluster/real-node/), kubelet
# (certificate signed by the harness CA, cgroupfs driver, cgroup v1 allowed), runc from
# Debian, a CNI bridge on the node's pod CIDR, and the locally built pause image.
#
#   .cluster/real-node/containerd/{root,state,containerd.sock,config.toml}
#   .cluster/real-node/kubelet/          kubelet --root-dir (pods, volumes, pki)
#   .cluster/real-node/cni/{net.d,ipam}  CNI config (bridge + host-local) and IP leases
#   .cluster/real-node/pod-logs/         container logs
#   .cluster/real-node/sysctl.orig       kernel settings kubelet changes, restored by `down`
#   .cluster/real-node/cgroups           cgroup folders `up` created, removed by `down`
#   .cluster/real-node/host-dirs         host folders `up` found missing that containerd,
#                                        kubelet or CNI create whatever their configured
#                                        dirs: /run/containerd (shim sockets in s/),
#                                        /var/lib/kubelet (device-plugins/kubelet.sock),
#                                        /var/lib/cni (libcni's results cache); `down`
#                                        removes our files there and the folders if empty
#   .cluster/real-node/iptables          iptables chains kubelet created (only if the
#                                        host has iptables), removed by `down`
#
# Networking: pods get 10.244.100.0/24 addresses on bridge invops0 (which holds .1, so
# the host reaches them and they reach the host), no default route, no masquerading, no
# IP forwarding: no traffic leaves the machine. Or hostNetwork on loopback ports.
#
# The API server for pods: a pod's in-cluster configuration names the kubernetes Service's
# ClusterIP (10.96.0.1:443), which nothing routes here (no kube-proxy, no default route),
# and the API server listens on 127.0.0.1 only, which is the pod's own loopback inside its
# network namespace. So two forwarders (socat, Debian's package) listen on the bridge's
# address — inside the network the harness created — and pass TCP through to loopback:
#   10.244.100.1:16443 -> 127.0.0.1:16443 (api-forward; TLS end to end: the API server's
#                          certificate also names 10.244.100.1)
#   10.244.100.1:19090 -> 127.0.0.1:19090 (prometheus-forward)
# A pod uses them with KUBERNETES_SERVICE_HOST=10.244.100.1 KUBERNETES_SERVICE_PORT=16443
# in its env (a container's env wins over the Service variables kubelet adds), e.g. the
# chart's extraEnv; .cluster/env names them (CLUSTER_REAL_NODE_API_HOST/_PORT,
# CLUSTER_REAL_NODE_PROMETHEUS_URL). Pods still authenticate with their ServiceAccount token.

CONTAINERD_SOCK=$RN/containerd/containerd.sock
# Kernel settings kubelet enforces at start (setupKernelTunables); saved and restored.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Top-level cgroup folders the real node creates in every v1 hierarchy (or in the v2 root).
REAL_NODE_CGROUPS=(kubepods invoiceops-preflight)

ctr_rn() { "$CLUSTER_BIN/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The cgroup hierarchies: every v1 controller mount and the v2 mount (at /sys/fs/cgroup,
# or at /sys/fs/cgroup/unified on a hybrid host, where runc creates folders too).
cgroup_roots() {
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts
}

real_node_preflight() {
  local why=() d
  (( EUID == 0 )) || why+=("must run as root (kubelet, containerd and runc need it)")
  command -v runc >/dev/null ||
    why+=("runc not found on PATH (build.sh installs Debian's runc; or apt-get install runc)")
  [[ -n $(cgroup_roots) ]] || why+=("no cgroup filesystem is mounted under /sys/fs/cgroup")
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
    why+=("the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)")
  command -v socat >/dev/null ||
    why+=("socat not found on PATH (build.sh installs Debian's socat; or apt-get install socat)")
  for d in ip mount umount findmnt timeout; do
    command -v "$d" >/dev/null || why+=("$d not found on PATH")
  done
  [[ -x $CLUSTER_BIN/kubelet && -x $CLUSTER_BIN/containerd && -x $CLUSTER_BIN/cni/bridge ]] ||
    why+=("real node binaries missing in $CLUSTER_BIN (run build.sh)")
  [[ -s $CLUSTER_BIN/images/pause-$CLUSTER_PAUSE_TAG.tar ]] || why+=("pause image missing (run build.sh)")
  if ip link show "$REAL_NODE_BRIDGE" >/dev/null 2>&1; then
    why+=("network interface $REAL_NODE_BRIDGE already exists (another checkout's cluster? 'cluster.sh down' there)")
  fi
  (( ${#why[@]} == 0 )) && return 0
  printf 'cluster.sh: the real node cannot start here:\n' >&2
  printf '  - %s\n' "${why[@]}" >&2
  printf '  (CLUSTER_REAL_NODE=0 starts the cluster without it)\n' >&2
  exit 1
}

write_containerd_config() {
  mkdir -p "$RN/containerd/root" "$RN/containerd/state" "$RN/cni/net.d" "$RN/cni/ipam"
  cat >"$RN/containerd/config.toml" <<EOF
# Generated by tests/cluster/real-node.sh.
version = 3
root = "$RN/containerd/root"
state = "$RN/containerd/state"
# Plugins that would touch host-wide paths (NRI's socket, /opt/containerd) or are unused.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$CLUSTER_PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # Never ask for an oom_score_adj below containerd's own: lowering it needs
    # CAP_SYS_RESOURCE, which root may lack in a VM or container (this machine's does), and
    # runc then fails with "can't get final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$(command -v runc)'
          SystemdCgroup = false
          # runc's own state (default /run/containerd/runc) under ours.
          Root = '$RN/containerd/runc'
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$CLUSTER_BIN/cni']
      conf_dir = '$RN/cni/net.d'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
EOF
  # The pod network: a bridge the harness creates (holding the gateway address, so the
  # host and the pods reach each other), host-local addresses from the node's pod CIDR.
  # No isGateway (it would turn on net.ipv4.ip_forward), no ipMasq, no default route.
  cat >"$RN/cni/net.d/10-invoiceops.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "invoiceops",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$REAL_NODE_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$REAL_NODE_POD_CIDR", "gateway": "$REAL_NODE_GATEWAY"}]],
        "dataDir": "$RN/cni/ipam"
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
  mkdir -p "$RN/kubelet" "$RN/pod-logs" "$RN/volume-plugins"
  write_kubeconfig "$RN/kubelet.kubeconfig" kubelet-client "system:node:$REAL_NODE"
  cat >"$RN/kubelet-config.yaml" <<EOF
# Generated by tests/cluster/real-node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
# Kubernetes 1.35 refuses cgroup v1 unless told otherwise; this machine may only have v1.
failCgroupV1: false
failSwapOn: false
podLogsDir: $RN/pod-logs
volumePluginDir: $RN/volume-plugins
clusterDomain: cluster.local
maxPods: 50
podPidsLimit: 1024
serializeImagePulls: true
# No registry: every image is imported, and image GC would delete them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
containerLogMaxSize: 1Mi
containerLogMaxFiles: 2
shutdownGracePeriod: 0s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
EOF
}

# The Node object exists before kubelet registers: that is where its pod CIDR (kubelet
# cannot set it, and the controller-manager allocates none), its taint and labels come
# from. kubelet finds it and takes it over.
create_real_node_object() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $REAL_NODE
  labels:
    kubernetes.io/hostname: $REAL_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: $REAL_NODE_ZONE
    topology.kubernetes.io/region: local
    type: real
spec:
  podCIDR: $REAL_NODE_POD_CIDR
  podCIDRs: [$REAL_NODE_POD_CIDR]
  taints:
  - {key: $REAL_NODE_TAINT, value: "true", effect: NoSchedule}
EOF
}

save_sysctls() {
  local k
  for k in "${KUBELET_SYSCTLS[@]}"; do
    if [[ -e /proc/sys/${k//.//} ]]; then echo "$k=$(<"/proc/sys/${k//.//}")"; fi
  done >"$RN/sysctl.orig"
}

restore_sysctls() {
  local line
  [[ -f $RN/sysctl.orig ]] || return 0
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    sysctl -qw "$line" >/dev/null 2>&1 || echo "  could not restore $line" >&2
  done <"$RN/sysctl.orig"
  rm -f "$RN/sysctl.orig"
}

# Record which top-level cgroup folders are ours (created by this `up`), so `down`
# never removes a folder someone else owns.
record_cgroups() {
  local root c
  : >"$RN/cgroups"
  for root in $(cgroup_roots); do
    for c in "${REAL_NODE_CGROUPS[@]}"; do
      [[ -e $root/$c ]] || echo "$root/$c" >>"$RN/cgroups"
    done
  done
}

# kubelet adds a few iptables chains at start when iptables is installed (the canary,
# the hint, and KUBE-FIREWALL, jumped to from INPUT and OUTPUT). Note the ones that do
# not exist yet, so `down` removes exactly those.
KUBELET_CHAINS=(filter/KUBE-FIREWALL filter/KUBE-KUBELET-CANARY nat/KUBE-KUBELET-CANARY
  mangle/KUBE-KUBELET-CANARY mangle/KUBE-IPTABLES-HINT)
record_iptables() {
  local ipt c
  : >"$RN/iptables"
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for c in "${KUBELET_CHAINS[@]}"; do
      "$ipt" -w -t "${c%/*}" -S "${c#*/}" >/dev/null 2>&1 || echo "$ipt ${c%/*} ${c#*/}" >>"$RN/iptables"
    done
  done
}

remove_iptables() {
  local ipt table chain from
  [[ -f $RN/iptables ]] || return 0
  while read -r ipt table chain; do
    if [[ $chain == KUBE-FIREWALL ]]; then
      for from in INPUT OUTPUT; do
        while "$ipt" -w -t "$table" -D "$from" -j "$chain" 2>/dev/null; do :; done
      done
    fi
    "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
    "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
  done <"$RN/iptables"
  rm -f "$RN/iptables"
}

# Host-wide folders that appear whatever the configured state dirs (see host-dirs above).
HOST_DIRS=(/run/containerd /var/lib/kubelet /var/lib/cni)
remove_host_dirs() {
  local d
  # libcni's cache entries of our pods (bridge and loopback networks) name our netns: they
  # go even if /var/lib/cni was there before (a normal pod deletion removes them, `down`
  # does not run the CNI DEL).
  grep -lsF "\"netns\":\"$RN/" /var/lib/cni/results/* | xargs -r rm -f || true
  [[ -f $RN/host-dirs ]] || return 0
  while IFS= read -r d; do
    case $d in
      /var/lib/kubelet) rm -f "$d/device-plugins/kubelet.sock" "$d/device-plugins/kubelet_internal_checkpoint" ;;
    esac
    # Only empty folders go (something else may have started using them meanwhile).
    find "$d" -depth -type d -empty -delete 2>/dev/null || true
    [[ ! -e $d ]] || echo "  $d is not empty, kept" >&2
  done <"$RN/host-dirs"
  rm -f "$RN/host-dirs"
}

# rmdir a cgroup tree bottom-up (cgroup folders can only be rmdir'ed, not rm -r'ed).
remove_cgroup_tree() {
  [[ -d $1 ]] || return 0
  find "$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
  [[ ! -d $1 ]] || echo "  cgroup $1 still exists (a process left in it?)" >&2
}

start_containerd() {
  start containerd "$CLUSTER_BIN/containerd" --config "$RN/containerd/config.toml" --log-level warn
  wait_up containerd "containerd socket" 30 ctr_rn version
}

# Import the pause image, then run one container with plain containerd + runc (no
# kubelet): a kernel or runc that cannot run containers fails here with runc's message
# within 30 s, instead of kubelet retrying a pod sandbox for ever.
check_containers_run() {
  local out rc=0
  # (ctr's stderr carries a cgroup v1 deprecation warning on every call: shown on failure only)
  out=$(ctr_rn images import "$CLUSTER_BIN/images/pause-$CLUSTER_PAUSE_TAG.tar" 2>&1) ||
    die "ctr images import of the pause image failed: $out"
  out=$(timeout 30 "$CLUSTER_BIN/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io \
    run --rm --fifo-dir "$RN/containerd/fifo" --cgroup "/invoiceops-preflight/check" \
    "$CLUSTER_PAUSE_IMAGE" invoiceops-preflight /pause -v 2>&1) || rc=$?
  if (( rc != 0 )); then
    ctr_rn tasks kill -s KILL invoiceops-preflight >/dev/null 2>&1 || true
    ctr_rn tasks delete -f invoiceops-preflight >/dev/null 2>&1 || true
    ctr_rn containers delete invoiceops-preflight >/dev/null 2>&1 || true
    if (( rc == 124 )); then out="timed out after 30s"; fi
    die "a test container does not run on this machine ($(command -v runc): $(runc --version 2>&1 | head -1)): $(grep -v DEPRECATION <<<"$out")"
  fi
  [[ $out == *"invoiceops-pause"* ]] || die "the test container printed '$out', expected 'invoiceops-pause ...'"
}

# kubelet refuses a loopback node IP ("nodeIP can't be loopback address": the node then
# has no address, pods no hostIP). Its IP is the bridge's address instead, which only
# this machine and its pods can reach; kubelet itself still listens on 127.0.0.1.
start_kubelet() {
  start kubelet "$CLUSTER_BIN/kubelet" \
    --config="$RN/kubelet-config.yaml" \
    --kubeconfig="$RN/kubelet.kubeconfig" \
    --root-dir="$RN/kubelet" \
    --cert-dir="$RN/kubelet/pki" \
    --hostname-override="$REAL_NODE" \
    --node-ip="$REAL_NODE_GATEWAY" \
    --v=1
  wait_up kubelet "kubelet /healthz" 60 curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
}

# The forwarders pods reach the API server and Prometheus through (see the top). Each runs
# socat through a symlink named after it, so that pid_of (argv[0]) tells them apart.
start_forwarders() {
  local name listen target
  mkdir -p "$RN/bin"
  for name in api-forward prometheus-forward; do
    case $name in
      api-forward) listen=$APISERVER_PORT target=$APISERVER_PORT ;;
      prometheus-forward) listen=$PROMETHEUS_PORT target=$PROMETHEUS_PORT ;;
    esac
    ln -sfn "$(command -v socat)" "$RN/bin/$name"
    start "$name" "$RN/bin/$name" -lf /dev/stderr \
      "TCP4-LISTEN:$listen,bind=$REAL_NODE_GATEWAY,reuseaddr,fork" "TCP4:127.0.0.1:$target"
  done
  wait_up api-forward "the API server through $REAL_NODE_GATEWAY:$APISERVER_PORT" 30 \
    curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$REAL_NODE_GATEWAY:$APISERVER_PORT/readyz"
  wait_up prometheus-forward "a TCP connection to $REAL_NODE_GATEWAY:$PROMETHEUS_PORT" 30 \
    bash -c "exec 3<>/dev/tcp/$REAL_NODE_GATEWAY/$PROMETHEUS_PORT"
}

real_node_ready() {
  [[ $(kc get node "$REAL_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

start_real_node() {
  mkdir -p "$RN"
  save_sysctls
  record_cgroups
  record_iptables
  local d
  for d in "${HOST_DIRS[@]}"; do [[ -e $d ]] || echo "$d"; done >"$RN/host-dirs"
  write_containerd_config
  write_kubelet_config
  ip link add "$REAL_NODE_BRIDGE" type bridge
  ip addr add "$REAL_NODE_GATEWAY/${REAL_NODE_POD_CIDR#*/}" dev "$REAL_NODE_BRIDGE"
  ip link set "$REAL_NODE_BRIDGE" up
  start_forwarders
  start_containerd
  check_containers_run
  create_real_node_object
  start_kubelet
  wait_up kubelet "node $REAL_NODE Ready" 90 real_node_ready
}

# The PIDs of containerd-shim-runc-v2 processes serving our containerd (their command
# line names our socket), so that `down` never touches another containerd's shims.
our_shims() {
  local f pid cmd
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    cmd=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
    if [[ $cmd == *containerd-shim-runc-v2* && $cmd == *"-address $CONTAINERD_SOCK "* ]]; then
      echo "$pid"
    fi
  done
  return 0
}

# Stop kubelet, every container (through containerd while it runs, then any shim left),
# then containerd; unmount everything under .cluster/real-node/ (rootfs overlays, shm,
# netns, kubelet's volume tmpfs); remove the bridge, the cgroup folders `up` created, and
# restore the kernel settings. Idempotent; safe after a failed `up`.
stop_real_node() {
  local t id pid m
  t=$(now)
  stop kubelet
  stop api-forward
  stop prometheus-forward
  if pid_of containerd >/dev/null; then
    for id in $(ctr_rn tasks list -q 2>/dev/null); do
      ctr_rn tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(ctr_rn tasks list -q 2>/dev/null); do
      ctr_rn tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  for pid in $(our_shims); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Unmount deepest first; lazily if a mount is still busy.
  for m in $(findmnt -rn -o TARGET | grep -F "$RN/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "  could not unmount $m" >&2
  done
  ip link del "$REAL_NODE_BRIDGE" 2>/dev/null || true
  remove_host_dirs
  if [[ -f $RN/cgroups ]]; then
    while IFS= read -r m; do remove_cgroup_tree "$m"; done <"$RN/cgroups"
    rm -f "$RN/cgroups"
  fi
  remove_iptables
  restore_sysctls
  echo "  stopped the real node in $(elapsed "$t")" >&2
}
