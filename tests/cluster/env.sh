#!/usr/bin/env bash
# Source me:   . tests/cluster/env.sh   -> sets CLUSTER_BIN (+ versions) and puts it on PATH.
# Or run me:   tests/cluster/env.sh     -> prints CLUSTER_BIN=... (for Makefiles).
# The binaries live outside the repository in a version-keyed cache folder, so a
# fresh clone on the same machine reuses them. build.sh fills that folder.

# Pinned versions. Kubernetes and etcd come from the tools modules' go.mod files
# (the single source of truth); kwok and helm are `go install`ed at these tags.
CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER_K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$CLUSTER_DIR/tools/k8s/go.mod")
CLUSTER_ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" || ($1 == "require" && $2 == "go.etcd.io/etcd/server/v3") {print $NF; exit}' "$CLUSTER_DIR/tools/etcd/go.mod")
CLUSTER_KWOK_VERSION=v0.8.0
CLUSTER_HELM_VERSION=v3.19.5

# The real node (kubelet + containerd + runc + CNI bridge) beside the kwok nodes.
# CLUSTER_REAL_NODE=0 skips building and starting it (machines that cannot run containers).
CLUSTER_REAL_NODE=${CLUSTER_REAL_NODE:-1}
CLUSTER_CONTAINERD_VERSION=v2.4.2
CLUSTER_CNI_VERSION=v1.10.0
CLUSTER_CNI_PLUGINS=(bridge host-local loopback portmap)
# The pause/sandbox image is built locally from images/pause.c (no registry): the tag is
# a hash of its sources. "localhost/" keeps the CRI from prefixing a registry's name.
CLUSTER_PAUSE_TAG=$(cat "$CLUSTER_DIR/images/pause.c" "$CLUSTER_DIR/images/build-pause.sh" | sha256sum | cut -c1-12)
CLUSTER_PAUSE_IMAGE=localhost/invoiceops/pause:$CLUSTER_PAUSE_TAG

CLUSTER_CACHE=${INVOICE_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/invoice-operator}
CLUSTER_BIN=$CLUSTER_CACHE/bin-k8s${CLUSTER_K8S_VERSION}-etcd${CLUSTER_ETCD_VERSION}-kwok${CLUSTER_KWOK_VERSION}-helm${CLUSTER_HELM_VERSION}
export CLUSTER_DIR CLUSTER_K8S_VERSION CLUSTER_ETCD_VERSION CLUSTER_KWOK_VERSION CLUSTER_HELM_VERSION CLUSTER_CACHE CLUSTER_BIN
export CLUSTER_REAL_NODE CLUSTER_CONTAINERD_VERSION CLUSTER_CNI_VERSION CLUSTER_PAUSE_TAG CLUSTER_PAUSE_IMAGE
export GOTOOLCHAIN=local

case ":$PATH:" in
  *":$CLUSTER_BIN:"*) ;;
  *) PATH=$CLUSTER_BIN:$PATH ;;
esac
export PATH

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "CLUSTER_BIN=$CLUSTER_BIN"
fi
