#!/usr/bin/env bash
# Builds the Debian package of firstread and prints its path (the last line of stdout).
#
#   1. scripts/bootstrap.sh (libtorch carve, OHIF viewer, patchelf, cargo-deb; skipped with
#      FIRSTREAD_SKIP_BOOTSTRAP=1 when the caller ran it);
#   2. cargo build --release (reuses target/release);
#   3. stages under target/deb-stage/: the binary without its line tables (kept beside the .deb as
#      firstread.debug) and with its rpath set to /usr/lib/firstread (patchelf; nothing left
#      pointing into the build cache or the checkout), the libtorch libraries it loads
#      (from `ldd`, hard links into the carve), the viewer's dist/ and its licence;
#   4. cargo deb --no-build with crates/firstread/Cargo.toml [package.metadata.deb]
#      (maintainer scripts, unit and conffile in packaging/).
#
# Options: --fast (xz -1 instead of -6: about 2x larger, much quicker; what the package test uses),
#          --out DIR (where the .deb goes; default target/debian).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd -P)

die() { printf '[package-deb] ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[package-deb] %s\n' "$*" >&2; }

FAST=()
OUT_DIR="$REPO_ROOT/target/debian"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fast) FAST=(--fast) ;;
    --out) OUT_DIR=$(mkdir -p "$2" && cd "$2" && pwd -P); shift ;;
    *) die "unknown argument $1 (use --fast, --out DIR)" ;;
  esac
  shift
done

T0=$SECONDS
[[ "${FIRSTREAD_SKIP_BOOTSTRAP:-0}" == 1 ]] || scripts/bootstrap.sh >&2
command -v patchelf >/dev/null || die "patchelf missing (apt-get install patchelf; scripts/bootstrap.sh installs it)"
cargo deb --version >/dev/null 2>&1 || die "cargo-deb missing (scripts/bootstrap.sh installs the pinned version)"

log "cargo build --release -p firstread"
cargo build --release --locked -p firstread >&2
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
BIN="$TARGET_DIR/release/firstread"
[[ -x "$BIN" ]] || die "$BIN not built"

LIBTORCH_DIR=$(readlink -f "${LIBTORCH:-$REPO_ROOT/.libtorch}") || die "no libtorch (run scripts/bootstrap.sh)"
[[ -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" ]] || die "no libtorch in $LIBTORCH_DIR"
VIEWER_DIST=$(readlink -f "${FIRSTREAD_VIEWER_DIST:-$REPO_ROOT/.viewer/dist}") || die "no viewer (run scripts/bootstrap.sh)"
[[ -f "$VIEWER_DIST/index.html" ]] || die "no OHIF viewer in $VIEWER_DIST (run scripts/bootstrap.sh)"

# The stage: a fixed place under the repository's target/ (the package metadata names it).
STAGE="$REPO_ROOT/target/deb-stage"
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/viewer"

# Hard links when the source is on the same filesystem (the libtorch carve is 440 MB, the viewer
# 200 MB), else copies.
link_or_copy() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }

# Every library the binary loads from the carve (ldd follows the build's rpath), under its soname.
carried=0
while read -r name path; do
  real=$(readlink -f "$path")
  [[ "$real" == "$LIBTORCH_DIR/lib/"* ]] || continue
  link_or_copy "$real" "$STAGE/lib/$name"
  carried=$((carried + 1))
done < <(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
[[ $carried -gt 0 ]] || die "ldd $BIN names no library from $LIBTORCH_DIR/lib (was it linked against it?)"

log "libtorch libraries carried: $(find "$STAGE/lib" -mindepth 1 -printf '%f ')($(du -shL "$STAGE/lib" | cut -f1))"

# Line tables are most of the release binary (about 165 of 200 MB): the package carries it without
# them (function names stay, for backtraces); they are kept beside the .deb, linked by build id
# and debuglink, for symbolising a crash report from the field (gdb, addr2line).
mkdir -p "$OUT_DIR"
DEBUG_FILE="$OUT_DIR/firstread.debug"
objcopy --only-keep-debug "$BIN" "$DEBUG_FILE"
objcopy --strip-debug --add-gnu-debuglink="$DEBUG_FILE" "$BIN" "$STAGE/bin/firstread"
patchelf --set-rpath /usr/lib/firstread "$STAGE/bin/firstread"
runpath=$(readelf -d "$STAGE/bin/firstread" | sed -n 's/.*(\(RPATH\|RUNPATH\)).*\[\(.*\)\]/\2/p')
[[ "$runpath" == /usr/lib/firstread ]] || die "staged binary's rpath is '$runpath', not /usr/lib/firstread"
# Everything resolves inside the stage or the base system, nothing in the build cache.
resolved=$(LD_LIBRARY_PATH="$STAGE/lib" ldd "$STAGE/bin/firstread")
if grep -q 'not found' <<<"$resolved"; then die "unresolved libraries: $(grep 'not found' <<<"$resolved")"; fi
if grep -qF "$LIBTORCH_DIR" <<<"$resolved"; then die "the staged binary still loads from $LIBTORCH_DIR"; fi

# glibc: the package says libc6 (>= 2.34); fail if a staged ELF needs a newer symbol version.
glibc_max=$(for f in "$STAGE/bin/firstread" "$STAGE"/lib/*; do objdump -T "$f"; done \
  | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2,2n -u | tail -n1)
[[ "${glibc_max#GLIBC_2.}" -le 34 ]] || die "staged files need $glibc_max; raise libc6 in [package.metadata.deb] depends"

link_or_copy "$VIEWER_DIST/." "$STAGE/viewer/"
cp "$VIEWER_DIST/../LICENSE" "$STAGE/viewer-LICENSE" 2>/dev/null \
  || printf 'OHIF Viewer: MIT licence, https://github.com/OHIF/Viewers/blob/master/LICENSE\n' >"$STAGE/viewer-LICENSE"

log "cargo deb (${FAST[*]:-xz -6})"
# cargo-deb prints the package's path last; the binary is ours (patched), so no build and no strip
# (its warning that the staged paths under target/ are not Cargo's build products is expected)
deb=$(cargo deb -p firstread --no-build --no-strip --locked "${FAST[@]}" --output "$OUT_DIR" \
  2> >(grep -v "Only source paths starting with exactly 'target/release/'" >&2) | tail -n1)
[[ -f "$deb" ]] || die "cargo deb did not report a package (got '$deb')"
log "$(basename "$deb"): $(du -h "$deb" | cut -f1), installed size $(dpkg-deb -f "$deb" Installed-Size) KiB, in $((SECONDS - T0))s"
echo "$deb"
