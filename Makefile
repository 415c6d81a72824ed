# session-sidecar: two commands do everything on a fresh Debian/Ubuntu machine with Rust.
#   make run    install build packages, build, start the demo app and the sidecar
#   make test   install test packages, run every test
#   make fuzz   run every fuzz target briefly (FUZZ_SECONDS each)

CARGO ?= cargo
# pingora builds zlib-ng with cmake and C code with cc.
BUILD_PACKAGES := cmake gcc g++ make pkg-config
# Tests start their own redis-server processes; promtool (package prometheus) checks alert rules.
# tests/it/real_clients.rs drives the sidecar through the real Voucherify and Tessitura client
# libraries: Node for the JS SDK, a Python virtualenv for the Python ones. tests/it/tls.rs is
# a TLS client through curl (OpenSSL, --http2, --tls-max, --cert); tests/it/http2.rs puts a
# load on h2c with h2load (nghttp2-client). .ci/conformance-redis-ha makes its TLS Redis
# certificates with the openssl command.
TEST_PACKAGES := redis-server redis-tools prometheus busybox python3 python3-venv nodejs curl nghttp2-client openssl
# Where the Python client libraries are installed (tests/it/real_clients.rs reads it too).
CLIENTS_VENV ?= target/clients-venv

.PHONY: run test build build-deps test-deps clients bench soak fuzz compare-framing clean

build-deps:
	@scripts/install-packages $(BUILD_PACKAGES)

test-deps: build-deps
	@scripts/install-packages $(TEST_PACKAGES)
	@# Debian packages npm apart from nodejs; NodeSource's nodejs ships it (and conflicts with it).
	@command -v npm >/dev/null 2>&1 || scripts/install-packages npm

clients: test-deps
	@scripts/install-clients $(CLIENTS_VENV)

build: build-deps
	$(CARGO) build --release --bin session-sidecar --example demo-upstream

run: build
	@scripts/run-demo

# One integration test binary (tests/it). Tests asserting exact deltas of the process-wide
# metrics run afterwards in a process of their own, one at a time. Then the public conformance
# suite's forwarding and flavour cases over TLS + HTTP/2 against the debug binary the tests built
# (tests/conformance-tls-h2/run, docs/tls.md; its h2 client is in the clients venv).
test: test-deps clients
	CLIENTS_VENV=$(abspath $(CLIENTS_VENV)) $(CARGO) test --all-targets -- --skip exclusive::
	CLIENTS_VENV=$(abspath $(CLIENTS_VENV)) $(CARGO) test --test it exclusive:: -- --test-threads=1
	SIDECAR_BIN=$${CARGO_TARGET_DIR:-target}/debug/session-sidecar $(CLIENTS_VENV)/bin/python tests/conformance-tls-h2/run

# The benchmark (bench/RESULTS.md): nginx, nginx + Lua, plain pingora and the sidecar in one
# alternating run; bench/run installs its Debian packages and the oha load generator itself.
bench: build-deps
	@bench/run

soak: test-deps
	SOAK_SECONDS=60 $(CARGO) test --release --test it soak:: -- --nocapture

# Every fuzz target for FUZZ_SECONDS (default 30) each; installs cargo-fuzz when missing.
fuzz: build-deps
	@scripts/fuzz

# The smuggling probes against the release binary and nginx, side by side.
compare-framing: build-deps
	$(CARGO) build --release --bin session-sidecar
	@scripts/compare-framing

clean:
	$(CARGO) clean
