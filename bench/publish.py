#!/usr/bin/env python3
"""Benchmark of `amikey publish` and `amikey audit` on sharded moto behind the latency relay.
Prints figures (and the targets next to them); asserts nothing but its own set-up. Every figure
comes from this one run, so ratios between them hold on a noisy machine.

Set-up: N moto shards (tests/moto/server.py --min-amis), tests/moto/relay.py in front of them
with --shard-by-region and a fixed per-call delay (default 100 ms). Seeding goes straight to the
shards (no delay). One CMK (alias/bench) per region; one fresh one-volume AMI per region for each
measured first run, so every first run has the same work.

Publish (1, 5 and 17 regions; --ami-user, --snapshot-user, --ssm-path; median of --reps):
  amikey     the release CLI, wall time from exec to exit, first run and re-run.
  ideal      boto3 from pre-built clients, every independent call issued at once, in the fewest
             dependent waves the work allows (wave 1: DescribeImages, DescribeKey,
             DescribeImageAttribute, GetParameters, GetCallerIdentity; wave 2: DescribeSnapshots,
             DescribeSnapshotAttribute; wave 3: the writes), no retries: the floor this emulator
             allows (each moto shard is one Python process that serialises requests).
  bound      the pure critical path: dependent waves x delay (the figure for real AWS).
  sequential boto3, one call after another, as teams script it today: per region describe the
             image, its snapshot and key, check them, then share and put the three parameters.
Calls per run by action from the relay log, first run and re-run, next to the design minimum.
Peak RSS of the CLI (/usr/bin/time -v) for 17 regions.
Audit: --audit-amis AMIs (default 1000) across 4 regions (on 4 distinct shards), 10 % of them bad.

Usage: bench/run [--shards 4] [--delay 100] [--reps 3] [--audit-amis 1000] [--no-audit]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUMER = "111122223333"
REGIONS17 = [
    "us-east-1", "eu-west-1", "us-west-2", "ap-northeast-1", "eu-central-1", "us-east-2", "us-west-1",
    "eu-west-2", "eu-west-3", "eu-north-1", "ap-south-1", "ap-northeast-2", "ap-northeast-3",
    "ap-southeast-1", "ap-southeast-2", "ca-central-1", "sa-east-1",
]
WRITES = {"ModifyImageAttribute", "ModifySnapshotAttribute", "PutParameter", "AddTagsToResource"}
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_REGION": "us-east-1",
}


def start(argv: list[str], port_file: str, log: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(argv + ["--port-file", port_file], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if time.time() > deadline or p.poll() is not None:
            p.kill()
            sys.exit(f"bench: {argv[1]} did not start; see {log}")
        time.sleep(0.05)
    return p, "http://127.0.0.1:" + open(port_file).read().strip()


def client(endpoint: str, service: str, region: str, retries: int = 1):
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": retries}, max_pool_connections=50))


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: str):
        self.args, self.tmp = args, tmp
        py = sys.executable
        self.procs: list[subprocess.Popen] = []
        self.shards: list[str] = []
        for i in range(args.shards):
            p, url = start([py, os.path.join(REPO, "tests/moto/server.py"), "--host", "127.0.0.1", "--port", "0",
                            "--min-amis", "--quiet"], os.path.join(tmp, f"moto{i}.port"),
                           os.path.join(tmp, f"moto{i}.log"))
            self.procs.append(p)
            self.shards.append(url)
        self.relay_log = os.path.join(tmp, "relay.jsonl")
        ups: list[str] = []
        for u in self.shards:
            ups += ["--upstream", u]
        p, self.relay = start([py, os.path.join(REPO, "tests/moto/relay.py"), "--listen", "127.0.0.1:0",
                               "--shard-by-region", "--delay", str(args.delay), "--log", self.relay_log] + ups,
                              os.path.join(tmp, "relay.port"), os.path.join(tmp, "relay.log"))
        self.procs.append(p)
        self.keys: dict[str, str] = {}
        self.clients: dict[tuple[str, str, str], object] = {}

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()

    def shard(self, region: str) -> str:
        return self.shards[zlib.crc32(region.encode()) % len(self.shards)]

    def direct(self, service: str, region: str):
        k = ("direct", service, region)
        if k not in self.clients:
            self.clients[k] = client(self.shard(region), service, region, retries=3)
        return self.clients[k]

    def relayed(self, service: str, region: str):
        k = ("relay", service, region)
        if k not in self.clients:
            self.clients[k] = client(self.relay, service, region)
        return self.clients[k]

    def log_mark(self) -> int:
        return os.path.getsize(self.relay_log) if os.path.exists(self.relay_log) else 0

    def log_since(self, mark: int) -> list[dict]:
        with open(self.relay_log) as f:
            f.seek(mark)
            return [json.loads(line) for line in f if line.strip()]

    # ------------------------------------------------------------------------------- seeding
    def seed_keys(self, regions: list[str]) -> None:
        def one(r: str) -> None:
            kms = self.direct("kms", r)
            arn = kms.create_key(Description="bench")["KeyMetadata"]["Arn"]
            kms.create_alias(AliasName="alias/bench", TargetKeyId=arn)
            self.keys[r] = arn
        with ThreadPoolExecutor(len(regions)) as ex:
            list(ex.map(one, regions))

    def make_ami(self, region: str, enc: str = "cmk", volume: str | None = None) -> tuple[str, str]:
        ec2 = self.direct("ec2", region)
        if volume is None:
            kw = {}
            if enc == "cmk":
                kw = {"Encrypted": True, "KmsKeyId": self.keys[region]}
            elif enc == "aws":
                kw = {"Encrypted": True, "KmsKeyId": "alias/aws/ebs"}
            volume = ec2.create_volume(AvailabilityZone=region + "a", Size=8, **kw)["VolumeId"]
        snap = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
        ami = ec2.register_image(
            Name=f"bench-{snap}", RootDeviceName="/dev/xvda", Architecture="x86_64", VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": snap, "VolumeSize": 8, "DeleteOnTermination": True}}],
        )["ImageId"]
        return ami, snap

    def seed_amis(self, regions: list[str]) -> dict[str, tuple[str, str]]:
        with ThreadPoolExecutor(len(regions)) as ex:
            return dict(zip(regions, ex.map(self.make_ami, regions)))

    # ------------------------------------------------------------------------------- clients
    def amikey(self, args: list[str], timed_rss: bool = False) -> tuple[float, int, str, int | None]:
        env = dict(ENV, PATH="/usr/bin:/bin", HOME=self.tmp, AWS_ENDPOINT_URL=self.relay)
        cmd = [self.args.binary] + args
        rss_file = os.path.join(self.tmp, "time.txt")
        if timed_rss:
            cmd = ["/usr/bin/time", "-v", "-o", rss_file] + cmd
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        rss = None
        if timed_rss:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(rss_file).read())
            rss = int(m.group(1)) if m else None
        return dt, p.returncode, p.stdout + p.stderr, rss

    def publish_args(self, amis: dict[str, tuple[str, str]], path: str) -> list[str]:
        artifact = ",".join(f"{r}:{a}" for r, (a, _) in amis.items())
        return ["publish", "--artifact", artifact, "--kms-key-id", "alias/bench", "--ami-user", CONSUMER,
                "--snapshot-user", CONSUMER, "--ssm-path", path, "--format", "json"]

    def ideal(self, amis: dict[str, tuple[str, str]], path: str) -> tuple[float, int]:
        """Every independent call at once, three dependent waves, no retries; clients pre-built."""
        regions = list(amis)
        names = [f"{path}/image_id", f"{path}/kms_key_arn", f"{path}/snapshot_ids"]
        for r in regions:
            for s in ("ec2", "kms", "ssm"):
                self.relayed(s, r)
        sts = self.relayed("sts", "us-east-1")
        pool = ThreadPoolExecutor(max(8, 6 * len(regions)))
        t0 = time.perf_counter()
        # wave 1
        w1 = {}
        for r in regions:
            ami = amis[r][0]
            w1[(r, "img")] = pool.submit(self.relayed("ec2", r).describe_images, ImageIds=[ami])
            w1[(r, "key")] = pool.submit(self.relayed("kms", r).describe_key, KeyId="alias/bench")
            w1[(r, "lp")] = pool.submit(self.relayed("ec2", r).describe_image_attribute, ImageId=ami,
                                        Attribute="launchPermission")
            w1[(r, "params")] = pool.submit(self.relayed("ssm", r).get_parameters, Names=names)
        w1["sts"] = pool.submit(sts.get_caller_identity)
        res1 = {k: f.result() for k, f in w1.items()}
        # wave 2
        w2 = {}
        for r in regions:
            snaps = [b["Ebs"]["SnapshotId"] for b in res1[(r, "img")]["Images"][0]["BlockDeviceMappings"]]
            w2[(r, "snaps")] = pool.submit(self.relayed("ec2", r).describe_snapshots, SnapshotIds=snaps)
            for s in snaps:
                w2[(r, "cvp", s)] = pool.submit(self.relayed("ec2", r).describe_snapshot_attribute, SnapshotId=s,
                                                Attribute="createVolumePermission")
        res2 = {k: f.result() for k, f in w2.items()}
        # verify (in memory), then wave 3
        w3 = []
        for r in regions:
            key = res1[(r, "key")]["KeyMetadata"]["Arn"]
            snaps = res2[(r, "snaps")]["Snapshots"]
            assert all(s["Encrypted"] and s["KmsKeyId"] == key for s in snaps), r
            ec2, ssm = self.relayed("ec2", r), self.relayed("ssm", r)
            ami = amis[r][0]
            w3.append(pool.submit(ec2.modify_image_attribute, ImageId=ami,
                                  LaunchPermission={"Add": [{"UserId": CONSUMER}]}))
            for s in snaps:
                w3.append(pool.submit(ec2.modify_snapshot_attribute, SnapshotId=s["SnapshotId"],
                                      Attribute="createVolumePermission",
                                      CreateVolumePermission={"Add": [{"UserId": CONSUMER}]}))
            values = [(names[0], ami, "String", "aws:ec2:image"), (names[1], key, "String", "text"),
                      (names[2], ",".join(s["SnapshotId"] for s in snaps), "StringList", "text")]
            for n, v, t, d in values:
                w3.append(pool.submit(ssm.put_parameter, Name=n, Value=v, Type=t, DataType=d,
                                      Tags=[{"Key": "managed-by", "Value": "amikey"}]))
        for f in w3:
            f.result()
        dt = time.perf_counter() - t0
        pool.shutdown()
        return dt, 3

    def sequential(self, amis: dict[str, tuple[str, str]], path: str) -> float:
        """One call after another, as a script does it (clients made as it goes, no state read)."""
        t0 = time.perf_counter()
        for r, (ami, _) in amis.items():
            ec2 = client(self.relay, "ec2", r, retries=3)
            kms = client(self.relay, "kms", r, retries=3)
            ssm = client(self.relay, "ssm", r, retries=3)
            key = kms.describe_key(KeyId="alias/bench")["KeyMetadata"]["Arn"]
            img = ec2.describe_images(ImageIds=[ami])["Images"][0]
            snaps = [b["Ebs"]["SnapshotId"] for b in img["BlockDeviceMappings"] if "Ebs" in b]
            for s in ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]:
                if not s["Encrypted"] or s["KmsKeyId"] != key:
                    sys.exit(f"bench: sequential baseline found a bad snapshot in {r}")
            ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": CONSUMER}]})
            for s in snaps:
                ec2.modify_snapshot_attribute(SnapshotId=s, Attribute="createVolumePermission",
                                              CreateVolumePermission={"Add": [{"UserId": CONSUMER}]})
            ssm.put_parameter(Name=f"{path}/image_id", Value=ami, Type="String", DataType="aws:ec2:image",
                              Overwrite=True)
            ssm.put_parameter(Name=f"{path}/kms_key_arn", Value=key, Type="String", Overwrite=True)
            ssm.put_parameter(Name=f"{path}/snapshot_ids", Value=",".join(snaps), Type="StringList",
                              Overwrite=True)
        return time.perf_counter() - t0


def minimum(regions: int, snaps: int = 1) -> tuple[Counter, Counter]:
    """The design minimum per run: (first run, re-run) calls by action."""
    reads = Counter({"DescribeImages": regions, "DescribeKey": regions, "DescribeImageAttribute": regions,
                     "GetParameters": regions, "DescribeSnapshots": regions,
                     "DescribeSnapshotAttribute": regions * snaps, "GetCallerIdentity": 1})
    writes = Counter({"ModifyImageAttribute": regions, "ModifySnapshotAttribute": regions * snaps,
                      "PutParameter": 3 * regions})
    return reads + writes, reads


def ms(x: float) -> str:
    return f"{x * 1000:8.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True, help="the release amikey binary")
    ap.add_argument("--shards", type=int, default=4, help="moto processes behind the relay (default 4)")
    ap.add_argument("--delay", type=int, default=100, help="injected latency per call in ms (default 100)")
    ap.add_argument("--reps", type=int, default=3, help="first runs per figure; the median is printed (default 3)")
    ap.add_argument("--audit-amis", type=int, default=1000, help="AMIs for the audit figure (default 1000)")
    ap.add_argument("--no-audit", action="store_true", help="skip the audit figure")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="amikey-bench-")
    b = Bench(args, tmp)
    try:
        return run(b, args)
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(b: Bench, args: argparse.Namespace) -> int:
    print(f"amikey benchmark: {os.cpu_count()} CPUs, {args.shards} moto shards behind relay.py "
          f"(--shard-by-region --delay {args.delay}), {args.reps} reps (medians), binary {args.binary}")
    b.seed_keys(REGIONS17)
    delay = args.delay / 1000
    rows = []
    calls = {}
    for n in (1, 5, 17):
        regions = REGIONS17[:n]
        t_first, t_again, t_ideal, t_seq = [], [], [], []
        for rep in range(args.reps):
            amis = b.seed_amis(regions)
            mark = b.log_mark()
            dt, code, out, _ = b.amikey(b.publish_args(amis, f"/bench/a{n}r{rep}"))
            if code != 0:
                sys.exit(f"bench: amikey publish exited {code}:\n{out}")
            first_log = b.log_since(mark)
            mark = b.log_mark()
            dt2, code, out, _ = b.amikey(b.publish_args(amis, f"/bench/a{n}r{rep}"))
            if code != 0:
                sys.exit(f"bench: amikey re-run exited {code}:\n{out}")
            again_log = b.log_since(mark)
            t_first.append(dt)
            t_again.append(dt2)
            if rep == 0:
                calls[n] = (Counter(c["action"] for c in first_log), Counter(c["action"] for c in again_log))
            amis = b.seed_amis(regions)
            mark = b.log_mark()
            di, waves = b.ideal(amis, f"/bench/i{n}r{rep}")
            ideal_log = b.log_since(mark)
            if rep == 0:
                calls[(n, "ideal")] = Counter(c["action"] for c in ideal_log)
            t_ideal.append(di)
            amis = b.seed_amis(regions)
            t_seq.append(b.sequential(amis, f"/bench/s{n}r{rep}"))
        med = statistics.median
        rows.append((n, med(t_first), med(t_again), med(t_ideal), waves * delay, med(t_seq)))

    print("\n1. amikey publish wall time (--ami-user, --snapshot-user, --ssm-path; one 1-volume AMI per region)")
    print(f"   {'regions':>7} {'amikey':>11} {'re-run':>11} {'ideal':>11} {'bound':>11} {'sequential':>11}"
          f"   {'amikey/ideal':>12} {'sequential/amikey':>17}")
    for n, a, a2, i, bound, s in rows:
        print(f"   {n:>7} {ms(a):>11} {ms(a2):>11} {ms(i):>11} {ms(bound):>11} {ms(s):>11}"
              f"   {a / i:>11.2f}x {s / a:>16.1f}x")
    n, a, _, i, _, s = rows[-1]
    print(f"   targets at 17 regions: amikey <= 1.25x ideal: {a / i:.2f}x {'MET' if a / i <= 1.25 else 'MISSED'}; "
          f">= 8x faster than sequential: {s / a:.1f}x {'MET' if s / a >= 8 else 'MISSED'}")
    print("   ideal = every independent call at once, 3 dependent waves, no retries, pre-built clients;"
          f" bound = 3 waves x {args.delay} ms (real AWS floor)")

    print("\n2. API calls per run by action (17 regions): amikey first run / re-run / design minimum first / re-run")
    first, again = calls[17]
    mfirst, magain = minimum(17)
    ideal = calls[(17, "ideal")]
    actions = sorted(set(first) | set(again) | set(mfirst))
    print(f"   {'action':<28} {'first':>6} {'re-run':>7} {'min first':>10} {'min re-run':>11} {'ideal':>6}")
    for act in actions:
        print(f"   {act:<28} {first[act]:>6} {again[act]:>7} {mfirst[act]:>10} {magain[act]:>11} {ideal[act]:>6}")
    tot = lambda c: sum(c.values())  # noqa: E731
    print(f"   {'total':<28} {tot(first):>6} {tot(again):>7} {tot(mfirst):>10} {tot(magain):>11} {tot(ideal):>6}")
    wr = sum(v for k, v in again.items() if k in WRITES)
    print(f"   re-run writes: {wr}. Design minimum: first run R x (9 + 2S) + 1, re-run R x (5 + S) + 1 "
          f"(R regions, S snapshots per AMI, + 1 GetCallerIdentity); here S = 1")
    for n in (1, 5):
        f1, f2 = calls[n]
        m1, m2 = minimum(n)
        print(f"   {n:>2} region(s): first {tot(f1)} (min {tot(m1)}), re-run {tot(f2)} (min {tot(m2)})")

    amis = b.seed_amis(REGIONS17)
    _, code, out, rss = b.amikey(b.publish_args(amis, "/bench/rss"), timed_rss=True)
    print(f"\n3. peak RSS of the CLI, publish in 17 regions (/usr/bin/time -v): {rss / 1024:.1f} MiB" if rss else
          "\n3. peak RSS: /usr/bin/time missing")

    if not args.no_audit:
        audit(b, args)
    return 0


def audit(b: Bench, args: argparse.Namespace) -> None:
    # Four regions on four distinct shards when there are four.
    chosen: list[str] = []
    used: set[str] = set()
    for r in REGIONS17:
        s = b.shard(r)
        if s not in used or len(used) == len(b.shards):
            chosen.append(r)
            used.add(s)
        if len(chosen) == 4:
            break
    subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "POST", b.relay + "/moto-api/reset"], check=True)
    b.keys.clear()
    b.seed_keys(chosen)
    per = args.audit_amis // len(chosen)
    t0 = time.perf_counter()

    def seed_region(r: str) -> None:
        ec2 = b.direct("ec2", r)
        vols = {}
        for enc in ("cmk", "none", "aws"):
            kw = {}
            if enc == "cmk":
                kw = {"Encrypted": True, "KmsKeyId": b.keys[r]}
            elif enc == "aws":
                kw = {"Encrypted": True, "KmsKeyId": "alias/aws/ebs"}
            vols[enc] = ec2.create_volume(AvailabilityZone=r + "a", Size=8, **kw)["VolumeId"]
        for i in range(per):
            enc = "none" if i % 20 == 7 else "aws" if i % 20 == 13 else "cmk"
            ami, _ = b.make_ami(r, volume=vols[enc])
            if i % 50 == 3:
                ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": CONSUMER}]})

    with ThreadPoolExecutor(len(chosen)) as ex:
        list(ex.map(seed_region, chosen))
    seeded = time.perf_counter() - t0
    print(f"\n4. amikey audit: {per * len(chosen)} AMIs across {len(chosen)} regions ({', '.join(chosen)}; "
          f"seeded in {seeded:.1f} s), {args.delay} ms per call")
    for conc in (16, 64):
        mark = b.log_mark()
        dt, code, out, rss = b.amikey(["audit", "--regions", ",".join(chosen), "--concurrency", str(conc),
                                       "--format", "json"], timed_rss=True)
        log = b.log_since(mark)
        if code not in (0, 1):
            sys.exit(f"bench: audit exited {code}:\n{out[-2000:]}")
        summary = json.loads(out[: out.rindex("}") + 1])["summary"] if "{" in out else out
        by = Counter(c["action"] for c in log)
        print(f"   --concurrency {conc:>3}: {ms(dt)}, {len(log)} calls "
              f"({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}), peak RSS {rss / 1024:.1f} MiB")
        print(f"      {summary}")


if __name__ == "__main__":
    sys.exit(main())
