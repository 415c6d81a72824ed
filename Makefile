# session-sidecar: two commands do everything on a fresh Debian/Ubuntu machine with Rust.
#   make run    install build packages, build, start the demo app and the sidecar
#   make test   install test packages, run every test

CARGO ?= cargo
# pingora builds zlib-ng with cmake and C code with cc.
BUILD_PACKAGES := cmake gcc g++ make pkg-config
# Tests start their own redis-server processes; promtool (package prometheus) checks alert rules.
TEST_PACKAGES := redis-server redis-tools prometheus busybox python3

.PHONY: run test build build-deps test-deps bench soak clean

build-deps:
	@scripts/install-packages $(BUILD_PACKAGES)

test-deps: build-deps
	@scripts/install-packages $(TEST_PACKAGES)

build: build-deps
	$(CARGO) build --release --bin session-sidecar --example demo-upstream

run: build
	@scripts/run-demo

# One integration test binary (tests/it). Tests asserting exact deltas of the process-wide
# metrics run afterwards in a process of their own, one at a time.
test: test-deps
	$(CARGO) test --all-targets -- --skip exclusive::
	$(CARGO) test --test it exclusive:: -- --test-threads=1

bench: build-deps
	@bench/run

soak: test-deps
	SOAK_SECONDS=60 $(CARGO) test --release --test it soak:: -- --nocapture

clean:
	$(CARGO) clean
