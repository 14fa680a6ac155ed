#!/usr/bin/env bash
# The README's demo command: set up what is missing (scripts/bootstrap.sh), build the release
# binary, and run `firstread demo` on the bundled real chest CT: a node with a temporary database
# and storage folder, a receiving AE for the results, the sample pushed with C-STORE, the SR, SEG
# and key images received back into demo-output/, the first read printed. Cleans up after itself.
# Arguments go to `firstread demo` (e.g. --json, --out DIR, --stable-after 2s); the temporary
# database is created on FIRSTREAD_TEST_PG when set (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh >&2
cargo build --release --locked -p firstread >&2
args=()
if [[ -n "${FIRSTREAD_TEST_PG:-}" ]]; then
  args=(--postgres "$FIRSTREAD_TEST_PG")
fi
# FIRSTREAD_* variables are configuration overrides for the binary: pass this one as an argument
exec env -u FIRSTREAD_TEST_PG target/release/firstread demo "${args[@]}" "$@"
