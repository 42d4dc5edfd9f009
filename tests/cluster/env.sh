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

CLUSTER_CACHE=${INVOICE_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/invoice-operator}
CLUSTER_BIN=$CLUSTER_CACHE/bin-k8s${CLUSTER_K8S_VERSION}-etcd${CLUSTER_ETCD_VERSION}-kwok${CLUSTER_KWOK_VERSION}-helm${CLUSTER_HELM_VERSION}
export CLUSTER_DIR CLUSTER_K8S_VERSION CLUSTER_ETCD_VERSION CLUSTER_KWOK_VERSION CLUSTER_HELM_VERSION CLUSTER_CACHE CLUSTER_BIN
export GOTOOLCHAIN=local

case ":$PATH:" in
  *":$CLUSTER_BIN:"*) ;;
  *) PATH=$CLUSTER_BIN:$PATH ;;
esac
export PATH

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "CLUSTER_BIN=$CLUSTER_BIN"
fi
