"""Helpers shared by the benchmark scripts (scripts/bench_ingest.py, scripts/bench_dicomweb.py).

Not a benchmark itself: paths in the checkout (the bundled CT slices, target/release/firstread, the
dcmtk tools), logging and fatal errors, the local PostgreSQL the benchmarks create their databases
in, the environment a `firstread` receiver is started with, starting and stopping receivers,
process facts from /proc, fresh UIDs for generated instances and the machine facts the reports
print. The scripts import it by putting their own folder on `sys.path`, so they run from any
working directory as `python3 scripts/bench_<x>.py`.

Python: stdlib + pydicom (3.x).
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
SOURCE_GLOB = str(REPO / "data/ct/lung-dx-a0002-b40f/1-*.dcm")
FIRSTREAD_BIN = REPO / "target/release/firstread"
STORESCU = "/usr/bin/storescu"  # absolute: pynetdicom puts a python `storescu` earlier on PATH
ECHOSCU = "/usr/bin/echoscu"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    print(f"[bench] FATAL: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def dcmtk_env() -> dict:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"  # dcmtk 3.6.7 leaves Nagle on otherwise (40 ms per message)
    return env


def firstread_env(dimse_port: int, root: Path, db: str, **extra: str) -> dict:
    """The environment of a `firstread` receiver on 127.0.0.1:dimse_port, storing under root and
    indexing in database db of the local PostgreSQL, logging warnings only; extra adds
    FIRSTREAD_<KEY> variables (keyword FOO__BAR -> FIRSTREAD_FOO__BAR)."""
    env = dict(os.environ)
    env.update({
        "FIRSTREAD_DIMSE__LISTEN": f"127.0.0.1:{dimse_port}",
        # the benchmark's senders are not registered as [[peers]]
        "FIRSTREAD_DIMSE__UNKNOWN_PEERS": "accept",
        "FIRSTREAD_STORAGE__ROOT": str(root),
        "FIRSTREAD_DATABASE__URL": f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}",
        "FIRSTREAD_LOG__FILTER": "warn",
    })
    env.update({f"FIRSTREAD_{k}": v for k, v in extra.items()})
    return env


# ------------------------------------------------------------------ data generation
def source_slices() -> list[pydicom.Dataset]:
    """The bundled CT slices, each read once, in file name order."""
    sources = [pydicom.dcmread(p) for p in sorted(glob.glob(SOURCE_GLOB))]
    if not sources:
        die(f"no source slices at {SOURCE_GLOB}")
    return sources


def new_instance(ds: pydicom.Dataset, study: str, series: str, frame: str, number: int) -> str:
    """Makes ds (in place) instance `number` of the given study and series with a fresh SOP
    Instance UID (2.25.<uuid4>), which it returns; frame replaces a Frame of Reference UID."""
    sop = generate_uid(None)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = frame
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.InstanceNumber = number
    return sop


def fits_command_line(files: list[Path]) -> bool:
    """Whether the file names fit one command line (with room to spare for the environment)."""
    return sum(len(str(f)) + 1 for f in files) < os.sysconf("SC_ARG_MAX") // 4


# ------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql: str, db: str = "postgres") -> str:
    r = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", db,
         "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        capture_output=True, text=True)
    if r.returncode != 0:
        die(f"psql {sql!r} on {db}: rc={r.returncode}: {r.stderr.strip()}")
    return r.stdout.strip()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def wait_echo(aet: str, port: int, proc: subprocess.Popen, errfile: Path, timeout: float = 60.0,
              name: str | None = None) -> None:
    """Waits until the AE aet on 127.0.0.1:port answers C-ECHO; dies (with the end of errfile)
    when proc exits first or timeout runs out. name: the receiver in messages (default aet)."""
    name = name or aet
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{name} exited early (rc={proc.returncode}); output:\n{tail(errfile)}")
        r = subprocess.run([ECHOSCU, "-aec", aet, "-aet", "BENCH", "127.0.0.1", str(port)],
                           capture_output=True, env=dcmtk_env())
        if r.returncode == 0:
            return
        time.sleep(0.2)
    die(f"{name} on port {port} did not answer C-ECHO within {timeout}s; output:\n{tail(errfile)}")


def stop(proc: subprocess.Popen, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 30 s; group: to the process group (proc started with
    start_new_session=True), which is killed at the end in any case (e.g. storescp --fork children)."""
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass
    if group:  # storescp --fork children
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def vm_hwm_kib(pid: int) -> int:
    """Peak RSS (VmHWM) of a running process in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def preflight(tools: tuple[str, ...], hint: str) -> None:
    """Dies unless the tools are executable, target/release/firstread is built and the local
    PostgreSQL answers."""
    for tool in tools:
        if not os.access(tool, os.X_OK):
            die(f"{tool} missing: {hint}")
    if not FIRSTREAD_BIN.is_file():
        die(f"{FIRSTREAD_BIN} missing: run `cargo build --release -p firstread`")
    psql("SELECT 1")


# ------------------------------------------------------------------ machine facts
def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def mem_gib() -> float:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    return mem


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def firstread_built() -> str:
    """When target/release/firstread was built, flagged when that is before the HEAD commit."""
    head_ts = git("log", "-1", "--format=%ct")
    stale = head_ts.isdigit() and FIRSTREAD_BIN.stat().st_mtime < int(head_ts)
    bin_mtime = dt.datetime.fromtimestamp(FIRSTREAD_BIN.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    if stale:
        bin_mtime += " (older than the HEAD commit, so it may not contain it)"
    return bin_mtime


# ------------------------------------------------------------------ report
def write_markdown(out: Path, lines: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
