#!/usr/bin/env bash
# firstread bootstrap: system packages, PostgreSQL, Python DICOM test peers,
# a CPU-only libtorch carved out of the PyPI torch wheel (for tch / torch-sys), the OHIF
# viewer and cargo-deb (for scripts/package-deb.sh).
#
# Idempotent and cheap when everything is already in place: every step checks
# first and skips. Run at the start of every test run and CI job.
#
# Environment knobs:
#   FIRSTREAD_CACHE      cache root            (default: $HOME/.cache/firstread)
#   FIRSTREAD_WHEEL_DIR  extra dir to look for already downloaded wheels
#   FIRSTREAD_SKIP_APT=1 / FIRSTREAD_SKIP_PG=1 / FIRSTREAD_SKIP_PY=1 / FIRSTREAD_SKIP_TORCH=1
#   FIRSTREAD_SKIP_VIEWER=1  skip the OHIF viewer + playwright-core install (.viewer)
#   FIRSTREAD_SKIP_CARGO_DEB=1  skip cargo-deb (scripts/package-deb.sh needs it)
#   FIRSTREAD_PG_URL     URL to verify (default: postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
CACHE="${FIRSTREAD_CACHE:-$HOME/.cache/firstread}"
PG_URL="${FIRSTREAD_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

TORCH_VERSION="2.11.0"
CUDART_VERSION="13.0.96"   # libtorch_cpu.so NEEDS libcudart.so.13 even on CPU
CUPTI_VERSION="13.0.85"    # ... and libcupti.so.13
LIBTORCH_DIR="$CACHE/libtorch-${TORCH_VERSION}-cpu"
WHEEL_CACHE="$CACHE/wheels"
CARVE_STAMP="firstread-carve v1 torch=${TORCH_VERSION} cudart=${CUDART_VERSION} cupti=${CUPTI_VERSION}"

# patchelf: scripts/package-deb.sh points the packaged binary at /usr/lib/firstread
APT_PACKAGES=(dcmtk dicom3tools libgdcm-tools cmake orthanc orthanc-dicomweb pkg-config clang libclang-dev chromium patchelf systemd iproute2 procps curl)
# cargo-deb for scripts/package-deb.sh (pinned; installed with cargo install --locked when missing)
CARGO_DEB_VERSION="3.8.0"
# OHIF viewer (prebuilt dist/ of the npm package, served by crates/dicomweb at /viewer) and the
# playwright-core driver for tests/browser/ohif.mjs (uses the apt chromium, 156 on bookworm).
OHIF_VERSION="3.13.2"
PLAYWRIGHT_CORE_VERSION="1.65.1"
VIEWER_DIR="$CACHE/viewer-ohif-${OHIF_VERSION}"
VIEWER_STAMP="firstread-viewer v1 ohif=${OHIF_VERSION} playwright-core=${PLAYWRIGHT_CORE_VERSION}"
# module:pip-spec
PY_PACKAGES=("pydicom:pydicom==3.0.2" "pynetdicom:pynetdicom==3.0.4" "dicomweb_client:dicomweb-client==0.61.2" "prometheus_client:prometheus-client==0.26.0" "hl7:hl7==0.4.5" "fhir.resources:fhir.resources==8.3.0")

SUMMARY=()
note() { SUMMARY+=("$*"); }
log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="__nosudo__"; fi
fi
as_root() {
  [[ "$SUDO" == "__nosudo__" ]] && die "need root (or sudo) for: $*"
  $SUDO "$@"
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

APT_UPDATED=0
apt_install() {
  # Installs the given packages; never lets maintainer scripts start services.
  local policy_created=0
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # invoke-rc.d consults this: exit 101 = "action forbidden" -> orthanc & co. are not started
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  log "apt-get install $*"
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  [[ $policy_created -eq 1 ]] && as_root rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || die "apt-get install $* failed (rc=$rc)"
}

# ---------------------------------------------------------------- apt packages
step_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "apt: all ${#APT_PACKAGES[@]} packages present (skipped)"
  else
    apt_install "${missing[@]}"
    note "apt: installed ${missing[*]}"
  fi
}

# Orthanc's Debian package wants to run a system daemon on 4242/8042; tests start
# their own instances, so make sure the system one is neither running nor enabled.
step_orthanc() {
  pkg_installed orthanc || return 0
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet orthanc 2>/dev/null || systemctl is-active --quiet orthanc 2>/dev/null; then
      as_root systemctl disable --now orthanc >/dev/null 2>&1 || true
      note "orthanc: system service stopped+disabled"
    fi
  fi
  local pids
  pids=$(ss -ltnpH '( sport = :4242 or sport = :8042 )' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
  local pid stopped=0 foreign=0
  for pid in $pids; do
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ "$cmd" == *Orthanc*"/etc/orthanc"* ]]; then
      # the packaged daemon (config in /etc/orthanc); test instances use their own config
      # kill just this pid: `service orthanc stop` (start-stop-daemon --exec) would also hit test instances
      as_root kill "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      stopped=1
    else
      foreign=1
      log "warning: port 4242/8042 held by pid $pid ($cmd) - not the packaged orthanc, left alone"
    fi
  done
  [[ $stopped -eq 1 ]] && note "orthanc: stopped packaged daemon holding 4242/8042"
  if [[ $foreign -eq 0 ]] && ss -ltnH '( sport = :4242 or sport = :8042 )' 2>/dev/null | grep -q .; then
    die "ports 4242/8042 are still in use after stopping the packaged orthanc: $(ss -ltnpH '( sport = :4242 or sport = :8042 )')"
  fi
  return 0
}

# ---------------------------------------------------------------- PostgreSQL
step_postgres() {
  local fresh=0
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    note "postgres: already accepting connections on 127.0.0.1:5432"
  else
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql
      fresh=1
    fi
    local ver d
    for d in /etc/postgresql/*/main; do
      [[ -d "$d" ]] || continue
      ver=$(basename "$(dirname "$d")")
      log "starting PostgreSQL cluster $ver/main"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>&1 | grep -v 'already running' >&2 || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL does not answer on 127.0.0.1:5432 after start (see pg_lsclusters / /var/log/postgresql)"
    note "postgres: started cluster(s) under /etc/postgresql"
  fi
  if [[ $fresh -eq 1 ]] && ! psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1; then
    # A cluster we just created: allow the test role in over loopback without a password.
    local hba
    hba=$(as_root su postgres -c "psql -Atqc 'show hba_file'")
    printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n' \
      | as_root sh -c "cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba' && chown postgres:postgres '$hba'"
    as_root su postgres -c "psql -Atqc 'select pg_reload_conf()'" >/dev/null
    note "postgres: fresh cluster, trust auth for postgres@loopback added to $hba"
  fi
  psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1 \
    || die "cannot connect to $PG_URL with trust auth (no password). Fix pg_hba.conf (e.g. 'host all postgres 127.0.0.1/32 trust') and reload, then rerun."
  note "postgres: $PG_URL OK"
}

# ---------------------------------------------------------------- Python peers
PIP_EXTRA=()
pip_setup() {
  python3 -m pip --version >/dev/null 2>&1 || { pkg_installed python3-pip || apt_install python3-pip; }
  local stdlib
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  [[ -e "$stdlib/EXTERNALLY-MANAGED" ]] && PIP_EXTRA+=(--break-system-packages)
  return 0
}

step_python() {
  command -v python3 >/dev/null 2>&1 || apt_install python3
  local missing=() entry mod spec absent
  # one interpreter start, no real imports (find_spec) -> fast when all present
  # (find_spec of a dotted name imports its parent: a missing parent package means absent too)
  absent=" $(python3 -c 'import sys, importlib.util as u
def absent(m):
    try:
        return u.find_spec(m) is None
    except ModuleNotFoundError:
        return True
print(" ".join(m for m in sys.argv[1:] if absent(m)))' "${PY_PACKAGES[@]%%:*}") "
  for entry in "${PY_PACKAGES[@]}"; do
    mod=${entry%%:*}; spec=${entry#*:}
    [[ "$absent" == *" $mod "* ]] && missing+=("$spec")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "python: test peers importable (skipped)"
    return 0
  fi
  pip_setup
  log "pip install ${missing[*]}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${PIP_EXTRA[@]}" "${missing[@]}" >&2 \
    || python3 -m pip install -q --disable-pip-version-check "${PIP_EXTRA[@]}" "${missing[@]}" >&2
  for entry in "${PY_PACKAGES[@]}"; do
    mod=${entry%%:*}
    python3 -c "import $mod" >/dev/null 2>&1 || die "python3 cannot import $mod after pip install"
  done
  note "python: installed ${missing[*]}"
}

# ---------------------------------------------------------------- libtorch
find_wheel() { # glob -> first existing path in the wheel cache or FIRSTREAD_WHEEL_DIR
  local d f
  for d in "$WHEEL_CACHE" ${FIRSTREAD_WHEEL_DIR:+"$FIRSTREAD_WHEEL_DIR"}; do
    for f in "$d"/$1; do [[ -f "$f" ]] && { echo "$f"; return 0; }; done
  done
  return 1
}

carve_ok() {
  [[ -f "$LIBTORCH_DIR/firstread-carve.txt" ]] \
    && [[ "$(head -n1 "$LIBTORCH_DIR/firstread-carve.txt")" == "$CARVE_STAMP" ]] \
    && [[ -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" && -f "$LIBTORCH_DIR/include/torch/script.h" ]]
}

step_libtorch() {
  if carve_ok; then
    note "libtorch: $LIBTORCH_DIR present (skipped)"
  else
    local t0=$SECONDS torch_whl rt_whl cupti_whl
    local want=("torch==${TORCH_VERSION}" "nvidia-cuda-runtime==${CUDART_VERSION}" "nvidia-cuda-cupti==${CUPTI_VERSION}")
    if ! torch_whl=$(find_wheel "torch-${TORCH_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl") \
       || ! rt_whl=$(find_wheel "nvidia_cuda_runtime-${CUDART_VERSION}-*.whl") \
       || ! cupti_whl=$(find_wheel "nvidia_cuda_cupti-${CUPTI_VERSION}-*.whl"); then
      mkdir -p "$WHEEL_CACHE"
      pip_setup
      log "downloading ${want[*]} (~545 MB) into $WHEEL_CACHE"
      # Only the native libs are used, so any CPython tag works; cp311 is pinned for reproducibility.
      # pip does not expand --platform to older manylinux tags, hence the explicit list
      # (torch: manylinux_2_28, cupti: manylinux_2_25, cudart: manylinux_2_17/manylinux2014).
      python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$WHEEL_CACHE" "${want[@]}" >&2 || die "pip download of ${want[*]} failed"
      torch_whl=$(find_wheel "torch-${TORCH_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl") || die "torch wheel missing after download"
      rt_whl=$(find_wheel "nvidia_cuda_runtime-${CUDART_VERSION}-*.whl") || die "cuda runtime wheel missing after download"
      cupti_whl=$(find_wheel "nvidia_cuda_cupti-${CUPTI_VERSION}-*.whl") || die "cupti wheel missing after download"
      note "libtorch: downloaded wheels in $((SECONDS - t0))s"
    fi
    log "carving $LIBTORCH_DIR from $(basename "$torch_whl")"
    local tmp="$LIBTORCH_DIR.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    python3 - "$tmp" "$TORCH_VERSION" "$CARVE_STAMP" "$torch_whl" "$rt_whl" "$cupti_whl" <<'PY'
import os, shutil, sys, zipfile
dest, version, stamp, torch_whl, rt_whl, cupti_whl = sys.argv[1:7]
lib = os.path.join(dest, "lib")
os.makedirs(lib, exist_ok=True)

def copy(zf, info, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if info.filename.endswith((".so",)) or ".so." in info.filename:
        os.chmod(target, 0o755)

torch_libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1"}
with zipfile.ZipFile(torch_whl) as zf:
    for info in zf.infolist():
        n = info.filename
        if n.endswith("/"):
            continue
        if n.startswith("torch/include/"):
            copy(zf, info, os.path.join(dest, "include", n[len("torch/include/"):]))
        elif n.startswith("torch/lib/") and os.path.basename(n) in torch_libs and n.count("/") == 2:
            copy(zf, info, os.path.join(lib, os.path.basename(n)))
for whl, name in ((rt_whl, "libcudart.so.13"), (cupti_whl, "libcupti.so.13")):
    with zipfile.ZipFile(whl) as zf:
        hits = [i for i in zf.infolist() if os.path.basename(i.filename) == name]
        if not hits:
            sys.exit(f"{name} not found in {whl}")
        copy(zf, hits[0], os.path.join(lib, name))

# The wheel's libtorch.so is a CUDA shim that NEEDS libtorch_cuda.so (445 MB + cuDNN,
# cuBLAS, NCCL ...). torch-sys always passes -ltorch, so provide a linker script instead:
# it satisfies -ltorch at link time and leaves no DT_NEEDED entry in the binary.
with open(os.path.join(lib, "libtorch.so"), "w") as f:
    f.write("/* firstread CPU carve: the wheel's libtorch.so needs libtorch_cuda.so; all CPU\n"
            "   symbols live in libtorch_cpu.so, so -ltorch just means -ltorch_cpu here. */\n"
            "INPUT(AS_NEEDED(libtorch_cpu.so))\n")
# -lgomp (emitted by torch-sys) should resolve to the wheel's libgomp, not the system one
os.symlink("libgomp.so.1", os.path.join(lib, "libgomp.so"))

# torch-sys reads $LIBTORCH/build-version and checks it against the version it expects,
# so no LIBTORCH_BYPASS_VERSION_CHECK is needed.
with open(os.path.join(dest, "build-version"), "w") as f:
    f.write(version + "+cpu\n")
with open(os.path.join(dest, "firstread-carve.txt"), "w") as f:
    f.write(stamp + "\n")
    for w in (torch_whl, rt_whl, cupti_whl):
        f.write("from " + os.path.basename(w) + "\n")
PY
    # every DT_NEEDED of the carved libs must resolve inside lib/ or from the base system
    local unresolved
    unresolved=$(LD_LIBRARY_PATH="$tmp/lib" ldd "$tmp"/lib/libtorch_cpu.so "$tmp"/lib/libcupti.so.13 "$tmp"/lib/libcudart.so.13 | grep 'not found' || true)
    [[ -z "$unresolved" ]] || die "carved libtorch has unresolved dependencies: $unresolved"
    rm -rf "$LIBTORCH_DIR"
    mv "$tmp" "$LIBTORCH_DIR"
    note "libtorch: carved $LIBTORCH_DIR ($(du -sh "$LIBTORCH_DIR" | cut -f1)) in $((SECONDS - t0))s"
  fi

  local link="$REPO_ROOT/.libtorch"
  if [[ -L "$link" ]]; then
    if [[ "$(readlink "$link")" != "$LIBTORCH_DIR" ]]; then
      ln -sfn "$LIBTORCH_DIR" "$link"; note "libtorch: repointed $link -> $LIBTORCH_DIR"
    fi
  elif [[ -e "$link" ]]; then
    log "warning: $link exists and is not a symlink; leaving it alone"
  else
    ln -s "$LIBTORCH_DIR" "$link"; note "libtorch: linked $link -> $LIBTORCH_DIR"
  fi

  local gi="$REPO_ROOT/.gitignore"
  if [[ ! -f "$gi" ]]; then
    printf '/target\n/.libtorch\n/node_modules\n*.log\n' >"$gi"
    note "gitignore: created $gi"
  elif ! grep -qxE '/?\.libtorch/?' "$gi"; then
    [[ -s "$gi" && "$(tail -c1 "$gi")" != "" ]] && echo >>"$gi"
    echo '/.libtorch' >>"$gi"
    note "gitignore: added /.libtorch"
  fi
}

# ---------------------------------------------------------------- OHIF viewer
# Layout of $VIEWER_DIR (linked as $REPO_ROOT/.viewer):
#   node_modules/playwright-core/   npm install (browser driver for tests/browser/ohif.mjs)
#   node_modules/@ohif/app/         the @ohif/app package, unpacked from `npm pack`
#   dist -> node_modules/@ohif/app/dist   the prebuilt viewer the DICOMweb server serves at /viewer
# @ohif/app@3.13.2 cannot be `npm install`ed with its dependencies (it pins @ohif/i18n@3.13.2,
# which the registry does not have), and only its prebuilt dist/ is needed anyway, so its
# tarball is fetched with `npm pack` (integrity-checked by npm) and unpacked without deps.
viewer_ok() {
  [[ -f "$VIEWER_DIR/firstread-viewer.txt" ]] \
    && [[ "$(head -n1 "$VIEWER_DIR/firstread-viewer.txt")" == "$VIEWER_STAMP" ]] \
    && [[ -f "$VIEWER_DIR/dist/index.html" && -f "$VIEWER_DIR/node_modules/playwright-core/package.json" ]]
}

step_viewer() {
  if viewer_ok; then
    note "viewer: $VIEWER_DIR present (skipped)"
  else
    local t0=$SECONDS
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    [[ "$major" -ge 20 ]] || die "playwright-core ${PLAYWRIGHT_CORE_VERSION} needs node >= 20 (have $(node --version 2>/dev/null || echo none))"
    local tmp="$VIEWER_DIR.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    printf '{\n  "name": "firstread-viewer",\n  "private": true,\n  "dependencies": { "playwright-core": "%s" }\n}\n' \
      "$PLAYWRIGHT_CORE_VERSION" >"$tmp/package.json"
    log "npm install playwright-core@${PLAYWRIGHT_CORE_VERSION} into $tmp"
    (cd "$tmp" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error >&2) \
      || die "npm install playwright-core@${PLAYWRIGHT_CORE_VERSION} failed"
    log "npm pack @ohif/app@${OHIF_VERSION} (~50 MB)"
    local tgz
    tgz=$(cd "$tmp" && npm pack --silent "@ohif/app@${OHIF_VERSION}" | tail -n1) \
      || die "npm pack @ohif/app@${OHIF_VERSION} failed"
    [[ -f "$tmp/$tgz" ]] || die "npm pack did not produce $tmp/$tgz"
    mkdir -p "$tmp/node_modules/@ohif/app"
    tar -xzf "$tmp/$tgz" -C "$tmp/node_modules/@ohif/app" --strip-components=1 \
      || die "unpacking $tgz failed"
    rm -f "$tmp/$tgz"
    [[ -f "$tmp/node_modules/@ohif/app/dist/index.html" ]] || die "@ohif/app@${OHIF_VERSION} has no dist/index.html"
    ln -s node_modules/@ohif/app/dist "$tmp/dist"
    printf '%s\n' "$VIEWER_STAMP" >"$tmp/firstread-viewer.txt"
    rm -rf "$VIEWER_DIR"
    mv "$tmp" "$VIEWER_DIR"
    note "viewer: installed $VIEWER_DIR ($(du -sh "$VIEWER_DIR/" | cut -f1)) in $((SECONDS - t0))s"
  fi

  local link="$REPO_ROOT/.viewer"
  if [[ -L "$link" ]]; then
    if [[ "$(readlink "$link")" != "$VIEWER_DIR" ]]; then
      ln -sfn "$VIEWER_DIR" "$link"; note "viewer: repointed $link -> $VIEWER_DIR"
    fi
  elif [[ -e "$link" ]]; then
    log "warning: $link exists and is not a symlink; leaving it alone"
  else
    ln -s "$VIEWER_DIR" "$link"; note "viewer: linked $link -> $VIEWER_DIR"
  fi

  local gi="$REPO_ROOT/.gitignore"
  if [[ ! -f "$gi" ]]; then
    echo '/.viewer' >"$gi"; note "gitignore: created $gi"
  elif ! grep -qxE '/?\.viewer/?' "$gi"; then
    [[ -s "$gi" && "$(tail -c1 "$gi")" != "" ]] && echo >>"$gi"
    echo '/.viewer' >>"$gi"
    note "gitignore: added /.viewer"
  fi
}

# ---------------------------------------------------------------- cargo-deb
step_cargo_deb() {
  local have
  have=$(cargo deb --version 2>/dev/null | awk '{print $NF}' || true)
  if [[ "$have" == "$CARGO_DEB_VERSION" ]]; then
    note "cargo-deb: $CARGO_DEB_VERSION present (skipped)"
    return 0
  fi
  local t0=$SECONDS
  log "cargo install --locked cargo-deb@${CARGO_DEB_VERSION} (have: ${have:-none}; ~2 min)"
  cargo install --locked --quiet "cargo-deb@${CARGO_DEB_VERSION}" >&2 || die "cargo install cargo-deb@${CARGO_DEB_VERSION} failed"
  have=$(cargo deb --version 2>/dev/null | awk '{print $NF}' || true)
  [[ "$have" == "$CARGO_DEB_VERSION" ]] || die "cargo deb --version says '${have}', wanted ${CARGO_DEB_VERSION} (is ~/.cargo/bin on PATH?)"
  note "cargo-deb: installed ${CARGO_DEB_VERSION} in $((SECONDS - t0))s"
}

T_START=$SECONDS
[[ "${FIRSTREAD_SKIP_APT:-0}" == 1 ]] || { step_apt; step_orthanc; }
[[ "${FIRSTREAD_SKIP_PG:-0}" == 1 ]] || step_postgres
[[ "${FIRSTREAD_SKIP_PY:-0}" == 1 ]] || step_python
[[ "${FIRSTREAD_SKIP_TORCH:-0}" == 1 ]] || step_libtorch
[[ "${FIRSTREAD_SKIP_VIEWER:-0}" == 1 ]] || step_viewer
[[ "${FIRSTREAD_SKIP_CARGO_DEB:-0}" == 1 ]] || step_cargo_deb

echo "bootstrap summary ($((SECONDS - T_START))s):"
for line in "${SUMMARY[@]}"; do echo "  - $line"; done
