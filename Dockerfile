# syntax=docker/dockerfile:1
# The invoice-operator image. Two ways to build it from this one recipe:
#
#   docker build -t invoice-operator .      (or `make image-docker`) where a Docker engine
#       with BuildKit exists: the binary is built in the `builder` stage and the runtime
#       is debian:bookworm-slim (glibc for the binary). Both come from a registry.
#   make image                              no daemon, no registry: buildah builds this file
#       with BINARY_FROM=prebuilt BASE=localbase (tests/image/build.sh): the binary cargo
#       built on this machine, on `scratch` plus the libraries it links, copied from this
#       machine. The unused stages are skipped (BuildKit and buildah both do).
#
# Either way the last stage is the same: the binary at /usr/local/bin/invoice-operator, run
# as the non-root user 65532 (the chart's securityContext); nothing in it writes to the
# root file system, which the chart mounts read-only.

# Keep in step with the toolchain the repository is tested with (rust-version in Cargo.toml
# is the minimum; the lock file may need newer).
ARG RUST_VERSION=1.95
# Where the binary comes from: `builder` (cargo in a container) or `prebuilt` (the build
# context's `binary`, see tests/image/build.sh).
ARG BINARY_FROM=builder
# The runtime root: debian:bookworm-slim, or `localbase` (the build context's `rootfs/`).
ARG BASE=debian:bookworm-slim

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace: Cargo.lock covers every member, and --locked refuses to change it.
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p invoice-operator --bin invoice-operator \
    && install -D -m 0755 target/release/invoice-operator /out/invoice-operator \
    && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# A binary built outside (make image): the context holds it as `binary`, and this machine's
# CA bundle as `ca-certificates.crt`.
FROM scratch AS prebuilt
COPY binary /out/invoice-operator
COPY ca-certificates.crt /out/ca-certificates.crt

FROM ${BINARY_FROM} AS binary

# A minimal root made on this machine (make image): the context's rootfs/ holds the
# dynamic loader and the shared libraries the binary links, and an empty /tmp.
FROM scratch AS localbase
COPY rootfs/ /

FROM ${BASE}
LABEL org.opencontainers.image.title="invoice-operator" \
      org.opencontainers.image.description="Keeps invoice services inside their SLOs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/invoice-operator /usr/local/bin/invoice-operator
# The CA bundle the Prometheus client's TLS reads (it refuses to start without one; neither
# scratch nor debian:bookworm-slim has it).
COPY --from=binary /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# In a container the probes and Prometheus reach the server from outside; logs are JSON.
ENV METRICS_ADDRESS=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# Numeric, so Kubernetes can verify runAsNonRoot without /etc/passwd lookups.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/invoice-operator"]
