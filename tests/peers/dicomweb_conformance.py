#!/usr/bin/env python3
"""DICOMweb conformance check of a running firstread node with a real client (dicomweb-client).

Stores the sample CT with STOW-RS, then searches (QIDO-RS) and retrieves (WADO-RS) it, and
checks what comes back against the source files and the node's stored files: retrieved
instances must be byte-identical to the stored files, metadata values equal to the source's,
frames and bulk data equal to the source Pixel Data. Prints one line per check; exits 1 on the
first failed check (with what differed).

Usage: dicomweb_conformance.py --url http://127.0.0.1:PORT/dicom-web --token T
                               --data data/ct/<folder> --storage <node storage root>
"""
import argparse
import copy
import io
import sys
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient


def check(cond, what, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def values(ds, keyword):
    v = ds.get(keyword)
    return None if v is None else str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--storage", required=True)
    a = ap.parse_args()

    files = sorted(Path(a.data).glob("1-*.dcm"))
    check(len(files) == 30, "sample has 30 slices", str(len(files)))
    source = {}
    for f in files:
        ds = pydicom.dcmread(f)
        source[ds.SOPInstanceUID] = ds
    first = next(iter(source.values()))
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    auth = {"Authorization": f"Bearer {a.token}"}

    # --- authentication
    anonymous = DICOMwebClient(a.url)
    try:
        anonymous.search_for_studies()
        check(False, "QIDO without a token is refused", "answered")
    except requests.HTTPError as e:
        check(e.response.status_code == 401, "QIDO without a token is refused", str(e.response.status_code))
    wrong = requests.get(f"{a.url}/studies", headers={"Authorization": "Bearer wrong"}, timeout=20)
    check(wrong.status_code == 401, "a wrong token is refused", str(wrong.status_code))

    client = DICOMwebClient(a.url, headers=auth)

    # --- STOW-RS
    response = client.store_instances(list(source.values()))
    referenced = response.get("ReferencedSOPSequence", [])
    check(len(referenced) == 30, "STOW-RS references 30 stored instances", str(len(referenced)))
    check("FailedSOPSequence" not in response, "STOW-RS reports no failure")
    check({r.ReferencedSOPInstanceUID for r in referenced} == set(source), "STOW-RS references the sent SOP Instances")

    # a second study (one instance with new UIDs) for paging and matching
    other = copy.deepcopy(first)
    other.StudyInstanceUID = pydicom.uid.generate_uid()
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    other.PatientID = "OTHER-PATIENT"
    other.PatientName = "Other^Person"
    other.StudyDate = "19990101"
    client.store_instances([other])

    # an instance whose File Meta Information names another SOP Instance: failed, A900
    inconsistent = copy.deepcopy(first)
    inconsistent.SOPInstanceUID = pydicom.uid.generate_uid()
    try:
        client.store_instances([inconsistent])
        check(False, "STOW-RS of an inconsistent instance fails", "stored")
    except requests.HTTPError as e:
        reasons = [f["00081197"]["Value"][0] for f in e.response.json()["00081198"]["Value"]]
        check(e.response.status_code == 409 and reasons == [0xA900], "File Meta/data set mismatch -> A900", str(reasons))

    # STOW-RS to a study the instance is not in: failed with a reason, HTTP 409
    buf = io.BytesIO()
    mismatched = copy.deepcopy(first)
    mismatched.SOPInstanceUID = pydicom.uid.generate_uid()
    mismatched.file_meta.MediaStorageSOPInstanceUID = mismatched.SOPInstanceUID
    pydicom.dcmwrite(buf, mismatched, enforce_file_format=True)
    body = b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + buf.getvalue() + b"\r\n--xyz--\r\n"
    r = requests.post(
        f"{a.url}/studies/{other.StudyInstanceUID}",
        data=body,
        headers={**auth, "Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'},
        timeout=20,
    )
    check(r.status_code == 409, "STOW-RS of an instance of another study answers 409", f"{r.status_code} {r.text}")
    failed = r.json().get("00081198", {}).get("Value", [])
    check(
        len(failed) == 1 and failed[0]["00081197"]["Value"] == [0xA901],
        "Failed SOP Sequence carries Failure Reason A901",
        r.text,
    )
    r = requests.post(f"{a.url}/studies", data=b"x", headers={**auth, "Content-Type": "application/json"}, timeout=20)
    check(r.status_code == 415, "STOW-RS of application/json answers 415", str(r.status_code))

    # --- QIDO-RS studies
    found = client.search_for_studies(search_filters={"PatientID": first.PatientID})
    check([s["0020000D"]["Value"][0] for s in found] == [study], "studies by PatientID", str(found))
    s0 = found[0]
    check(s0["00201208"]["Value"] == [30], "NumberOfStudyRelatedInstances = 30", str(s0.get("00201208")))
    check(s0["00201206"]["Value"] == [1], "NumberOfStudyRelatedSeries = 1", str(s0.get("00201206")))
    check(s0["00080061"]["Value"] == ["CT"], "ModalitiesInStudy = CT", str(s0.get("00080061")))
    check(s0["00081190"]["Value"][0] == f"{a.url}/studies/{study}", "study RetrieveURL", str(s0.get("00081190")))
    check(client.search_for_studies(search_filters={"PatientID": "NO-SUCH-ID"}) == [], "no match -> empty")
    both = client.search_for_studies()
    check(len(both) == 2, "all studies", str(len(both)))
    page = client.search_for_studies(limit=1, offset=1)
    check(len(page) == 1 and page[0]["0020000D"]["Value"] != both[0]["0020000D"]["Value"], "limit/offset page")
    name = str(first.PatientName)
    if name:
        hits = client.search_for_studies(search_filters={"PatientName": name[:2].lower() + "*"})
        check(study in [h["0020000D"]["Value"][0] for h in hits], "PatientName wildcard, case-insensitive")
    hits = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "oth"})
    check(len(hits) == 1 and hits[0]["00100020"]["Value"] == ["OTHER-PATIENT"], "fuzzy PatientName", str(hits))
    hits = client.search_for_studies(search_filters={"StudyDate": "19980101-19991231"})
    check([h["00100020"]["Value"][0] for h in hits] == ["OTHER-PATIENT"], "StudyDate range", str(hits))
    hits = client.search_for_studies(search_filters={"StudyInstanceUID": f"1.2.3.999,{study}"})
    check(len(hits) == 1, "StudyInstanceUID list", str(len(hits)))
    hits = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    check(hits == [], "ModalitiesInStudy MR -> none")
    hits = client.search_for_studies(search_filters={"PatientID": first.PatientID}, fields=["00100030", "StudyID"])
    check("00100030" in hits[0], "includefield", str(hits[0].keys()))

    # --- QIDO-RS series and instances
    found = client.search_for_series(study)
    check([s["0020000E"]["Value"][0] for s in found] == [series], "series of the study", str(found))
    check(found[0]["00201209"]["Value"] == [30], "NumberOfSeriesRelatedInstances = 30")
    check(found[0]["00080060"]["Value"] == ["CT"], "series Modality")
    if "SeriesDate" in first:
        check(found[0].get("00080021", {}).get("Value") == [first.SeriesDate], "SeriesDate from the instances")
    found = client.search_for_series(search_filters={"Modality": "CT", "PatientID": first.PatientID})
    check(len(found) == 1, "series across studies by Modality and PatientID", str(len(found)))
    found = client.search_for_instances(study, series)
    check({i["00080018"]["Value"][0] for i in found} == set(source), "instances of the series")
    rows = {i["00280010"]["Value"][0] for i in found}
    check(rows == {int(first.Rows)}, "instance Rows", str(rows))
    found = client.search_for_instances(study, series, limit=10, offset=25)
    check(len(found) == 5, "instances page 25..30", str(len(found)))
    numbers = [i["00200013"]["Value"][0] for i in client.search_for_instances(study, series)]
    check(numbers == sorted(numbers), "instances in Instance Number order", str(numbers))

    # --- WADO-RS metadata
    metadata = client.retrieve_series_metadata(study, series)
    check(len(metadata) == 30, "series metadata has 30 instances", str(len(metadata)))
    by_uid = {m["00080018"]["Value"][0]: m for m in metadata}
    for uid, ds in source.items():
        m = by_uid[uid]
        ipp = [float(x) for x in m["00200032"]["Value"]]
        if [round(x, 3) for x in ipp] != [round(float(x), 3) for x in ds.ImagePositionPatient]:
            check(False, "metadata Image Position (Patient)", f"{uid}: {ipp}")
        uri = m["7FE00010"]["BulkDataURI"]
        if not uri.startswith(f"{a.url}/studies/{study}/series/{series}/instances/{uid}/"):
            check(False, "metadata Pixel Data BulkDataURI", uri)
    check(True, "metadata values and BulkDataURIs of all 30 instances")
    one = client.retrieve_instance_metadata(study, series, first.SOPInstanceUID)
    check(one["00100020"]["Value"] == [first.PatientID], "instance metadata PatientID")

    # --- WADO-RS retrieve: byte-identical to the stored files
    stored_root = Path(a.storage)
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    resp = client._http_get(f"{a.url}/studies/{study}/series/{series}", headers=accept)
    parts = list(client._decode_multipart_message(resp, stream=False))
    check(len(parts) == 30, "series retrieval has 30 parts", str(len(parts)))
    stored = {p.stem: p.read_bytes() for p in (stored_root / "studies" / study / series).glob("*.dcm")}
    check(len(stored) == 30, "30 stored files", str(len(stored)))
    for part in parts:
        uid = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SOPInstanceUID
        if part != stored.get(uid):
            check(False, "retrieved instance byte-identical to the stored file", uid)
    check(True, "every retrieved instance byte-identical to its stored file")
    ds = client.retrieve_instance(study, series, first.SOPInstanceUID)
    check(ds.PixelData == first.PixelData, "retrieve_instance Pixel Data equals the source")
    check(ds.SOPInstanceUID == first.SOPInstanceUID and ds.PatientID == first.PatientID, "retrieve_instance attributes")
    whole = client.retrieve_study(study)
    check(len(whole) == 30, "study retrieval", str(len(whole)))

    # --- frames and bulk data
    frames = client.retrieve_instance_frames(
        study, series, first.SOPInstanceUID, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    check(len(frames) == 1 and frames[0] == first.PixelData, "frame 1 as stored equals the source Pixel Data")
    frames = client.retrieve_instance_frames(
        study, series, first.SOPInstanceUID, frame_numbers=[1], media_types=("application/octet-stream",)
    )
    check(frames[0] == first.PixelData, "frame 1 native equals the source Pixel Data")
    r = requests.get(
        f"{a.url}/studies/{study}/series/{series}/instances/{first.SOPInstanceUID}/frames/2", headers=auth, timeout=20
    )
    check(r.status_code == 404, "frame 2 of a single-frame instance -> 404", str(r.status_code))
    bulk = client.retrieve_bulkdata(by_uid[first.SOPInstanceUID]["7FE00010"]["BulkDataURI"])
    check(len(bulk) == 1 and bulk[0] == first.PixelData, "Pixel Data bulk data equals the source")
    r = requests.get(f"{a.url}/studies/1.2.3.4.5/metadata", headers=auth, timeout=20)
    check(r.status_code == 404, "unknown study metadata -> 404", str(r.status_code))
    r = requests.get(f"{a.url}/studies?limit=x", headers=auth, timeout=20)
    check(r.status_code == 400, "limit=x -> 400", str(r.status_code))
    print("all DICOMweb checks passed")


if __name__ == "__main__":
    main()
