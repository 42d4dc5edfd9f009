# syntax=docker/dockerfile:1
# The invoice-operator image: build with `make image` (or `docker build -t invoice-operator .`).
# Stage 1 builds the release binary; stage 2 is a slim Debian runtime (glibc for the binary)
# and runs as the non-root user 65532, matching the chart's securityContext.

# Keep in step with the toolchain the repository is tested with (rust-version in Cargo.toml
# is the minimum; the lock file may need newer).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace: Cargo.lock covers every member, and --locked refuses to change it.
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p invoice-operator --bin invoice-operator \
    && install -D -m 0755 target/release/invoice-operator /out/invoice-operator

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="invoice-operator" \
      org.opencontainers.image.description="Keeps invoice services inside their SLOs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/invoice-operator /usr/local/bin/invoice-operator
# In a container the probes and Prometheus reach the server from outside; logs are JSON.
ENV METRICS_ADDRESS=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# Numeric, so Kubernetes can verify runAsNonRoot without /etc/passwd lookups.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/invoice-operator"]
