#!/usr/bin/env python3
"""Benchmark of `amikey copy` (issue 10): one producer AMI set copied into M consumer accounts,
each under its own key per region, on moto behind the latency relay. Prints figures side by side;
asserts only its own set-up and that the re-run makes zero CopyImage calls. Every figure comes
from this one run.

Set-up: one moto process (tests/moto/server.py --min-amis) behind tests/moto/relay.py with a fixed
per-call delay (default 100 ms). One process, not shards: the session keys moto's AssumeRole hands
out are known only to the process that issued them, and push mode works by assumed role. Seeding
goes straight to moto (no delay): per region a producer key (alias/images) whose policy lets the
consumers use it (`amikey policy generate --consumer-account ...` plus the producer's root), a
one-volume AMI under it shared with every consumer by launch permission AND createVolumePermission;
per consumer account and region its own key behind alias/mine. Two identical AMI sets are seeded,
one for amikey, one for the ideal client, so both do the same copies from scratch.

  amikey   the release CLI, wall time from exec to exit:
             amikey copy --artifact SET --account A... --role-name amikey-copy
                         --kms-key-id alias/mine --ssm-path P --format json
           then the same command again (the re-run: asserted to make zero CopyImage calls).
  ideal    boto3 from pre-built clients, every independent call issued at once (up to 100 in
           flight: moto and the relay drop connections when a few hundred arrive together; a
           dropped call is retried, and the retries are printed), in the fewest dependent waves
           the same work allows:
             1 GetCallerIdentity; per region DescribeImages, DescribeImageAttribute; per account
               AssumeRole
             2 per region DescribeSnapshots, DescribeSnapshotAttribute; per account x region (as
               the consumer) DescribeKey alias/mine, DescribeImages (a previous copy, by tag),
               GetParameters
             3 per region DescribeKey and GetKeyPolicy of the source key
               (decide in memory: shared with the account, the key policy allows it, the
               destination key enabled and customer managed)
             4 CopyImage (Encrypted, KmsKeyId, ClientToken, the same tags)
             5 DescribeImages of the copy (available, its snapshots)
             6 DescribeSnapshots of the copy (every snapshot under the consumer's key)
             7 PutParameter x 4 (image_id, kms_key_arn, snapshot_ids, source_image_id)
           On moto a copy is available at once, so neither waits for EBS: the gap between the two
           is orchestration (waves, the concurrency bound) plus what moto's one Python process
           spends serving the calls each makes.
  bound    the ideal's dependent waves x delay: the floor on real AWS before the copies' own time.
Calls per run by action from the relay log: amikey first run, re-run, ideal.

Usage: bench/copies.py --binary PATH [--regions 17] [--accounts 5] [--delay 100] [--keep-log FILE]
"""

from __future__ import annotations

import os
import sys

# Named copies.py, not copy.py: Python puts a script's directory first on sys.path, and a copy.py
# there would shadow the standard library's `copy` (which botocore imports) for every bench script.
# publish.py is loaded by path below, so the directory is not needed on sys.path at all.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import botocore.credentials  # noqa: E402
import botocore.session  # noqa: E402
from botocore.config import Config  # noqa: E402

_spec = importlib.util.spec_from_file_location("publish", os.path.join(HERE, "publish.py"))
publish = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(publish)
ENV, REGIONS17, Bench, client = publish.ENV, publish.REGIONS17, publish.Bench, publish.client

PRODUCER = "123456789012"
ROLE = "amikey-copy"
IDEAL_WAVES = 7
# The ideal client's calls in flight at once. moto (werkzeug, listen backlog 128) and the relay
# (socketserver) drop connections when a few hundred arrive together; 100 is what they take.
IN_FLIGHT = 100
PARAMS = ("image_id", "kms_key_arn", "snapshot_ids", "source_image_id")
TAG_SOURCE = "amikey:source-image-id"


def accounts_for(n: int) -> list[str]:
    base = ["111122223333", "210987654321"]
    return (base + [f"{400000000000 + i}" for i in range(1, n)])[:n]


class CopyBench(Bench):
    def __init__(self, args: argparse.Namespace, tmp: str):
        super().__init__(argparse.Namespace(shards=1, delay=args.delay), tmp)
        self.args = args
        self.binary = args.binary

    def as_account(self, account: str, service: str, region: str):
        """A client straight to moto acting as `account` (x-moto-account-id), for seeding."""
        k = ("as", account, service, region)
        if k not in self.clients:
            c = client(self.shards[0], service, region, retries=3)
            c.meta.events.register("before-sign.*.*", lambda request, **_: request.headers.__setitem__(
                "x-moto-account-id", account))
            self.clients[k] = c
        return self.clients[k]

    # ------------------------------------------------------------------------------- seeding
    def producer_policy(self, consumers: list[str]) -> str:
        cmd = [self.binary, "policy", "generate"]
        for a in consumers:
            cmd += ["--consumer-account", a]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, PATH="/usr/bin:/bin", HOME=self.tmp))
        if p.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd)} exited {p.returncode}: {p.stderr}")
        stmts = json.loads(p.stdout)
        stmts.append({"Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{PRODUCER}:root"},
                      "Action": "kms:*", "Resource": "*"})
        return json.dumps({"Version": "2012-10-17", "Statement": stmts})

    def seed_producer(self, regions: list[str], consumers: list[str]) -> None:
        policy = self.producer_policy(consumers)

        def one(r: str) -> None:
            kms = self.direct("kms", r)
            arn = kms.create_key(Description="bench-copy-source", Policy=policy)["KeyMetadata"]["Arn"]
            kms.create_alias(AliasName="alias/images", TargetKeyId=arn)
            self.keys[r] = arn
        with ThreadPoolExecutor(len(regions)) as ex:
            list(ex.map(one, regions))

    def seed_set(self, regions: list[str], consumers: list[str]) -> dict[str, str]:
        """One shared AMI per region under the producer's key: region -> AMI."""
        def one(r: str) -> str:
            ami, snap = self.make_ami(r)
            ec2 = self.direct("ec2", r)
            users = [{"UserId": a} for a in consumers]
            ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": users})
            ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                          CreateVolumePermission={"Add": users})
            return ami
        with ThreadPoolExecutor(len(regions)) as ex:
            return dict(zip(regions, ex.map(one, regions)))

    def seed_consumers(self, regions: list[str], consumers: list[str]) -> dict[tuple[str, str], str]:
        """alias/mine, its own key, in every region of every consumer: (account, region) -> ARN."""
        def one(t: tuple[str, str]) -> str:
            a, r = t
            kms = self.as_account(a, "kms", r)
            arn = kms.create_key(Description=f"bench-copy-{a}")["KeyMetadata"]["Arn"]
            kms.create_alias(AliasName="alias/mine", TargetKeyId=arn)
            return arn
        pairs = [(a, r) for a in consumers for r in regions]
        with ThreadPoolExecutor(16) as ex:
            return dict(zip(pairs, ex.map(one, pairs)))

    # ------------------------------------------------------------------------------- amikey
    def copy(self, amis: dict[str, str], consumers: list[str], path: str) -> tuple[float, int, str, str]:
        args = ["copy", "--artifact", ",".join(f"{r}:{a}" for r, a in amis.items()), "--role-name", ROLE,
                "--kms-key-id", "alias/mine", "--ssm-path", path, "--format", "json"]
        for a in consumers:
            args += ["--account", a]
        env = dict(ENV, PATH="/usr/bin:/bin", HOME=self.tmp, AWS_ENDPOINT_URL=self.relay)
        t0 = time.perf_counter()
        p = subprocess.run([self.binary] + args, env=env, capture_output=True, text=True)
        return time.perf_counter() - t0, p.returncode, p.stdout, p.stderr

    # ------------------------------------------------------------------------------- ideal
    def ideal(self, amis: dict[str, str], consumers: list[str], path: str) -> tuple[float, int]:
        """The same copies, every independent call at once, IDEAL_WAVES dependent waves: (wall, retries)."""
        regions = list(amis)
        names = [f"{path}/{n}" for n in PARAMS]
        cfg = Config(retries={"mode": "standard", "total_max_attempts": 3}, max_pool_connections=64)
        # Pre-built clients. The consumers' clients share one credentials object per account,
        # filled in by wave 1's AssumeRole (botocore signs with the object's current values).
        prod = {(s, r): client(self.relay, s, r, retries=3) for s in ("ec2", "kms") for r in regions}
        sts = client(self.relay, "sts", "us-east-1", retries=3)
        creds: dict[str, botocore.credentials.Credentials] = {}
        cons = {}
        for a in consumers:
            bs = botocore.session.get_session()
            creds[a] = botocore.credentials.Credentials("pending", "pending", "pending")
            bs._credentials = creds[a]
            for r in regions:
                for s in ("ec2", "kms", "ssm"):
                    cons[(a, s, r)] = bs.create_client(s, region_name=r, endpoint_url=self.relay, config=cfg)
        items = [(a, r) for a in consumers for r in regions]
        pool = ThreadPoolExecutor(IN_FLIGHT)
        retries = 0

        def wave(calls: dict) -> dict:
            nonlocal retries
            futs = {k: pool.submit(fn, **kw) for k, (fn, kw) in calls.items()}
            out = {k: f.result() for k, f in futs.items()}
            retries += sum(v.get("ResponseMetadata", {}).get("RetryAttempts", 0) for v in out.values())
            return out

        t0 = time.perf_counter()
        # 1
        w = {"me": (sts.get_caller_identity, {})}
        for r in regions:
            w[("img", r)] = (prod[("ec2", r)].describe_images, {"ImageIds": [amis[r]]})
            w[("lp", r)] = (prod[("ec2", r)].describe_image_attribute,
                            {"ImageId": amis[r], "Attribute": "launchPermission"})
        for a in consumers:
            w[("role", a)] = (sts.assume_role, {"RoleArn": f"arn:aws:iam::{a}:role/{ROLE}",
                                                "RoleSessionName": "ideal"})
        res = wave(w)
        me = res["me"]["Account"]
        for a in consumers:
            c = res[("role", a)]["Credentials"]
            creds[a].access_key, creds[a].secret_key, creds[a].token = (
                c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        src = {r: res[("img", r)]["Images"][0] for r in regions}
        launch = {r: {p.get("UserId") for p in res[("lp", r)]["LaunchPermissions"]} for r in regions}
        src_snaps = {r: [b["Ebs"]["SnapshotId"] for b in src[r]["BlockDeviceMappings"] if "Ebs" in b] for r in regions}
        # 2
        w = {}
        for r in regions:
            w[("snaps", r)] = (prod[("ec2", r)].describe_snapshots, {"SnapshotIds": src_snaps[r]})
            for s in src_snaps[r]:
                w[("cvp", r, s)] = (prod[("ec2", r)].describe_snapshot_attribute,
                                    {"SnapshotId": s, "Attribute": "createVolumePermission"})
        for a, r in items:
            w[("dkey", a, r)] = (cons[(a, "kms", r)].describe_key, {"KeyId": "alias/mine"})
            w[("prev", a, r)] = (cons[(a, "ec2", r)].describe_images,
                                 {"Owners": ["self"], "Filters": [{"Name": f"tag:{TAG_SOURCE}", "Values": [amis[r]]}]})
            w[("params", a, r)] = (cons[(a, "ssm", r)].get_parameters, {"Names": names})
        res2 = wave(w)
        # 3
        src_keys = {r: {s["KmsKeyId"] for s in res2[("snaps", r)]["Snapshots"]} for r in regions}
        w = {}
        for r in regions:
            for k in src_keys[r]:
                w[("skey", r, k)] = (prod[("kms", r)].describe_key, {"KeyId": k})
                w[("pol", r, k)] = (prod[("kms", r)].get_key_policy, {"KeyId": k, "PolicyName": "default"})
        res3 = wave(w)
        # decide, in memory
        copies = {}
        for a, r in items:
            key = res2[("dkey", a, r)]["KeyMetadata"]
            ok = (a in launch[r]
                  and all(a in {p.get("UserId") for p in res2[("cvp", r, s)]["CreateVolumePermissions"]}
                          for s in src_snaps[r])
                  and all(res3[("skey", r, k)]["KeyMetadata"]["KeyManager"] == "CUSTOMER"
                          and allows(res3[("pol", r, k)]["Policy"], a) for k in src_keys[r])
                  and key["Enabled"] and key["KeyManager"] == "CUSTOMER"
                  and not res2[("prev", a, r)]["Images"])
            if not ok:
                sys.exit(f"bench: the ideal client's preconditions fail for {a} {r} (bench set-up)")
            tags = [{"Key": TAG_SOURCE, "Value": amis[r]}, {"Key": "amikey:source-account", "Value": me},
                    {"Key": "managed-by", "Value": "amikey"}]
            copies[(a, r)] = (cons[(a, "ec2", r)].copy_image, {
                "SourceImageId": amis[r], "SourceRegion": r, "Name": src[r]["Name"], "Encrypted": True,
                "KmsKeyId": key["Arn"], "ClientToken": f"ideal-{a}-{amis[r]}",
                "TagSpecifications": [{"ResourceType": t, "Tags": tags} for t in ("image", "snapshot")]})
        # 4
        res4 = wave(copies)
        # 5
        res5 = wave({(a, r): (cons[(a, "ec2", r)].describe_images, {"ImageIds": [res4[(a, r)]["ImageId"]]})
                     for a, r in items})
        img = {k: v["Images"][0] for k, v in res5.items()}
        snaps = {k: [b["Ebs"]["SnapshotId"] for b in i["BlockDeviceMappings"] if "Ebs" in b] for k, i in img.items()}
        # 6
        res6 = wave({(a, r): (cons[(a, "ec2", r)].describe_snapshots, {"SnapshotIds": snaps[(a, r)]})
                     for a, r in items})
        # 7
        w = {}
        for a, r in items:
            i, key = img[(a, r)], res2[("dkey", a, r)]["KeyMetadata"]["Arn"]
            if i["State"] != "available" or not all(
                    s["Encrypted"] and s["KmsKeyId"] == key for s in res6[(a, r)]["Snapshots"]):
                sys.exit(f"bench: the ideal client's copy in {a} {r} is not available under its key (bench set-up)")
            ssm = cons[(a, "ssm", r)]
            vals = [(i["ImageId"], "String", "aws:ec2:image"), (key, "String", "text"),
                    (",".join(snaps[(a, r)]), "StringList", "text"), (amis[r], "String", "text")]
            for n, (v, t, d) in zip(names, vals):
                w[(a, r, n)] = (ssm.put_parameter, {"Name": n, "Value": v, "Type": t, "DataType": d,
                                                    "Tags": [{"Key": "managed-by", "Value": "amikey"}]})
        wave(w)
        dt = time.perf_counter() - t0
        pool.shutdown()
        return dt, retries


def allows(policy: str, account: str) -> bool:
    """The key policy has an Allow for the account's root with kms:CreateGrant and kms:Decrypt."""
    need = {"kms:creategrant", "kms:decrypt"}
    have: set[str] = set()
    for s in json.loads(policy).get("Statement", []):
        p = s.get("Principal", {})
        p = p.get("AWS", []) if isinstance(p, dict) else p
        p = [p] if isinstance(p, str) else p
        if s.get("Effect") == "Allow" and (f"arn:aws:iam::{account}:root" in p or account in p or "*" in p):
            acts = s.get("Action", [])
            acts = [acts] if isinstance(acts, str) else acts
            if "kms:*" in acts:
                return True
            have |= {x.lower() for x in acts}
    return need <= have


def moto_ms(log: list[dict]) -> float:
    """Median time a call spent past the relay's delay (moto serving it, queueing included)."""
    xs = [c["ms"] - c["delay_ms"] for c in log]
    return statistics.median(xs) if xs else 0.0


def statuses(out: str) -> Counter:
    try:
        return Counter(i["status"] for i in json.loads(out)["items"])
    except (ValueError, KeyError, TypeError):
        return Counter()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the release amikey binary")
    ap.add_argument("--regions", type=int, default=17, help="AMI regions (default 17)")
    ap.add_argument("--accounts", type=int, default=5, help="consumer accounts (default 5)")
    ap.add_argument("--delay", type=int, default=100, help="injected latency per call in ms (default 100)")
    ap.add_argument("--keep-log", metavar="FILE", help="copy the relay's call log (JSON lines) here at the end")
    args = ap.parse_args()
    if not 1 <= args.regions <= len(REGIONS17):
        sys.exit(f"bench: --regions must be within 1..{len(REGIONS17)}")
    tmp = tempfile.mkdtemp(prefix="amikey-bench-copy-")
    b = CopyBench(args, tmp)
    try:
        return run(b, args)
    finally:
        b.stop()
        if args.keep_log and os.path.exists(b.relay_log):
            shutil.copy(b.relay_log, args.keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


def run(b: CopyBench, args: argparse.Namespace) -> int:
    regions = REGIONS17[: args.regions]
    consumers = accounts_for(args.accounts)
    n = len(regions) * len(consumers)
    print(f"amikey copy benchmark: {os.cpu_count()} CPUs, 1 moto process behind relay.py (--delay {args.delay} ms "
          f"per call); {len(regions)} regions x {len(consumers)} accounts = {n} copies; binary {args.binary}")
    t0 = time.perf_counter()
    b.seed_producer(regions, consumers)
    mine = b.seed_set(regions, consumers)
    theirs = b.seed_set(regions, consumers)
    b.seed_consumers(regions, consumers)
    print(f"   seeded in {time.perf_counter() - t0:.1f} s (straight to moto): a producer key and two shared AMI sets "
          f"per region, alias/mine in every account x region")

    def amikey_copy(label: str) -> tuple[float, Counter, float, Counter]:
        """One `amikey copy` of `mine`: wall, calls by action, moto ms/call, item statuses."""
        mark = b.log_mark()
        wall, code, out, err = b.copy(mine, consumers, "/bench/copy")
        log = b.log_since(mark)
        if code != 0:
            sys.exit(f"bench: amikey copy{label} exited {code}:\n{out[-3000:]}\n{err[-3000:]}")
        return wall, Counter(c["action"] for c in log), moto_ms(log), statuses(out)

    t_first, first, m_first, st_first = amikey_copy("")

    mark = b.log_mark()
    t_ideal, ideal_retries = b.ideal(theirs, consumers, "/bench/ideal")
    log = b.log_since(mark)
    ideal, m_ideal = Counter(c["action"] for c in log), moto_ms(log)

    t_again, again, m_again, st_again = amikey_copy(" re-run")

    delay = args.delay / 1000
    bound = IDEAL_WAVES * delay
    tot = lambda c: sum(c.values())  # noqa: E731
    fmt = lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.items()))  # noqa: E731
    print(f"\n1. wall time, {n} copies ({len(regions)} regions x {len(consumers)} accounts), {args.delay} ms per call")
    print(f"   {'':24} {'wall':>10} {'calls':>7} {'per copy':>9} {'moto ms/call':>13}   items")
    print(f"   {'amikey copy':24} {t_first * 1000:8.0f} ms {tot(first):>7} {tot(first) / n:>9.1f} {m_first:>13.1f}"
          f"   {fmt(st_first)}")
    print(f"   {'ideal (boto3)':24} {t_ideal * 1000:8.0f} ms {tot(ideal):>7} {tot(ideal) / n:>9.1f} {m_ideal:>13.1f}"
          f"   {IDEAL_WAVES} waves, <= {IN_FLIGHT} in flight, {ideal_retries} retries")
    print(f"   {'amikey copy, re-run':24} {t_again * 1000:8.0f} ms {tot(again):>7} {tot(again) / n:>9.1f} "
          f"{m_again:>13.1f}   {fmt(st_again)}")
    print(f"   {'bound':24} {bound * 1000:8.0f} ms            ({IDEAL_WAVES} dependent waves x {args.delay} ms; "
          "real AWS adds the copies' own time)")
    vs_bound = f"; amikey/bound {t_first / bound:.1f}x" if bound else ""
    print(f"   amikey/ideal {t_first / t_ideal:.2f}x{vs_bound}. moto ms/call: median time "
          "a call spent past the relay's delay (one Python process serving everything, queueing included)")

    print("\n2. API calls by action (relay log)")
    print(f"   {'action':<28} {'amikey':>7} {'re-run':>7} {'ideal':>7}")
    for act in sorted(set(first) | set(again) | set(ideal), key=str):
        print(f"   {str(act):<28} {first[act]:>7} {again[act]:>7} {ideal[act]:>7}")
    print(f"   {'total':<28} {tot(first):>7} {tot(again):>7} {tot(ideal):>7}")
    assert again["CopyImage"] == 0, f"the re-run made {again['CopyImage']} CopyImage calls"
    print(f"   re-run CopyImage calls: {again['CopyImage']} (asserted 0); re-run writes: "
          f"{sum(v for k, v in again.items() if k in ('CopyImage', 'PutParameter', 'CreateTags'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
