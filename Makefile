# vidmill: the two commands a newcomer needs are `make run` and `make test`.
# Both install whatever Debian packages are missing first (as root, or
# through sudo), so they work on a fresh Debian 12 machine.

SHELL := /bin/bash
CARGO ?= cargo

# GStreamer 1.22 with the plugins the pipelines use, and ffmpeg for ffprobe
# (the independent reader the tests check outputs with) and the benchmarks;
# ca-certificates for HTTPS to an identity provider's JWKS.
DEBIAN_PACKAGES := pkg-config ca-certificates libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools ffmpeg

# PostgreSQL 15, which the catalog's cluster tests start in a temp
# directory (initdb, loopback port); Debian 12's own major version. Only
# its programs are needed: any server it starts is not used.
PG_INITDB := /usr/lib/postgresql/15/bin/initdb

.PHONY: deps build run test lint test-clients test-hostile chromium garage bench-pipelines bench-serve bench-load bench-fanout bench-cluster fuzz clean

# The stock clients the integration tests drive vidmill with: tus-js-client
# and playwright-core under Node (npm, as package-lock.json pins them) and
# tuspy (PyPI, in a venv).
CLIENTS := tests/integration/clients

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	[ -x $(PG_INITDB) ] || missing="$$missing postgresql-15"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust with rustup"; exit 1; }

build: deps
	$(CARGO) build --release --bin vidmill

run: build
	@./scripts/run.sh

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

$(CLIENTS)/node_modules/.package-lock.json: $(CLIENTS)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --prefix $(CLIENTS) --no-audit --no-fund --silent

$(CLIENTS)/.venv/installed: $(CLIENTS)/requirements.txt
	@command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null; }
	rm -rf $(CLIENTS)/.venv
	python3 -m venv $(CLIENTS)/.venv
	$(CLIENTS)/.venv/bin/pip install -q --disable-pip-version-check -r $(CLIENTS)/requirements.txt
	touch $@

# The web page's test drives Debian's chromium (playwright-core, no download).
chromium:
	@command -v chromium >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# The S3 tests run against Garage, a real S3 server, built from crates.io
# once (about 10 minutes on 2 cores) into ~/.cargo/bin.
garage:
	@command -v garage >/dev/null || [ -x "$$HOME/.cargo/bin/garage" ] || \
	  $(CARGO) install garage --locked

test-clients: $(CLIENTS)/node_modules/.package-lock.json $(CLIENTS)/.venv/installed chromium garage

test: lint test-clients
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

# Every row of the hostile corpus (make test runs the rows marked quick),
# with its table printed: see docs/RELIABILITY.md.
test-hostile: deps
	VIDMILL_HOSTILE=all $(CARGO) test --test integration the_hostile_corpus -- --nocapture

# The upload → ready rows run the release server and upload with curl.
bench-pipelines: deps
	@command -v curl >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends curl >/dev/null; }
	$(CARGO) build --release --bin vidmill
	$(CARGO) run --release -p vidmill-bench --bin bench-pipelines

# The release server under load on loopback (stops by itself, about 2 min).
bench-load: deps
	$(CARGO) build --release --bin vidmill
	$(CARGO) run --release -p vidmill-bench --bin bench-load

# Its fan-out phase alone: 10,000 subscribers of one owner (about 30 s).
bench-fanout: deps
	$(CARGO) build --release --bin vidmill
	$(CARGO) run --release -p vidmill-bench --bin bench-load -- --fan-out

# One node against two on PostgreSQL and S3, PostgreSQL against SQLite, and
# a node's death to takeover (PostgreSQL and Garage on loopback; about 3 min).
bench-cluster: deps test-clients
	$(CARGO) build --release --bin vidmill
	$(CARGO) run --release -p vidmill-bench --bin bench-cluster

# nginx and wrk are the anchor and the load generator; only this target needs them.
bench-serve: deps
	@for p in nginx wrk curl; do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(CARGO) build --release --bin vidmill
	$(CARGO) run --release -p vidmill-bench --bin bench-serve

# cargo-fuzz on the parsers that read what a client or an operator sends
# (docs/RELIABILITY.md "Fuzzing"), one target after another, FUZZ_SECONDS
# each; not part of `make test`. It needs the nightly toolchain. Without
# AddressSanitizer (`-s none`): vidmill forbids unsafe code, and the
# sanitizer would halve the executions a run gets. Niced and one worker,
# so a shared machine stays usable; a finding stops the run with the
# crashing input under fuzz/artifacts/<target>/. With -jobs, libFuzzer
# writes its log to fuzz-0.log; each is kept as fuzz/logs/<target>.log.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS := range tus_headers multipart token isobmff config jwks upload_options

fuzz: deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@mkdir -p fuzz/logs; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  cp -n fuzz/seeds/$$t/* fuzz/corpus/$$t/ 2>/dev/null; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  nice -n 19 $(CARGO) +nightly fuzz run -s none $$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -jobs=1 -workers=1 -rss_limit_mb=2048 -print_final_stats=1; rc=$$?; \
	  mv -f fuzz-0.log fuzz/logs/$$t.log; \
	  grep -E '^Done|number_of_executed_units|panicked' fuzz/logs/$$t.log; \
	  echo "$$t: corpus of $$(ls fuzz/corpus/$$t | wc -l) inputs"; \
	  [ $$rc -eq 0 ] || exit $$rc; \
	done

clean:
	$(CARGO) clean
