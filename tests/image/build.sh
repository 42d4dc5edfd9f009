#!/usr/bin/env bash
# build.sh DOCKERFILE BINARY NAME OUT.tar: build an image from DOCKERFILE with buildah (no
# daemon, no registry) and write it as an OCI archive OUT.tar that `ctr images import` reads.
#
# The image comes from the same Dockerfile `docker build` uses, with two build arguments
# that pick its local stages instead of the ones that need a registry:
#   BINARY_FROM=prebuilt  the binary cargo built on this machine (BINARY) instead of the
#                         `builder` stage (rust:<version> image, cargo build inside)
#   BASE=localbase        a root made here (`FROM scratch` + the shared libraries BINARY
#                         links, copied from this machine as `ldd` lists them) instead of
#                         debian:bookworm-slim
# Everything else — the binary's path, the environment, the non-root USER, the ENTRYPOINT —
# is the Dockerfile's. buildah skips the unused stages (`--skip-unused-stages`, its default),
# pulls nothing (`--pull=never`) and runs no container (the local stages only COPY).
#
# Debug information is stripped from the copy of BINARY (a debug build shrinks from
# hundreds of MB to tens); the code is unchanged. buildah's storage is a temporary folder
# (vfs driver: no mounts), removed at the end: nothing is left in /var/lib/containers.
#
# Needs root (buildah's storage and file ownership) and buildah (installed from Debian's
# package when missing). Prints the image name and the archive's size.
set -euo pipefail
(( $# == 4 )) || { echo "usage: $0 DOCKERFILE BINARY NAME OUT.tar" >&2; exit 2; }
dockerfile=$1 binary=$2 name=$3 out=$4
[[ -f $dockerfile ]] || { echo "build.sh: no Dockerfile at $dockerfile" >&2; exit 1; }
[[ -x $binary ]] || { echo "build.sh: no binary at $binary (cargo build it first)" >&2; exit 1; }
(( EUID == 0 )) || { echo "build.sh: buildah needs root here (storage and file ownership)" >&2; exit 1; }

if ! command -v buildah >/dev/null; then
  echo "build.sh: installing buildah (Debian package)" >&2
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah; } >&2 ||
    { echo "build.sh: apt-get install buildah failed" >&2; exit 1; }
fi
for tool in ldd objcopy tar jq; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found on PATH" >&2; exit 1; }
done

start=$(date +%s.%N)
work=$(mktemp -d "${TMPDIR:-/tmp}/invoiceops-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
context=$work/context
mkdir -p "$context/rootfs" "$(dirname "$out")"

# The binary, as the Dockerfile's `prebuilt` stage expects it: context/binary; and this
# machine's CA bundle, context/ca-certificates.crt (the operator's Prometheus client loads
# the system's CA certificates at start).
objcopy --strip-debug "$binary" "$context/binary"
chmod 0755 "$context/binary"
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca ]] || { echo "build.sh: no CA bundle at $ca (apt-get install ca-certificates)" >&2; exit 1; }
install -m 0644 "$ca" "$context/ca-certificates.crt"

# The base: what the binary links (ldd prints "name => /path (addr)" or "/path (addr)" for
# the dynamic loader), each copied to the path the loader looks for it at. A static binary
# needs nothing ("not a dynamic executable").
libs=$(ldd "$context/binary" 2>&1 || true)
if [[ $libs == *"not a dynamic executable"* || $libs == *"statically linked"* ]]; then
  libs=
fi
copied=0
while read -r lib; do
  [[ -n $lib ]] || continue
  copied=$((copied + 1))
  mkdir -p "$context/rootfs$(dirname "$lib")"
  cp -L "$lib" "$context/rootfs$lib"
done < <(awk '/=>/ {print $3; next} $1 ~ /^\// {print $1}' <<<"$libs" | grep '^/' | sort -u)
if grep -q 'not found' <<<"$libs"; then
  echo "build.sh: $binary links libraries this machine does not have:" >&2
  grep 'not found' <<<"$libs" >&2
  exit 1
fi
# /tmp for libraries that want one (the root file system is read-only in the pod); /etc for
# the files the kubelet mounts (hosts, resolv.conf, hostname).
mkdir -p "$context/rootfs/tmp" "$context/rootfs/etc"
chmod 1777 "$context/rootfs/tmp"

store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
build_log=$work/build.log
if ! buildah "${store[@]}" build --layers=false --pull=never --network=none \
  --build-arg BINARY_FROM=prebuilt --build-arg BASE=localbase \
  -f "$dockerfile" -t "$name" "$context" >"$build_log" 2>&1; then
  cat "$build_log" >&2
  echo "build.sh: buildah build of $dockerfile failed" >&2
  exit 1
fi
rm -f "$out.tmp"
if ! buildah "${store[@]}" push --quiet "$name" "oci-archive:$out.tmp:$name" >"$build_log" 2>&1; then
  cat "$build_log" >&2
  echo "build.sh: buildah push to the OCI archive failed" >&2
  exit 1
fi
# Name the image for containerd: `ctr images import` takes the name from the index's
# io.containerd.image.name annotation (the OCI ref.name alone is kept only with
# --base-name), and the platform from the index entry.
mkdir -p "$work/oci"
tar -xf "$out.tmp" -C "$work/oci"
manifest=$(jq -r '.manifests[0].digest' "$work/oci/index.json")
config=$(jq -r '.config.digest' "$work/oci/blobs/${manifest/://}")
platform=$(jq -c '{architecture, os}' "$work/oci/blobs/${config/://}")
jq --arg name "$name" --argjson platform "$platform" \
  '.manifests[0].annotations["io.containerd.image.name"] = $name | .manifests[0].platform = $platform' \
  "$work/oci/index.json" >"$work/index.json"
mv "$work/index.json" "$work/oci/index.json"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$work/oci" -cf "$out.tmp" .
mv "$out.tmp" "$out"
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "built $name -> $out ($(du -h "$out" | cut -f1), ${took}s; base: $copied linked files from this machine)" >&2
echo "$name"
