# tb — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TB         := target/release/tb
BASE_TAG   := tb-base:bookworm
IMAGE_TAG  ?= tb-trainer:latest
# Set BASE_IMAGE to build the trainer on an image from your registry instead
# of the Debian-built base, e.g. make image BASE_IMAGE=python:3.11-slim
BASE_IMAGE ?=

.PHONY: help prereqs prereqs-test build base-image image demo check test test-rust test-trainer test-slurm fuzz bench bench-prune bench-tools bench-driver clean-images mlflow-venv

# Every step that takes minutes says what it does first.
step = @printf '\n== %s\n' $(1) >&2

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Seconds, before anything long: Rust, the engine, debootstrap and root (or
# BASE_IMAGE), disk space; installs missing Debian packages as root.
prereqs: ## check (and, as root, install) what building and running needs; stops with the command to run
	@BASE_TAG=$(BASE_TAG) IMAGE_TAG=$(IMAGE_TAG) BASE_IMAGE=$(BASE_IMAGE) images/prereqs.sh demo
prereqs-test:
	@BASE_TAG=$(BASE_TAG) IMAGE_TAG=$(IMAGE_TAG) BASE_IMAGE=$(BASE_IMAGE) images/prereqs.sh test

build: prereqs ## build tb (target/release/tb)
	$(call step,"compiling tb (release; about 4 minutes the first time on 2 cores, seconds after)")
	cargo build --release --locked

base-image: prereqs ## build tb-base:bookworm from Debian packages (debootstrap); skipped when present
	@docker image inspect $(BASE_TAG) >/dev/null 2>&1 || printf '\n== %s\n' "building $(BASE_TAG) from Debian packages (debootstrap; about 3 minutes)" >&2
	images/base/build.sh $(BASE_TAG)

ifeq ($(BASE_IMAGE),)
image: prereqs build base-image ## build the trainer image (tb image build); cached by content hash
	$(call step,"the trainer image $(IMAGE_TAG): the first build downloads PyTorch (~3 GB; a few minutes); later builds are cached")
	$(TB) image build --tag $(IMAGE_TAG)
else
image: prereqs build
	$(call step,"the trainer image $(IMAGE_TAG) on $(BASE_IMAGE): the first build downloads PyTorch (~3 GB; a few minutes)")
	$(TB) image build --tag $(IMAGE_TAG) --build-arg BASE_IMAGE=$(BASE_IMAGE)
endif

demo: prereqs image ## build everything and run the night: tb batch jobs/night.toml
	$(call step,"tb batch jobs/night.toml (about 3 to 4 minutes on 2 cores)")
	$(TB) batch jobs/night.toml

check: ## formatting and lints (tb and the bench driver)
	$(call step,"formatting and lints (cargo fmt --check, clippy)")
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

test: prereqs-test check test-rust fuzz test-trainer test-slurm ## everything CI runs: lints, Rust unit + integration (real Docker), the batch-file fuzz, trainer pytest in its image, Slurm backend

test-rust: prereqs-test base-image image mlflow-venv
	$(call step,"Rust unit and integration tests (about 15 minutes on 2 cores)")
	cargo test --locked --workspace

# A real MLflow tracking server for the MLflow tests (tests/mlflow.rs), from
# PyPI, pinned (3.18.0 does not install from PyPI today). Only the tests
# use it: tb itself speaks MLflow's REST API, with no Python on the host.
MLFLOW_VENV := target/mlflow-venv
mlflow-venv: $(MLFLOW_VENV)/bin/mlflow ## the venv with mlflow==3.17.2 the MLflow tests start a server from
$(MLFLOW_VENV)/bin/mlflow: | prereqs-test
	$(call step,"a venv with mlflow==3.17.2 for the MLflow tests (about a minute)")
	rm -rf $(MLFLOW_VENV) && python3 -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q --disable-pip-version-check mlflow==3.17.2

test-trainer: image
	$(call step,"the trainer's pytest suite in $(IMAGE_TAG) (about 2 minutes)")
	docker run --rm --network none --user 12345:12345 $(IMAGE_TAG) \
	    python -m pytest -q -p no:cacheprovider /opt/tb/trainer-py/tests

# Hostile batch files through the parser and validator, in-process and
# through the tb binary, for FUZZ_SECONDS; prints the figures (inputs,
# panics, accepted files that failed --dry-run). TB_FUZZ_SEED=N repeats a run.
FUZZ_SECONDS ?= 60
fuzz: base-image ## the batch-file parser and validator under hostile input for FUZZ_SECONDS (60)
	$(call step,"the batch-file fuzz ($(FUZZ_SECONDS) s after compiling)")
	TB_FUZZ_SECONDS=$(FUZZ_SECONDS) cargo test --locked --test main fuzz -- --ignored --nocapture

# A single-node Slurm cluster on this machine (two fake GPUs), started for
# the Slurm backend's tests and stopped after them, by pid, pass or fail.
test-slurm: base-image
	$(call step,"the Slurm tests on a single-node cluster (installs Slurm from Debian the first time; about 3 minutes)")
	@state=$$(mktemp -d /tmp/tb-slurm.XXXXXX); \
	trap 'tests/slurm/cluster.sh stop $$state; rm -rf $$state' EXIT; \
	trap 'exit 130' INT TERM; \
	tests/slurm/cluster.sh start $$state >/dev/null; \
	. $$state/env; cargo test --locked --test main slurm -- --ignored --test-threads 1

# The benches: one driver (benches/, package tb-bench) built with the release
# profile after tb, sharing every artifact of `make build` (it compiles only
# itself) and running target/release/tb as built there. pueue, what tb is
# measured against, is installed from crates.io into target/bench-tools
# (once; its daemon runs with a private config and is stopped by pid).
PUEUE_VERSION := 4.0.4
BENCH_TOOLS   := target/bench-tools
BENCH         := target/release/tb-bench

bench-tools: $(BENCH_TOOLS)/bin/pueued ## pueue, what the benches measure tb against, from crates.io into target/bench-tools (skipped when present)
$(BENCH_TOOLS)/bin/pueued:
	cargo install pueue --version $(PUEUE_VERSION) --locked --root $(BENCH_TOOLS)

bench-driver: build
	cargo build --release --locked -p tb-bench

bench: build base-image image bench-tools bench-driver ## one table of where tb stands, with targets (~11 min): against pueue and the bare engine API; idle cost; 1 GiB of output; sweep start-up; the report; the trainer
	$(call step,"the benches: one table of tb against pueue and the engine (about 11 minutes)")
	$(BENCH)

bench-prune: build image bench-driver ## a real sweep with and without ASHA pruning (~35 min; not part of make bench)
	$(BENCH) prune

clean-images: ## remove tb's images (base and trainer)
	-docker image rm $(IMAGE_TAG) $(BASE_TAG)
