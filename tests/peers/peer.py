#!/usr/bin/env python3
"""pynetdicom peers with odd behaviour, driven by the integration tests.

Each subcommand prints one JSON object on stdout; the Rust test asserts on it.

  associate  HOST PORT --called AE --calling AE         -> how the association request ended
  contexts   HOST PORT --called AE --n N                -> result of every proposed context
  store      HOST PORT --called AE --max-pdu N --files F... -> status of each C-STORE
  odd        HOST PORT --called AE --out FILE           -> builds and sends a data set with odd
                                                           encodings (DS/IS padding, UN, private
                                                           undefined length), saves what was sent
"""
import argparse
import json
import sys

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
    generate_uid,
)
from pynetdicom import AE, build_context
from pynetdicom.sop_class import CTImageStorage, Verification

CT = "1.2.840.10008.5.1.4.1.1.2"


def make_ae(calling, max_pdu=16382):
    ae = AE(ae_title=calling)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 10
    return ae


def cmd_associate(a):
    ae = make_ae(a.calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate(a.host, a.port, ae_title=a.called)
    out = {"established": assoc.is_established, "rejected": assoc.is_rejected, "aborted": assoc.is_aborted}
    if assoc.is_established:
        status = assoc.send_c_echo()
        out["echo_status"] = int(status.Status) if status else None
        assoc.release()
    out.update(LAST_RJ)
    print(json.dumps(out))


# result/source/reason of the last A-ASSOCIATE-RJ received (PS3.8 9.3.4)
LAST_RJ = {}


def _install_rj_hook():
    """Record result/source/diagnostic of any A-ASSOCIATE-RJ pynetdicom receives: pynetdicom
    logs them but keeps no public handle on the primitive."""
    from pynetdicom.pdu_primitives import A_ASSOCIATE

    orig_setattr = A_ASSOCIATE.__setattr__

    def hook(self, name, value):
        orig_setattr(self, name, value)
        if name == "diagnostic" and value is not None:
            LAST_RJ["result"] = self.result
            LAST_RJ["source"] = self.result_source
            LAST_RJ["reason"] = value

    A_ASSOCIATE.__setattr__ = hook


def cmd_contexts(a):
    """Propose N contexts: storage ones, Q/R ones (not supported), and CT with a TS we refuse."""
    from pynetdicom import sop_class
    from pynetdicom.sop_class import ModalityWorklistInformationFind, StudyRootQueryRetrieveInformationModelFind

    ae = make_ae("CONTEXTS")
    storage = [uid for name, uid in sorted(vars(sop_class).items()) if name.endswith("Storage") and isinstance(uid, str)]
    contexts = []
    contexts.append(build_context(StudyRootQueryRetrieveInformationModelFind))
    contexts.append(build_context(ModalityWorklistInformationFind))
    contexts.append(build_context(CTImageStorage, [JPEGExtended12Bit]))
    for uid in storage:
        if len(contexts) >= a.n:
            break
        contexts.append(build_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    ae.requested_contexts = contexts[: a.n]
    assoc = ae.associate(a.host, a.port, ae_title=a.called)
    out = {"established": assoc.is_established, "proposed": len(ae.requested_contexts), "contexts": []}
    if assoc.is_established:
        for cx in assoc.accepted_contexts + assoc.rejected_contexts:
            out["contexts"].append(
                {"id": cx.context_id, "abstract_syntax": str(cx.abstract_syntax), "result": cx.result,
                 "transfer_syntax": [str(t) for t in cx.transfer_syntax]}
            )
        assoc.release()
    print(json.dumps(out))


def cmd_store(a):
    ae = make_ae("PYSTORE", max_pdu=a.max_pdu)
    files = [dcmread(f) for f in a.files]
    seen = set()
    for ds in files:
        key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(key[0], key[1])
    assoc = ae.associate(a.host, a.port, ae_title=a.called)
    out = {"established": assoc.is_established, "statuses": []}
    if assoc.is_established:
        out["acceptor_max_pdu"] = assoc.acceptor.maximum_length
        for ds in files:
            st = assoc.send_c_store(ds)
            out["statuses"].append(int(st.Status) if st else None)
        assoc.release()
    print(json.dumps(out))


def cmd_odd(a):
    """A CT data set with encodings that broke other nodes (peer-failure-kinds 12, Implicit VR
    private elements of undefined length, and an Explicit VR element written as UN)."""
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Odd^Peer"
    ds.PatientID = "ODD1"
    ds.Modality = "CT"
    # DS/IS values with spaces, leading zeros, empties
    ds.add(DataElement(0x00180050, "DS", " 002.50 "))  # Slice Thickness
    ds.add(DataElement(0x00200013, "IS", "0007"))  # Instance Number
    ds.add(DataElement(0x00200011, "IS", ""))  # Series Number, empty
    ds.add(DataElement(0x00200032, "DS", ["-250.0 ", " -250", "0080.5"]))  # Image Position
    ds.add(DataElement(0x00200037, "DS", ["1", "0", "0", "0", "1", "0"]))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    # a private sequence of undefined length
    item = Dataset()
    item.add_new(0x00091010, "LO", "private value")
    ds.add_new(0x00090010, "LO", "ODD PRIVATE")
    seq = DataElement(0x00091001, "SQ", Sequence([item]))
    seq.is_undefined_length = True
    ds.add(seq)
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = make_ae("ODDPEER")
    ae.add_requested_context(CT, ImplicitVRLittleEndian)
    assoc = ae.associate(a.host, a.port, ae_title=a.called)
    out = {"established": assoc.is_established, "sop_instance_uid": str(ds.SOPInstanceUID),
           "study_instance_uid": str(ds.StudyInstanceUID)}
    if assoc.is_established:
        st = assoc.send_c_store(ds)
        out["status"] = int(st.Status) if st else None
        assoc.release()
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("associate", "contexts", "store", "odd"):
        s = sub.add_parser(name)
        s.add_argument("host")
        s.add_argument("port", type=int)
        s.add_argument("--called", default="FIRSTREAD")
        s.add_argument("--calling", default="PYPEER")
        s.add_argument("--n", type=int, default=128)
        s.add_argument("--max-pdu", type=int, default=16382)
        s.add_argument("--files", nargs="*", default=[])
    a = p.parse_args()
    _install_rj_hook()
    {"associate": cmd_associate, "contexts": cmd_contexts, "store": cmd_store, "odd": cmd_odd}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
