#!/usr/bin/env bash
# The README's test command: set up what is missing, then run every test (unit, integration
# against the local PostgreSQL and real DICOM peers). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --workspace --locked "$@"
