#!/usr/bin/env bash
# Run a command against the local cluster:
#   tests/cluster/with-cluster.sh CMD [ARGS...]
# If the cluster is already up and healthy, CMD runs against it (and it stays up).
# Otherwise the cluster is started, CMD runs, and the cluster is torn down again,
# even if CMD fails. CMD sees KUBECONFIG, PROMETHEUS_URL, CLUSTER_BIN and
# PROMETHEUS_TARGETS_DIR from .cluster/env, and CLUSTER_BIN on PATH (kubectl, helm).
# Exit status: CMD's (or cluster.sh up's, if the cluster could not start).
set -euo pipefail
(( $# > 0 )) || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLUSTER=$HERE/cluster.sh
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$HERE/env.sh"

if "$CLUSTER" status >/dev/null 2>&1; then
  echo "with-cluster: reusing the running cluster (left running)" >&2
else
  echo "with-cluster: starting a cluster for this command (torn down afterwards)" >&2
  # A failed `up` stops what it started itself and keeps .cluster/logs for the post-mortem.
  "$CLUSTER" up
  trap '"$CLUSTER" down' EXIT
fi

set -a
# .cluster/env is written by cluster.sh up
# shellcheck source=/dev/null
. "$ROOT/.cluster/env"
set +a
rc=0
"$@" || rc=$?
exit "$rc"
