#!/usr/bin/env python3
"""Ingest benchmark: firstread vs dcmtk storescp, same run, same sender.

Generates N CT instances (512x512, Explicit VR LE) from the 30 bundled slices in
data/ct/lung-dx-a0002-b40f/ with fresh Study/Series/SOP Instance UIDs (a new study
every 300 instances), then sends them with P parallel dcmtk `storescu` processes (one
association each) to, one at a time and each started fresh:

  * firstread, fsync on  (the default: file + directory fsync and one PostgreSQL
    commit per instance before C-STORE-RSP)
  * firstread, fsync off (FIRSTREAD_STORAGE__FSYNC=false; still one commit per instance)
  * dcmtk storescp       (one process, +xa)
  * dcmtk storescp --fork

Per (receiver, P) it measures the wall time from starting the senders until all have
exited, instances/s, MB/s (file bytes sent / wall time, MB = 10^6 bytes) and the
receiver's peak RSS (VmHWM from /proc/<pid>/status just before stopping it; for
--fork that is the parent only). Every run checks that exactly N instances were
stored (firstread: *.dcm files under <root>/studies and `SELECT count(*) FROM
instances`) and aborts otherwise. Each configuration is repeated --repeats times
(repeats are the outer loop, so configurations are interleaved) and the median is
reported in --out (Markdown).

Requirements: works from a fresh checkout after

    scripts/bootstrap.sh                      # dcmtk, PostgreSQL (trust auth for
                                              # postgres@127.0.0.1), pydicom
    cargo build --release -p firstread        # target/release/firstread

Python: stdlib + pydicom (3.x). PostgreSQL must answer on 127.0.0.1:5432 as user
postgres without a password; a fresh database is created per firstread run and
dropped WITH (FORCE) afterwards.

Usage:
    python3 scripts/bench_ingest.py --n 2000
    python3 scripts/bench_ingest.py --n 600 --senders 1,4 --repeats 1 --keep
    python3 scripts/bench_ingest.py --n 900 --senders 8 --repeats 1 --role listen
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (ECHOSCU, FIRSTREAD_BIN, REPO, STORESCU, cpu_model, dcmtk_env, die,  # noqa: E402
                      firstread_built, firstread_env, fits_command_line, free_port, git, log, mem_gib,
                      new_instance, preflight, psql, source_slices, stop, tail, vm_hwm_kib, wait_echo,
                      write_markdown)

STORESCP = "/usr/bin/storescp"
AE = "FIRSTREAD"
PER_STUDY = 300

CONFIGS = [
    # (key, label)
    ("fr_fsync", "firstread, fsync on (default)"),
    ("fr_nofsync", "firstread, fsync off"),
    ("storescp", "dcmtk storescp"),
    ("storescp_fork", "dcmtk storescp --fork"),
]


# ------------------------------------------------------------------ data generation
def generate(n: int, out_dir: Path) -> list[Path]:
    datasets = source_slices()  # each source read once
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    study = series = frame = None
    for i in range(n):
        if i % PER_STUDY == 0:
            study, series, frame = generate_uid(None), generate_uid(None), generate_uid(None)
        k, j = divmod(i, len(datasets))  # copy k of slice j
        ds = datasets[j]
        new_instance(ds, study, series, frame, i % PER_STUDY + 1)
        path = out_dir / f"{i:06d}_c{k:04d}_s{j:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


# ------------------------------------------------------------------ helpers
def count_files(root: Path, suffix: str | None = None) -> int:
    n = 0
    for _dirpath, _dirs, names in os.walk(root):
        n += sum(1 for x in names if suffix is None or x.endswith(suffix))
    return n


def split_args(files: list[Path], p: int) -> list[list[Path]]:
    n = len(files)
    return [files[s * n // p:(s + 1) * n // p] for s in range(p)]


def sender_cmds(files: list[Path], p: int, port: int, work: Path) -> list[list[str]]:
    # -ta: plain storescp serves one association at a time, so with P > 1 the later senders
    # wait for their A-ASSOCIATE-AC longer than storescu's default 30 s ACSE timeout at large N.
    base = [STORESCU, "-ta", "600", "-aec", AE, "-aet", "BENCH", "127.0.0.1", str(port)]
    chunks = split_args(files, p)
    cmds = []
    for s, chunk in enumerate(chunks):
        if fits_command_line(chunk):
            cmds.append(base + [str(f) for f in chunk])
        else:  # argument list too long: one directory of hard links per sender
            d = work / f"senders-p{p}" / f"s{s}"
            if not d.exists():
                d.mkdir(parents=True)
                for f in chunk:
                    os.link(f, d / f.name)
            cmds.append(base + ["+sd", str(d)])
    return cmds


# ------------------------------------------------------------------ one run
def run_once(cfg: str, p: int, files: list[Path], total_bytes: int, work: Path, tag: str) -> dict:
    n = len(files)
    port = free_port()
    rdir = work / "runs" / tag
    root = rdir / "store"
    root.mkdir(parents=True)
    errfile = rdir / "receiver.stderr"
    db = None
    group = False
    with open(errfile, "wb") as err:
        if cfg.startswith("fr_"):
            db = f"bench_ingest_{uuid.uuid4().hex[:12]}"
            psql(f"CREATE DATABASE {db}")
            http_port = free_port()
            env = firstread_env(port, root, db,
                                STORAGE__FSYNC="false" if cfg == "fr_nofsync" else "true",
                                HTTP__LISTEN=f"127.0.0.1:{http_port}", HTTP__AUTH="none")
            proc = subprocess.Popen([str(FIRSTREAD_BIN), ROLE], env=env, cwd=REPO, stdout=err,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        else:
            cmd = [STORESCP, "-aet", AE, "-od", str(root), "+xa"]
            if cfg == "storescp_fork":
                cmd.append("--fork")
                group = True
            cmd.append(str(port))
            proc = subprocess.Popen(cmd, env=dcmtk_env(), stdout=err, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=group)
    try:
        wait_echo(AE, port, proc, errfile, name="receiver")
        cmds = sender_cmds(files, p, port, work)
        outs = [rdir / f"sender{s}.out" for s in range(p)]
        handles = [open(o, "wb") for o in outs]
        t0 = time.perf_counter()
        senders = [subprocess.Popen(c, env=dcmtk_env(), stdout=h, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL) for c, h in zip(cmds, handles)]
        rcs = []
        for s in senders:
            try:
                rcs.append(s.wait(timeout=3600))
            except subprocess.TimeoutExpired:
                s.kill()
                rcs.append(s.wait())
        wall = time.perf_counter() - t0
        for h in handles:
            h.close()
        hwm = vm_hwm_kib(proc.pid) if proc.poll() is None else 0
        alive = proc.poll() is None
        sender_msgs = [tail(o, 20) for o in outs]
        steps = ingest_steps(http_port) if cfg.startswith("fr_") and alive else {}
        if cfg.startswith("fr_"):
            on_disk = count_files(root / "studies", ".dcm")
            in_db = int(psql("SELECT count(*) FROM instances", db))
        else:
            on_disk = count_files(root)
            in_db = None
    finally:
        stop(proc, group)
        if db:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    recv_log = errfile.read_text(errors="replace").strip()
    problems = []
    if not alive:
        problems.append(f"receiver died during the run (rc={proc.returncode})")
    if any(rcs):
        problems.append(f"storescu exit codes {rcs}")
    if on_disk != n:
        problems.append(f"{on_disk} files stored, expected {n}")
    if in_db is not None and in_db != n:
        problems.append(f"{in_db} rows in instances, expected {n}")
    if problems:
        msg = "; ".join(problems)
        detail = f"\n--- receiver log ({errfile}):\n{tail(errfile)}"
        for s, m in enumerate(sender_msgs):
            if m.strip():
                detail += f"\n--- storescu {s}:\n{m}"
        die(f"{tag}: {msg}{detail}")
    res = {
        "cfg": cfg, "p": p, "wall": wall, "ips": n / wall, "mbs": total_bytes / wall / 1e6,
        "rss_mib": hwm / 1024, "log": recv_log, "steps": steps,
        "sender_warnings": [m for m in sender_msgs if m.strip()],
    }
    log(f"{tag}: {wall:7.2f} s  {res['ips']:7.1f} inst/s  {res['mbs']:6.1f} MB/s  "
        f"RSS {res['rss_mib']:.1f} MiB" + (f"  [receiver logged {len(recv_log.splitlines())} lines]"
                                             if recv_log else ""))
    return res


STEPS = ("begin", "receive", "finish", "place", "index")


def ingest_steps(http_port: int) -> dict:
    """Mean milliseconds per instance of each ingest step, from the receiver's
    firstread_ingest_seconds histogram (GET /metrics); {} when it cannot be read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        log(f"metrics not read: {e}")
        return {}
    sums, counts = {}, {}
    for line in text.splitlines():
        m = re.match(r'firstread_ingest_seconds_(sum|count)\{step="(\w+)"\} ([0-9.e+-]+)$', line)
        if m:
            (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {k: 1e3 * sums[k] / counts[k] for k in STEPS if counts.get(k)}


# ------------------------------------------------------------------ report
def machine() -> dict:
    fs = subprocess.run(["df", "--output=fstype", tempfile.gettempdir()], capture_output=True,
                        text=True).stdout.split()[-1]
    ver = subprocess.run([STORESCP, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    pg = psql("SELECT split_part(version(), ' ', 2), current_setting('synchronous_commit')").split("|")
    load = os.getloadavg()[0]
    rev = git("describe", "--always", "--dirty") or "unknown"
    return {"bin_mtime": firstread_built(), "pg": pg[0], "sync_commit": pg[1], "load": load, "rev": rev,
            "nproc": os.cpu_count(), "cpu": cpu_model(), "fs": fs, "tmp": tempfile.gettempdir(),
            "mem_gib": mem_gib(), "kernel": platform.release(), "dcmtk": ver.strip("$ ").strip()}


def write_report(out: Path, args, senders: list[int], results: list[dict], m: dict,
                 mean_size: float, total_bytes: int, gen_s: float) -> None:
    med = {}
    for cfg, _ in CONFIGS:
        for p in senders:
            rs = [r for r in results if r["cfg"] == cfg and r["p"] == p]
            med[cfg, p] = {k: statistics.median(r[k] for r in rs) for k in ("wall", "ips", "mbs", "rss_mib")}
            med[cfg, p]["runs"] = [r["ips"] for r in rs]
    L = []
    L.append("# Ingest benchmark: firstread vs dcmtk storescp")
    L.append("")
    L.append(f"Generated by `scripts/bench_ingest.py` on {dt.date.today().isoformat()}. "
             f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']:.0f} GiB RAM, "
             f"{m['tmp']} on {m['fs']}, Linux {m['kernel']}, {m['dcmtk']}, "
             f"PostgreSQL {m['pg']} on the same machine, repository HEAD `{m['rev']}`, "
             f"target/release/firstread built {m['bin_mtime']}; "
             f"1-min load average at the start: {m['load']:.2f}.")
    L.append("")
    L.append(f"N = {args.n} CT instances (512x512, Explicit VR LE, {mean_size / 1e3:.0f} kB each, "
             f"{total_bytes / 1e6:.0f} MB in all; {-(-args.n // PER_STUDY)} study(ies) of <= {PER_STUDY}), sent by P parallel "
             f"dcmtk `storescu` processes, one association each, over 127.0.0.1 (TCP_NODELAY=1). "
             f"Each receiver starts fresh per run; median of {args.repeats} run(s). "
             f"MB = 10^6 bytes of file sent per second of wall time; RSS = receiver VmHWM. "
             f"firstread runs as `firstread {ROLE}`.")
    L.append("")
    hdr = "| receiver |"
    sep = "|---|"
    for p in senders:
        hdr += f" P={p} inst/s | P={p} MB/s | P={p} RSS MiB | P={p} vs storescp |"
        sep += "---:|---:|---:|---:|"
    L.append(hdr)
    L.append(sep)
    for cfg, label in CONFIGS:
        row = f"| {label}{' (*)' if cfg == 'storescp_fork' else ''} |"
        for p in senders:
            x = med[cfg, p]
            ratio = x["ips"] / med["storescp", p]["ips"]
            row += f" {x['ips']:.1f} | {x['mbs']:.1f} | {x['rss_mib']:.1f} | {ratio:.2f} |"
        L.append(row)
    L.append("")
    L.append("**firstread (fsync on) / storescp** (inst/s): " + ", ".join(
        f"P={p}: {med['fr_fsync', p]['ips'] / med['storescp', p]['ips']:.2f}" for p in senders) + ".")
    L.append("")
    L.append("(*) peak RSS of the `--fork` parent only; each association is handled by a forked "
             "child whose memory is not included (a sum over short-lived children is not meaningful).")
    L.append("")
    L.append("fsync is ON by default in firstread: before each C-STORE-RSP Success the instance file and "
             "its directory are fsync'd and the instance is committed to PostgreSQL (one commit per "
             "instance). storescp does neither (it writes to the page cache and answers). "
             "\"fsync off\" skips the file/directory fsyncs but still commits each instance, and with "
             f"PostgreSQL's synchronous_commit={m['sync_commit']} every commit still waits for a WAL "
             "flush. Plain storescp serves one association at a time (with P > 1 the other senders "
             "wait for their A-ASSOCIATE-AC); firstread and storescp --fork serve them concurrently.")
    L.append("")
    L.append("Individual runs, inst/s in run order:")
    L.append("")
    L.append("| receiver | " + " | ".join(f"P={p}" for p in senders) + " |")
    L.append("|---|" + "---|" * len(senders))
    for cfg, label in CONFIGS:
        L.append(f"| {label} | " + " | ".join(
            ", ".join(f"{v:.0f}" for v in med[cfg, p]["runs"]) for p in senders) + " |")
    L.append("")
    L.append("Where a firstread instance's time goes (`firstread_ingest_seconds`, read from the receiver's "
             "/metrics after each run: mean ms per instance, median over the runs; begin = the temporary "
             "file created on the C-STORE-RQ, receive = from there to the last data PDU, finish = the "
             "file's fsync and its attributes read back, place = link into the study folder and the "
             "folder's fsync, index = the index row committed to PostgreSQL; 1/rate = wall time per "
             "instance, with P associations sharing it):")
    L.append("")
    L.append("| receiver | P | " + " | ".join(f"{k} ms" for k in STEPS) + " | 1/rate ms |")
    L.append("|---|---:|" + "---:|" * (len(STEPS) + 1))
    for cfg, label in CONFIGS:
        if not cfg.startswith("fr_"):
            continue
        for p in senders:
            rs = [r for r in results if r["cfg"] == cfg and r["p"] == p and r.get("steps")]
            if not rs:
                continue
            cells = [f"{statistics.median(r['steps'].get(k, float('nan')) for r in rs):.2f}" for k in STEPS]
            L.append(f"| {label} | {p} | " + " | ".join(cells) + f" | {1e3 / med[cfg, p]['ips']:.2f} |")
    fr_logs = [r for r in results if r["cfg"].startswith("fr_") and r["log"]]
    if fr_logs:
        L.append("")
        L.append(f"firstread logged warnings/errors in {len(fr_logs)} of "
                 f"{sum(1 for r in results if r['cfg'].startswith('fr_'))} runs (first lines):")
        L.append("")
        L.append("```")
        L.extend(fr_logs[0]["log"].splitlines()[:10])
        L.append("```")
    L.append("")
    L.append("The machine is small and shared, so absolute numbers are noisy; compare the ratios "
             "within one run. Rerun with:")
    L.append("")
    L.append("```sh")
    L.append(f"python3 scripts/bench_ingest.py --n {args.n}")
    L.append("```")
    L.append("")
    write_markdown(out, L)


# `firstread serve` (listener and workers) or `firstread listen` (--role)
ROLE = "serve"


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="instances per run (default 2000)")
    ap.add_argument("--senders", default="1,4", help="comma-separated sender counts (default 1,4)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    ap.add_argument("--out", default=str(REPO / "docs/bench-ingest.md"), help="Markdown report")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--role", choices=("serve", "listen"), default="serve",
                    help="how firstread runs: serve (listener and workers, the default) or listen "
                         "(the listener role alone, as a separate listener process would)")
    args = ap.parse_args()
    global ROLE
    ROLE = args.role
    senders = [int(x) for x in args.senders.split(",") if x.strip()]
    if args.n < 1 or args.repeats < 1 or not senders or min(senders) < 1:
        die("--n, --repeats and --senders must be positive")

    preflight((STORESCP, STORESCU, ECHOSCU), "run scripts/bootstrap.sh")

    mach = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    log(f"work dir {work}")
    try:
        t = time.perf_counter()
        files = generate(args.n, work / "instances")
        gen_s = time.perf_counter() - t
        total_bytes = sum(f.stat().st_size for f in files)
        log(f"generated {len(files)} instances ({total_bytes / 1e6:.0f} MB) in {gen_s:.1f} s")
        os.sync()
        results = []
        for rep in range(args.repeats):
            for cfg, _ in CONFIGS:
                for p in senders:
                    tag = f"{cfg}-p{p}-r{rep + 1}"
                    results.append(run_once(cfg, p, files, total_bytes, work, tag))
                    if not args.keep:
                        shutil.rmtree(work / "runs" / tag)
                    os.sync()  # leave no dirty pages of this run to the next one
        write_report(Path(args.out), args, senders, results, mach, total_bytes / len(files),
                     total_bytes, gen_s)
        log(f"wrote {args.out}")
        print(Path(args.out).read_text())
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
