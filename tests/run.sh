#!/usr/bin/env bash
# The whole test suite: set up the machine, check format and lints, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests drive the built binaries: build every member's binaries first.
cargo build --workspace --locked
cargo test --workspace --locked --no-fail-fast
