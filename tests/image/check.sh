#!/usr/bin/env bash
# check.sh IMAGE.tar EXPECT ARGS...: run the image of the OCI archive IMAGE.tar once with
# runc, no cluster: its layers unpacked into a bundle, the process its config names
# (ENTRYPOINT + ARGS, Env, User, WorkingDir), a read-only root file system, no network,
# all capabilities dropped, no new privileges. Passes when the image's user is not root,
# the process exits 0 and its output contains EXPECT. Prints the output.
#
#   tests/image/check.sh target/images/invoice-operator.tar invoice-operator --version
#
# Needs root and runc (Debian's package; build.sh of the cluster installs it).
set -euo pipefail
(( $# >= 2 )) || { echo "usage: $0 IMAGE.tar EXPECT [ARGS...]" >&2; exit 2; }
archive=$1 expect=$2; shift 2
[[ -s $archive ]] || { echo "check.sh: no archive at $archive" >&2; exit 1; }
(( EUID == 0 )) || { echo "check.sh: runc needs root here" >&2; exit 1; }
for tool in runc jq tar; do
  command -v "$tool" >/dev/null || { echo "check.sh: $tool not found on PATH (apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/invoiceops-image-check.XXXXXX")
id=invoiceops-image-check-$$
cleanup() {
  runc --root "$work/runc" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/oci" "$work/bundle/rootfs" "$work/runc"
tar -xf "$archive" -C "$work/oci"

blob() { echo "$work/oci/blobs/${1/://}"; }
manifest=$(jq -r '.manifests[0].digest' "$work/oci/index.json")
config=$(jq -r '.config.digest' "$(blob "$manifest")")
config=$(blob "$config")
# Layers in order (plain or gzip tar; none of ours has whiteouts).
for layer in $(jq -r '.layers[].digest' "$(blob "$manifest")"); do
  tar -xf "$(blob "$layer")" -C "$work/bundle/rootfs" --no-same-owner --numeric-owner
done

user=$(jq -r '.config.User // ""' "$config")
uid=${user%%:*} gid=${user#*:}
[[ $user == *:* ]] || gid=$uid
if [[ ! $uid =~ ^[0-9]+$ || ! $gid =~ ^[0-9]+$ ]]; then
  echo "check.sh: the image's USER is '$user': it must be numeric (uid:gid)" >&2; exit 1
fi
(( uid != 0 )) || { echo "check.sh: the image runs as root (USER '$user')" >&2; exit 1; }

# ARGS as a JSON array (one per line: jq would read `--version` as its own flag).
extra=$( (( $# )) && printf '%s\n' "$@" | jq -R . | jq -sc . || echo '[]')
# The OCI runtime spec runc starts: runc's default (namespaces incl. network, masked and
# read-only /proc paths), changed to the image's process and hardened like the chart's pod.
runc spec --bundle "$work/bundle"
jq --argjson uid "$uid" --argjson gid "$gid" \
   --argjson args "$(jq -c --argjson extra "$extra" '(.config.Entrypoint // []) + (if ($extra | length) > 0 then $extra else (.config.Cmd // []) end)' "$config")" \
   --argjson env "$(jq -c '.config.Env // []' "$config")" \
   --arg cwd "$(jq -r '.config.WorkingDir // "/" | if . == "" then "/" else . end' "$config")" '
  .process.terminal = false
  | .process.args = $args
  | .process.env = $env
  | .process.cwd = $cwd
  | .process.user = {uid: $uid, gid: $gid}
  | .process.noNewPrivileges = true
  | .process.capabilities = {bounding: [], effective: [], permitted: [], ambient: []}
  | del(.process.rlimits)
  | .root.readonly = true
  | .hostname = "image-check"
' "$work/bundle/config.json" >"$work/bundle/config.json.new"
mv "$work/bundle/config.json.new" "$work/bundle/config.json"

rc=0
out=$(timeout 60 runc --root "$work/runc" run --bundle "$work/bundle" "$id" </dev/null 2>&1) || rc=$?
echo "$out"
if (( rc != 0 )); then
  echo "check.sh: $(jq -c .process.args "$work/bundle/config.json") as $uid:$gid on a read-only root exited $rc" >&2
  exit 1
fi
[[ $out == *"$expect"* ]] || { echo "check.sh: output lacks '$expect'" >&2; exit 1; }
echo "check.sh: ok: $(jq -c .process.args "$work/bundle/config.json") ran as $uid:$gid, read-only root, no capabilities, no network" >&2
