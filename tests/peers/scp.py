#!/usr/bin/env python3
"""A pynetdicom Storage SCP that records what our SCU sends, for tests/send.rs.

  scp.py --port P [--ae AE] [--max-pdu N] [--statuses 0000,B000,...] [--contexts storage|uncompressed|verification]
         [--require-called-ae] [--delay SECONDS] [--save DIR] --out FILE

Prints "ready" once listening. After every association (released, aborted or closed) it rewrites FILE with
a JSON summary of everything received so far:

  {"associations": n, "released": n, "aborted": n,
   "pdus": [{"len": total PDU bytes incl. 6-byte header, "pdvs": [{"context": id, "command": bool, "last": bool,
             "len": fragment bytes without the message control header}]}],   # P-DATA-TF only
   "stores": [{"sop_instance": uid, "transfer_syntax": uid, "dataset_len": n, "status": returned status}]}

--statuses is used in turn, one per C-STORE (cycling); failures and warnings carry an Error Comment.
--max-pdu sets the Maximum Length we advertise (0 = unlimited; pynetdicom has no lower bound).
--delay sleeps before answering each C-STORE (to make the SCU's DIMSE timeout fire).
--save writes each received data set, byte for byte, to DIR/<n>.raw (n = index in "stores").
"""
import argparse
import json
import os
import sys
import threading
import time

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, Verification


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ae", default="PYSCP")
    p.add_argument("--max-pdu", type=int, default=16382)
    p.add_argument("--statuses", default="0000")
    p.add_argument("--contexts", choices=["storage", "uncompressed", "verification"], default="storage")
    p.add_argument("--require-called-ae", action="store_true")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--save", help="folder for the received data set bytes")
    p.add_argument("--lifetime", type=float, default=300.0, help="exit after this many seconds")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    statuses = [int(s, 16) for s in a.statuses.split(",")]
    lock = threading.Lock()
    summary = {"associations": 0, "released": 0, "aborted": 0, "pdus": [], "stores": []}

    def write_summary():
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.replace(tmp, a.out)

    def on_pdu(event):
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        pdvs = []
        for item in pdu.presentation_data_value_items:
            value = item.presentation_data_value or b""
            control = value[0] if value else 0
            pdvs.append(
                {
                    "context": item.presentation_context_id,
                    "command": bool(control & 1),
                    "last": bool(control & 2),
                    "len": max(len(value) - 1, 0),
                }
            )
        with lock:
            summary["pdus"].append({"len": len(pdu), "pdvs": pdvs})

    def on_store(event):
        if a.delay:
            time.sleep(a.delay)
        with lock:
            n = len(summary["stores"])
            code = statuses[n % len(statuses)]
            if a.save:
                with open(os.path.join(a.save, f"{n}.raw"), "wb") as f:
                    f.write(event.request.DataSet.getvalue())
            summary["stores"].append(
                {
                    "sop_instance": str(event.request.AffectedSOPInstanceUID),
                    "transfer_syntax": str(event.context.transfer_syntax),
                    "dataset_len": len(event.request.DataSet.getvalue()),
                    "status": code,
                }
            )
        ds = Dataset()
        ds.Status = code
        if code != 0:
            ds.ErrorComment = f"test status {code:04X}"
        return ds

    def on_released(event):
        with lock:
            summary["released"] += 1

    def on_aborted(event):
        with lock:
            summary["aborted"] += 1

    def on_close(event):
        with lock:
            summary["associations"] += 1
            write_summary()

    ae = AE(ae_title=a.ae)
    ae.maximum_pdu_size = a.max_pdu
    ae.require_called_aet = a.require_called_ae
    ae.network_timeout = 30
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    if a.contexts == "storage":
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    elif a.contexts == "uncompressed":
        ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_supported_context(Verification)

    handlers = [
        (evt.EVT_PDU_RECV, on_pdu),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_CONN_CLOSE, on_close),
    ]
    server = ae.start_server(("127.0.0.1", a.port), block=False, evt_handlers=handlers)
    print("ready", flush=True)
    try:
        time.sleep(a.lifetime)
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
