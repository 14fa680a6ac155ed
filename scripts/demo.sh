#!/usr/bin/env bash
# The README's demo command: set up what is missing, build, start a node with a temporary
# database and storage folder, start a receiving AE for the results (dcmtk storescp, standing in
# for the modality), push the bundled real chest CT with dcmtk storescu, wait for the first read
# (SR, SEG, key images) to come back, and print it. Cleans up after itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh >&2
cargo build --release --locked -p firstread >&2

PG_ADMIN="${FIRSTREAD_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
DB="firstread_demo_$$"
WORK="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${FIRSTREAD_DEMO_PORT:-$(free_port)}"
RESULTS_PORT="$(free_port)"
OUT="${FIRSTREAD_DEMO_OUT:-demo-output}"
NODE_PID=""
SCP_PID=""
cleanup() {
  [[ -n "$NODE_PID" ]] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null || true
  [[ -n "$SCP_PID" ]] && kill "$SCP_PID" 2>/dev/null && wait "$SCP_PID" 2>/dev/null || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$PG_ADMIN" -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${PG_ADMIN%/*}/$DB"

# The "modality" that receives the results.
rm -rf "$OUT" && mkdir -p "$OUT"
TCP_NODELAY=1 /usr/bin/storescp -aet DEMO_CT -uf -od "$OUT" +xa "$RESULTS_PORT" >/dev/null 2>&1 &
SCP_PID=$!

cat > "$WORK/demo.toml" <<TOML
[dimse]
listen = "127.0.0.1:$PORT"
[storage]
root = "$WORK/storage"
[database]
url = "$DB_URL"
[assembly]
stable_after = "1s"
early_ready = true
[worker]
models_dir = "models"
[export]
[[export.destinations]]
ae_title = "DEMO_CT"
host = "127.0.0.1"
port = $RESULTS_PORT
[log]
filter = "warn"
TOML
target/release/firstread --config "$WORK/demo.toml" serve 2>"$WORK/node.log" &
NODE_PID=$!
for _ in $(seq 50); do
  TCP_NODELAY=1 /usr/bin/echoscu -aec FIRSTREAD 127.0.0.1 "$PORT" 2>/dev/null && break
  sleep 0.1
done

echo "Pushing the sample chest CT (30 slices, TCIA Lung-PET-CT-Dx A0002) to FIRSTREAD@127.0.0.1:$PORT ..."
start=$(date +%s.%N)
TCP_NODELAY=1 /usr/bin/storescu -aec FIRSTREAD -aet DEMO_CT 127.0.0.1 "$PORT" data/ct/lung-dx-a0002-b40f/1-*.dcm
end=$(date +%s.%N)
echo "All 30 C-STORE-RSP received in $(python3 -c "print(f'{$end-$start:.2f}')") s. Waiting for the first read ..."
for _ in $(seq 300); do
  state=$(psql -qtA "$DB_URL" -c "SELECT state FROM jobs WHERE kind = 'export' LIMIT 1" 2>/dev/null || true)
  [[ "$state" == "done" || "$state" == "dead" ]] && break
  astate=$(psql -qtA "$DB_URL" -c "SELECT state || ':' || coalesce(result->>'status', '') FROM jobs WHERE kind = 'analysis' LIMIT 1" 2>/dev/null || true)
  [[ "$astate" == done:refused || "$astate" == dead:* ]] && break
  sleep 0.2
done
done_at=$(date +%s.%N)
psql -qtA "$DB_URL" -c "SELECT result FROM jobs WHERE kind = 'analysis'" > "$OUT/first-read.json"
python3 - "$OUT/first-read.json" "$start" "$end" "$done_at" "$OUT" <<'PY'
import json, os, sys
path, start, end, done, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(path))
if r.get("status") != "analysed":
    sys.exit(f"not analysed: {r.get('reason', r)}")
f = r["findings"]
m = r["model"]
print(f"\nFIRST READ  (model {m['name']} {m['version']}, {m['kind']}; not a diagnosis)")
for l in f["lungs"]:
    print(f"  {l['side']:>5} lung  {l['lung_ml']:7.0f} mL   opacity {l['opacity_ml']:6.1f} mL  {l['involvement_pct']:5.1f} %")
print(f"  total       {f['total']['lung_ml']:7.0f} mL   opacity {f['total']['opacity_ml']:6.1f} mL  {f['total']['involvement_pct']:5.1f} %")
print("  zones (opacity %, score 0-5):")
for z in f["zones"]:
    print(f"    {z['side']:>5} {z['level']:<6} {z['involvement_pct']:5.1f} %   {z['score']}")
print(f"  CT severity score  {f['severity_score']}/30 (Francone 2020)")
print(f"  extent class       {f['extent_class'].replace('_', ' ')} (SFR)")
print(f"  pattern suggestion {f['pattern'].replace('_', ' ')} (RSNA categories): {f['pattern_rationale']}")
t = r["timings_ms"]
print(f"  stages: volume {t['volume']:.0f} ms, model {t['model']:.0f} ms, measurements {t['measurements']:.0f} ms")
received = sorted(x for x in os.listdir(out) if not x.endswith(".json"))
print(f"\n{len(received)} result objects received by the modality (DEMO_CT) in {out}/: " + ", ".join(received))
print(f"Last C-STORE-RSP to results received: {done - end:.1f} s (stable_after 1 s, early readiness on)")
PY
echo "Full result: $OUT/first-read.json"
