#!/usr/bin/env bash
# The README's demo command: set up what is missing, build, start a node with a temporary
# database and storage folder, push the bundled real chest CT to it with dcmtk storescu (the
# "modality"), and print what the node received and indexed. Cleans up after itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh >&2
cargo build --release --locked -p firstread >&2

PG_ADMIN="${FIRSTREAD_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
DB="firstread_demo_$$"
WORK="$(mktemp -d)"
PORT="${FIRSTREAD_DEMO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
NODE_PID=""
cleanup() {
  [[ -n "$NODE_PID" ]] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$PG_ADMIN" -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${PG_ADMIN%/*}/$DB"

FIRSTREAD_DIMSE__LISTEN="127.0.0.1:$PORT" FIRSTREAD_STORAGE__ROOT="$WORK/storage" \
FIRSTREAD_DATABASE__URL="$DB_URL" FIRSTREAD_LOG__FILTER=warn \
  target/release/firstread serve 2>"$WORK/node.log" &
NODE_PID=$!
for _ in $(seq 50); do
  TCP_NODELAY=1 /usr/bin/echoscu -aec FIRSTREAD 127.0.0.1 "$PORT" 2>/dev/null && break
  sleep 0.1
done

echo "Pushing the sample chest CT (30 slices, TCIA Lung-PET-CT-Dx A0002) to FIRSTREAD@127.0.0.1:$PORT ..."
start=$(date +%s.%N)
TCP_NODELAY=1 /usr/bin/storescu -aec FIRSTREAD -aet DEMO_CT 127.0.0.1 "$PORT" data/ct/lung-dx-a0002-b40f/1-*.dcm
end=$(date +%s.%N)
echo "All 30 C-STORE-RSP received in $(python3 -c "print(f'{$end-$start:.2f}')") s."
echo
psql -q "$DB_URL" -c "SELECT s.modality, count(i.*) AS instances, min(i.transfer_syntax_uid) AS transfer_syntax,
  st.calling_ae_title AS sent_by, st.called_ae_title AS called, pg_size_pretty(sum(i.size_bytes)) AS size
  FROM series s JOIN instances i ON i.series_instance_uid = s.series_instance_uid
  JOIN studies st ON st.study_instance_uid = s.study_instance_uid
  GROUP BY 1, 4, 5"
echo "Stored files: $(find "$WORK/storage/studies" -name '*.dcm' | wc -l) under studies/<study>/<series>/<sop>.dcm"
