#!/usr/bin/env bash
# Regenerate tools/k8s/go.mod + go.sum for a Kubernetes version, e.g.
#   tests/cluster/tools/regen-k8s.sh v1.35.4
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points every staging
# module at ./staging/. A consumer module must pin each staging module to the
# matching published v0.X.Y itself; the list is derived from upstream's go.mod.
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
ver=${1:?usage: regen-k8s.sh vMAJOR.MINOR.PATCH}
staging=v0.${ver#v1.}
dir=$(cd "$(dirname "$0")/k8s" && pwd)
gomod=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$ver" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
mods=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
gover=$(awk '$1 == "go" {print $2; exit}' "$gomod")
{
  echo "module invoice-operator/tests/cluster/tools/k8s"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $ver"
  echo
  echo "// Staging modules, derived from the '=> ./staging/' lines of k8s.io/kubernetes@$ver."
  echo "replace ("
  for m in $mods; do echo "	$m => $m $staging"; done
  echo ")"
} >"$dir/go.mod"
rm -f "$dir/go.sum"
cd "$dir" && go mod tidy
echo "regenerated $dir/go.mod for $ver ($(echo "$mods" | wc -w) staging modules)"
