# The project's entry points. `make demo` and `make test` are the README's quick start; both install
# what a fresh machine lacks first (`make setup`), so nothing has to be installed by hand.

# Debian packages the tests and the demo need. Crates add theirs here. (python3-venv: the Python
# example policy's toolchain venv; Node.js and npm come from Debian when `npm` is not on PATH.)
APT_PACKAGES := iproute2 containernetworking-plugins python3-venv
# rustup targets (the policies are WebAssembly components).
RUST_TARGETS := wasm32-wasip2

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: setup node-check demo test lint fmt bench clean policies

setup:
	@bash scripts/setup.sh "$(APT_PACKAGES)" "$(RUST_TARGETS)"

# The demo runs vfpool-cni from beside vfpool, so both are built.
demo: setup
	$(CARGO) build --release --locked -p vfpool-agent -p vfpool-cni
	"$${CARGO_TARGET_DIR:-target}/release/vfpool" demo

# The WASM policies are their own cargo workspace (policies/): their pure logic is linted and
# unit-tested natively here; host/policy's build script builds them for wasm32-wasip2.
# After setup: clippy runs host/policy's build script, which builds the policies for wasm32-wasip2.
lint: setup
	$(CARGO) fmt --all -- --check
	cd policies && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cd policies && $(CARGO) clippy --all-targets --locked -- -D warnings

# The example policies in other languages (policies/examples/): built from source with pinned,
# project-local toolchains (componentize-py in a venv, componentize-js from package-lock.json).
policies: setup
	bash scripts/build-policies.sh

# Before the long builds, not after them: Debian 12's own Node.js (18) cannot run componentize-js.
node-check: setup
	@bash scripts/node-is-new-enough.sh || { echo "Node.js $$(node --version 2>/dev/null || echo '(none)') is too old for the JavaScript example policy's toolchain (componentize-js): install Node.js 20.19+, 22.13+ or 23.5+ (Debian 13's own, or NodeSource's on Debian 12) and run again" >&2; exit 1; }

test: setup node-check lint policies
	$(CARGO) test --workspace --locked
	cd policies && $(CARGO) test --locked

# Every benchmark BENCHMARKS.md reports (the languages one needs the example policies built).
bench: setup policies
	$(CARGO) bench --locked -p vfpool-sysfs --bench discovery
	$(CARGO) bench --locked -p vfpool-policy --bench policy
	$(CARGO) bench --locked -p vfpool-policy --bench languages
	$(CARGO) bench --locked -p vfpool-cni --bench add_del
	$(CARGO) bench --locked -p vfpool-deviceplugin --bench grpc
	$(CARGO) bench --locked -p vfpool-agent --bench agent

fmt:
	$(CARGO) fmt --all
	cd policies && $(CARGO) fmt --all

clean:
	$(CARGO) clean
