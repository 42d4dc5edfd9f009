#!/usr/bin/env bash
# Argo Rollouts for the end-to-end tests of `workload.kind: Rollout`: its controller, built from
# its Go module with the go tool (once, cached next to the cluster binaries), and its CRDs from
# the same module. Nothing of Argo Rollouts is committed.
#   tests/cluster/argo-rollouts.sh   -> prints the controller binary, then the CRD folder
# v1.10.1: v1.10.2 and v1.9.3 declare go >= 1.26.10, above this machine's Go (GOTOOLCHAIN=local).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$HERE/env.sh"
VERSION=v1.10.1
MODULE=github.com/argoproj/argo-rollouts
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

dir=$(cd /tmp && go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $dir ]] || { echo "go mod download $MODULE@$VERSION gave no module folder" >&2; exit 1; }
bin=$CLUSTER_BIN/rollouts-controller-$VERSION
if [[ ! -x $bin ]]; then
  echo "building the Argo Rollouts controller $VERSION from its Go module (once; 3-10 minutes)" >&2
  mkdir -p "$CLUSTER_BIN"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$dir/." "$work/"
  chmod -R u+w "$work"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" ./cmd/rollouts-controller) >&2
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
echo "$dir/manifests/crds"
