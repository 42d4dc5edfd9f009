# invoice-operator — developer entry points. `make` (or `make help`) lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
CLUSTER := tests/cluster/cluster.sh
WITH_CLUSTER := tests/cluster/with-cluster.sh
CRD_FILE := crds/invoiceservices.invoiceops.dev.yaml
CHART_CRD_DIR := charts/invoice-operator/files/crds
CHART_RULES := charts/invoice-operator/files/recording-rules.yaml
CHART_ALERTS := charts/invoice-operator/files/alerting-rules.yaml
# Images (make image, make image-app): the names they get, and where their OCI archives go.
# "localhost/" keeps containerd's CRI from prefixing a registry's name.
IMAGE ?= localhost/invoiceops/invoice-operator:dev
APP_IMAGE ?= localhost/invoiceops/invoice-app:dev
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
IMAGE_DIR := $(TARGET_DIR)/images
# The benchmark's peer (make bench): Sloth, built from its Go module, never committed.
SLOTH_VERSION := v0.16.0

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the operator and crdgen
	$(CARGO) build --workspace

.PHONY: crds
crds: ## Regenerate the CRD YAML in crds/ from the Rust types
	$(CARGO) run --quiet --bin crdgen > $(CRD_FILE)
	@echo "wrote $(CRD_FILE)"

.PHONY: chart-crds
chart-crds: ## Copy crds/*.yaml into the Helm chart (a test fails when the copy drifts)
	mkdir -p $(CHART_CRD_DIR)
	cp crds/*.yaml $(CHART_CRD_DIR)/
	@echo "copied crds/*.yaml to $(CHART_CRD_DIR)"

.PHONY: chart-docs
chart-docs: ## Regenerate the chart README's values table from the comments in values.yaml (helm-docs, built on first use)
	tests/chart/docs.sh

.PHONY: rules
rules: ## Print the Prometheus recording rules (RULES_ARGS, e.g. --interval 1m --metric-requests http_requests_total)
	@$(CARGO) run --quiet --bin invoice-operator -- rules $(RULES_ARGS)

.PHONY: chart-rules
chart-rules: ## Regenerate the chart's copies of the recording and alerting rules (a test fails when it drifts)
	$(CARGO) run --quiet --bin invoice-operator -- rules > $(CHART_RULES)
	$(CARGO) run --quiet --bin invoice-operator -- rules --alerts > $(CHART_ALERTS)
	@echo "wrote $(CHART_RULES) and $(CHART_ALERTS)"

.PHONY: image
image: ## Build the operator image without a daemon or registry (buildah, from the Dockerfile) into <target>/images/invoice-operator.tar, and run it once (runc)
	$(CARGO) build --release --locked -p invoice-operator --bin invoice-operator
	tests/image/build.sh Dockerfile $(TARGET_DIR)/release/invoice-operator $(IMAGE) $(IMAGE_DIR)/invoice-operator.tar
	tests/image/check.sh $(IMAGE_DIR)/invoice-operator.tar "invoice-operator " --version

.PHONY: image-app
image-app: ## Build the example invoice app's image the same way into <target>/images/invoice-app.tar, and run it once (runc)
	$(CARGO) build --release --locked -p invoice-app
	tests/image/build.sh examples/invoice-app/Dockerfile $(TARGET_DIR)/release/invoice-app $(APP_IMAGE) $(IMAGE_DIR)/invoice-app.tar
	tests/image/check.sh $(IMAGE_DIR)/invoice-app.tar "invoice-app " --version

.PHONY: image-import
image-import: ## Import the images make image / make image-app built into the real node's containerd
	$(CLUSTER) import-image $(wildcard $(IMAGE_DIR)/invoice-operator.tar $(IMAGE_DIR)/invoice-app.tar)

.PHONY: image-docker
image-docker: ## Build the operator image with docker build (only where a Docker engine with BuildKit works)
	@if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then \
	  echo "make image-docker: no working docker engine here, nothing built; make image builds without one" >&2; \
	  exit 1; \
	fi
	docker build -t $(IMAGE) .

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings as errors, the chart README's values table up to date
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	tests/chart/docs.sh --check

.PHONY: test-unit
test-unit: ## Unit tests only (no cluster): API, validation, CRD drift, engine, act, reconcile
	$(CARGO) test --workspace --exclude invoice-operator-e2e --lib --bins

.PHONY: test-e2e
test-e2e: ## Cluster smoke test and end-to-end tests (starts the local cluster if needed)
	$(CARGO) build --workspace
	$(CARGO) test -p invoice-operator-e2e --no-run
	tests/cluster/argo-rollouts.sh >/dev/null
	$(WITH_CLUSTER) bash -c '$(CLUSTER) smoke && $(CARGO) test -p invoice-operator-e2e --tests'

.PHONY: test
test: lint test-unit test-e2e ## Every test: lint, unit, cluster smoke and end-to-end

.PHONY: bench-engine
bench-engine: ## CPU cost of one evaluation interval for 100/500/2,000 services, without IO (prints numbers)
	$(CARGO) bench -p invoice-operator --bench fleet_evaluation

.PHONY: bench
bench: ## Fleet benchmark on the local cluster: 100/500/2,000 services, raw vs recorded SLIs, 3 runs each, Sloth peer (~70 min; rewrites BENCHMARKS.md)
	$(CARGO) build --release -p invoice-operator -p fleet-sim -p fleet-bench
	@. tests/cluster/env.sh && if [[ ! -x $$CLUSTER_BIN/sloth ]]; then \
	  echo "building the benchmark's peer: sloth $(SLOTH_VERSION) (go install, into $$CLUSTER_BIN)"; \
	  mkdir -p "$$CLUSTER_BIN" && cd /tmp && GOBIN=$$CLUSTER_BIN GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" \
	    github.com/slok/sloth/cmd/sloth@$(SLOTH_VERSION); fi
	$(WITH_CLUSTER) $(CARGO) run --release --quiet -p fleet-bench -- $(BENCH_ARGS)

.PHONY: argo-rollouts
argo-rollouts: ## Build the Argo Rollouts controller the Rollout tests run (go build of its module, cached; make test-e2e does it first)
	tests/cluster/argo-rollouts.sh

.PHONY: cluster-build
cluster-build: ## Build the cluster binaries (cached; slow the first time)
	tests/cluster/build.sh

.PHONY: cluster-up
cluster-up: ## Start the local control plane (etcd, apiserver, KCM, scheduler, kwok, Prometheus) and the real node (CLUSTER_REAL_NODE=0: without)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	$(CLUSTER) down

.PHONY: cluster-status
cluster-status: ## Exit 0 when the local control plane is up and healthy
	$(CLUSTER) status

.PHONY: install-crds
install-crds: ## Apply the CRD to the local cluster
	source .cluster/env && "$$CLUSTER_BIN/kubectl" apply --server-side -f $(CRD_FILE)

.PHONY: demo
demo: ## The operator healing a simulated three-zone invoice fleet, live (DEMO_KEEP=1 keeps it running)
	tests/demo/demo.sh
