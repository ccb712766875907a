#!/usr/bin/env python3
"""Seed a (patched) moto server with KMS keys and encrypted AMIs, the way real AWS would build them.

    seed.py [--endpoint URL] [--account N] keys --regions r1,r2 [--alias alias/amikey-demo] [--multi-region]
    seed.py [--endpoint URL] [--account N] ami  --regions r1,r2 --key-for r1=KEYSPEC [--key-for r2=KEYSPEC ...]
                                                [--second-volume r1=KEYSPEC ...] [--name NAME]
    seed.py [--endpoint URL] [--account N] demo [--regions us-east-1,eu-west-1,us-west-2] [--alias alias/amikey-demo]

KEYSPEC: a key ARN, key id, alias name or alias ARN; `aws/ebs` (encrypted with the region's AWS managed
key); `none` (unencrypted). Each AMI is built as on AWS: CreateVolume (encrypted as asked) ->
CreateSnapshot -> DeleteVolume, per volume, then RegisterImage with the block-device mappings
(/dev/xvda root, /dev/sdb second volume). Output is one JSON object on stdout:

    keys: {"keys": {region: key_arn}}
    ami:  {"artifact": "r1:ami-..,r2:ami-..", "amis": {region: ami}, "snapshots": {region: [snap, ...]}}
    demo: both merged.

Static credentials testing/testing; default account 123456789012; --account N sends x-moto-account-id.
--endpoint defaults to $AMIKEY_MOTO_ENDPOINT, else http://127.0.0.1:5000.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_ACCOUNT = "123456789012"


def client(endpoint: str, service: str, region: str, account: str | None = None) -> Any:
    c = boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60),
    )
    if account:
        def add_header(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        c.meta.events.register("before-sign.*.*", add_header)
    return c


def parse_regions(s: str) -> list[str]:
    regions = [r.strip() for r in s.split(",") if r.strip()]
    if not regions:
        raise SystemExit("seed.py: --regions is empty")
    return regions


def parse_region_map(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        region, sep, spec = item.partition("=")
        if not sep or not region or not spec:
            raise SystemExit(f"seed.py: {flag} expects REGION=KEYSPEC, got {item!r}")
        out[region.strip()] = spec.strip()
    return out


def create_keys(endpoint: str, account: str | None, regions: list[str], alias: str | None,
                multi_region: bool) -> dict[str, str]:
    keys: dict[str, str] = {}
    if multi_region:
        primary_region = regions[0]
        kms = client(endpoint, "kms", primary_region, account)
        md = kms.create_key(Description="amikey multi-Region CMK", MultiRegion=True,
                            Tags=[{"TagKey": "amikey", "TagValue": "seed"}])["KeyMetadata"]
        keys[primary_region] = md["Arn"]
        for region in regions[1:]:
            replica = kms.replicate_key(KeyId=md["Arn"], ReplicaRegion=region)["ReplicaKeyMetadata"]
            keys[region] = replica["Arn"]
    else:
        for region in regions:
            kms = client(endpoint, "kms", region, account)
            md = kms.create_key(Description=f"amikey CMK {region}",
                                Tags=[{"TagKey": "amikey", "TagValue": "seed"}])["KeyMetadata"]
            keys[region] = md["Arn"]
    if alias:
        for region, arn in keys.items():
            client(endpoint, "kms", region, account).create_alias(AliasName=alias, TargetKeyId=arn.split("/")[-1])
    return dict(sorted(keys.items()))


def _volume_args(spec: str) -> dict[str, Any]:
    if spec == "none":
        return {}
    if spec == "aws/ebs":
        return {"Encrypted": True}
    return {"Encrypted": True, "KmsKeyId": spec}


def build_amis(endpoint: str, account: str | None, regions: list[str], key_for: dict[str, str],
               second: dict[str, str], name: str | None) -> dict[str, Any]:
    missing = [r for r in regions if r not in key_for]
    if missing:
        raise SystemExit(f"seed.py: no --key-for for region(s) {', '.join(missing)} (use REGION=none for unencrypted)")
    unknown = sorted(set(second) - set(regions))
    if unknown:
        raise SystemExit(f"seed.py: --second-volume for region(s) not in --regions: {', '.join(unknown)}")
    amis: dict[str, str] = {}
    snapshots: dict[str, list[str]] = {}
    run = uuid.uuid4().hex[:8]
    for region in sorted(regions):
        ec2 = client(endpoint, "ec2", region, account)
        volumes = [("/dev/xvda", key_for[region], 8)]
        if region in second:
            volumes.append(("/dev/sdb", second[region], 4))
        bdms = []
        snaps = []
        for device, spec, size in volumes:
            vol = ec2.create_volume(AvailabilityZone=f"{region}a", Size=size, VolumeType="gp3", **_volume_args(spec))
            snap = ec2.create_snapshot(VolumeId=vol["VolumeId"], Description=f"amikey seed {device} ({spec})")
            ec2.delete_volume(VolumeId=vol["VolumeId"])
            snaps.append(snap["SnapshotId"])
            bdms.append({"DeviceName": device,
                         "Ebs": {"SnapshotId": snap["SnapshotId"], "VolumeSize": size, "VolumeType": "gp3",
                                 "DeleteOnTermination": True}})
        image = ec2.register_image(
            Name=name or f"amikey-seed-{run}-{region}",
            Description="amikey seeded AMI",
            Architecture="x86_64",
            VirtualizationType="hvm",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=bdms,
        )
        amis[region] = image["ImageId"]
        snapshots[region] = snaps
    return {
        "artifact": ",".join(f"{r}:{amis[r]}" for r in sorted(amis)),
        "amis": dict(sorted(amis.items())),
        "snapshots": dict(sorted(snapshots.items())),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", default=os.environ.get("AMIKEY_MOTO_ENDPOINT", "http://127.0.0.1:5000"))
    p.add_argument("--account", help=f"account id (x-moto-account-id); default {DEFAULT_ACCOUNT}")
    sub = p.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keys", help="one CMK per region (or a multi-Region primary + replicas)")
    k.add_argument("--regions", required=True)
    k.add_argument("--alias", help="alias to create for the key in every region, e.g. alias/amikey-demo")
    k.add_argument("--multi-region", action="store_true", help="primary in the first region, replicas elsewhere")

    a = sub.add_parser("ami", help="one AMI per region, snapshots encrypted as asked")
    a.add_argument("--regions", required=True)
    a.add_argument("--key-for", action="append", metavar="REGION=KEYSPEC", help="root volume encryption (required per region)")
    a.add_argument("--second-volume", action="append", metavar="REGION=KEYSPEC", help="add /dev/sdb with its own snapshot")
    a.add_argument("--name", help="AMI name (default amikey-seed-<run>-<region>)")

    d = sub.add_parser("demo", help="keys + AMIs encrypted with them, everything correct")
    d.add_argument("--regions", default="us-east-1,eu-west-1,us-west-2")
    d.add_argument("--alias", default="alias/amikey-demo")
    d.add_argument("--multi-region", action="store_true")

    args = p.parse_args(argv)
    endpoint = args.endpoint.rstrip("/")
    regions = parse_regions(args.regions)
    if args.cmd == "keys":
        out: dict[str, Any] = {"keys": create_keys(endpoint, args.account, regions, args.alias, args.multi_region)}
    elif args.cmd == "ami":
        out = build_amis(endpoint, args.account, regions, parse_region_map(args.key_for, "--key-for"),
                         parse_region_map(args.second_volume, "--second-volume"), args.name)
    else:
        keys = create_keys(endpoint, args.account, regions, args.alias, args.multi_region)
        out = {"keys": keys}
        out.update(build_amis(endpoint, args.account, regions, keys, {}, None))
    json.dump(out, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
