#!/usr/bin/env bash
# The package test (CI runs it after scripts/test.sh; as root, on a machine with a local
# PostgreSQL, as scripts/bootstrap.sh leaves it):
#
#   1. builds the .deb (scripts/package-deb.sh --fast; reuses target/release);
#   2. `systemd-analyze verify` on its unit; `dpkg -i`: the postinst makes the user, the storage
#      root and the database on the local PostgreSQL; `ldd` on the installed binary: libtorch from
#      /usr/lib/firstread, nothing from the build cache or the checkout;
#   3. starts the node as the unit would (its User=, Group=, WorkingDirectory=, Environment=,
#      EnvironmentFile=, ExecStart=, run with setpriv: no new privileges, no capabilities), in a
#      mount namespace that mimics ProtectSystem=strict + ReadWritePaths, PrivateTmp and
#      ProtectHome (the build cache under $HOME is hidden), from the packaged paths and config,
#      with one sender added to the config as [[peers]] the way an operator would;
#   4. sends the bundled sample CT with dcmtk storescu; the results (SR, SEG, SC) come back to a
#      dcmtk storescp (the sender's Store SCP); dsrdump reads the SR;
#   5. `dpkg -r`: the program goes, /var/lib/firstread (the study), the config and the database
#      stay; `dpkg --purge`: the config goes, the study and the database still stay.
#
# Cleans up after itself (kills what it started, purges the package, removes the storage root,
# drops the database and role, deletes the user when it made it). Refuses to run where a
# firstread installation (package, /etc/firstread, /var/lib/firstread, database or role) exists.
# Needs: root, dpkg, dcmtk (/usr/bin/storescu, storescp, dsrdump, dcmdump), curl, PostgreSQL on
# the local unix socket /var/run/postgresql.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd -P)

T0=$SECONDS
log() { printf '[test-package %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() { printf '[test-package] FAIL: %s\n' "$*" >&2; exit 1; }

PKG=firstread
UNIT_PATH=/usr/lib/systemd/system/firstread.service
CONFIG=/etc/firstread/firstread.toml
STORAGE=/var/lib/firstread
PGSOCKET_DIR=/var/run/postgresql
SAMPLE="${FIRSTREAD_SAMPLE:-$REPO_ROOT/data/ct/lung-dx-a0002-b40f}"
[[ -d "$SAMPLE" ]] || SAMPLE="$REPO_ROOT/../shared/data/ct/lung-dx-a0002-b40f"
SENDER_AE=PKGTEST_CT

[[ $(id -u) -eq 0 ]] || fail "run as root (dpkg -i, runuser)"
for tool in /usr/bin/storescu /usr/bin/storescp /usr/bin/dsrdump /usr/bin/dcmdump curl systemd-analyze setpriv unshare; do
  command -v "$tool" >/dev/null || fail "$tool missing (scripts/bootstrap.sh installs it)"
done
[[ -d "$SAMPLE" ]] || fail "no sample CT at $SAMPLE"

as_postgres() { (cd / && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$PGSOCKET_DIR" "$@"); }
if [[ ! -S "$PGSOCKET_DIR/.s.PGSQL.5432" ]] || ! as_postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
  fail "no local PostgreSQL on $PGSOCKET_DIR that the postgres user can use (the postinst prepares the database there)"
fi

# ---------------------------------------------------------------- never touch a real installation
status=$(dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null || true)
[[ -z "$status" || "$status" == *not-installed* ]] || fail "package $PKG is on this machine ($status): not touching it"
[[ ! -e /etc/firstread && ! -e "$STORAGE" ]] || fail "/etc/firstread or $STORAGE exists: not touching it"
[[ "$(as_postgres -d postgres -c "select count(*) from pg_database where datname = 'firstread'")" == 0 ]] \
  || fail "a database firstread exists: not touching it"
[[ "$(as_postgres -d postgres -c "select count(*) from pg_roles where rolname = 'firstread'")" == 0 ]] \
  || fail "a role firstread exists: not touching it"
user_existed=0
getent passwd firstread >/dev/null && user_existed=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/firstread-package-test.XXXXXX")
chmod 755 "$WORK"
NODE_PID=""
SCP_PID=""
installed=0
created_default=0
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$NODE_PID" ]] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID"; for _ in $(seq 1 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$NODE_PID" 2>/dev/null
  fi
  if [[ -n "$SCP_PID" ]]; then kill "$SCP_PID" 2>/dev/null; wait "$SCP_PID" 2>/dev/null; fi
  if [[ $rc -ne 0 && -f "$WORK/node.log" ]]; then
    echo "---- node log (last 40 lines) ----" >&2; tail -n 40 "$WORK/node.log" >&2
  fi
  if [[ $installed -eq 1 ]]; then
    dpkg --purge "$PKG" >/dev/null 2>&1
    rm -rf "$STORAGE"
    as_postgres -d postgres -c 'drop database if exists firstread with (force)' >/dev/null 2>&1
    as_postgres -d postgres -c 'drop role if exists firstread' >/dev/null 2>&1
    if [[ $user_existed -eq 0 ]] && getent passwd firstread >/dev/null; then
      deluser --system firstread >/dev/null 2>&1 || userdel firstread
      getent group firstread >/dev/null && groupdel firstread 2>/dev/null
    fi
  fi
  [[ $created_default -eq 1 ]] && rm -f /etc/default/firstread
  rm -rf "$WORK"
  if [[ $rc -eq 0 ]]; then log "cleaned up"; else log "cleaned up after a failure (rc=$rc)"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_busy() { ss -ltnH "( sport = :$1 )" 2>/dev/null | grep -q .; }

# ---------------------------------------------------------------- 1. build
log "building the package (scripts/package-deb.sh --fast)"
t=$SECONDS
DEB=$(scripts/package-deb.sh --fast --out "$REPO_ROOT/target/debian" | tail -n1)
build_s=$((SECONDS - t))
[[ -f "$DEB" ]] || fail "no package built"
deb_bytes=$(stat -c %s "$DEB")
log "built $DEB ($((deb_bytes / 1024 / 1024)) MiB) in ${build_s}s"
grep -qx /etc/firstread/firstread.toml < <(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles) \
  || fail "/etc/firstread/firstread.toml is not a conffile"

# ---------------------------------------------------------------- 2. install
log "dpkg -i"
t=$SECONDS
installed=1
dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log" >&2; fail "dpkg -i failed"; }
install_s=$((SECONDS - t))
sed 's/^/    | /' "$WORK/dpkg-i.log" >&2
listed=$(dpkg -L "$PKG")
for path in /usr/bin/firstread /usr/lib/firstread/libtorch_cpu.so /usr/share/firstread/models/covid19-lung-ct/0.2.4/manifest.toml \
  /usr/share/firstread/models/covid19-lung-ct/0.2.4/model.pt /usr/share/firstread/viewer/index.html "$CONFIG" "$UNIT_PATH"; do
  if ! grep -qx "$path" <<<"$listed" || [[ ! -e "$path" ]]; then fail "$path not installed by the package"; fi
done
getent passwd firstread >/dev/null || fail "no system user firstread"
[[ "$(stat -c '%U:%G %a' "$STORAGE")" == "firstread:firstread 750" ]] || fail "$STORAGE: $(stat -c '%U:%G %a' "$STORAGE")"
[[ "$(stat -c '%U:%G %a' "$CONFIG")" == "root:firstread 640" ]] || fail "$CONFIG: $(stat -c '%U:%G %a' "$CONFIG")"
[[ "$(as_postgres -d postgres -c "select pg_get_userbyid(datdba) from pg_database where datname = 'firstread'")" == firstread ]] \
  || fail "the postinst did not create the database firstread owned by firstread"
installed_kib=$(dpkg-query -W -f='${Installed-Size}' "$PKG")

log "systemd-analyze verify $UNIT_PATH"
systemd-analyze verify "$UNIT_PATH" || fail "systemd-analyze verify $UNIT_PATH"
exposure=$(systemd-analyze security --offline=true "$UNIT_PATH" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]* [A-Z]*\).*/\1/p' || true)
log "unit verified; systemd-analyze security exposure: ${exposure:-n/a}"

log "ldd /usr/bin/firstread"
ldd_out=$(ldd /usr/bin/firstread)
! grep -q 'not found' <<<"$ldd_out" || fail "unresolved: $(grep 'not found' <<<"$ldd_out")"
! grep -qe "$HOME/.cache" -e "/.cache/firstread" -e "$REPO_ROOT" <<<"$ldd_out" \
  || fail "the installed binary loads from the build cache or the checkout: $ldd_out"
grep -q 'libtorch_cpu.so => /usr/lib/firstread/libtorch_cpu.so' <<<"$ldd_out" || fail "libtorch_cpu.so not from /usr/lib/firstread: $ldd_out"
sed -n 's/^\s*\(\S*\) => \(\/usr\/lib\/firstread\/\S*\).*/    | \1 => \2/p' <<<"$ldd_out" >&2

# ---------------------------------------------------------------- 3. configure as an operator would
SCP_PORT=$(free_port)
DIMSE_PORT=11112
HTTP_PORT=8080
if port_busy "$DIMSE_PORT"; then
  DIMSE_PORT=$(free_port); sed -i "s/^listen = \"0.0.0.0:11112\"/listen = \"0.0.0.0:$DIMSE_PORT\"/" "$CONFIG"
fi
if port_busy "$HTTP_PORT"; then
  HTTP_PORT=$(free_port); sed -i "s/^listen = \"0.0.0.0:8080\"/listen = \"0.0.0.0:$HTTP_PORT\"/" "$CONFIG"
fi
cat >>"$CONFIG" <<EOF

# added by scripts/test-package.sh
[[peers]]
ae_title = "$SENDER_AE"
host = "127.0.0.1"
port = $SCP_PORT
results = true
EOF
log "config: DIMSE :$DIMSE_PORT, HTTP :$HTTP_PORT, peer $SENDER_AE (results to 127.0.0.1:$SCP_PORT)"
# the disk guard (90 % by default, of the blocks the node may use) would refuse every sender on a
# build machine whose disk is that full: then the watermarks are raised for this test, the way an
# operator overrides a setting (/etc/default/firstread, the unit's EnvironmentFile)
read -r fs_size fs_avail < <(df --output=size,avail -B1 "$STORAGE" | tail -n 1)
fs_used=$(( 100 - 100 * fs_avail / fs_size ))
if (( fs_used >= 80 )) && [[ ! -e /etc/default/firstread ]]; then
  printf 'FIRSTREAD_STORAGE__HIGH_WATERMARK_PERCENT=99.5\nFIRSTREAD_STORAGE__LOW_WATERMARK_PERCENT=99\n' >/etc/default/firstread
  created_default=1
  log "this machine's disk is $fs_used % used: the disk guard's watermarks raised to 99.5/99 % in /etc/default/firstread"
fi

# ---------------------------------------------------------------- 4. start the node as the unit would
unit_values() { # KEY -> every value of KEY= in the unit's [Service] section, one a line
  awk -v key="$1" '/^\[/ { s = ($0 == "[Service]") } s && index($0, key "=") == 1 { print substr($0, length(key) + 2) }' "$UNIT_PATH"
}
split_words() { xargs -n1 printf '%s\n' <<<"$1"; } # systemd-like word splitting with quotes
unit_user=$(unit_values User); unit_group=$(unit_values Group); unit_wd=$(unit_values WorkingDirectory)
mapfile -t exec_start < <(split_words "$(unit_values ExecStart)")
rw_paths=$(unit_values ReadWritePaths)
[[ -n "$unit_user" && -n "$unit_group" && ${#exec_start[@]} -gt 0 ]] || fail "unit has no User=, Group= or ExecStart="
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "HOME=$(getent passwd "$unit_user" | cut -d: -f6)"
  "USER=$unit_user" "LOGNAME=$unit_user" "SHELL=$(getent passwd "$unit_user" | cut -d: -f7)" LANG=C.UTF-8)
while IFS= read -r line; do mapfile -t -O "${#envs[@]}" envs < <(split_words "$line"); done < <(unit_values Environment)
while IFS= read -r file; do
  optional=0; [[ "$file" == -* ]] && { optional=1; file=${file#-}; }
  if [[ -f "$file" ]]; then
    mapfile -t -O "${#envs[@]}" envs < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$file")
  elif [[ $optional -eq 0 ]]; then fail "EnvironmentFile $file missing"; fi
done < <(unit_values EnvironmentFile)
log "as the unit: User=$unit_user Group=$unit_group WorkingDirectory=$unit_wd ReadWritePaths=$rw_paths"
log "  env ${envs[*]}"
log "  ExecStart=${exec_start[*]}"

# ProtectSystem=strict + ReadWritePaths (a read-only / with the writable paths bound over it),
# PrivateTmp (fresh /tmp, /var/tmp), ProtectHome (empty /root, /home, /run/user); then setpriv
# (NoNewPrivileges, CapabilityBoundingSet= empty) and the unit's user, environment and command.
# shellcheck disable=SC2016 # expanded by the inner shell
sandbox='set -e
rw=$1; wd=$2; user=$3; group=$4; shift 4
for p in $rw; do mount --bind "$p" "$p"; done
mount -o remount,bind,ro /
for t in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$t"; done
for h in /root /home /run/user; do [ -d "$h" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$h"; done
cd "$wd"
exec setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- env -i "$@"'
if unshare --mount --propagation private true 2>/dev/null; then
  launcher=(unshare --mount --propagation private bash -c "$sandbox" sandbox "$rw_paths" "$unit_wd" "$unit_user" "$unit_group")
  sandboxed=yes
else
  log "WARNING: no mount namespace here (unshare): running without the ProtectSystem/PrivateTmp/ProtectHome mimicry"
  # shellcheck disable=SC2016 # expanded by the inner shell
  launcher=(bash -c 'cd "$1"; shift; exec setpriv --reuid="$1" --regid="$2" --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- env -i "${@:3}"' \
    sandbox "$unit_wd" "$unit_user" "$unit_group")
  sandboxed=no
fi
t=$SECONDS
"${launcher[@]}" "${envs[@]}" "${exec_start[@]}" >"$WORK/node.log" 2>&1 &
NODE_PID=$!
ready=0
for _ in $(seq 1 120); do
  kill -0 "$NODE_PID" 2>/dev/null || fail "the node exited: $(tail -n 20 "$WORK/node.log")"
  if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[[ $ready -eq 1 ]] || fail "/readyz did not answer 200 within 60 s: $(curl -s "http://127.0.0.1:$HTTP_PORT/readyz" | head -c 300)"
start_s=$((SECONDS - t))
node_user=$(ps -o user= -p "$NODE_PID" | tr -d ' ')
[[ "$node_user" == "$unit_user" ]] || fail "the node runs as '$node_user', not $unit_user"
root_mount=$(awk '$5 == "/" { print $6 }' "/proc/$NODE_PID/mountinfo")
rw_mount=$(awk -v p="$STORAGE" '$5 == p { print $6 }' "/proc/$NODE_PID/mountinfo")
if [[ $sandboxed == yes ]]; then
  [[ "$root_mount" == ro,* && "$rw_mount" == rw,* ]] || fail "the node's / is '$root_mount' and $STORAGE '$rw_mount' (wanted ro and rw)"
fi
node_caps=$(awk '/^CapEff|^CapBnd/ { printf "%s=%s ", $1, $2 }' "/proc/$NODE_PID/status")
grep -q 'NoNewPrivs:\s*1' "/proc/$NODE_PID/status" || fail "NoNewPrivs not set on the node"
log "node ready (pid $NODE_PID, user $node_user, $node_caps, / ${root_mount%%,*}, $STORAGE ${rw_mount%%,*}) in ${start_s}s: /healthz $(curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | head -c 40)"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/viewer/" || fail "/viewer/ does not answer (packaged viewer not found)"

# ---------------------------------------------------------------- 5. send the sample, receive the results
mkdir -p "$WORK/received"
TCP_NODELAY=1 /usr/bin/storescp -aet "$SENDER_AE" -uf -od "$WORK/received" +xa "$SCP_PORT" >"$WORK/storescp.log" 2>&1 &
SCP_PID=$!
for _ in $(seq 1 50); do port_busy "$SCP_PORT" && break; sleep 0.1; done
mapfile -t files < <(find "$SAMPLE" -maxdepth 1 -type f -name '*.dcm' | sort)
log "storescu: ${#files[@]} files of $(basename "$SAMPLE") -> FIRSTREAD@127.0.0.1:$DIMSE_PORT as $SENDER_AE"
t=$SECONDS
TCP_NODELAY=1 /usr/bin/storescu -aec FIRSTREAD -aet "$SENDER_AE" 127.0.0.1 "$DIMSE_PORT" "${files[@]}" \
  || fail "storescu failed"
send_s=$((SECONDS - t))
t=$SECONDS
db() { as_postgres -d firstread -c "$1"; }
# every installed package reads the study (two today): wait for every analysis and every export
state=""
for _ in $(seq 1 300); do
  state=$(db "select count(*) filter (where kind = 'analysis' and state <> 'done') || ' ' || \
    count(*) filter (where kind = 'export') || ' ' || count(*) filter (where kind = 'export' and state <> 'done') || ' ' || \
    count(*) filter (where state = 'dead') from jobs" 2>/dev/null || true)
  read -r analysing exports sending dead <<<"$state"
  [[ "${dead:-0}" == 0 ]] || fail "a job is dead: $(db "select kind || ' ' || model || ': ' || coalesce(last_error, '') from jobs where state = 'dead'")"
  [[ "${analysing:-1}" == 0 && "${exports:-0}" -ge 1 && "${sending:-1}" == 0 ]] && break
  kill -0 "$NODE_PID" 2>/dev/null || fail "the node exited"
  sleep 1
done
[[ "${analysing:-1}" == 0 && "${exports:-0}" -ge 1 && "${sending:-1}" == 0 ]] \
  || fail "no export within 300 s (jobs: $(db "select kind || ':' || model || ':' || state from jobs" | tr '\n' ' '))"
result_s=$((SECONDS - t))
declare -A kinds=()
sr_file=""
for f in "$WORK"/received/*; do
  cls=$(/usr/bin/dcmdump -q -Un +P 0008,0016 "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p')
  case "$cls" in
    1.2.840.10008.5.1.4.1.1.88.*)
      kinds[SR]=$(( ${kinds[SR]:-0} + 1 ))
      # the COVID-19 package's first-read SR (the emphysema package sends its own)
      if [[ -z "$sr_file" ]] && /usr/bin/dcmdump -q +P 0008,103E "$f" | grep -q 'first read (covid19-lung-ct'; then
        sr_file=$f
      fi ;;
    1.2.840.10008.5.1.4.1.1.66.4) kinds[SEG]=$(( ${kinds[SEG]:-0} + 1 )) ;;
    1.2.840.10008.5.1.4.1.1.7*) kinds[SC]=$(( ${kinds[SC]:-0} + 1 )) ;;
    *) kinds[other]=$(( ${kinds[other]:-0} + 1 )) ;;
  esac
done
summary="SR ${kinds[SR]:-0}, SEG ${kinds[SEG]:-0}, SC ${kinds[SC]:-0}"
[[ ${kinds[SR]:-0} -ge 1 && ${kinds[SEG]:-0} -ge 1 && ${kinds[SC]:-0} -ge 1 && -n "$sr_file" ]] \
  || fail "results received: $summary (COVID-19 first-read SR: ${sr_file:-none})"
model_line=$(/usr/bin/dsrdump "$sr_file" | grep -m1 'covid19-lung-ct' || true)
[[ -n "$model_line" ]] || fail "dsrdump of the SR does not name the model covid19-lung-ct"
log "results back at $SENDER_AE ($summary) ${result_s}s after the last C-STORE; dsrdump: ${model_line#"${model_line%%[! ]*}"}"
stored=$(find "$STORAGE" -path '*/studies/*' -name '*.dcm' | wc -l)
[[ $stored -ge ${#files[@]} ]] || fail "$STORAGE holds $stored instances, sent ${#files[@]}"
[[ -z "$(find "$STORAGE" ! -user firstread -print -quit)" ]] || fail "files in $STORAGE not owned by firstread"

kill -TERM "$NODE_PID"
for _ in $(seq 1 100); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$NODE_PID" 2>/dev/null && fail "the node did not stop within 20 s of SIGTERM"
node_rc=0; wait "$NODE_PID" || node_rc=$?
NODE_PID=""
[[ $node_rc -eq 0 ]] || fail "the node exited with $node_rc after SIGTERM"
log "node stopped on SIGTERM (exit 0)"

# ---------------------------------------------------------------- 6. remove, purge: the data stays
log "dpkg -r $PKG"
dpkg -r "$PKG" >"$WORK/dpkg-r.log" 2>&1 || { cat "$WORK/dpkg-r.log" >&2; fail "dpkg -r failed"; }
[[ ! -e /usr/bin/firstread && ! -e /usr/lib/firstread ]] || fail "the program is still there after dpkg -r"
after_remove=$(find "$STORAGE" -path '*/studies/*' -name '*.dcm' | wc -l)
[[ $after_remove -eq $stored ]] || fail "after dpkg -r $STORAGE holds $after_remove instances, not $stored"
[[ -f "$CONFIG" ]] || fail "dpkg -r removed the config"
[[ "$(db 'select count(*) from instances')" -ge ${#files[@]} ]] || fail "the database lost the instances"
log "after dpkg -r: $after_remove instances in $STORAGE, the index and $CONFIG kept"
dpkg --purge "$PKG" >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log" >&2; fail "dpkg --purge failed"; }
[[ ! -e "$CONFIG" ]] || fail "dpkg --purge left $CONFIG"
[[ $(find "$STORAGE" -path '*/studies/*' -name '*.dcm' | wc -l) -eq $stored ]] || fail "dpkg --purge touched $STORAGE"
[[ "$(db 'select count(*) from instances')" -ge ${#files[@]} ]] || fail "dpkg --purge touched the database"
log "after dpkg --purge: config gone; $STORAGE and the database kept"

echo "package test: OK"
printf '  %-22s %s\n' \
  "package" "$(basename "$DEB") $((deb_bytes / 1024 / 1024)) MiB (xz -1), installed $((installed_kib / 1024)) MiB" \
  "build (package-deb)" "${build_s}s" \
  "dpkg -i" "${install_s}s" \
  "node ready" "${start_s}s (sandbox mimicry: $sandboxed)" \
  "unit exposure" "${exposure:-n/a} (systemd-analyze security --offline)" \
  "storescu" "${#files[@]} files in ${send_s}s" \
  "results back" "$summary in ${result_s}s" \
  "kept after -r/--purge" "$stored instances in $STORAGE, database firstread" \
  "total" "$((SECONDS - T0))s"
