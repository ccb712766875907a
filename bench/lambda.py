#!/usr/bin/env python3
"""Benchmark of the Lambda function (issue 12), printed side by side; asserts only its own set-up.

1. Our `bootstrap` (release build) next to the Python baseline (bench/lambda/handler.py: boto3 under
   awslambdaric, a binxio Custom::KMSGrant-style provider), each under the same AWS Lambda Runtime
   Interface Emulator (aws-lambda-rie) on the same moto, one fresh emulator per run:
     init       the emulator's "Init Duration" (process start until the runtime asks for work)
     duration   the emulator's "Duration" of a Parameter Store Change that creates 2 grants (cold)
     warm       the same event again (grants in place: ours makes no write; the baseline's named
                CreateGrant returns the same grants)
     peak RSS   VmHWM of the function's process after both invocations
   Lambda bills duration × memory, so the GB-seconds of the cold invocation are printed too, at
   Lambda's 128 MB minimum.
2. Org rollout: --org-accounts × --org-regions (default 200 × 17) consumer functions converging
   after a key rotation, on --shards moto processes behind tests/moto/relay.py with --delay ms per
   call. Each function's converge is `amikey grant --ssm-path P --region R --retire-stale`, the
   library call `bootstrap` makes for the event (consumer::grant), run as that account
   (relay --account-from-key), --concurrency at a time. Wall time and calls by action until every
   grant is in place; checked: exactly one grant per key × region × grantee, none left on the old
   keys.

Usage: bench/lambda.py --bootstrap PATH --amikey PATH [--runs 5] [--org-accounts 200] [--org-regions 17]
                       [--shards 4] [--delay 100] [--concurrency 200] [--no-org | --only-org]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import REGIONS17, REPO, Bench, client, start  # noqa: E402

PATH = "/images/golden"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ci-launcher"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child_of(pid: int) -> int:
    deadline = time.time() + 10
    while time.time() < deadline:
        # The emulator is a Go program: the thread that started the function may be any of its
        # tasks, and each task lists only its own children.
        kids: list[str] = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        kids += f.read().split()
                except OSError:
                    pass
        except OSError:
            pass
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    sys.exit("bench: the emulator started no function process")


def one_run(rie: str, cmd: list[str], cwd: str, endpoint: str, tmp: str, n: int) -> dict:
    """A fresh moto state, one emulator, a cold and a warm invocation."""
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST")).read()
    kms = client(endpoint, "kms", "us-east-1")
    key = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
    client(endpoint, "ssm", "us-east-1").put_parameter(Name=PATH + "/kms_key_arn", Value=key, Type="String")
    port, api = free_port(), free_port()
    out = os.path.join(tmp, f"rie-{n}.out")
    env = {
        "PATH": "/usr/bin:/bin", "HOME": tmp, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true", "AMIKEY_SSM_PATH": PATH, "AMIKEY_GRANTEE_ROLES": ROLE,
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "60", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "LOG_LEVEL": "error",
    }
    p = subprocess.Popen([rie, "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                          "--runtime-api-address", f"127.0.0.1:{api}"] + cmd,
                         cwd=cwd, env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("bench: aws-lambda-rie did not listen")
                time.sleep(0.01)
        event = json.dumps({
            "version": "0", "id": "bench", "detail-type": "Parameter Store Change", "source": "aws.ssm",
            "account": ACCOUNT, "time": "2026-12-01T10:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{PATH}/kms_key_arn"],
            "detail": {"name": PATH + "/kms_key_arn", "type": "String", "operation": "Update"},
        }).encode()
        url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        answers = []
        for _ in range(2):
            answers.append(urllib.request.urlopen(url, data=event, timeout=60).read())
        fn = child_of(p.pid)
        peak = rss_kib(fn)
        grants = kms.list_grants(KeyId=key)["Grants"]
        if len(grants) != 2:
            sys.exit(f"bench: {' '.join(cmd)} made {len(grants)} grants, not 2: {answers}\n{open(out).read()}")
    finally:
        p.terminate()
        p.wait(10)
    reports = [line for line in open(out) if line.startswith("REPORT")]
    init = float(re.search(r"Init Duration: ([\d.]+) ms", reports[0]).group(1))
    durs = [float(re.search(r"\tDuration: ([\d.]+) ms", r).group(1)) for r in reports]
    return {"init": init, "cold": durs[0], "warm": durs[1], "rss": peak / 1024}


def functions(args: argparse.Namespace, tmp: str) -> None:
    rie = shutil.which("aws-lambda-rie") or os.path.join(
        os.environ.get("AMIKEY_PEERS_DIR", os.path.expanduser("~/.cache/amikey/peers")), "bin", "aws-lambda-rie")
    py = os.path.join(REPO, ".venv-lambda-py", "bin", "python")
    for need, how in [(rie, "tests/peers/build.sh"), (py, "scripts/setup")]:
        if not os.path.exists(need):
            sys.exit(f"bench: {need} missing: run {how}")
    p, endpoint = start([sys.executable, os.path.join(REPO, "tests/moto/server.py"), "--host", "127.0.0.1",
                         "--port", "0", "--min-amis", "--quiet"], os.path.join(tmp, "moto.port"),
                        os.path.join(tmp, "moto.log"))
    bootstrap = os.path.join(tmp, "bootstrap")
    shutil.copy(args.bootstrap, bootstrap)
    impls = {
        "amikey (Rust, provided.al2023)": ([bootstrap], tmp),
        "Python (boto3, awslambdaric)": ([py, "-m", "awslambdaric", "handler.handler"],
                                         os.path.join(REPO, "bench/lambda")),
    }
    results: dict[str, list[dict]] = {k: [] for k in impls}
    try:
        for i in range(args.runs):  # interleaved, so machine noise hits both alike
            for name, (cmd, cwd) in impls.items():
                results[name].append(one_run(rie, cmd, cwd, endpoint, tmp, len(results[name]) + 100 * i))
    finally:
        p.terminate()
        p.wait(10)
    print(f"1. one consumer function under aws-lambda-rie on moto (no added latency), median of {args.runs} cold starts")
    print(f"   {'':34} {'init ms':>9} {'cold 2 grants ms':>17} {'warm ms':>9} {'peak RSS MB':>12} {'GB-s cold@128MB':>16}")
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        gbs = (med["init"] + med["cold"]) / 1000 * 0.125
        print(f"   {name:34} {med['init']:9.1f} {med['cold']:17.1f} {med['warm']:9.1f} {med['rss']:12.1f} {gbs:16.5f}")


def all_grants(kms, key: str) -> list[dict]:
    """Every grant on `key`: ListGrants returns at most 50 per page."""
    out: list[dict] = []
    for page in kms.get_paginator("list_grants").paginate(KeyId=key):
        out += page["Grants"]
    return out


def org(args: argparse.Namespace, tmp: str) -> None:
    regions = REGIONS17[: args.org_regions]
    accounts = [f"{300000000000 + i}" for i in range(1, args.org_accounts + 1)]
    b = Bench(argparse.Namespace(shards=args.shards, delay=args.delay), tmp)
    # The relay started by Bench has no --account-from-key: start our own in front of the same shards.
    b.procs[-1].terminate()
    ups: list[str] = []
    for u in b.shards:
        ups += ["--upstream", u]
    b.relay_log = os.path.join(tmp, "org-relay.jsonl")
    rp, b.relay = start([sys.executable, os.path.join(REPO, "tests/moto/relay.py"), "--listen", "127.0.0.1:0",
                         "--shard-by-region", "--account-from-key", "--delay", str(args.delay), "--log",
                         b.relay_log] + ups, os.path.join(tmp, "org-relay.port"), os.path.join(tmp, "org-relay.log"))
    b.procs.append(rp)
    try:
        b.seed_keys(regions)
        old = dict(b.keys)

        def key_for(account: str) -> str:
            return "AKIDBENCH" + account

        # One SSM client per region, the account set per call: creating a boto3 client per account
        # x region (3,400 at 200 x 17) took minutes of CPU on its own.
        acting = threading.local()
        ssm = {r: client(b.shard(r), "ssm", r, retries=3) for r in regions}
        for c in ssm.values():
            c.meta.events.register("before-sign.*.*", lambda request, **_: request.headers.__setitem__(
                "x-moto-account-id", acting.account))

        def publish(keys: dict[str, str]) -> None:
            def one(t: tuple[str, str]) -> None:
                a, r = t
                acting.account = a
                ssm[r].put_parameter(Name=PATH + "/kms_key_arn", Value=keys[r], Type="String", Overwrite=True)
            with ThreadPoolExecutor(32) as ex:
                list(ex.map(one, [(a, r) for a in accounts for r in regions]))

        def converge() -> tuple[float, Counter, int]:
            mark = b.log_mark()
            t0 = time.monotonic()

            def one(t: tuple[str, str]) -> int:
                a, r = t
                env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "AWS_ACCESS_KEY_ID": key_for(a),
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": r, "AWS_ENDPOINT_URL": b.relay,
                       "AWS_EC2_METADATA_DISABLED": "true"}
                return subprocess.run([args.amikey, "grant", "--ssm-path", PATH, "--region", r, "--retire-stale",
                                       "--service", "autoscaling", "--grantee-role",
                                       f"arn:aws:iam::{a}:role/ci-launcher"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            with ThreadPoolExecutor(args.concurrency) as ex:
                codes = list(ex.map(one, [(a, r) for a in accounts for r in regions]))
            wall = time.monotonic() - t0
            calls = Counter(c["action"] for c in b.log_since(mark))
            return wall, calls, sum(1 for c in codes if c != 0)

        publish(old)
        first_wall, first_calls, first_failed = converge()
        for r in regions:  # the rotation: a new key per region, published to every account
            arn = b.direct("kms", r).create_key(Description="bench-new")["KeyMetadata"]["Arn"]
            b.keys[r] = arn
        publish(b.keys)
        wall, calls, failed = converge()
        again_wall, again_calls, again_failed = converge()
        bad = []
        for r in regions:
            grants = all_grants(b.direct("kms", r), b.keys[r])
            per = Counter(g["GranteePrincipal"] for g in grants)
            if len(per) != 2 * len(accounts) or set(per.values()) != {1}:
                bad.append(f"{r}: {len(per)} grantees, counts {sorted(set(per.values()))}")
            left = [g for g in all_grants(b.direct("kms", r), old[r])
                    if g.get("Name", "").startswith("amikey-")]
            if left:
                bad.append(f"{r}: {len(left)} amikey grants left on the old key")
    finally:
        b.stop()
    n = len(accounts) * len(regions)
    print(f"2. org rollout: {len(accounts)} accounts × {len(regions)} regions = {n} functions, {args.shards} moto shards, "
          f"{args.delay} ms per call, {args.concurrency} at a time")
    for label, w, c, f in [("first rollout", first_wall, first_calls, first_failed),
                           ("key rotation", wall, calls, failed), ("events again", again_wall, again_calls, again_failed)]:
        total = sum(c.values())
        top = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        print(f"   {label:14} wall {w:7.1f} s   calls {total:6} ({total / n:.1f} per function; {top})"
              + (f"   FAILED runs {f}" if f else ""))
    print("   check: " + ("exactly one grant per key × region × grantee, none left on the old keys" if not bad
                          else "; ".join(bad)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--amikey", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--org-accounts", type=int, default=200)
    ap.add_argument("--org-regions", type=int, default=17)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--delay", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=200)
    parts = ap.add_mutually_exclusive_group()
    parts.add_argument("--no-org", action="store_true", help="skip the org rollout (part 2)")
    parts.add_argument("--only-org", action="store_true", help="only the org rollout (part 2)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_org:
            functions(args, tmp)
            print()
        if not args.no_org:
            org(args, tmp)


if __name__ == "__main__":
    main()
