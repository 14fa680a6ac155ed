#!/usr/bin/env python3
"""DICOMweb benchmark: firstread vs Orthanc + DICOMweb plugin, same run, same client.

Generates one 300-instance CT study (512x512, Explicit VR LE) from the 30 bundled slices in
data/ct/lung-dx-a0002-b40f/: slice i of 300 lies at z = z0 - i * 0.8 mm and carries the pixels of
the nearest source slice, with fresh Study/Series/SOP Instance UIDs. Beside it, --background-studies
small studies (64x64 crops of the same slices, --background-instances each, other patients and
dates) so that the index holds more than the one study and the study list has rows to sort.

Both servers start fresh in the same run and receive the same files with dcmtk `storescu`
(TCP_NODELAY=1, one association each):

  * firstread `listen` (DIMSE + HTTP, FIRSTREAD_HTTP__AUTH=none, a fresh PostgreSQL database
    dropped WITH (FORCE) afterwards, a temporary storage root)
  * Orthanc (Debian package `orthanc`) with its DICOMweb plugin (`orthanc-dicomweb`), root
    /dicom-web/, no authentication, its own SQLite index and storage, default plugin options
    (StudiesMetadata/SeriesMetadata "Full": metadata is read from the stored files)

After both hold every instance, the answers of both are checked (the study in the study list with
its attributes, one series of 300 instances, 300 instances with the generated SOP Instance UIDs,
300 metadata objects with a Pixel Data BulkDataURI, the frame's 524288 bytes equal to the stored
Pixel Data) and then each request is timed warm over one keep-alive `requests.Session` per server:
--warmup untimed requests per server, then --reps timed ones, firstread and Orthanc alternating.
A time is the wall time from sending the request until its whole body has been read. Median and
p95 (nearest rank) in ms, ratio = Orthanc median / firstread median (> 1: firstread faster).

The issue's target, 50 ms for a 300-instance study's QIDO and metadata answers, is checked
against firstread's p95 for the QIDO and metadata rows.

Requirements: works from a fresh checkout after

    scripts/bootstrap.sh                      # dcmtk, PostgreSQL (trust auth for
                                              # postgres@127.0.0.1), pydicom, Orthanc
    cargo build --release -p firstread        # target/release/firstread

Python: stdlib + pydicom (3.x) + numpy + requests. Orthanc: /usr/sbin/Orthanc and
/usr/share/orthanc/plugins/libOrthancDicomWeb.so (apt-get install orthanc orthanc-dicomweb).

Usage:
    python3 scripts/bench_dicomweb.py
    python3 scripts/bench_dicomweb.py --reps 100 --background-studies 0 --keep
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (ECHOSCU, FIRSTREAD_BIN, REPO, STORESCU, cpu_model, dcmtk_env, die,  # noqa: E402
                      firstread_built, firstread_env, fits_command_line, free_port, git, log, mem_gib,
                      new_instance, preflight, psql, source_slices, stop, tail, vm_hwm_kib, wait_echo,
                      write_markdown)

ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
N_INSTANCES = 300
SPACING_MM = 0.8
TARGET_MS = 50.0

QIDO_JSON = "application/dicom+json"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


# ------------------------------------------------------------------ data generation
def generate(out_dir: Path, n_background: int, per_background: int) -> dict:
    """The main study (N_INSTANCES slices) and the background studies; returns what was made."""
    sources = source_slices()
    sources.sort(key=lambda d: -float(d.ImagePositionPatient[2]))  # head first, z descending
    src_spacing = abs(float(sources[0].ImagePositionPatient[2]) - float(sources[1].ImagePositionPatient[2]))
    z0 = float(sources[0].ImagePositionPatient[2])
    out_dir.mkdir(parents=True, exist_ok=True)

    study, series, frame = generate_uid(None), generate_uid(None), generate_uid(None)
    sops: list[str] = []
    files: list[Path] = []
    for i in range(N_INSTANCES):
        j = min(len(sources) - 1, round(i * SPACING_MM / src_spacing))  # nearest source slice
        ds = sources[j]
        sop = new_instance(ds, study, series, frame, i + 1)
        z = z0 - i * SPACING_MM
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.2f}"]
        ds.SliceLocation = f"{z:.2f}"
        ds.SliceThickness = f"{SPACING_MM}"
        path = out_dir / f"main_{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop)
    # the Pixel Data a frame request must answer with (first instance of the study)
    first = pydicom.dcmread(files[0])
    frame_bytes = bytes(first.PixelData)

    bg_files: list[Path] = []
    crops = []
    for ds in sources:
        arr = ds.pixel_array[:64, :64].copy()
        crops.append(arr.astype(ds.pixel_array.dtype).tobytes())
    for k in range(n_background):
        st, se, fr = generate_uid(None), generate_uid(None), generate_uid(None)
        date = (dt.date(2020, 1, 1) + dt.timedelta(days=17 * k)).strftime("%Y%m%d")
        for i in range(per_background):
            j = i % len(sources)
            ds = sources[j]  # its elements are changed in place, as for the main study
            new_instance(ds, st, se, fr, i + 1)
            ds.PatientID = f"BENCH{k:04d}"
            ds.PatientName = f"Bench^Patient{k:04d}"
            ds.StudyDate = date
            ds.SeriesDate = date
            ds.AccessionNumber = f"ACC{k:06d}"
            ds.StudyDescription = f"Background study {k}"
            ds.Rows, ds.Columns = 64, 64
            ds.PixelData = crops[j]
            path = out_dir / f"bg{k:03d}_{i:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            bg_files.append(path)
    main = sources[0]
    return {
        "study": study, "series": series, "sops": sops, "files": files, "bg_files": bg_files,
        "frame_bytes": frame_bytes, "first_sop": sops[0],
        "study_description": str(main.get("StudyDescription", "")),
    }


# ------------------------------------------------------------------ helpers
def wait_http(url: str, proc: subprocess.Popen, errfile: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{url}: server exited early (rc={proc.returncode}); output:\n{tail(errfile)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    die(f"{url} did not answer 200 within {timeout}s; output:\n{tail(errfile)}")


def send(aet: str, port: int, files: list[Path], outfile: Path) -> float:
    """All files over one association; returns the wall time."""
    if not fits_command_line(files):
        die(f"{len(files)} file names are too long for one storescu command line: fewer background instances")
    t0 = time.perf_counter()
    with open(outfile, "wb") as out:
        r = subprocess.run([STORESCU, "-ta", "600", "-aec", aet, "-aet", "BENCH", "127.0.0.1", str(port)]
                           + [str(f) for f in files], stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env())
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        die(f"storescu to {aet} rc={r.returncode}:\n{tail(outfile)}")
    return wall


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    boundary = None
    for p in content_type.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    delim = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("part without a header/body separator")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included), in ms; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ servers
class Server:
    name: str
    base: str
    proc: subprocess.Popen
    errfile: Path


def launch(s: Server, cmd: list[str], env: dict, aet: str, ready: str, cwd: Path | None = None) -> Server:
    """Starts server s (output to s.errfile) and waits until GET <ready> answers 200 and aet C-ECHO."""
    with open(s.errfile, "wb") as err:
        s.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=err, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    s.aet = aet
    s.base = f"http://127.0.0.1:{s.http_port}/dicom-web"
    wait_http(f"http://127.0.0.1:{s.http_port}{ready}", s.proc, s.errfile)
    wait_echo(s.aet, s.dimse_port, s.proc, s.errfile)
    return s


def start_firstread(work: Path) -> Server:
    s = Server()
    s.name = "firstread"
    s.db = f"bench_dicomweb_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {s.db}")
    s.dimse_port, s.http_port = free_port(), free_port()
    root = work / "firstread-store"
    root.mkdir()
    s.errfile = work / "firstread.log"
    env = firstread_env(s.dimse_port, root, s.db, HTTP__LISTEN=f"127.0.0.1:{s.http_port}", HTTP__AUTH="none")
    return launch(s, [str(FIRSTREAD_BIN), "listen"], env, "FIRSTREAD", "/readyz", cwd=REPO)


def start_orthanc(work: Path) -> Server:
    s = Server()
    s.name = "Orthanc"
    s.db = None
    s.dimse_port, s.http_port = free_port(), free_port()
    d = work / "orthanc"
    d.mkdir()
    config = {
        "Name": "bench-dicomweb",
        "StorageDirectory": str(d / "storage"),
        "IndexDirectory": str(d / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": s.dimse_port,
        "HttpPort": s.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "Plugins": [ORTHANC_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }
    cfg = d / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    s.errfile = work / "orthanc.log"
    return launch(s, [ORTHANC_BIN, str(cfg)], dcmtk_env(), "ORTHANC", "/system")


def instance_count(s: Server, study: str) -> tuple[int, int]:
    """(instances of the study, instances in all)."""
    if s.db:
        one = int(psql(f"SELECT count(*) FROM instances WHERE study_instance_uid = '{study}'", s.db))
        return one, int(psql("SELECT count(*) FROM instances", s.db))
    stats = requests.get(f"http://127.0.0.1:{s.http_port}/statistics", timeout=30).json()
    found = requests.post(f"http://127.0.0.1:{s.http_port}/tools/find", timeout=30,
                          json={"Level": "Instance", "Query": {"StudyInstanceUID": study}}).json()
    return len(found), int(stats["CountInstances"])


# ------------------------------------------------------------------ requests and checks
def requests_of(g: dict) -> list[dict]:
    st, se, sop = g["study"], g["series"], g["first_sop"]
    return [
        {"key": "studies", "label": "QIDO study list (OHIF)", "target": True, "accept": QIDO_JSON,
         "path": "/studies?limit=101&offset=0&fuzzymatching=true"
                 "&includefield=00081030,00080060,00080090,00100030"},
        {"key": "series", "label": "QIDO series of the study", "target": True, "accept": QIDO_JSON,
         "path": f"/studies/{st}/series?includefield=00080021,00080031,0008103E,00200011"},
        {"key": "instances", "label": "QIDO instances of the series (300)", "target": True,
         "accept": QIDO_JSON, "path": f"/studies/{st}/series/{se}/instances"},
        {"key": "metadata", "label": "WADO-RS series metadata (300)", "target": True,
         "accept": QIDO_JSON, "path": f"/studies/{st}/series/{se}/metadata"},
        {"key": "frame", "label": "WADO-RS one frame (512x512x16 bit, as stored)", "target": False,
         "accept": FRAME_ACCEPT, "path": f"/studies/{st}/series/{se}/instances/{sop}/frames/1"},
    ]


def value(ds: dict, tag: str):
    v = ds.get(tag, {}).get("Value")
    return v[0] if v else None


def check(server: Server, req: dict, r: requests.Response, g: dict, n_studies: int) -> str:
    """Raises on a wrong answer; returns a short description of the answer."""
    if r.status_code != 200:
        raise AssertionError(f"HTTP {r.status_code}: {r.text[:300]}")
    k = req["key"]
    if k == "frame":
        parts = multipart_parts(r.headers.get("Content-Type", ""), r.content)
        if len(parts) != 1 or parts[0] != g["frame_bytes"]:
            raise AssertionError(f"{len(parts)} part(s), first {len(parts[0]) if parts else 0} bytes; "
                                 f"expected 1 part equal to the stored {len(g['frame_bytes'])} bytes")
        return f"1 part, {len(parts[0])} bytes"
    body = r.json()
    if not isinstance(body, list):
        raise AssertionError("not a JSON array")
    if k == "studies":
        ours = [d for d in body if value(d, "0020000D") == g["study"]]
        if len(body) != n_studies or len(ours) != 1:
            raise AssertionError(f"{len(body)} studies (expected {n_studies}), ours {len(ours)} time(s)")
        d = ours[0]
        if "00081030" not in d or "00100030" not in d or "00080090" not in d:
            raise AssertionError(f"includefield attributes missing: {sorted(d)}")
        n = value(d, "00201208")
        if n is not None and int(n) != N_INSTANCES:
            raise AssertionError(f"NumberOfStudyRelatedInstances {n}")
        mods = d.get("00080061", {}).get("Value")
        if mods is not None and "CT" not in mods:
            raise AssertionError(f"ModalitiesInStudy {mods}")
        return f"{len(body)} studies"
    if k == "series":
        if len(body) != 1 or value(body[0], "0020000E") != g["series"]:
            raise AssertionError(f"{len(body)} series: {[value(d, '0020000E') for d in body]}")
        n = value(body[0], "00201209")
        if n is not None and int(n) != N_INSTANCES:
            raise AssertionError(f"NumberOfSeriesRelatedInstances {n}")
        if value(body[0], "00080060") != "CT":
            raise AssertionError("Modality not CT")
        return "1 series"
    sops = {value(d, "00080018") for d in body}
    if len(body) != N_INSTANCES or sops != set(g["sops"]):
        raise AssertionError(f"{len(body)} results, {len(sops & set(g['sops']))} of the generated SOP UIDs")
    if k == "metadata":
        for d in body:
            pixel = d.get("7FE00010", {})
            if "BulkDataURI" not in pixel and "InlineBinary" not in pixel:
                raise AssertionError(f"Pixel Data neither BulkDataURI nor InlineBinary: {pixel}")
            if value(d, "00280010") != 512 or value(d, "00200032") is None:
                raise AssertionError("Rows or ImagePositionPatient missing")
        return f"{len(body)} instances, {len(body[0])} attributes in the first"
    return f"{len(body)} instances"


def timed_get(session: requests.Session, url: str, accept: str) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    r = session.get(url, headers={"Accept": accept}, timeout=120)
    _ = r.content  # the whole body
    return (time.perf_counter() - t0) * 1000, r


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def index_usage(db: str) -> tuple[list[tuple], list[tuple]]:
    psql("SELECT pg_stat_force_next_flush()", db) if pg_major() >= 15 else None
    time.sleep(1.0)
    idx = psql("SELECT relname, indexrelname, idx_scan, pg_size_pretty(pg_relation_size(indexrelid)) "
               "FROM pg_stat_user_indexes WHERE relname IN ('studies', 'series', 'instances') "
               "ORDER BY relname, indexrelname", db)
    tab = psql("SELECT relname, seq_scan, coalesce(idx_scan, 0), "
               "(xpath('/row/n/text()', query_to_xml('SELECT count(*) AS n FROM ' || relname, false, true, '')))[1], "
               "pg_size_pretty(pg_table_size(relid)), pg_size_pretty(pg_indexes_size(relid)) "
               "FROM pg_stat_user_tables WHERE relname IN ('studies', 'series', 'instances') ORDER BY relname", db)
    return ([tuple(l.split("|")) for l in idx.splitlines() if l],
            [tuple(l.split("|")) for l in tab.splitlines() if l])


_PG_MAJOR = None


def pg_major() -> int:
    global _PG_MAJOR
    if _PG_MAJOR is None:
        _PG_MAJOR = int(psql("SHOW server_version_num")) // 10000
    return _PG_MAJOR


# ------------------------------------------------------------------ report
def machine() -> dict:
    pg = psql("SELECT split_part(version(), ' ', 2)")
    orthanc = subprocess.run([ORTHANC_BIN, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "mem_gib": mem_gib(), "kernel": platform.release(),
            "pg": pg, "orthanc": orthanc.strip(), "rev": rev,
            "dirty": " (working tree had uncommitted changes to tracked files)" if dirty else "",
            "bin_mtime": firstread_built(), "load": os.getloadavg()[0], "load_end": None,
            "now": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}


def write_report(out: Path, args, m: dict, reqs: list[dict], times: dict, cpu: dict, sizes: dict, answers: dict,
                 ingest: dict, usage, n_bg_inst: int, plugin_version: str, rss: dict) -> None:
    L = []
    L.append("# DICOMweb benchmark: firstread vs Orthanc + DICOMweb plugin")
    L.append("")
    L.append(f"Generated by `scripts/bench_dicomweb.py` on {m['now']}. Machine: {m['nproc']} CPUs "
             f"({m['cpu']}), {m['mem_gib']:.0f} GiB RAM, Linux {m['kernel']}; PostgreSQL {m['pg']} on the "
             f"same machine; {m['orthanc']} with DICOMweb plugin {plugin_version} (Debian packages); "
             f"repository HEAD `{m['rev']}`{m['dirty']}, target/release/firstread built {m['bin_mtime']}; "
             f"1-min load average at the start of the run: {m['load']:.2f}, after the timed requests: "
             f"{m['load_end']:.2f} (other work on the machine shows up in the p95 columns).")
    L.append("")
    L.append(f"Data: one CT study of {N_INSTANCES} instances in one series (512x512, 16 bit, Explicit VR LE, "
             f"{SPACING_MM} mm apart, made from the 30 bundled slices) plus {args.background_studies} "
             f"background studies of {args.background_instances} small (64x64) CT instances each "
             f"({n_bg_inst} instances; other patients and dates), sent to both servers with dcmtk `storescu` "
             f"(TCP_NODELAY=1, one association: firstread {ingest['firstread']:.1f} s, Orthanc "
             f"{ingest['Orthanc']:.1f} s for all {N_INSTANCES + n_bg_inst} instances). Both servers were "
             f"started fresh in this run on 127.0.0.1; firstread `listen` with `http.auth = \"none\"` and a "
             f"fresh PostgreSQL database, Orthanc with its SQLite index and the plugin's default options "
             f"(series/study metadata \"Full\": read from the stored files).")
    L.append("")
    L.append(f"Each request: {args.warmup} untimed warm-up requests per server, then {args.reps} timed "
             f"requests per server, firstread and Orthanc alternating, over one keep-alive "
             f"`requests.Session` per server (HTTP/1.1, no compression). Time = from sending the request "
             f"until the whole body was read, in ms. Ratio = Orthanc median / firstread median (> 1: "
             f"firstread faster). Server CPU = user + system CPU time per timed request, in ms, of the server "
             f"process and, for firstread, of the PostgreSQL backends of its connection pool (from /proc, "
             f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks averaged over the timed requests; includes the "
             f"node's background work in that time); less disturbed by other load on the machine than the "
             f"wall times. Target: the issue's {TARGET_MS:.0f} ms for a {N_INSTANCES}-instance "
             f"study's QIDO and metadata answers, checked against firstread's p95. Every answer was checked "
             f"before timing (all {N_INSTANCES} generated SOP Instance UIDs in the instance list and in the "
             f"metadata, each metadata object with Rows, Image Position and a Pixel Data BulkDataURI; the "
             f"frame's bytes equal to the stored Pixel Data).")
    L.append("")
    L.append("| request | firstread median | firstread p95 | Orthanc median | Orthanc p95 | ratio | "
             f"target {TARGET_MS:.0f} ms (firstread p95) | server CPU firstread + its PostgreSQL / Orthanc | "
             "body firstread / Orthanc |")
    L.append("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    met_all = True
    for q in reqs:
        f, o = times["firstread"][q["key"]], times["Orthanc"][q["key"]]
        fm, fp, om, op = statistics.median(f), p95(f), statistics.median(o), p95(o)
        if q["target"]:
            ok = fp <= TARGET_MS
            met_all &= ok
            tgt = "met" if ok else f"**not met** ({fp:.1f} ms)"
        else:
            tgt = "n/a"
        sz = f"{sizes['firstread'][q['key']] / 1e3:.0f} kB / {sizes['Orthanc'][q['key']] / 1e3:.0f} kB"
        c = f"{cpu['firstread'][q['key']]:.1f} + {cpu['PostgreSQL'][q['key']]:.1f} / {cpu['Orthanc'][q['key']]:.1f}"
        L.append(f"| {q['label']} | {fm:.1f} | {fp:.1f} | {om:.1f} | {op:.1f} | {om / fm:.2f} | {tgt} | {c} | {sz} |")
    L.append("")
    missed = [f"{q['label']} (median {statistics.median(times['firstread'][q['key']]):.1f} ms, "
              f"p95 {p95(times['firstread'][q['key']]):.1f} ms)"
              for q in reqs if q["target"] and p95(times["firstread"][q["key"]]) > TARGET_MS]
    L.append(f"**Target ({TARGET_MS:.0f} ms, firstread p95 of the QIDO and metadata requests): "
             f"{'met' if met_all else 'NOT met'}{': ' + '; '.join(missed) if missed else ''}.** "
             f"Peak RSS after the run: firstread "
             f"{rss['firstread'] / 1024:.0f} MiB, Orthanc {rss['Orthanc'] / 1024:.0f} MiB.")
    L.append("")
    L.append("Requests (relative to each server's `/dicom-web`; `{study}` etc. are the generated UIDs):")
    L.append("")
    for q in reqs:
        path = (q["path"].replace(answers["study"], "{study}").replace(answers["series"], "{series}")
                .replace(answers["sop"], "{sop}"))
        L.append(f"- {q['label']}: `GET {path}`, Accept `{q['accept']}`; answers: firstread "
                 f"{answers['firstread'][q['key']]}, Orthanc {answers['Orthanc'][q['key']]}.")
    L.append("")
    idx, tab = usage
    L.append("firstread's PostgreSQL index: rows and sizes after the run; sequential and index scans counted "
             "from after ingest and the answer checks to the end of the timed requests (warm-up and timed "
             "requests, plus the node's own background queries: study assembly, heartbeat). A nested-loop "
             "join counts one index scan per joined row.")
    L.append("")
    L.append("| table | rows | seq scans | index scans | table size | index size |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for rel, seq, iscan, rows, tsize, isize in tab:
        L.append(f"| {rel} | {rows} | {seq} | {iscan} | {tsize} | {isize} |")
    L.append("")
    L.append("| index | scans | size |")
    L.append("|---|---:|---:|")
    for rel, name, scans, size in idx:
        L.append(f"| {rel}.{name} | {scans} | {size} |")
    L.append("")
    L.append("The machine is small and shared, so absolute numbers are noisy; compare the ratios within "
             "one run. Rerun with:")
    L.append("")
    L.append("```sh")
    L.append("cargo build --release -p firstread")
    L.append(f"python3 scripts/bench_dicomweb.py --reps {args.reps} --warmup {args.warmup} "
             f"--background-studies {args.background_studies} --background-instances {args.background_instances}")
    L.append("```")
    L.append("")
    write_markdown(out, L)


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30, help="timed requests per request and server (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
    ap.add_argument("--background-studies", type=int, default=20,
                    help="small studies stored besides the 300-instance one (default 20)")
    ap.add_argument("--background-instances", type=int, default=30,
                    help="64x64 instances per background study (default 30)")
    ap.add_argument("--out", default=str(REPO / "docs/bench-dicomweb.md"), help="Markdown report")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if args.reps < 1 or args.warmup < 0 or args.background_studies < 0 or args.background_instances < 1:
        die("--reps must be positive, --warmup and --background-studies not negative")

    if not os.path.isfile(ORTHANC_PLUGIN):
        die(f"{ORTHANC_PLUGIN} missing: apt-get install orthanc-dicomweb")
    preflight((STORESCU, ECHOSCU, ORTHANC_BIN), "run scripts/bootstrap.sh (dcmtk, orthanc)")

    mach = machine()
    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    log(f"work dir {work}")
    servers: list[Server] = []
    try:
        t = time.perf_counter()
        g = generate(work / "instances", args.background_studies, args.background_instances)
        files = g["files"] + g["bg_files"]
        log(f"generated {len(files)} instances in {time.perf_counter() - t:.1f} s")
        os.sync()

        fr = start_firstread(work)
        servers.append(fr)
        orth = start_orthanc(work)
        servers.append(orth)
        plugin_version = "unknown"
        try:
            plugin_version = requests.get(f"http://127.0.0.1:{orth.http_port}/plugins/dicom-web",
                                          timeout=10).json().get("Version", "unknown")
        except (requests.RequestException, ValueError):
            pass

        ingest = {}
        for s in servers:
            ingest[s.name] = send(s.aet, s.dimse_port, files, work / f"storescu-{s.name}.out")
            log(f"sent {len(files)} instances to {s.name} in {ingest[s.name]:.1f} s")
        deadline = time.monotonic() + 60
        for s in servers:
            while True:
                one, total = instance_count(s, g["study"])
                if one == N_INSTANCES and total == len(files):
                    break
                if time.monotonic() > deadline:
                    die(f"{s.name} holds {one} instances of the study, {total} in all "
                        f"(expected {N_INSTANCES}, {len(files)})")
                time.sleep(0.5)
        log("both servers hold every instance")

        reqs = requests_of(g)
        sessions = {s.name: requests.Session() for s in servers}
        n_studies = 1 + args.background_studies
        answers = {"study": g["study"], "series": g["series"], "sop": g["first_sop"]}
        sizes: dict = {s.name: {} for s in servers}
        for s in servers:
            answers[s.name] = {}
            for q in reqs:
                _, r = timed_get(sessions[s.name], s.base + q["path"], q["accept"])
                try:
                    answers[s.name][q["key"]] = check(s, q, r, g, n_studies)
                except (AssertionError, ValueError) as e:
                    die(f"{s.name} {q['label']}: wrong answer: {e}")
                sizes[s.name][q["key"]] = len(r.content)
        log("answers checked")
        psql("SELECT pg_stat_reset()", fr.db)

        times: dict = {s.name: {} for s in servers}
        cpu: dict = {s.name: {} for s in servers}
        cpu["PostgreSQL"] = {}
        for q in reqs:
            for s in servers:
                for _ in range(args.warmup):
                    timed_get(sessions[s.name], s.base + q["path"], q["accept"])
                times[s.name][q["key"]] = []
                cpu[s.name][q["key"]] = 0.0
            # firstread's connections to its database (the pool is warm now)
            backends = [int(x) for x in psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{fr.db}' "
                                             "AND pid <> pg_backend_pid()").split()]
            cpu["PostgreSQL"][q["key"]] = 0.0
            for _ in range(args.reps):
                for s in servers:
                    c0 = cpu_ms(s.proc.pid)
                    b0 = sum(cpu_ms(b) for b in backends) if s is fr else 0.0
                    ms, r = timed_get(sessions[s.name], s.base + q["path"], q["accept"])
                    cpu[s.name][q["key"]] += (cpu_ms(s.proc.pid) - c0) / args.reps
                    if s is fr:
                        cpu["PostgreSQL"][q["key"]] += (sum(cpu_ms(b) for b in backends) - b0) / args.reps
                    if r.status_code != 200 or len(r.content) != sizes[s.name][q["key"]]:
                        die(f"{s.name} {q['label']}: HTTP {r.status_code}, {len(r.content)} bytes "
                            f"(first answer: {sizes[s.name][q['key']]})")
                    times[s.name][q["key"]].append(ms)
            log(q["label"] + ": " + ", ".join(
                f"{s.name} median {statistics.median(times[s.name][q['key']]):.1f} ms "
                f"p95 {p95(times[s.name][q['key']]):.1f} ms" for s in servers))
        mach["load_end"] = os.getloadavg()[0]
        usage = index_usage(fr.db)
        rss = {s.name: vm_hwm_kib(s.proc.pid) for s in servers}
        for s in servers:
            if s.proc.poll() is not None:
                die(f"{s.name} died during the run; output:\n{tail(s.errfile)}")
        write_report(Path(args.out), args, mach, reqs, times, cpu, sizes, answers, ingest, usage,
                     len(g["bg_files"]), plugin_version, rss)
        log(f"wrote {args.out}")
        print(Path(args.out).read_text())
    finally:
        for s in servers:
            stop(s.proc)
            if s.db:
                psql(f"DROP DATABASE IF EXISTS {s.db} WITH (FORCE)")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
