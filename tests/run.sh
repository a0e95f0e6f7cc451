#!/usr/bin/env bash
# The whole test suite: set up the machine, check format and lints, run every test, say how many
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every skip() appends a line to this log (tests/common/mod.rs); the count is printed when the
# run ends, whether the tests passed or not.
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export CRASHCART_SKIP_LOG="$target_dir/debug/crashcart-tests-skipped.tsv"
mkdir -p "$target_dir/debug"
: >"$CRASHCART_SKIP_LOG"
trap 'bash tests/common/skipped.sh "$CRASHCART_SKIP_LOG"' EXIT

# No `cargo build` first: `cargo test --workspace` builds the binaries the end-to-end tests
# drive, because each member with a binary has integration tests of its own (crates/*/tests/).
cargo test --workspace --locked --no-fail-fast
