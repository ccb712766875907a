#!/usr/bin/env python3
"""Loopback relay in front of one or more moto servers: latency, throttling and faults, with a call log.
Standard library only.

    relay.py --listen 127.0.0.1:0 --port-file F --upstream http://127.0.0.1:5000 [--upstream URL ...]
             [--shard-by-region] [--delay 50-200] [--seed N] [--throttle 0.15]
             [--fail ACTION:N ...] [--close-mid-response ACTION:N ...] [--garbage ACTION:N ...]
             [--fault-region REGION ...] [--account N] [--log FILE]

* Threaded HTTP/1.1 with keep-alive towards the client; TCP_NODELAY on both sides (without it Nagle +
  delayed ACK add ~40 ms to each keep-alive response).
* Service, region and action come from the SigV4 credential scope (`Authorization`), the form body's
  `Action=` (EC2 / query protocols) or `X-Amz-Target` (JSON protocols).
* --shard-by-region: requests go to upstream[crc32(region) % len(upstreams)], so each region's state lives
  in one moto process. Requests with no region (e.g. POST /moto-api/reset) go to every upstream.
  Several upstreams need --shard-by-region.
* --delay LO-HI (or MS): uniform random delay in milliseconds before forwarding; --seed makes the
  delays and the throttling draws reproducible for a sequential client.
* --throttle P: answer that fraction of calls (not forwarded) with the service's throttling error, as the
  AWS SDKs classify it: EC2 `RequestLimitExceeded` (EC2 XML, HTTP 503); JSON protocols (KMS, SSM, ...)
  `ThrottlingException` (HTTP 400, `__type`, `x-amzn-ErrorType`, `x-amzn-query-error`); other query
  protocols (STS, IAM)
  `Throttling` (ErrorResponse XML, HTTP 400, `x-amzn-query-error: Throttling;Sender`).
* --fail ACTION:N: the first N calls of ACTION get HTTP 500 `InternalError` (not forwarded).
* --close-mid-response ACTION:N: the first N calls of ACTION are forwarded (they take effect), then half
  the response is sent and the connection closed.
* --garbage ACTION:N: the first N calls of ACTION are forwarded (they take effect), then answered 200
  with a body that is not XML/JSON.
* --fault-region REGION (repeatable): --fail, --close-mid-response and --garbage apply only to calls
  signed for these regions (a region that keeps failing while the others work).
* --account N: sets `x-moto-account-id: N` on every forwarded request (moto acts as account N).
* --account-from-key: a request signed with an access key id ending in 12 digits (e.g. AKIDBENCH123456789012)
  gets `x-moto-account-id` = those digits: many accounts through one relay to sharded moto, where an
  assumed-role session's keys are known only to the shard that issued them (bench/lambda.py).
* --log FILE: one JSON line per call: ts, service, region, action, status, ms, account, fault, upstream.

It only ever connects to the given upstreams, which must be loopback addresses, and serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KEY_RE = re.compile(r"Credential=(?P<key>[^/,\s]+)/")


def key_account(headers) -> str | None:
    """The account an access key id ending in 12 digits names (--account-from-key)."""
    m = KEY_RE.search(headers.get("Authorization", ""))
    return m.group("key")[-12:] if m and re.fullmatch(r".*\d{12}", m.group("key")) else None


CRED_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)/aws4_request")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_counts(items: list[str] | None, flag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or []:
        action, sep, n = item.rpartition(":")
        if not sep or not action or not n.isdigit():
            raise SystemExit(f"relay.py: {flag} expects ACTION:N, got {item!r}")
        out[action] = out.get(action, 0) + int(n)
    return out


def parse_delay(s: str | None) -> tuple[float, float]:
    if not s:
        return (0.0, 0.0)
    lo, _, hi = s.partition("-")
    lo_f = float(lo)
    hi_f = float(hi) if hi else lo_f
    if lo_f < 0 or hi_f < lo_f:
        raise SystemExit(f"relay.py: bad --delay {s!r} (want MS or LO-HI)")
    return (lo_f, hi_f)


class Upstream:
    def __init__(self, url: str):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname or not is_loopback(u.hostname):
            raise SystemExit(f"relay.py: upstream must be http:// on a loopback address, got {url!r}")
        self.url = url.rstrip("/")
        self.host = u.hostname
        self.port = u.port or 80
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            self.local.conn = conn
        if conn.sock is None:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, list[tuple[str, str]], bytes]:
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                return resp.status, resp.reason, resp.getheaders(), data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest, BrokenPipeError):
                conn.close()
                # a kept-alive connection the upstream had closed: retry once on a fresh one
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Relay:
    def __init__(self, args: argparse.Namespace):
        self.upstreams = [Upstream(u) for u in args.upstream]
        if len(self.upstreams) > 1 and not args.shard_by_region:
            raise SystemExit("relay.py: several --upstream need --shard-by-region")
        self.shard = args.shard_by_region
        self.delay = parse_delay(args.delay)
        self.throttle = float(args.throttle or 0.0)
        if not 0.0 <= self.throttle <= 1.0:
            raise SystemExit("relay.py: --throttle must be within 0..1")
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.faults = {
            "fail": parse_counts(args.fail, "--fail"),
            "close": parse_counts(args.close_mid_response, "--close-mid-response"),
            "garbage": parse_counts(args.garbage, "--garbage"),
        }
        self.fault_lock = threading.Lock()
        self.fault_regions = set(args.fault_region or [])
        self.account = args.account
        self.account_from_key = args.account_from_key
        self.log_lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1) if args.log else None

    def draw(self) -> tuple[float, bool]:
        with self.rng_lock:
            delay = self.rng.uniform(*self.delay) if self.delay[1] > 0 else 0.0
            throttled = self.throttle > 0 and self.rng.random() < self.throttle
        return delay, throttled

    def take_fault(self, action: str, region: str | None = None) -> str | None:
        if self.fault_regions and region not in self.fault_regions:
            return None
        with self.fault_lock:
            for kind in ("fail", "close", "garbage"):
                left = self.faults[kind].get(action, 0)
                if left > 0:
                    self.faults[kind][action] = left - 1
                    return kind
        return None

    def pick(self, region: str | None) -> list[Upstream]:
        if len(self.upstreams) == 1:
            return self.upstreams
        if region is None:
            return self.upstreams
        return [self.upstreams[zlib.crc32(region.encode()) % len(self.upstreams)]]

    def write_log(self, rec: dict[str, Any]) -> None:
        if self.log is None:
            return
        line = json.dumps(rec, separators=(",", ":"))
        with self.log_lock:
            self.log.write(line + "\n")


def classify(headers: Any, body: bytes, path: str) -> tuple[str | None, str | None, str | None, str]:
    """(service, region, action, protocol) of a request; protocol is ec2, query, json or other."""
    service = region = action = None
    m = CRED_RE.search(headers.get("Authorization", "") or "")
    if m:
        service, region = m.group("service"), m.group("region")
    target = headers.get("X-Amz-Target")
    if target:
        return service, region, target.rsplit(".", 1)[-1], "json"
    ctype = headers.get("Content-Type", "") or ""
    params: dict[str, list[str]] = {}
    if "x-www-form-urlencoded" in ctype and body:
        params = parse_qs(body.decode("utf-8", "replace"))
    query = urlsplit(path).query
    if not params.get("Action") and query:
        params = parse_qs(query)
    if params.get("Action"):
        action = params["Action"][0]
        return service, region, action, "ec2" if service == "ec2" else "query"
    return service, region, action, "other"


def error_response(protocol: str, status: int, code: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    rid = str(uuid.uuid4())
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        # __type and x-amzn-ErrorType carry the code for JSON protocols; x-amzn-query-error is what
        # awsQueryCompatible services (and their SDKs) read instead. All three agree.
        fault = "Sender" if status < 500 else "Receiver"
        return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid),
                        ("x-amzn-ErrorType", code), ("x-amzn-query-error", f"{code};{fault}")], body
    if protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>").encode()
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body
    body = (f'<ErrorResponse><Error><Type>{"Sender" if status < 500 else "Receiver"}</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>").encode()
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid),
                    ("x-amzn-query-error", f"{code};{'Sender' if status < 500 else 'Receiver'}")], body


def throttle_response(protocol: str) -> tuple[int, list[tuple[str, str]], bytes]:
    if protocol == "ec2":
        return error_response("ec2", 503, "RequestLimitExceeded", "Request limit exceeded.")
    if protocol == "json":
        return error_response("json", 400, "ThrottlingException", "Rate exceeded")
    return error_response("query", 400, "Throttling", "Rate exceeded")


def make_handler(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "amikey-relay"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, reason: str | None = None,
                  truncate: bool = False) -> None:
            self.send_response(status, reason)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if truncate:
                self.send_header("Connection", "close")
            self.end_headers()
            if truncate:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if self.command != "HEAD":
                self.wfile.write(body)

        def _handle(self) -> None:
            t0 = time.monotonic()
            body = self._read_body()
            service, region, action, protocol = classify(self.headers, body, self.path)
            delay, throttled = relay.draw()
            fault = None
            if delay:
                time.sleep(delay / 1000.0)
            status = 0
            upstream_url = None
            try:
                if throttled:
                    fault = "throttle"
                    status, headers, out = throttle_response(protocol)
                    self._send(status, headers, out)
                    return
                fault = relay.take_fault(action, region) if action else None
                if fault == "fail":
                    status, headers, out = error_response(protocol, 500, "InternalError",
                                                          "We encountered an internal error. Please try again.")
                    self._send(status, headers, out)
                    return
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                account = relay.account or (relay.account_from_key and key_account(self.headers))
                if account:
                    for k in [k for k in fwd if k.lower() == "x-moto-account-id"]:
                        del fwd[k]
                    fwd["x-moto-account-id"] = account
                fwd["Content-Length"] = str(len(body))
                result = None
                for up in relay.pick(region):
                    r = up.request(self.command, self.path, body, fwd)
                    if result is None:
                        result, upstream_url = r, up.url
                assert result is not None
                status, reason, headers, out = result
                if fault == "garbage":
                    self._send(200, [(k, v) for k, v in headers if k.lower() != "content-type"]
                               + [("Content-Type", "text/xml")], b"\x00\xffgarbage<<not-xml-or-json>>\xfe" * 3)
                    status = 200
                elif fault == "close":
                    self._send(status, headers, out, reason, truncate=True)
                else:
                    self._send(status, headers, out, reason)
            except Exception as e:  # upstream down or the like: tell the client, keep serving
                if not status:
                    status = 502
                    try:
                        s, h, b = error_response(protocol, 502, "InternalError", f"relay: upstream failed: {e}")
                        self._send(s, h, b)
                    except OSError:
                        pass
                    fault = fault or "upstream-error"
            finally:
                relay.write_log({
                    "ts": round(time.time(), 6),
                    "service": service,
                    "region": region,
                    "action": action,
                    "status": status,
                    "ms": round((time.monotonic() - t0) * 1000, 1),
                    "delay_ms": round(delay, 1),
                    "account": relay.account or (relay.account_from_key and key_account(self.headers))
                    or self.headers.get("x-moto-account-id"),
                    "fault": fault,
                    "upstream": upstream_url,
                    "method": self.command,
                    "path": self.path.split("?", 1)[0],
                })

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on, loopback only (default 127.0.0.1:0)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--upstream", action="append", required=True, help="moto server URL (repeatable)")
    p.add_argument("--shard-by-region", action="store_true", help="route by SigV4 region over the upstreams")
    p.add_argument("--delay", help="added latency in ms: MS or LO-HI (uniform)")
    p.add_argument("--seed", type=int, default=0, help="random seed for --delay and --throttle (default 0)")
    p.add_argument("--throttle", type=float, default=0.0, help="fraction of calls answered with a throttling error")
    p.add_argument("--fail", action="append", metavar="ACTION:N", help="HTTP 500 InternalError for the first N calls")
    p.add_argument("--close-mid-response", action="append", metavar="ACTION:N", help="send half a response, close")
    p.add_argument("--garbage", action="append", metavar="ACTION:N", help="200 with a garbage body")
    p.add_argument("--fault-region", action="append", metavar="REGION",
                   help="apply --fail/--close-mid-response/--garbage only to calls for this region (repeatable)")
    p.add_argument("--account", help="inject x-moto-account-id: N")
    p.add_argument("--account-from-key", action="store_true",
                   help="inject x-moto-account-id from the last 12 digits of the signing access key id")
    p.add_argument("--log", help="append one JSON line per call to this file")
    args = p.parse_args(argv)

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit() or not is_loopback(host):
        raise SystemExit(f"relay.py: --listen must be a loopback HOST:PORT, got {args.listen!r}")
    relay = Relay(args)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET

    server = Server((host.strip("[]"), int(port)), make_handler(relay))
    bound = server.server_address[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t = threading.Thread(target=server.serve_forever, name="relay", daemon=True)
    t.start()
    print(f"amikey-relay listening on http://{host}:{bound} -> {', '.join(u.url for u in relay.upstreams)}", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, args.port_file)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        if relay.log:
            relay.log.close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
