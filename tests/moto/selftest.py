#!/usr/bin/env python3
"""Self-check of amikey's patched moto server (and the relay): starts its own servers on free loopback
ports via server.py (and relay.py), exercises every patch with boto3, prints one line per check and a
final line `N passed, M failed`; exit status 1 if anything failed.

    .venv-moto/bin/python tests/moto/selftest.py [-k SUBSTRING] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from urllib.parse import urlsplit
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
A = "123456789012"
B = "111122223333"
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=5, read_timeout=30)


# ------------------------------------------------------------------------------------------------ infra

class Proc:
    """A child process (server.py or relay.py) started on a free port, reported through a port file."""

    def __init__(self, tmp: str, name: str, argv: list[str]):
        self.port_file = os.path.join(tmp, f"{name}.port")
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv + ["--port-file", self.port_file], stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.port_file):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start; log:\n{open(self.log_path, errors='replace').read()}")
            time.sleep(0.05)
        self.port = int(open(self.port_file).read().strip())
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


VANILLA = False  # selftest --vanilla: run the checks against unpatched moto (most must fail)


def start_server(tmp: str, name: str) -> Proc:
    return Proc(tmp, name, [sys.executable, os.path.join(HERE, "server.py"), "--host", "127.0.0.1", "--port", "0",
                            "--min-amis", "--quiet"] + (["--no-patches"] if VANILLA else []))


def start_relay(tmp: str, name: str, args: list[str]) -> Proc:
    return Proc(tmp, name, [sys.executable, os.path.join(HERE, "relay.py"), "--listen", "127.0.0.1:0"] + args)


def client(endpoint: str, service: str, region: str = "us-east-1", account: str | None = None,
           config: Config | None = None) -> Any:
    c = boto3.client(service, region_name=region, endpoint_url=endpoint, aws_access_key_id="testing",
                     aws_secret_access_key="testing", config=config or NO_RETRY)
    if account:
        c.meta.events.register("before-sign.*.*",
                               lambda request, **_: request.headers.__setitem__("x-moto-account-id", account))
    return c


def error_code(fn: Callable[[], Any]) -> str | None:
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


class Fail(AssertionError):
    pass


def expect(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def eq(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise Fail(f"{what}: got {got!r}, want {want!r}")


CHECKS: list[tuple[str, Callable[["Ctx"], None]]] = []


def check(name: str) -> Callable[[Callable[["Ctx"], None]], Callable[["Ctx"], None]]:
    def deco(fn: Callable[["Ctx"], None]) -> Callable[["Ctx"], None]:
        CHECKS.append((name, fn))
        return fn
    return deco


class Ctx:
    def __init__(self, tmp: str):
        self.tmp = tmp
        self.server = start_server(tmp, "moto-a")
        self._second: Proc | None = None
        self.url = self.server.url

    @property
    def second(self) -> Proc:
        if self._second is None:
            self._second = start_server(self.tmp, "moto-b")
        return self._second

    def c(self, service: str, region: str = "us-east-1", account: str | None = None) -> Any:
        return client(self.url, service, region, account)

    def stop(self) -> None:
        for p in (self._second, self.server):
            if p is not None:
                p.stop()


# ------------------------------------------------------------------------------------------------ builders

def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_key(ctx: Ctx, region: str = "us-east-1", account: str | None = None, alias: str | None = None,
             multi_region: bool = False) -> dict[str, Any]:
    kms = ctx.c("kms", region, account)
    md = kms.create_key(Description="selftest", MultiRegion=multi_region)["KeyMetadata"]
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=md["KeyId"])
    return md


def make_snapshot(ctx: Ctx, region: str, key: str | None, account: str | None = None, encrypted: bool | None = None,
                  size: int = 8) -> str:
    ec2 = ctx.c("ec2", region, account)
    args: dict[str, Any] = {}
    if key:
        args = {"Encrypted": True, "KmsKeyId": key}
    elif encrypted:
        args = {"Encrypted": True}
    vol = ec2.create_volume(AvailabilityZone=f"{region}a", Size=size, **args)
    snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])["SnapshotId"]
    ec2.delete_volume(VolumeId=vol["VolumeId"])
    return snap


def register(ctx: Ctx, region: str, snaps: list[str], account: str | None = None) -> str:
    ec2 = ctx.c("ec2", region, account)
    devices = ["/dev/xvda", "/dev/sdb", "/dev/sdc"]
    bdms = [{"DeviceName": devices[i], "Ebs": {"SnapshotId": s, "DeleteOnTermination": i == 0}} for i, s in enumerate(snaps)]
    return ec2.register_image(Name=uniq("selftest"), RootDeviceName="/dev/xvda", BlockDeviceMappings=bdms,
                              Architecture="x86_64", VirtualizationType="hvm")["ImageId"]


def image(ctx: Ctx, region: str, ami: str, account: str | None = None) -> dict[str, Any]:
    return ctx.c("ec2", region, account).describe_images(ImageIds=[ami])["Images"][0]


def snapshots_of(ctx: Ctx, region: str, ami: str, account: str | None = None) -> list[dict[str, Any]]:
    img = image(ctx, region, ami, account)
    ids = [b["Ebs"]["SnapshotId"] for b in img["BlockDeviceMappings"] if "Ebs" in b]
    snaps = {s["SnapshotId"]: s for s in ctx.c("ec2", region, account).describe_snapshots(SnapshotIds=ids)["Snapshots"]}
    return [snaps[i] for i in ids]


def ebs_key_arn(ctx: Ctx, region: str, account: str | None = None) -> str:
    return ctx.c("kms", region, account).describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]


# ------------------------------------------------------------------------------------------------ server

@check("server: /moto-api/reset answers 200")
def _(ctx: Ctx) -> None:
    import urllib.request

    req = urllib.request.Request(f"{ctx.url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        eq(r.status, 200, "reset status")


@check("server: --min-amis serves the Packer source AMI ami-04681a1dbd79675a5 in any region")
def _(ctx: Ctx) -> None:
    for region in ("us-east-1", "ap-southeast-2"):
        imgs = ctx.c("ec2", region).describe_images(ImageIds=["ami-04681a1dbd79675a5"])["Images"]
        eq(imgs[0]["Name"], "amzn2-ami-hvm-2.0.20180810-x86_64-gp2", f"{region} source AMI name")
    n = len(ctx.c("ec2").describe_images()["Images"])
    expect(n < 20, f"min AMIs: {n} images")


@check("server: 24 concurrent requests all succeed")
def _(ctx: Ctx) -> None:
    def one(i: int) -> int:
        c = client(ctx.url, "ec2" if i % 2 else "kms", ["us-east-1", "eu-west-1", "us-west-2"][i % 3])
        if i % 2:
            return len(c.describe_images(ImageIds=["ami-04681a1dbd79675a5"])["Images"])
        return len(c.list_keys()["Keys"]) + 1

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(24)))
    expect(all(r >= 1 for r in results), f"results {results}")


# ------------------------------------------------------------------------------------------------ EC2

@check("E1: CopyImage Encrypted+KmsKeyId (alias) -> copy's snapshot uses the key ARN of the destination region")
def _(ctx: Ctx) -> None:
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", None)])
    alias = f"alias/{uniq('e1')}"
    key = make_key(ctx, "eu-west-1", alias=alias)
    copy = ctx.c("ec2", "eu-west-1").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("copy"),
                                                 Encrypted=True, KmsKeyId=alias)["ImageId"]
    s = snapshots_of(ctx, "eu-west-1", copy)
    eq([(x["Encrypted"], x.get("KmsKeyId")) for x in s], [(True, key["Arn"])], "copy snapshot encryption")


@check("E1: CopyImage Encrypted without key -> region's aws/ebs key (KeyManager=AWS)")
def _(ctx: Ctx) -> None:
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", None)])
    copy = ctx.c("ec2", "us-west-2").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("copy"),
                                                 Encrypted=True)["ImageId"]
    s = snapshots_of(ctx, "us-west-2", copy)[0]
    eq(s.get("KmsKeyId"), ebs_key_arn(ctx, "us-west-2"), "KmsKeyId")
    md = ctx.c("kms", "us-west-2").describe_key(KeyId=s["KmsKeyId"])["KeyMetadata"]
    eq(md["KeyManager"], "AWS", "KeyManager of aws/ebs")


@check("E1: CopyImage KmsKeyId without Encrypted -> InvalidParameterDependency")
def _(ctx: Ctx) -> None:
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", None)])
    key = make_key(ctx)
    code = error_code(lambda: ctx.c("ec2").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("c"),
                                                        KmsKeyId=key["Arn"]))
    eq(code, "InvalidParameterDependency", "error code")


@check("E1: CopyImage of an encrypted AMI in-region, no key given -> stays encrypted with its key")
def _(ctx: Ctx) -> None:
    key = make_key(ctx)
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", key["Arn"])])
    copy = ctx.c("ec2").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("c"))["ImageId"]
    eq([(x["Encrypted"], x.get("KmsKeyId")) for x in snapshots_of(ctx, "us-east-1", copy)], [(True, key["Arn"])],
       "copy snapshot")


@check("E1: CopyImage copies every block-device mapping (2 volumes -> 2 new snapshots, re-encrypted)")
def _(ctx: Ctx) -> None:
    k1, k2 = make_key(ctx), make_key(ctx)
    src_snaps = [make_snapshot(ctx, "us-east-1", k1["Arn"]), make_snapshot(ctx, "us-east-1", k2["Arn"], size=4)]
    src = register(ctx, "us-east-1", src_snaps)
    dest_key = make_key(ctx, "eu-west-1")
    copy = ctx.c("ec2", "eu-west-1").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("c"),
                                                 Encrypted=True, KmsKeyId=dest_key["KeyId"])["ImageId"]
    img = image(ctx, "eu-west-1", copy)
    eq([b["DeviceName"] for b in img["BlockDeviceMappings"]], ["/dev/xvda", "/dev/sdb"], "devices")
    eq([b["Ebs"]["VolumeSize"] for b in img["BlockDeviceMappings"]], [8, 4], "sizes")
    snaps = snapshots_of(ctx, "eu-west-1", copy)
    expect(not set(s["SnapshotId"] for s in snaps) & set(src_snaps), "copy reuses source snapshots")
    eq([s["KmsKeyId"] for s in snaps], [dest_key["Arn"]] * 2, "copy keys")


@check("E1: CopyImage with an unknown key -> InvalidKMSKey.NotFound")
def _(ctx: Ctx) -> None:
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", None)])
    code = error_code(lambda: ctx.c("ec2").copy_image(SourceImageId=src, SourceRegion="us-east-1", Name=uniq("c"),
                                                        Encrypted=True, KmsKeyId="alias/does-not-exist"))
    eq(code, "InvalidKMSKey.NotFound", "error code")


@check("E2: CreateImage from an instance inherits each volume's encryption and key (root + data volume)")
def _(ctx: Ctx) -> None:
    k1, k2 = make_key(ctx), make_key(ctx)
    ec2 = ctx.c("ec2")
    inst = ec2.run_instances(ImageId="ami-04681a1dbd79675a5", MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             BlockDeviceMappings=[
                                 {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 10, "Encrypted": True,
                                                                     "KmsKeyId": k1["Arn"], "DeleteOnTermination": True}},
                                 {"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 5, "Encrypted": True,
                                                                    "KmsKeyId": k2["KeyId"]}},
                             ])["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=inst, Name=uniq("e2"))["ImageId"]
    img = image(ctx, "us-east-1", ami)
    eq([(b["DeviceName"], b["Ebs"]["VolumeSize"], b["Ebs"]["Encrypted"]) for b in img["BlockDeviceMappings"]],
       [("/dev/sdb", 5, True), ("/dev/xvda", 10, True)], "mappings")
    eq([s["KmsKeyId"] for s in snapshots_of(ctx, "us-east-1", ami)], [k2["Arn"], k1["Arn"]], "snapshot keys")


@check("E2: CreateImage from a default (unencrypted) instance -> unencrypted snapshot")
def _(ctx: Ctx) -> None:
    ec2 = ctx.c("ec2")
    inst = ec2.run_instances(ImageId="ami-04681a1dbd79675a5", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = ec2.create_image(InstanceId=inst, Name=uniq("e2"))["ImageId"]
    eq([s["Encrypted"] for s in snapshots_of(ctx, "us-east-1", ami)], [False], "encrypted")


@check("L1: RunInstances from an encrypted 2-volume AMI launches its mappings; CreateImage keeps the keys")
def _(ctx: Ctx) -> None:
    k1, k2 = make_key(ctx), make_key(ctx)
    src = register(ctx, "us-east-1", [make_snapshot(ctx, "us-east-1", k1["Arn"]), make_snapshot(ctx, "us-east-1", k2["Arn"], size=4)])
    ec2 = ctx.c("ec2")
    inst = ec2.run_instances(ImageId=src, MinCount=1, MaxCount=1)["Instances"][0]
    eq(sorted(b["DeviceName"] for b in inst["BlockDeviceMappings"]), ["/dev/sdb", "/dev/xvda"], "instance devices")
    vols = ec2.describe_volumes(VolumeIds=[b["Ebs"]["VolumeId"] for b in inst["BlockDeviceMappings"]])["Volumes"]
    eq(sorted((v["Size"], v["KmsKeyId"]) for v in vols), sorted([(8, k1["Arn"]), (4, k2["Arn"])]), "volumes")
    ami = ec2.create_image(InstanceId=inst["InstanceId"], Name=uniq("l1"))["ImageId"]
    eq(image(ctx, "us-east-1", ami)["RootDeviceName"], "/dev/xvda", "root device")
    eq(sorted(s["KmsKeyId"] for s in snapshots_of(ctx, "us-east-1", ami)), sorted([k1["Arn"], k2["Arn"]]), "keys")


@check("E3: DescribeImages reports Ebs.Encrypted, real SnapshotId, VolumeSize, DeleteOnTermination")
def _(ctx: Ctx) -> None:
    key = make_key(ctx)
    s1, s2 = make_snapshot(ctx, "us-east-1", key["Arn"], size=12), make_snapshot(ctx, "us-east-1", None, size=3)
    ami = register(ctx, "us-east-1", [s1, s2])
    bdms = image(ctx, "us-east-1", ami)["BlockDeviceMappings"]
    got = [(b["DeviceName"], b["Ebs"]["SnapshotId"], b["Ebs"]["VolumeSize"], b["Ebs"]["DeleteOnTermination"],
            b["Ebs"]["Encrypted"]) for b in bdms]
    eq(got, [("/dev/xvda", s1, 12, True, True), ("/dev/sdb", s2, 3, False, False)], "mappings")
    src = image(ctx, "us-east-1", "ami-04681a1dbd79675a5")["BlockDeviceMappings"][0]["Ebs"]
    eq(src.get("Encrypted"), False, "default AMI Encrypted")


@check("R1: RegisterImage honours BDMs: 2-volume AMI from two snapshots with different keys")
def _(ctx: Ctx) -> None:
    k1, k2 = make_key(ctx), make_key(ctx)
    s1, s2 = make_snapshot(ctx, "us-east-1", k1["Arn"]), make_snapshot(ctx, "us-east-1", k2["Arn"])
    ami = register(ctx, "us-east-1", [s1, s2])
    img = image(ctx, "us-east-1", ami)
    eq(img["RootDeviceName"], "/dev/xvda", "RootDeviceName")
    eq(img["RootDeviceType"], "ebs", "RootDeviceType")
    eq([s["KmsKeyId"] for s in snapshots_of(ctx, "us-east-1", ami)], [k1["Arn"], k2["Arn"]], "keys")
    code = error_code(lambda: ctx.c("ec2").delete_snapshot(SnapshotId=s1))
    eq(code, "InvalidSnapshot.InUse", "deleting a registered snapshot")


@check("R1: RegisterImage with an unknown snapshot -> InvalidSnapshot.NotFound")
def _(ctx: Ctx) -> None:
    code = error_code(lambda: register(ctx, "us-east-1", ["snap-0123456789abcdef0"]))
    eq(code, "InvalidSnapshot.NotFound", "error code")


@check("S1: CreateSnapshot of a volume encrypted by alias keeps the key, as ARN")
def _(ctx: Ctx) -> None:
    alias = f"alias/{uniq('s1')}"
    key = make_key(ctx, alias=alias)
    ec2 = ctx.c("ec2")
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, Encrypted=True, KmsKeyId=alias)
    eq(vol["KmsKeyId"], key["Arn"], "volume KmsKeyId")
    snap = ec2.create_snapshot(VolumeId=vol["VolumeId"])
    eq((snap["Encrypted"], snap.get("KmsKeyId")), (True, key["Arn"]), "snapshot")
    vol2 = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snap["SnapshotId"])
    eq((vol2["Encrypted"], vol2.get("KmsKeyId")), (True, key["Arn"]), "volume restored from the snapshot")


@check("S1: CopySnapshot Encrypted without key -> aws/ebs; KmsKeyId without Encrypted -> InvalidParameterDependency")
def _(ctx: Ctx) -> None:
    src = make_snapshot(ctx, "us-east-1", None)
    ec2 = ctx.c("ec2", "eu-west-1")
    new = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion="us-east-1", Encrypted=True)["SnapshotId"]
    s = ec2.describe_snapshots(SnapshotIds=[new])["Snapshots"][0]
    eq((s["Encrypted"], s.get("KmsKeyId")), (True, ebs_key_arn(ctx, "eu-west-1")), "copy")
    key = make_key(ctx, "eu-west-1")
    code = error_code(lambda: ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion="us-east-1", KmsKeyId=key["Arn"]))
    eq(code, "InvalidParameterDependency", "error code")
    new2 = ec2.copy_snapshot(SourceSnapshotId=src, SourceRegion="us-east-1", Encrypted=True,
                             KmsKeyId=key["KeyId"])["SnapshotId"]
    eq(ec2.describe_snapshots(SnapshotIds=[new2])["Snapshots"][0]["KmsKeyId"], key["Arn"], "copy with key id")


@check("E4: ModifySnapshotAttribute CreateVolumePermission.Add/Remove form (SDK/Packer) and OperationType form")
def _(ctx: Ctx) -> None:
    snap = make_snapshot(ctx, "us-east-1", None)
    ec2 = ctx.c("ec2")

    def users() -> list[str]:
        r = ec2.describe_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission")
        return sorted(p["UserId"] for p in r["CreateVolumePermissions"] if "UserId" in p)

    ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                  CreateVolumePermission={"Add": [{"UserId": B}, {"UserId": "444455556666"}]})
    eq(users(), sorted([B, "444455556666"]), "after Add")
    ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                  CreateVolumePermission={"Remove": [{"UserId": "444455556666"}]})
    eq(users(), [B], "after Remove")
    ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission", OperationType="add",
                                  UserIds=["777788889999"])
    eq(users(), sorted([B, "777788889999"]), "after OperationType=add")


def shared_fixture(ctx: Ctx, share: bool = True) -> tuple[str, str]:
    key = make_key(ctx)
    snap = make_snapshot(ctx, "us-east-1", key["Arn"])
    ami = register(ctx, "us-east-1", [snap])
    if share:
        ec2 = ctx.c("ec2")
        ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": B}]})
        ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                      CreateVolumePermission={"Add": [{"UserId": B}]})
    return ami, snap


@check("E5: AMI shared by launch permission is visible to B by id, ExecutableUsers=self and Owners=[A]")
def _(ctx: Ctx) -> None:
    ami, _snap = shared_fixture(ctx)
    b = ctx.c("ec2", account=B)
    eq([i["ImageId"] for i in b.describe_images(ImageIds=[ami])["Images"]], [ami], "by id")
    eq(b.describe_images(ImageIds=[ami])["Images"][0]["OwnerId"], A, "OwnerId")
    expect(ami in [i["ImageId"] for i in b.describe_images(ExecutableUsers=["self"])["Images"]], "ExecutableUsers=self")
    eq([i["ImageId"] for i in b.describe_images(Owners=[A])["Images"]].count(ami), 1, "Owners=[A]")


@check("E5: an unshared AMI/snapshot of A stays invisible to B")
def _(ctx: Ctx) -> None:
    ami, snap = shared_fixture(ctx, share=False)
    b = ctx.c("ec2", account=B)
    eq(error_code(lambda: b.describe_images(ImageIds=[ami])), "InvalidAMIID.NotFound", "AMI by id")
    eq(error_code(lambda: b.describe_snapshots(SnapshotIds=[snap])), "InvalidSnapshot.NotFound", "snapshot by id")
    expect(ami not in [i["ImageId"] for i in b.describe_images(Owners=[A])["Images"]], "Owners=[A] lists it")


@check("E5: snapshot shared by createVolumePermission visible to B by id, RestorableByUserIds=self, OwnerIds=[A]")
def _(ctx: Ctx) -> None:
    _ami, snap = shared_fixture(ctx)
    b = ctx.c("ec2", account=B)
    eq([s["SnapshotId"] for s in b.describe_snapshots(SnapshotIds=[snap])["Snapshots"]], [snap], "by id")
    expect(snap in [s["SnapshotId"] for s in b.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]],
           "RestorableByUserIds=self")
    eq([s["SnapshotId"] for s in b.describe_snapshots(OwnerIds=[A])["Snapshots"]].count(snap), 1, "OwnerIds=[A]")


@check("E5: DescribeSnapshots honours OwnerIds=self and RestorableByUserIds")
def _(ctx: Ctx) -> None:
    a = ctx.c("ec2", "ap-south-1")
    mine = make_snapshot(ctx, "ap-south-1", None)
    everything = a.describe_snapshots()["Snapshots"]
    expect(len(everything) > 1, f"expected default-AMI snapshots too, got {len(everything)}")
    own = a.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    eq([s["SnapshotId"] for s in own], [mine], "OwnerIds=self")
    eq(a.describe_snapshots(RestorableByUserIds=[B])["Snapshots"], [], "RestorableByUserIds=[B] before sharing")
    a.modify_snapshot_attribute(SnapshotId=mine, Attribute="createVolumePermission",
                                CreateVolumePermission={"Add": [{"UserId": B}]})
    eq([s["SnapshotId"] for s in a.describe_snapshots(RestorableByUserIds=[B])["Snapshots"]], [mine],
       "RestorableByUserIds=[B] after sharing")


@check("E5: B can CopyImage A's shared AMI into its own account (re-encrypted with B's key)")
def _(ctx: Ctx) -> None:
    ami, _snap = shared_fixture(ctx)
    bkey = make_key(ctx, "eu-west-1", account=B)
    b = ctx.c("ec2", "eu-west-1", account=B)
    copy = b.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name=uniq("b-copy"), Encrypted=True,
                        KmsKeyId=bkey["Arn"])["ImageId"]
    eq(image(ctx, "eu-west-1", copy, B)["OwnerId"], B, "copy owner")
    eq([s["KmsKeyId"] for s in snapshots_of(ctx, "eu-west-1", copy, B)], [bkey["Arn"]], "copy key")


@check("E6: GetEbsDefaultKmsKeyId = aws/ebs ARN; Enable/Get/DisableEbsEncryptionByDefault")
def _(ctx: Ctx) -> None:
    ec2 = ctx.c("ec2", "ca-central-1")
    eq(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], ebs_key_arn(ctx, "ca-central-1"), "default key")
    eq(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"], False, "initial")
    eq(ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"], True, "enable")
    eq(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"], True, "after enable")
    vol = ec2.create_volume(AvailabilityZone="ca-central-1a", Size=1)
    eq((vol["Encrypted"], vol.get("KmsKeyId")), (True, ebs_key_arn(ctx, "ca-central-1")), "volume by default")
    eq(ec2.disable_ebs_encryption_by_default()["EbsEncryptionByDefault"], False, "disable")
    key = make_key(ctx, "ca-central-1")
    ec2.modify_ebs_default_kms_key_id(KmsKeyId=key["KeyId"])
    eq(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], key["Arn"], "after ModifyEbsDefaultKmsKeyId")
    eq(ec2.reset_ebs_default_kms_key_id()["KmsKeyId"], ebs_key_arn(ctx, "ca-central-1"), "after Reset")


# ------------------------------------------------------------------------------------------------ KMS

@check("K1: aws/ebs key reports KeyManager=AWS; a CMK reports CUSTOMER and KeyUsage=ENCRYPT_DECRYPT")
def _(ctx: Ctx) -> None:
    kms = ctx.c("kms")
    eq(kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["KeyManager"], "AWS", "aws/ebs KeyManager")
    md = make_key(ctx)
    eq((md["KeyManager"], md["KeyUsage"]), ("CUSTOMER", "ENCRYPT_DECRYPT"), "create_key")
    md = kms.describe_key(KeyId=md["Arn"])["KeyMetadata"]
    eq((md["KeyManager"], md["KeyUsage"]), ("CUSTOMER", "ENCRYPT_DECRYPT"), "describe_key")


@check("K1: CreateAlias alias/aws/... is rejected (NotAuthorizedException)")
def _(ctx: Ctx) -> None:
    md = make_key(ctx)
    code = error_code(lambda: ctx.c("kms").create_alias(AliasName="alias/aws/custom", TargetKeyId=md["KeyId"]))
    eq(code, "NotAuthorizedException", "error code")


@check("K2: CreateGrant same Name + same parameters -> same GrantId; other name -> new grant")
def _(ctx: Ctx) -> None:
    kms = ctx.c("kms")
    md = make_key(ctx)
    args = dict(KeyId=md["Arn"], GranteePrincipal=f"arn:aws:iam::{B}:root", Operations=["Decrypt", "CreateGrant"],
                Name="amikey-share")
    g1 = kms.create_grant(**args)
    g2 = kms.create_grant(**args)
    eq(g2["GrantId"], g1["GrantId"], "GrantId on repeat")
    eq(len(g1["GrantId"]), 64, "GrantId length")
    g3 = kms.create_grant(**{**args, "Name": "other"})
    expect(g3["GrantId"] != g1["GrantId"], "different name gave the same grant")
    g4 = kms.create_grant(**{**args, "Operations": ["Decrypt"]})
    expect(g4["GrantId"] != g1["GrantId"], "different operations gave the same grant")
    eq(len(kms.list_grants(KeyId=md["Arn"])["Grants"]), 3, "grant count")


@check("K2: CreateGrant on PendingDeletion -> KMSInvalidStateException, Disabled -> DisabledException, bad op -> ValidationException")
def _(ctx: Ctx) -> None:
    kms = ctx.c("kms")
    grantee = f"arn:aws:iam::{B}:root"
    md = make_key(ctx)
    eq(error_code(lambda: kms.create_grant(KeyId=md["KeyId"], GranteePrincipal=grantee, Operations=["Fly"])),
       "ValidationException", "invalid operation")
    kms.disable_key(KeyId=md["Arn"])  # an ARN: vanilla answers 500
    eq(error_code(lambda: kms.create_grant(KeyId=md["KeyId"], GranteePrincipal=grantee, Operations=["Decrypt"])),
       "DisabledException", "disabled key")
    kms.enable_key(KeyId=md["Arn"])
    kms.schedule_key_deletion(KeyId=md["Arn"], PendingWindowInDays=7)
    eq(kms.describe_key(KeyId=md["KeyId"])["KeyMetadata"]["KeyState"], "PendingDeletion", "state")
    eq(error_code(lambda: kms.create_grant(KeyId=md["KeyId"], GranteePrincipal=grantee, Operations=["Decrypt"])),
       "KMSInvalidStateException", "pending deletion")


@check("K3: ListGrants honours GranteePrincipal and GrantId")
def _(ctx: Ctx) -> None:
    kms = ctx.c("kms")
    md = make_key(ctx)
    p1, p2 = f"arn:aws:iam::{B}:root", "arn:aws:iam::444455556666:root"
    g1 = kms.create_grant(KeyId=md["KeyId"], GranteePrincipal=p1, Operations=["Decrypt"])["GrantId"]
    kms.create_grant(KeyId=md["KeyId"], GranteePrincipal=p2, Operations=["Decrypt"])
    eq([g["GrantId"] for g in kms.list_grants(KeyId=md["KeyId"], GranteePrincipal=p1)["Grants"]], [g1], "by grantee")
    eq([g["GranteePrincipal"] for g in kms.list_grants(KeyId=md["KeyId"], GrantId=g1)["Grants"]], [p1], "by id")
    page = kms.list_grants(KeyId=md["KeyId"], Limit=1)
    eq((len(page["Grants"]), page["Truncated"]), (1, True), "paging")


@check("K4: B uses A's key by ARN: DescribeKey, CreateGrant (A sees it), RevokeGrant; alias ARN too")
def _(ctx: Ctx) -> None:
    alias = f"alias/{uniq('k4')}"
    md = make_key(ctx, alias=alias)
    b = ctx.c("kms", account=B)
    eq(b.describe_key(KeyId=md["Arn"])["KeyMetadata"]["AWSAccountId"], A, "describe by ARN")
    alias_arn = f"arn:aws:kms:us-east-1:{A}:{alias}"
    eq(b.describe_key(KeyId=alias_arn)["KeyMetadata"]["Arn"], md["Arn"], "describe by alias ARN")
    g = b.create_grant(KeyId=md["Arn"], GranteePrincipal=f"arn:aws:iam::{B}:role/asg", Operations=["Decrypt"],
                       Name="cross")["GrantId"]
    eq([x["GrantId"] for x in ctx.c("kms").list_grants(KeyId=md["KeyId"])["Grants"]], [g], "A sees B's grant")
    eq([x["GrantId"] for x in b.list_grants(KeyId=md["Arn"])["Grants"]], [g], "B lists by ARN")
    b.revoke_grant(KeyId=md["Arn"], GrantId=g)
    eq(ctx.c("kms").list_grants(KeyId=md["KeyId"])["Grants"], [], "after revoke")
    eq(error_code(lambda: b.describe_key(KeyId=md["KeyId"])), "NotFoundException", "bare id is B's own namespace")


@check("K5: ReplicateKey: primary stays PRIMARY, replica REPLICA with own grants/aliases; non-MR -> UnsupportedOperationException")
def _(ctx: Ctx) -> None:
    kms = ctx.c("kms")
    md = make_key(ctx, multi_region=True)
    rep = kms.replicate_key(KeyId=md["Arn"], ReplicaRegion="eu-west-1")["ReplicaKeyMetadata"]
    prim = kms.describe_key(KeyId=md["Arn"])["KeyMetadata"]["MultiRegionConfiguration"]
    eq(prim["MultiRegionKeyType"], "PRIMARY", "primary type")
    eq([r["Region"] for r in prim["ReplicaKeys"]], ["eu-west-1"], "primary's replicas")
    eu = ctx.c("kms", "eu-west-1")
    repd = eu.describe_key(KeyId=rep["Arn"])["KeyMetadata"]
    eq(repd["MultiRegionConfiguration"]["MultiRegionKeyType"], "REPLICA", "replica type")
    eq(repd["MultiRegionConfiguration"]["PrimaryKey"], {"Arn": md["Arn"], "Region": "us-east-1"}, "replica's primary")
    eq(repd["Arn"], md["Arn"].replace("us-east-1", "eu-west-1"), "replica ARN")
    kms.create_grant(KeyId=md["Arn"], GranteePrincipal=f"arn:aws:iam::{B}:root", Operations=["Decrypt"])
    eq(eu.list_grants(KeyId=rep["Arn"])["Grants"], [], "replica grants")
    eu.create_alias(AliasName="alias/replica-only", TargetKeyId=rep["KeyId"])
    names = [a["AliasName"] for a in kms.list_aliases(KeyId=md["KeyId"])["Aliases"]]
    expect("alias/replica-only" not in names, f"primary got the replica's alias: {names}")
    plain = make_key(ctx)
    eq(error_code(lambda: kms.replicate_key(KeyId=plain["Arn"], ReplicaRegion="eu-west-1")),
       "UnsupportedOperationException", "non-MR key")


# ------------------------------------------------------------------------------------------------ SSM

@check("P1: PutParameter aws:ec2:image: valid visible AMI OK; bad format, unknown or unshared AMI -> ValidationException")
def _(ctx: Ctx) -> None:
    ami, _ = shared_fixture(ctx, share=False)
    ssm = ctx.c("ssm")
    name = f"/amikey/{uniq('p1')}/ami"
    ssm.put_parameter(Name=name, Value=ami, Type="String", DataType="aws:ec2:image")
    eq(ssm.get_parameter(Name=name)["Parameter"]["DataType"], "aws:ec2:image", "DataType")
    for bad in ("not-an-ami", "ami-0123456789abcdef0", "ami-1234"):
        eq(error_code(lambda: ssm.put_parameter(Name=name, Value=bad, Type="String", DataType="aws:ec2:image",
                                                Overwrite=True)), "ValidationException", f"value {bad}")
    bssm = ctx.c("ssm", account=B)
    eq(error_code(lambda: bssm.put_parameter(Name=name, Value=ami, Type="String", DataType="aws:ec2:image")),
       "ValidationException", "unshared AMI from B")
    ctx.c("ec2").modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": B}]})
    bssm.put_parameter(Name=name, Value=ami, Type="String", DataType="aws:ec2:image")
    ssm.put_parameter(Name=f"{name}-text", Value="not-an-ami", Type="String")


# ------------------------------------------------------------------------------------------------ seed

@check("seed.py demo: 3 regions, keys + AMIs encrypted with them")
def _(ctx: Ctx) -> None:
    out = subprocess.run([sys.executable, os.path.join(HERE, "seed.py"), "--endpoint", ctx.url, "--account",
                          "222233334444", "demo"], check=True, capture_output=True, text=True, timeout=120).stdout
    data = json.loads(out)
    regions = ["eu-west-1", "us-east-1", "us-west-2"]
    eq(sorted(data["keys"]), regions, "key regions")
    eq(data["artifact"], ",".join(f"{r}:{data['amis'][r]}" for r in regions), "artifact")
    for r in regions:
        snaps = snapshots_of(ctx, r, data["amis"][r], "222233334444")
        eq([s["KmsKeyId"] for s in snaps], [data["keys"][r]], f"{r} snapshot key")


@check("seed.py ami: --second-volume with another key, aws/ebs and none")
def _(ctx: Ctx) -> None:
    key = make_key(ctx, "us-west-2")
    out = subprocess.run([sys.executable, os.path.join(HERE, "seed.py"), "--endpoint", ctx.url, "ami",
                          "--regions", "us-west-2,eu-central-1", "--key-for", "us-west-2=aws/ebs",
                          "--key-for", "eu-central-1=none", "--second-volume", f"us-west-2={key['Arn']}"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    data = json.loads(out)
    w2 = snapshots_of(ctx, "us-west-2", data["amis"]["us-west-2"])
    eq([s.get("KmsKeyId") for s in w2], [ebs_key_arn(ctx, "us-west-2"), key["Arn"]], "us-west-2 keys")
    eq(data["snapshots"]["us-west-2"], [s["SnapshotId"] for s in w2], "snapshot list")
    eq([s["Encrypted"] for s in snapshots_of(ctx, "eu-central-1", data["amis"]["eu-central-1"])], [False], "none")


# ------------------------------------------------------------------------------------------------ relay

class RelayRun:
    def __init__(self, ctx: Ctx, args: list[str], upstreams: list[str] | None = None):
        self.log = os.path.join(ctx.tmp, f"relay-{uuid.uuid4().hex[:6]}.jsonl")
        ups: list[str] = []
        for u in upstreams or [ctx.url]:
            ups += ["--upstream", u]
        self.proc = start_relay(ctx.tmp, f"relay-{uuid.uuid4().hex[:6]}", ups + ["--log", self.log] + args)
        self.url = self.proc.url

    def c(self, service: str, region: str = "us-east-1", account: str | None = None, config: Config | None = None) -> Any:
        return client(self.url, service, region, account, config)

    def lines(self) -> list[dict[str, Any]]:
        with open(self.log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def __enter__(self) -> "RelayRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.stop()


@check("relay: forwards EC2/KMS/SSM and logs one JSON line per call (ts, service, region, action, status, ms, account)")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, []) as r:
        r.c("kms", "eu-west-1").list_keys()
        r.c("ec2", "us-west-2").describe_images(ImageIds=["ami-04681a1dbd79675a5"])
        r.c("ssm").put_parameter(Name=f"/amikey/{uniq('relay')}", Value="x", Type="String")
        lines = r.lines()
    eq([(x["service"], x["region"], x["action"], x["status"]) for x in lines],
       [("kms", "eu-west-1", "ListKeys", 200), ("ec2", "us-west-2", "DescribeImages", 200),
        ("ssm", "us-east-1", "PutParameter", 200)], "log lines")
    for x in lines:
        expect(all(k in x for k in ("ts", "ms", "account")), f"fields missing in {x}")


@check("relay: --delay 60-80 adds 60-80 ms per call")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, ["--delay", "60-80", "--seed", "1"]) as r:
        kms = r.c("kms")
        times = []
        for _ in range(6):
            t0 = time.monotonic()
            kms.list_keys()
            times.append((time.monotonic() - t0) * 1000)
        delays = [x["delay_ms"] for x in r.lines()]
    expect(min(times) >= 60, f"call times {times}")
    expect(all(60 <= d <= 80 for d in delays), f"logged delays {delays}")


@check("relay: --throttle 0.3 --seed 7 throttles roughly 30% of 80 calls; SDK retries get through")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, ["--throttle", "0.3", "--seed", "7"]) as r:
        kms = r.c("kms")
        codes = [error_code(kms.list_keys) for _ in range(80)]
        n = codes.count("ThrottlingException")
        expect(set(codes) <= {None, "ThrottlingException"}, f"codes {set(codes)}")
        expect(12 <= n <= 36, f"{n}/80 throttled")
        retrying = r.c("kms", config=Config(retries={"mode": "standard", "total_max_attempts": 10}))
        for _ in range(10):
            retrying.list_keys()
        logged = [x["fault"] for x in r.lines()].count("throttle")
        expect(logged >= n, f"log has {logged} throttles, saw {n}")


@check("relay: throttling errors are what the SDKs classify as throttling (EC2 503 RequestLimitExceeded, JSON ThrottlingException, STS Throttling)")
def _(ctx: Ctx) -> None:
    from botocore.retries.standard import ThrottledRetryableChecker

    throttled = set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES)
    with RelayRun(ctx, ["--throttle", "1"]) as r:
        got = {}
        for svc, call in (("ec2", lambda c: c.describe_regions()), ("kms", lambda c: c.list_keys()),
                          ("ssm", lambda c: c.describe_parameters()), ("sts", lambda c: c.get_caller_identity())):
            try:
                call(r.c(svc))
                got[svc] = None
            except ClientError as e:
                got[svc] = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
    eq(got, {"ec2": ("RequestLimitExceeded", 503), "kms": ("ThrottlingException", 400),
             "ssm": ("ThrottlingException", 400), "sts": ("Throttling", 400)}, "codes")
    expect(all(v[0] in throttled for v in got.values()), "a code botocore does not treat as throttling")


@check("relay: --fail DescribeKey:2 -> two 500 InternalError, then the call passes")
def _(ctx: Ctx) -> None:
    key = make_key(ctx)
    with RelayRun(ctx, ["--fail", "DescribeKey:2"]) as r:
        kms = r.c("kms")
        codes = [error_code(lambda: kms.describe_key(KeyId=key["Arn"])) for _ in range(3)]
        eq(codes, ["InternalError", "InternalError", None], "codes")
        eq([x["status"] for x in r.lines()], [500, 500, 200], "logged status")


@check("relay: --fault-region scopes --fail to one region; the others pass")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, ["--fail", "DescribeRegions:5", "--fault-region", "eu-west-1"]) as r:
        eq(error_code(lambda: r.c("ec2", "us-east-1").describe_regions()), None, "us-east-1")
        eq(error_code(lambda: r.c("ec2", "eu-west-1", config=Config(retries={"total_max_attempts": 1}))
                      .describe_regions()), "InternalError", "eu-west-1")
        eq([(x["region"], x["status"]) for x in r.lines()], [("us-east-1", 200), ("eu-west-1", 500)], "log")


@check("relay: --fail with SDK retries succeeds on the 3rd attempt")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, ["--fail", "DescribeRegions:2"]) as r:
        r.c("ec2", config=Config(retries={"mode": "standard", "total_max_attempts": 3})).describe_regions()
        eq([x["status"] for x in r.lines()], [500, 500, 200], "attempts")


def raw_kms_call(url: str, target: str, region: str) -> tuple[int, bytes]:
    """A bare HTTP/1.1 KMS call, to see exactly what the relay sends (botocore's JSON parser is lenient)."""
    import http.client

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", "/", body=b"{}", headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{target}",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20261123/{region}/kms/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@check("relay: --close-mid-response and --garbage break exactly N calls (after they took effect)")
def _(ctx: Ctx) -> None:
    import http.client

    with RelayRun(ctx, ["--close-mid-response", "CreateKey:1", "--garbage", "ListKeys:1"]) as r:
        before = len(ctx.c("kms", "sa-east-1").list_keys()["Keys"])
        try:
            raw_kms_call(r.url, "CreateKey", "sa-east-1")
            raise Fail("CreateKey response was complete")
        except http.client.IncompleteRead as e:
            expect(len(e.partial) > 0 and (e.expected or 0) > 0, f"partial {len(e.partial)}, missing {e.expected}")
        status, body = raw_kms_call(r.url, "ListKeys", "sa-east-1")
        eq(status, 200, "garbage status")
        try:
            json.loads(body)
            raise Fail("garbage body parsed as JSON")
        except ValueError:
            pass
        kms = r.c("kms", "sa-east-1")
        expect("KeyMetadata" in kms.create_key(), "CreateKey after the fault")
        eq(len(kms.list_keys()["Keys"]), before + 2, "keys (the broken CreateKey took effect)")
        eq([x["fault"] for x in r.lines()], ["close", "garbage", None, None], "logged faults")


@check("relay: --account injects x-moto-account-id")
def _(ctx: Ctx) -> None:
    with RelayRun(ctx, ["--account", B]) as r:
        eq(r.c("sts").get_caller_identity()["Account"], B, "caller account")
        eq(r.c("kms").create_key()["KeyMetadata"]["AWSAccountId"], B, "key account")
        eq({x["account"] for x in r.lines()}, {B}, "logged account")


@check("relay: --shard-by-region routes each region to one upstream; reset reaches all")
def _(ctx: Ctx) -> None:
    import urllib.request
    import zlib

    ups = [ctx.url, ctx.second.url]
    regions = ["us-east-1", "eu-west-1", "us-west-2", "ap-northeast-1", "eu-central-1", "sa-east-1"]
    with RelayRun(ctx, ["--shard-by-region"], upstreams=ups) as r:
        homes = {}
        for region in regions:
            arn = r.c("kms", region).create_key()["KeyMetadata"]["Arn"]
            home = zlib.crc32(region.encode()) % 2
            homes[region] = home
            found = [arn in [k["KeyArn"] for k in client(u, "kms", region).list_keys()["Keys"]] for u in ups]
            eq(found, [home == 0, home == 1], f"{region} key placement")
        expect(set(homes.values()) == {0, 1}, f"all regions on one shard: {homes}")
        req = urllib.request.Request(f"{r.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            eq(resp.status, 200, "reset via relay")
        for u in ups:
            eq(sum(len(client(u, "kms", reg).list_keys()["Keys"]) for reg in regions), 0, f"keys left on {u}")


# ------------------------------------------------------------------------------------------------ lifecycle (LC1-LC4)

def _lc_image(ctx: Ctx, region: str = "us-east-1") -> tuple[str, list[str]]:
    key = make_key(ctx, region)["Arn"]
    snaps = [make_snapshot(ctx, region, key)]
    return register(ctx, region, snaps), snaps


@check("LC1: EnableImageDeprecation rounds to the minute, DescribeImages reads it back; past refused")
def _(ctx: Ctx) -> None:
    ami, _ = _lc_image(ctx)
    ec2 = ctx.c("ec2")
    ec2.enable_image_deprecation(ImageId=ami, DeprecateAt="2030-01-02T03:04:31Z")
    eq(image(ctx, "us-east-1", ami).get("DeprecationTime"), "2030-01-02T03:05:00.000Z", "DeprecationTime")
    eq(error_code(lambda: ec2.enable_image_deprecation(ImageId=ami, DeprecateAt="2001-01-01T00:00:00Z")),
       "InvalidParameterValue", "past deprecation time")
    ec2.disable_image_deprecation(ImageId=ami)
    eq(image(ctx, "us-east-1", ami).get("DeprecationTime"), None, "after DisableImageDeprecation")


@check("LC2: deregistration protection (with cooldown) is reported and blocks DeregisterImage")
def _(ctx: Ctx) -> None:
    ami, _ = _lc_image(ctx)
    ec2 = ctx.c("ec2")
    eq(image(ctx, "us-east-1", ami).get("DeregistrationProtection"), "disabled", "default")
    ec2.enable_image_deregistration_protection(ImageId=ami, WithCooldown=True)
    eq(image(ctx, "us-east-1", ami).get("DeregistrationProtection"), "enabled-with-cooldown", "enabled")
    eq(error_code(lambda: ec2.deregister_image(ImageId=ami)), "InvalidParameterValue", "deregister protected")
    ec2.disable_image_deregistration_protection(ImageId=ami)
    state = image(ctx, "us-east-1", ami).get("DeregistrationProtection", "")
    expect(state.startswith("disabled-until "), f"cooldown state: {state!r}")
    eq(error_code(lambda: ec2.deregister_image(ImageId=ami)), "InvalidParameterValue", "deregister in cooldown")
    ami2, _ = _lc_image(ctx)
    ec2.enable_image_deregistration_protection(ImageId=ami2)
    ec2.disable_image_deregistration_protection(ImageId=ami2)
    eq(image(ctx, "us-east-1", ami2).get("DeregistrationProtection"), "disabled", "no cooldown")
    ec2.deregister_image(ImageId=ami2)


@check("LC3: DeregisterImage DeleteAssociatedSnapshots deletes snapshots no other AMI uses")
def _(ctx: Ctx) -> None:
    ec2 = ctx.c("ec2")
    key = make_key(ctx)["Arn"]
    own, shared = make_snapshot(ctx, "us-east-1", key), make_snapshot(ctx, "us-east-1", key)
    ami = register(ctx, "us-east-1", [own, shared])
    other = register(ctx, "us-east-1", [shared])
    out = ec2.deregister_image(ImageId=ami, DeleteAssociatedSnapshots=True)
    got = sorted((r["SnapshotId"], r["ReturnCode"]) for r in out.get("DeleteSnapshotResults", []))
    eq(got, sorted([(own, "success"), (shared, "skipped")]), "DeleteSnapshotResults")
    left = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    expect(own not in left and shared in left, f"snapshots left: {left}")
    eq(image(ctx, "us-east-1", other)["ImageId"], other, "other AMI intact")


@check("LC4: DescribeImageReferences finds instances, launch templates and aws:ec2:image parameters")
def _(ctx: Ctx) -> None:
    region = "eu-west-3"
    ec2, ssm = ctx.c("ec2", region), ctx.c("ssm", region)
    used_i, _ = _lc_image(ctx, region)
    used_lt, _ = _lc_image(ctx, region)
    used_p, _ = _lc_image(ctx, region)
    free, _ = _lc_image(ctx, region)
    inst = ec2.run_instances(ImageId=used_i, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    lt = ec2.create_launch_template(LaunchTemplateName=uniq("lt"),
                                    LaunchTemplateData={"ImageId": used_lt})["LaunchTemplate"]["LaunchTemplateId"]
    name = f"/{uniq('lc4')}/image_id"
    ssm.put_parameter(Name=name, Value=used_p, Type="String", DataType="aws:ec2:image")
    out = ec2.describe_image_references(ImageIds=[used_i, used_lt, used_p, free],
                                        ResourceTypes=[{"ResourceType": t} for t in
                                                       ("ec2:Instance", "ec2:LaunchTemplate", "ssm:Parameter")])
    got = sorted((r["ImageId"], r["ResourceType"], r["Arn"].rsplit(":", 1)[-1]) for r in out["ImageReferences"])
    want = sorted([(used_i, "ec2:Instance", f"instance/{inst}"), (used_lt, "ec2:LaunchTemplate", f"launch-template/{lt}"),
                   (used_p, "ssm:Parameter", f"parameter{name}")])
    eq(got, want, "references")
    ec2.terminate_instances(InstanceIds=[inst])
    out = ec2.describe_image_references(ImageIds=[used_i], IncludeAllResourceTypes=True)
    eq(out["ImageReferences"], [], "terminated instance is no reference")
# ------------------------------------------------------------------------------------------------ copy (C1)

def copy_fixture(ctx: Ctx, share_snapshots: bool = True) -> tuple[str, str, str]:
    """A's encrypted AMI in us-east-1 shared with B (launch permission; snapshots unless told not to);
    B's own key behind alias/mine. Returns (ami, snapshot, B's key ARN)."""
    ami, snap = shared_fixture(ctx, share=False)
    ctx.c("ec2").modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": B}]})
    if share_snapshots:
        ctx.c("ec2").modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                               CreateVolumePermission={"Add": [{"UserId": B}]})
    alias = f"alias/{uniq('mine')}"
    b_key = make_key(ctx, account=B, alias=alias)
    return ami, snap, alias


COPY_TAGS = [{"ResourceType": "image", "Tags": [{"Key": "amikey:source-image-id", "Value": "SRC"},
                                                {"Key": "managed-by", "Value": "amikey"}]},
             {"ResourceType": "snapshot", "Tags": [{"Key": "amikey:source-image-id", "Value": "SRC"}]}]


def copy_tags(src: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(COPY_TAGS).replace("SRC", src))


@check("C1: B copies A's shared AMI under B's own key alias; tags on image and snapshots; found by tag")
def _(ctx: Ctx) -> None:
    ami, _snap, alias = copy_fixture(ctx)
    b = ctx.c("ec2", account=B)
    new = b.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name=uniq("copy"), Encrypted=True,
                       KmsKeyId=alias, ClientToken=uniq("tok"), TagSpecifications=copy_tags(ami))["ImageId"]
    b_arn = ctx.c("kms", account=B).describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    snaps = snapshots_of(ctx, "us-east-1", new, account=B)
    eq([(s["Encrypted"], s["KmsKeyId"], s["OwnerId"]) for s in snaps], [(True, b_arn, B)], "copy's snapshots")
    img = image(ctx, "us-east-1", new, account=B)
    eq(img["OwnerId"], B, "copy owner")
    eq(sorted((t["Key"], t["Value"]) for t in img.get("Tags", [])),
       [("amikey:source-image-id", ami), ("managed-by", "amikey")], "image tags")
    eq([(t["Key"], t["Value"]) for t in snaps[0].get("Tags", [])], [("amikey:source-image-id", ami)], "snapshot tags")
    found = b.describe_images(Owners=["self"], Filters=[{"Name": "tag:amikey:source-image-id", "Values": [ami]}])
    eq([i["ImageId"] for i in found["Images"]], [new], "DescribeImages by tag")


@check("C1: CopyImage of a shared AMI without createVolumePermission is AuthFailure and creates nothing")
def _(ctx: Ctx) -> None:
    ami, _snap, alias = copy_fixture(ctx, share_snapshots=False)
    b = ctx.c("ec2", account=B)
    before = len(b.describe_images(Owners=["self"])["Images"])
    eq(error_code(lambda: b.copy_image(SourceImageId=ami, SourceRegion="us-east-1", Name=uniq("copy"),
                                       Encrypted=True, KmsKeyId=alias)), "AuthFailure", "copy without snapshot share")
    eq(len(b.describe_images(Owners=["self"])["Images"]), before, "images created")


@check("C1: the same ClientToken returns the same ImageId and creates no second copy")
def _(ctx: Ctx) -> None:
    ami, _snap, alias = copy_fixture(ctx)
    b = ctx.c("ec2", account=B)
    token = uniq("tok")
    args = dict(SourceImageId=ami, SourceRegion="us-east-1", Name=uniq("copy"), Encrypted=True, KmsKeyId=alias,
                ClientToken=token)
    first = b.copy_image(**args)["ImageId"]
    second = b.copy_image(**args)["ImageId"]
    eq(second, first, "ImageId for the same token")
    other = b.copy_image(**{**args, "ClientToken": uniq("tok"), "Name": uniq("copy")})["ImageId"]
    expect(other != first, "a new token makes a new copy")


@check("C2: a copy of a source tagged amikey-moto:copy-seconds=2 is pending, then available; untagged: at once")
def _(ctx: Ctx) -> None:
    ami, _snap, alias = copy_fixture(ctx)
    b = ctx.c("ec2", account=B)
    args = dict(SourceImageId=ami, SourceRegion="us-east-1", Encrypted=True, KmsKeyId=alias)
    at_once = b.copy_image(Name=uniq("copy"), **args)["ImageId"]
    eq(image(ctx, "us-east-1", at_once, account=B)["State"], "available", "untagged source: state at once")
    ctx.c("ec2").create_tags(Resources=[ami], Tags=[{"Key": "amikey-moto:copy-seconds", "Value": "2"}])
    token = uniq("tok")
    slow = b.copy_image(Name=uniq("copy"), ClientToken=token, **args)["ImageId"]
    eq(image(ctx, "us-east-1", slow, account=B)["State"], "pending", "tagged source: state right after CopyImage")
    eq(b.copy_image(Name=uniq("copy"), ClientToken=token, **args)["ImageId"], slow, "same token")
    deadline = time.monotonic() + 10
    while image(ctx, "us-east-1", slow, account=B)["State"] == "pending":
        expect(time.monotonic() < deadline, "still pending after 10 s")
        time.sleep(0.2)
    eq(image(ctx, "us-east-1", slow, account=B)["State"], "available", "state after the wait")


# ------------------------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="only", help="run only checks whose name contains this")
    ap.add_argument("--keep-logs", help="copy the servers' logs here")
    ap.add_argument("--vanilla", action="store_true", help="run against unpatched moto, to see what the patches fix")
    args = ap.parse_args()
    global VANILLA
    VANILLA = args.vanilla
    for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "HTTPS_PROXY", "HTTP_PROXY",
                "https_proxy", "http_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    tmp = tempfile.mkdtemp(prefix="amikey-selftest-")
    passed = failed = 0
    ctx = None
    try:
        ctx = Ctx(tmp)
        for name, fn in CHECKS:
            if args.only and args.only not in name:
                continue
            t0 = time.monotonic()
            try:
                fn(ctx)
            except Fail as e:
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                if os.environ.get("SELFTEST_TRACE"):
                    traceback.print_exc()
            else:
                passed += 1
                print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
    finally:
        if ctx is not None:
            ctx.stop()
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            for f in os.listdir(tmp):
                shutil.copy(os.path.join(tmp, f), args.keep_logs)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
