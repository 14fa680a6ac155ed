#!/usr/bin/env python3
"""Notification receivers for tests/notify.rs, each a real implementation of its side:

  receivers.py webhook --port P --secret S --out FILE
      HTTP server. Checks X-Firstread-Signature (HMAC-SHA256 of the body, hmac.compare_digest) and answers
      401 "bad signature" on a mismatch; otherwise 204. Appends one JSON line per request to FILE:
      {"signature_ok": bool, "delivery_id": header, "event": header, "body": parsed JSON}.

  receivers.py hl7 --port P --out FILE [--ae-first N]
      MLLP listener from python-hl7 (hl7.mllp). Parses every ORU^R01 with hl7.parse and appends one JSON line:
      {"control_id", "ack", "msh": {...}, "pid": {...}, "obr": {...}, "obx": [{"set_id", "type", "id", "sub",
      "value", "units", "flag", "status", "range", "equipment"}]}. The first N messages are answered AE
      (application error), the rest AA.

  receivers.py fhir --port P --out FILE
      FHIR endpoint: parses each POSTed Bundle with fhir.resources (R4B, the R4 technical correction) and
      answers 400 with an OperationOutcome when it does not validate, else 200 with a transaction-response
      Bundle. Appends {"valid": bool, "error": str|null, "bundle": JSON} per request.

Prints "ready" once listening.
"""
import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def append(path, record):
    with LOCK:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def http_server(port, handle_post):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, ctype, answer = handle_post(self.headers, body)
            self.send_response(status)
            if answer:
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if answer:
                self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def webhook(args):
    secret = args.secret.encode()

    def handle(headers, body):
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(expected, headers.get("X-Firstread-Signature", ""))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        append(args.out, {"signature_ok": ok, "delivery_id": headers.get("X-Firstread-Delivery"),
                          "event": headers.get("X-Firstread-Event"), "body": parsed})
        if not ok:
            return 401, "text/plain", b"bad signature"
        return 204, "", b""

    http_server(args.port, handle)


def fhir(args):
    from fhir.resources.R4B.bundle import Bundle

    def handle(headers, body):
        try:
            data = json.loads(body)
            bundle = Bundle.model_validate(data)
            error = None
        except Exception as e:  # validation errors of any kind are the answer
            data, bundle, error = None, None, str(e)
        append(args.out, {"valid": error is None, "error": error, "bundle": data,
                          "content_type": headers.get("Content-Type")})
        if error is not None:
            outcome = {"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": "invalid", "diagnostics": error[:2000]}]}
            return 400, "application/fhir+json", json.dumps(outcome).encode()
        response = {"resourceType": "Bundle", "type": "transaction-response",
                    "entry": [{"response": {"status": "201 Created"}} for _ in bundle.entry or []]}
        return 200, "application/fhir+json", json.dumps(response).encode()

    http_server(args.port, handle)


def hl7_listener(args):
    import hl7
    import hl7.mllp

    count = {"n": 0}

    def field(segment, i):
        try:
            return str(segment[i])
        except (IndexError, KeyError):
            return ""

    async def client(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                count["n"] += 1
                code = "AE" if count["n"] <= args.ae_first else "AA"
                msh = message.segment("MSH")
                obr = message.segment("OBR")
                pid = message.segment("PID")
                obx = []
                for seg in message.segments("OBX"):
                    obx.append({"set_id": field(seg, 1), "type": field(seg, 2), "id": field(seg, 3),
                                "sub": field(seg, 4), "value": field(seg, 5), "units": field(seg, 6),
                                "range": field(seg, 7), "flag": field(seg, 8), "status": field(seg, 11),
                                "equipment": field(seg, 18)})
                append(args.out, {
                    "control_id": field(msh, 10), "ack": code,
                    "msh": {"type": field(msh, 9), "version": field(msh, 12), "charset": field(msh, 18),
                            "sending_application": field(msh, 3)},
                    "pid": {"id": field(pid, 3), "name": field(pid, 5), "birth_date": field(pid, 7),
                            "sex": field(pid, 8)},
                    "obr": {"placer": field(obr, 2), "filler": field(obr, 3), "service": field(obr, 4),
                            "status": field(obr, 25)},
                    "obx": obx,
                })
                ack = message.create_ack(ack_code=code)
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def serve():
        server = await hl7.mllp.start_hl7_server(client, host="127.0.0.1", port=args.port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="kind", required=True)
    w = sub.add_parser("webhook")
    w.add_argument("--secret", required=True)
    h = sub.add_parser("hl7")
    h.add_argument("--ae-first", type=int, default=0)
    f = sub.add_parser("fhir")
    for s in (w, h, f):
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--out", required=True)
    args = p.parse_args()
    {"webhook": webhook, "hl7": hl7_listener, "fhir": fhir}[args.kind](args)


if __name__ == "__main__":
    sys.exit(main())
