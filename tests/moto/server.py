#!/usr/bin/env python3
"""Start moto 5.2.5's server in-process with amikey's fidelity patches (amikey_moto/patches.py).

    python tests/moto/server.py [--host 127.0.0.1] [--port 0] [--port-file FILE] [--min-amis]

--port 0 picks a free port. The bound port is printed ("amikey-moto listening on http://HOST:PORT") and
written to --port-file (atomically) only once the server answers HTTP. --min-amis loads only the AMIs in
tests/moto/amis-min.json (MOTO_AMIS_PATH), so a fresh region is ready in milliseconds. The server is
threaded (one thread per connection, HTTP/1.1 keep-alive, TCP_NODELAY) and serves until SIGINT/SIGTERM.
State is reset with `POST /moto-api/reset`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_AMIS = os.path.join(HERE, "amis-min.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    p.add_argument("--port-file", help="write the bound port here once the server answers HTTP")
    p.add_argument("--min-amis", action="store_true",
                   help=f"load only the AMIs in {os.path.relpath(MIN_AMIS)} (fast start, small Describe* answers)")
    p.add_argument("--account", help="default account id for unsigned-header requests (MOTO_ACCOUNT_ID)")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    p.add_argument("--no-patches", action="store_true", help="vanilla moto, for comparison only (selftest --vanilla)")
    return p.parse_args(argv)


def build_server(host: str, port: int, quiet: bool, patches: bool = True):  # -> werkzeug BaseWSGIServer
    # Imports happen here, after the environment is set: moto reads MOTO_AMIS_PATH at import time.
    sys.path.insert(0, HERE)
    from amikey_moto import apply_all

    if patches:
        apply_all()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class Handler(MotoRequestHandler):
        # Keep-alive responses are written in pieces: without TCP_NODELAY, Nagle + delayed ACK adds ~40 ms.
        disable_nagle_algorithm = True

        def log_request(self, *args, **kwargs):  # noqa: ANN001
            if not quiet:
                super().log_request(*args, **kwargs)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=Handler)
    server.daemon_threads = True
    return server


def wait_http(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{host if ':' not in host else '[' + host + ']'}:{port}/moto-api/data.json"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read()
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.min_amis:
        os.environ["MOTO_AMIS_PATH"] = MIN_AMIS
    if args.account:
        os.environ["MOTO_ACCOUNT_ID"] = args.account
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    server = build_server(args.host, args.port, args.quiet, patches=not args.no_patches)
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)  # moto builds some URLs (e.g. SQS queue URLs) from it

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ANN001
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    t = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    t.start()
    wait_http(args.host, port)
    print(f"amikey-moto listening on http://{args.host}:{port}", flush=True)
    if args.port_file:
        write_port_file(args.port_file, port)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
