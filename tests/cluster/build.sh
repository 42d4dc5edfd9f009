#!/usr/bin/env bash
# Build the local control plane binaries into a version-keyed cache folder outside
# the repository (see env.sh), and install Debian's Prometheus if it is missing.
#
#   kube-apiserver kube-controller-manager kube-scheduler kubectl  <- tools/k8s  (one go build)
#   etcd                                                            <- tools/etcd
#   kwok, helm                                                      <- go install pkg@version
#   kubelet                                                         <- tools/k8s (real node)
#   containerd ctr containerd-shim-runc-v2, cni/{bridge,...}        <- go install (real node)
#   images/pause-<hash>.tar (OCI archive of images/pause.c)         <- gcc -static (real node)
#   runc, socat, buildah                                            <- apt (real node)
#
# The real-node parts are skipped with CLUSTER_REAL_NODE=0.
#
# Every binary whose `--version` already matches is skipped, so a warm run is a no-op.
# The last line of output is the bin folder.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

command -v go >/dev/null || { echo "build.sh: Go >= 1.26 is required (not found on PATH)" >&2; exit 1; }
gover=$(go env GOVERSION); gover=${gover#go}
if ! printf '1.26\n%s\n' "$gover" | sort -C -V; then
  echo "build.sh: Go >= 1.26 is required (kwok v0.8.0 and etcd v3.6 need it), found go$gover" >&2
  exit 1
fi
export CGO_ENABLED=0
mkdir -p "$CLUSTER_BIN"

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
step() { echo "==> $*" >&2; }

# has_version BINARY EXPECTED ARGS...: the binary exists and its version output contains EXPECTED.
has_version() {
  local bin=$CLUSTER_BIN/$1 want=$2 out; shift 2
  [[ -x $bin ]] || return 1
  out=$("$bin" "$@" 2>&1) || return 1  # (no pipe into grep -q: SIGPIPE + pipefail)
  [[ $out == *"$want"* ]]
}

total=$(now)

# --- Kubernetes --------------------------------------------------------------
# One `go build` for whichever of the binaries is missing or stale (kubelet is only
# needed for the real node, but is cheap once the control plane is built: same packages).
k8s_build=()
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  has_version "$b" "Kubernetes $CLUSTER_K8S_VERSION" --version || k8s_build+=("$b")
done
has_version kubectl "Client Version: $CLUSTER_K8S_VERSION" version --client || k8s_build+=(kubectl)
if (( CLUSTER_REAL_NODE )); then
  has_version kubelet "Kubernetes $CLUSTER_K8S_VERSION" --version || k8s_build+=(kubelet)
fi
if (( ${#k8s_build[@]} == 0 )); then
  step "kubernetes $CLUSTER_K8S_VERSION: cached"
else
  step "kubernetes $CLUSTER_K8S_VERSION: building ${k8s_build[*]} (cold: ~7-10 min on 2 cores)"
  t=$(now)
  minor=${CLUSTER_K8S_VERSION#v1.}; minor=${minor%%.*}
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$CLUSTER_K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  (cd "$CLUSTER_DIR/tools/k8s" && go build -mod=readonly -trimpath -tags=notest,grpcnotrace \
    -ldflags "$ldflags" -o "$CLUSTER_BIN/" "${k8s_build[@]/#/k8s.io/kubernetes/cmd/}")
  step "kubernetes $CLUSTER_K8S_VERSION: built in $(took "$t")"
fi

# --- etcd --------------------------------------------------------------------
if has_version etcd "etcd Version: ${CLUSTER_ETCD_VERSION#v}" --version; then
  step "etcd $CLUSTER_ETCD_VERSION: cached"
else
  step "etcd $CLUSTER_ETCD_VERSION: building"
  t=$(now)
  (cd "$CLUSTER_DIR/tools/etcd" && go build -mod=readonly -trimpath -ldflags "-s -w" \
    -o "$CLUSTER_BIN/etcd" go.etcd.io/etcd/server/v3)
  step "etcd $CLUSTER_ETCD_VERSION: built in $(took "$t")"
fi

# --- kwok --------------------------------------------------------------------
if has_version kwok "${CLUSTER_KWOK_VERSION#v}" --version; then
  step "kwok $CLUSTER_KWOK_VERSION: cached"
else
  step "kwok $CLUSTER_KWOK_VERSION: go install"
  t=$(now)
  (cd /tmp && GOBIN=$CLUSTER_BIN GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$CLUSTER_KWOK_VERSION")
  step "kwok $CLUSTER_KWOK_VERSION: built in $(took "$t")"
fi
# cluster.sh reads kwok's Stage CRD and stages from the module cache.
(cd /tmp && GOFLAGS='' go mod download "sigs.k8s.io/kwok@$CLUSTER_KWOK_VERSION")

# --- helm --------------------------------------------------------------------
if has_version helm "$CLUSTER_HELM_VERSION" version --short; then
  step "helm $CLUSTER_HELM_VERSION: cached"
else
  step "helm $CLUSTER_HELM_VERSION: go install"
  t=$(now)
  (cd /tmp && GOBIN=$CLUSTER_BIN GOFLAGS=-buildvcs=false go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$CLUSTER_HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$CLUSTER_HELM_VERSION")
  step "helm $CLUSTER_HELM_VERSION: built in $(took "$t")"
fi

# --- real node: containerd, CNI plugins, pause image (CLUSTER_REAL_NODE=1) ----
if (( CLUSTER_REAL_NODE )); then
  # containerd, ctr and the runc shim: `go install pkg@version` (no replace directives in
  # containerd's go.mod). CGO off: the btrfs snapshotter needs cgo and is dropped (tag
  # no_btrfs), as are devmapper and zfs; overlayfs and native remain. Seccomp profiles are
  # applied by runc, not containerd, so nothing else needs cgo.
  containerd_ok=1
  has_version containerd "containerd github.com/containerd/containerd/v2 $CLUSTER_CONTAINERD_VERSION" --version || containerd_ok=0
  has_version ctr "$CLUSTER_CONTAINERD_VERSION" --version || containerd_ok=0
  has_version containerd-shim-runc-v2 "Version:  $CLUSTER_CONTAINERD_VERSION" -v || containerd_ok=0
  if (( containerd_ok )); then
    step "containerd $CLUSTER_CONTAINERD_VERSION: cached"
  else
    step "containerd $CLUSTER_CONTAINERD_VERSION: go install containerd ctr containerd-shim-runc-v2"
    t=$(now)
    pkg=github.com/containerd/containerd/v2
    (cd /tmp && GOBIN=$CLUSTER_BIN GOFLAGS=-buildvcs=false go install -trimpath \
      -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X $pkg/version.Version=$CLUSTER_CONTAINERD_VERSION -X $pkg/version.Revision=$CLUSTER_CONTAINERD_VERSION -X $pkg/version.Package=$pkg" \
      "$pkg/cmd/containerd@$CLUSTER_CONTAINERD_VERSION" \
      "$pkg/cmd/ctr@$CLUSTER_CONTAINERD_VERSION" \
      "$pkg/cmd/containerd-shim-runc-v2@$CLUSTER_CONTAINERD_VERSION")
    step "containerd $CLUSTER_CONTAINERD_VERSION: built in $(took "$t")"
  fi

  # CNI plugins into bin/cni/ (generic names like `bridge` must not land on PATH).
  cni_ok=1
  for p in "${CLUSTER_CNI_PLUGINS[@]}"; do
    has_version "cni/$p" "$CLUSTER_CNI_VERSION" --version || cni_ok=0
  done
  if (( cni_ok )); then
    step "CNI plugins $CLUSTER_CNI_VERSION: cached"
  else
    step "CNI plugins $CLUSTER_CNI_VERSION: go install ${CLUSTER_CNI_PLUGINS[*]}"
    t=$(now)
    mkdir -p "$CLUSTER_BIN/cni"
    pkgs=()
    for p in "${CLUSTER_CNI_PLUGINS[@]}"; do
      case $p in
        host-local) pkgs+=("github.com/containernetworking/plugins/plugins/ipam/$p@$CLUSTER_CNI_VERSION") ;;
        portmap) pkgs+=("github.com/containernetworking/plugins/plugins/meta/$p@$CLUSTER_CNI_VERSION") ;;
        *) pkgs+=("github.com/containernetworking/plugins/plugins/main/$p@$CLUSTER_CNI_VERSION") ;;
      esac
    done
    (cd /tmp && GOBIN=$CLUSTER_BIN/cni GOFLAGS=-buildvcs=false go install -trimpath \
      -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CLUSTER_CNI_VERSION" \
      "${pkgs[@]}")
    step "CNI plugins $CLUSTER_CNI_VERSION: built in $(took "$t")"
  fi

  # The pause (sandbox) image: images/pause.c, static, packed as an OCI archive. Its name
  # carries a hash of the sources, so an edit rebuilds it.
  if [[ -s $CLUSTER_BIN/images/pause-$CLUSTER_PAUSE_TAG.tar ]]; then
    step "pause image $CLUSTER_PAUSE_IMAGE: cached"
  else
    step "pause image $CLUSTER_PAUSE_IMAGE: gcc -static + OCI archive"
    command -v gcc >/dev/null || { echo "build.sh: gcc is required for the pause image (apt-get install gcc libc6-dev)" >&2; exit 1; }
    t=$(now)
    mkdir -p "$CLUSTER_BIN/images"
    "$CLUSTER_DIR/images/build-pause.sh" "$CLUSTER_BIN/images/pause-$CLUSTER_PAUSE_TAG.tar" "$CLUSTER_PAUSE_IMAGE"
    step "pause image: built in $(took "$t")"
  fi
fi

# --- Prometheus (Debian package) and small host tools --------------------------
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
for tool in openssl curl jq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# The real node's OCI runtime (containerd's shim calls it), the forwarders its pods reach
# the API server through (socat), and what builds the images it runs (buildah: no daemon,
# no registry; tests/image/build.sh).
if (( CLUSTER_REAL_NODE )); then
  for tool in runc buildah; do command -v "$tool" >/dev/null || missing+=("$tool"); done
fi
# socat also forwards the API server into the network namespace Argo Rollouts' controller
# runs in (tests/src/argo.rs), which `ip` brings its loopback up in.
command -v socat >/dev/null || missing+=(socat)
command -v ip >/dev/null || missing+=(iproute2)
# The font `make bench` draws its plot's text with.
[[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if (( ${#missing[@]} )); then
  step "apt-get install ${missing[*]}"
  t=$(now)
  sudo=; (( EUID == 0 )) || sudo=sudo
  # Keep the prometheus package from starting its own service on :9090 (ours runs on 19090).
  policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"; created_policy=1
  fi
  rc=0
  { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } || rc=$?
  (( created_policy )) && $sudo rm -f "$policy"
  (( rc == 0 )) || { echo "apt-get install ${missing[*]} failed ($rc)" >&2; exit "$rc"; }
  step "apt-get install: done in $(took "$t")"
fi
step "prometheus: $(prometheus --version 2>&1 | head -1)"

step "all binaries ready in $(took "$total")"
echo "$CLUSTER_BIN"
