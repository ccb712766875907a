"""Fidelity fixes for moto 5.2.5, applied as monkey-patches before moto's server starts.

Each patch is one function named after its id (see tests/moto/README.md); its docstring names the AWS
behaviour it restores. ``apply_all()`` applies them in order and fails loudly, naming the patch, when a
moto internal it relies on is missing: the patches are written against moto 5.2.5 exactly.

Model notes shared by several patches:

* An AMI carries its real block-device mappings in ``ami.amikey_bdms`` (a list of dicts with
  ``DeviceName`` and either ``VirtualName``, ``NoDevice`` or ``Ebs`` = ``{"snapshot": Snapshot|None,
  "VolumeSize", "DeleteOnTermination", "VolumeType"}``). AMIs without it (moto's default AMIs) keep
  moto's single 15 GiB root mapping.
* Snapshot and volume ``kms_key_id`` values are always key ARNs (ids and aliases resolved), as AWS
  reports them.
"""

from __future__ import annotations

import json
import re
import threading
from copy import copy
from typing import Any, Callable

MOTO_VERSION = "5.2.5"

APPLIED: list[str] = []


class PatchError(RuntimeError):
    """A moto internal that a patch needs is missing (moto is not the pinned version)."""


def _need(obj: Any, attr: str, patch_id: str) -> Any:
    try:
        return getattr(obj, attr)
    except AttributeError:
        raise PatchError(
            f"amikey_moto patch {patch_id}: moto internal {getattr(obj, '__name__', obj)!r}.{attr} "
            f"is missing (patches are written for moto {MOTO_VERSION})"
        ) from None


def _import(patch_id: str, module: str, *names: str) -> list[Any]:
    try:
        mod = __import__(module, fromlist=list(names) or ["_"])
    except ImportError as e:
        raise PatchError(f"amikey_moto patch {patch_id}: cannot import {module}: {e}") from None
    return [_need(mod, n, patch_id) for n in names]


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------

ARN_RE = re.compile(r"^arn:(?P<partition>[^:]+):kms:(?P<region>[^:]+):(?P<account>\d{12}):(?P<kind>key|alias)/(?P<rest>.+)$")


def _ec2_error(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _kms_backend_for(account: str, region: str, key_spec: str) -> tuple[Any, str, str]:
    """The KMS backend serving ``key_spec`` for a caller in (account, region): an ARN selects its own
    account and region (K4)."""
    from moto.kms.models import kms_backends

    m = ARN_RE.match(key_spec)
    if m:
        account, region = m.group("account"), m.group("region")
    return kms_backends[account][region], account, region


def resolve_key_arn(account: str, region: str, key_spec: str) -> str | None:
    """Key id, key ARN, alias name or alias ARN -> the key's ARN, or None if there is no such key."""
    backend, _, _ = _kms_backend_for(account, region, key_spec)
    spec = backend.get_alias_name(key_spec)
    if spec.startswith("alias/"):
        key_id = backend.get_key_id_from_alias(spec)  # creates alias/aws/* keys lazily, like AWS
        if key_id is None:
            return None
    else:
        key_id = backend.get_key_id(spec)
    key = backend.keys.get(key_id)
    return key.arn if key is not None else None


def _key_arn_or_error(account: str, region: str, key_spec: str) -> str:
    arn = resolve_key_arn(account, region, key_spec)
    if arn is None:
        raise _ec2_error("InvalidKMSKey.NotFound", f"KMS key {key_spec} not found in {region}")
    return arn


def _default_ebs_key_arn(ec2_backend: Any) -> str:
    """The region's default EBS key: the one set by ModifyEbsDefaultKmsKeyId, else aws/ebs."""
    if ec2_backend.default_kms_key_id:
        return ec2_backend.default_kms_key_id
    return ec2_backend._create_default_encryption_key()


def _ec2_backend(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account][region]


def _other_account_backends(account: str, region: str) -> list[tuple[str, Any]]:
    """EC2 backends of the other accounts that moto has already instantiated in this region."""
    from moto.ec2.models import ec2_backends

    out = []
    for acct, per_region in list(dict.items(ec2_backends)):
        if acct == account:
            continue
        backend = dict.get(per_region, region)
        if backend is not None:
            out.append((acct, backend))
    return out


def _ami_visible_to(ami: Any, account: str) -> bool:
    return ami.is_public or {"UserId": account} in ami.launch_permissions


def _snapshot_visible_to(snap: Any, account: str) -> bool:
    return "all" in snap.create_volume_permission_groups or account in snap.create_volume_permission_userids


def shared_images(account: str, region: str) -> list[Any]:
    """AMIs owned by other accounts in this region that ``account`` may launch (E5)."""
    out = []
    for acct, backend in _other_account_backends(account, region):
        for ami in list(backend.amis.values()):
            if ami.owner_id == acct and _ami_visible_to(ami, account):
                out.append(ami)
    return out


def shared_snapshots(account: str, region: str) -> list[Any]:
    """Snapshots owned by other accounts in this region that ``account`` may restore (E5)."""
    out = []
    for acct, backend in _other_account_backends(account, region):
        for snap in list(backend.snapshots.values()):
            if snap.owner_id == acct and _snapshot_visible_to(snap, account):
                out.append(snap)
    return out


def find_visible_image(account: str, region: str, ami_id: str) -> Any:
    """An AMI by id as ``account`` sees it in ``region``: its own, or one shared with it (E5)."""
    from moto.ec2.exceptions import InvalidAMIIdError

    own = _ec2_backend(account, region).amis.get(ami_id)
    if own is not None:
        return own
    for ami in shared_images(account, region):
        if ami.id == ami_id:
            return ami
    raise InvalidAMIIdError(ami_id)


def find_visible_snapshot(account: str, region: str, snap_id: str) -> Any:
    from moto.ec2.exceptions import InvalidSnapshotIdError

    own = _ec2_backend(account, region).snapshots.get(snap_id)
    if own is not None:
        return own
    for snap in shared_snapshots(account, region):
        if snap.id == snap_id:
            return snap
    raise InvalidSnapshotIdError()


def ami_bdms(ami: Any) -> list[dict[str, Any]]:
    """The AMI's mappings in the internal form (see module docstring)."""
    bdms = getattr(ami, "amikey_bdms", None)
    if bdms is not None:
        return bdms
    return [
        {
            "DeviceName": ami.root_device_name,
            "Ebs": {
                "snapshot": ami.ebs_snapshot,
                "VolumeSize": 15,
                "DeleteOnTermination": False,
                "VolumeType": "standard",
            },
        }
    ]


def _set_bdms(ami: Any, backend: Any, bdms: list[dict[str, Any]], root_device_name: str | None) -> None:
    """Give ``ami`` these mappings, dropping the placeholder snapshot moto's Ami() created."""
    placeholder = getattr(ami, "ebs_snapshot", None)
    if placeholder is not None:
        backend.snapshots.pop(placeholder.id, None)
    ami.amikey_bdms = bdms
    if root_device_name:
        ami.root_device_name = root_device_name
    root = next((b for b in bdms if b["DeviceName"] == ami.root_device_name and b.get("Ebs")), None)
    root = root or next((b for b in bdms if b.get("Ebs")), None)
    ami.ebs_snapshot = root["Ebs"]["snapshot"] if root else None
    if root and root["Ebs"]["snapshot"] is not None:
        ami.root_device_type = "ebs"


def new_snapshot(backend: Any, volume: Any, description: str, encrypted: bool, kms_key_arn: str | None,
                 from_ami: str | None = None) -> Any:
    from moto.ec2.models.elastic_block_store import Snapshot
    from moto.ec2.utils import random_snapshot_id

    snap = Snapshot(
        backend,
        random_snapshot_id(),
        volume=volume,
        description=description,
        encrypted=encrypted,
        kms_key_id=kms_key_arn if encrypted else None,
        owner_id=backend.account_id,
        from_ami=from_ami,
    )
    backend.snapshots[snap.id] = snap
    return snap


def copy_encryption(dest: Any, src_snap: Any, src_region: str, encrypted: bool, key_arn: str | None) -> tuple[bool, str | None]:
    """Encryption of a copy, as AWS decides it for CopyImage/CopySnapshot (E1, S1, E6).

    * a key given (with Encrypted) -> that key;
    * Encrypted without a key -> the destination region's default EBS key (aws/ebs);
    * encrypted source, no Encrypted -> same region: the source's key; another region: the
      destination's default EBS key (a key never leaves its region);
    * unencrypted source -> unencrypted, unless encryption by default is on (then the default key).
    """
    if key_arn:
        return True, key_arn
    if encrypted:
        return True, _default_ebs_key_arn(dest)
    if src_snap.encrypted:
        if src_region == dest.region_name and src_snap.kms_key_id:
            return True, src_snap.kms_key_id
        return True, _default_ebs_key_arn(dest)
    if getattr(dest, "ebs_encryption_by_default", False):
        return True, _default_ebs_key_arn(dest)
    return False, None


# --------------------------------------------------------------------------------------------------
# EC2 / EBS
# --------------------------------------------------------------------------------------------------


def patch_E3() -> None:
    """E3 — DescribeImages reports every block-device mapping of an AMI (not one fixed ``/dev/sda1``),
    with the real ``SnapshotId``, ``VolumeSize``, ``DeleteOnTermination``, ``VolumeType`` and
    ``Ebs.Encrypted``. ``KmsKeyId`` is left out, as on AWS (read it from DescribeSnapshots)."""
    (Ami,) = _import("E3", "moto.ec2.models.amis", "Ami")
    _need(Ami, "block_device_mappings", "E3")

    def block_device_mappings(self: Any) -> list[dict[str, Any]]:
        out = []
        for b in ami_bdms(self):
            item: dict[str, Any] = {"DeviceName": b["DeviceName"]}
            if b.get("VirtualName"):
                item["VirtualName"] = b["VirtualName"]
            if b.get("NoDevice") is not None:
                item["NoDevice"] = ""
            ebs = b.get("Ebs")
            if ebs:
                snap = ebs.get("snapshot")
                e: dict[str, Any] = {
                    "DeleteOnTermination": bool(ebs.get("DeleteOnTermination")),
                    "VolumeSize": ebs.get("VolumeSize"),
                    "VolumeType": ebs.get("VolumeType") or "standard",
                    "Encrypted": bool(snap.encrypted) if snap is not None else False,
                }
                if snap is not None:
                    e["SnapshotId"] = snap.id
                if ebs.get("Iops"):
                    e["Iops"] = ebs["Iops"]
                if ebs.get("Throughput"):
                    e["Throughput"] = ebs["Throughput"]
                item["Ebs"] = e
            out.append(item)
        return out

    Ami.block_device_mappings = property(block_device_mappings)


def patch_S1() -> None:
    """S1 — CreateVolume/CreateSnapshot keep keys as ARNs: a volume created with ``KmsKeyId`` (id,
    alias or ARN) reports the key ARN; a volume restored from an encrypted snapshot inherits the
    snapshot's key; CreateSnapshot of an encrypted volume keeps the volume's key (vanilla: None).
    With EBS encryption by default on, new volumes are encrypted with the default key (E6)."""
    (EBSBackend,) = _import("S1", "moto.ec2.models.elastic_block_store", "EBSBackend")
    orig_create_volume = _need(EBSBackend, "create_volume", "S1")
    orig_create_snapshot = _need(EBSBackend, "create_snapshot", "S1")

    def create_volume(self: Any, size: int, zone_name: str, snapshot_id: str | None = None,
                      encrypted: bool = False, kms_key_id: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if kms_key_id:
            kms_key_id = _key_arn_or_error(self.account_id, self.region_name, kms_key_id) if encrypted else kms_key_id
        snap = self.get_snapshot(snapshot_id) if snapshot_id else None
        if not encrypted and not kms_key_id and getattr(self, "ebs_encryption_by_default", False):
            encrypted = True
        volume = orig_create_volume(self, size, zone_name, snapshot_id, encrypted, kms_key_id, *args, **kwargs)
        if snap is not None and snap.encrypted and not kms_key_id:
            volume.encrypted = True
            volume.kms_key_id = snap.kms_key_id or _default_ebs_key_arn(self)
        if volume.encrypted and volume.kms_key_id and not volume.kms_key_id.startswith("arn:"):
            volume.kms_key_id = resolve_key_arn(self.account_id, self.region_name, volume.kms_key_id) or volume.kms_key_id
        return volume

    def create_snapshot(self: Any, volume_id: str, description: str, owner_id: str | None = None,
                        from_ami: str | None = None) -> Any:
        snap = orig_create_snapshot(self, volume_id, description, owner_id, from_ami)
        volume = self.get_volume(volume_id)
        if volume.encrypted:
            snap.encrypted = True
            snap.kms_key_id = volume.kms_key_id or _default_ebs_key_arn(self)
        return snap

    EBSBackend.create_volume = create_volume
    EBSBackend.create_snapshot = create_snapshot


def patch_E2() -> None:
    """E2 — CreateImage from an instance makes one snapshot per attached EBS volume, each inheriting
    that volume's encryption and KMS key, and the AMI lists them all (device names, sizes, types,
    DeleteOnTermination). Vanilla makes a single unencrypted placeholder snapshot."""
    (AmiBackend,) = _import("E2", "moto.ec2.models.amis", "AmiBackend")
    orig = _need(AmiBackend, "create_image", "E2")

    def create_image(self: Any, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Any:
        ami = orig(self, instance_id, name, description, tag_specifications)
        instance = self.get_instance(instance_id)
        devices = instance.get_block_device_mapping
        if not devices:
            return ami
        bdms = []
        for device_name, bdt in sorted(devices, key=lambda d: d[0]):
            volume = self.get_volume(bdt.volume_id)
            snap = self.create_snapshot(
                volume.id, f"Created by CreateImage({instance_id}) for {ami.id}", None, from_ami=ami.id
            )
            bdms.append({
                "DeviceName": device_name,
                "Ebs": {
                    "snapshot": snap,
                    "VolumeSize": volume.size,
                    "DeleteOnTermination": bool(bdt.delete_on_termination),
                    "VolumeType": volume.volume_type,
                },
            })
        names = [b["DeviceName"] for b in bdms]
        root = instance.root_device_name if instance.root_device_name in names else names[0]
        _set_bdms(ami, self, bdms, root)
        return ami

    AmiBackend.create_image = create_image


def patch_L1() -> None:
    """L1 — RunInstances without ``BlockDeviceMappings`` launches the AMI's own mappings: one volume per
    EBS mapping, restored from its snapshot (so an encrypted AMI gives encrypted volumes with the same
    key, via S1) at the AMI's device names. Vanilla always attaches one unencrypted 8 GiB ``/dev/sda1``.
    AMIs without real mappings (moto's default AMIs) keep the vanilla behaviour."""
    (Instance,) = _import("L1", "moto.ec2.models.instances", "Instance")
    orig = _need(Instance, "setup_defaults", "L1")

    def setup_defaults(self: Any) -> None:
        ami = None
        try:
            ami = find_visible_image(self.ec2_backend.account_id, self.ec2_backend.region_name, self.image_id)
        except Exception:
            ami = None
        bdms = getattr(ami, "amikey_bdms", None) if ami is not None else None
        if not bdms:
            return orig(self)
        for b in bdms:
            ebs = b.get("Ebs")
            if not ebs:
                continue
            snap = ebs.get("snapshot")
            volume = self.ec2_backend.create_volume(
                size=ebs.get("VolumeSize"), zone_name=self._placement.zone,
                snapshot_id=snap.id if snap is not None and snap.id in self.ec2_backend.snapshots else None,
                volume_type=ebs.get("VolumeType"),
            )
            if snap is not None and snap.encrypted and not volume.encrypted:  # snapshot shared from another account
                volume.encrypted, volume.kms_key_id = True, snap.kms_key_id
            self.ec2_backend.attach_volume(volume.id, self.id, b["DeviceName"], bool(ebs.get("DeleteOnTermination")))

    Instance.setup_defaults = setup_defaults


def patch_E1() -> None:
    """E1 — CopyImage honours ``Encrypted``/``KmsKeyId`` and copies every block-device mapping.

    Each EBS snapshot of the source is copied into the destination region; the copy is encrypted with
    the given key resolved to its ARN (id, alias, ARN or alias ARN; another account's key by ARN),
    ``Encrypted`` without a key uses the destination region's ``aws/ebs`` key, an encrypted source
    stays encrypted (see ``copy_encryption``), ``KmsKeyId`` without ``Encrypted`` is
    ``InvalidParameterDependency``. The source may be an AMI shared with the caller (E5)."""
    (EC2Response,) = _import("E1", "moto.ec2.responses", "EC2Response")
    (Ami,) = _import("E1", "moto.ec2.models.amis", "Ami")
    _import("E1", "moto.ec2.utils", "random_ami_id", "random_snapshot_id")
    (ActionResult,) = _import("E1", "moto.core.responses", "ActionResult")
    (InvalidParameterDependency,) = _import("E1", "moto.ec2.exceptions", "InvalidParameterDependency")
    _need(EC2Response, "copy_image", "E1")

    def copy_image(self: Any) -> Any:
        from moto.ec2.utils import random_ami_id

        source_image_id = self._get_param("SourceImageId")
        source_region = self._get_param("SourceRegion") or self.region
        name = self._get_param("Name")
        description = self._get_param("Description")
        encrypted = self._get_bool_param("Encrypted", False)
        kms_key_id = self._get_param("KmsKeyId")
        self.error_on_dryrun()
        if kms_key_id and not encrypted:
            raise InvalidParameterDependency("KmsKeyId", "Encrypted")
        dest = self.ec2_backend
        source = find_visible_image(self.current_account, source_region, source_image_id)
        key_arn = _key_arn_or_error(self.current_account, dest.region_name, kms_key_id) if kms_key_id else None

        ami_id = random_ami_id()
        ami = Ami(dest, ami_id, instance=None, source_ami=source, name=name, description=description)
        ami.root_device_type = source.root_device_type
        ami.boot_mode = source.boot_mode
        bdms = []
        for b in ami_bdms(source):
            nb = {k: v for k, v in b.items() if k != "Ebs"}
            ebs = b.get("Ebs")
            if ebs:
                nebs = dict(ebs)
                src_snap = ebs.get("snapshot")
                if src_snap is not None:
                    enc, key = copy_encryption(dest, src_snap, source_region, encrypted, key_arn)
                    nebs["snapshot"] = new_snapshot(
                        dest, src_snap.volume,
                        f"Copied for DestinationAmi {ami_id} from SourceAmi {source.id} for SourceSnapshot "
                        f"{src_snap.id}. Task created on {source_region}.",
                        enc, key, from_ami=ami_id,
                    )
                nb["Ebs"] = nebs
            bdms.append(nb)
        _set_bdms(ami, dest, bdms, source.root_device_name)
        dest.amis[ami_id] = ami
        return ActionResult({"ImageId": ami_id})

    EC2Response.copy_image = copy_image


def patch_R1() -> None:
    """R1 — RegisterImage honours the ``BlockDeviceMappings`` it is given: device names, existing
    snapshots (``Ebs.SnapshotId``, so a 2-volume AMI can be built from two snapshots with different
    keys), ``VolumeSize`` (default: the snapshot's), ``DeleteOnTermination`` (default true),
    ``VolumeType``, ephemeral ``VirtualName`` and ``NoDevice`` entries, plus ``RootDeviceName``,
    ``Architecture``, ``VirtualizationType`` and ``BootMode``. Vanilla ignores them and invents one
    unencrypted snapshot. An unknown snapshot is ``InvalidSnapshot.NotFound``."""
    (EC2Response,) = _import("R1", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("R1", "moto.core.responses", "ActionResult")
    _need(EC2Response, "register_image", "R1")

    def register_image(self: Any) -> Any:
        name = self._get_param("Name")
        description = self._get_param("Description", "")
        mappings = self._get_param("BlockDeviceMappings", []) or []
        root_device_name = self._get_param("RootDeviceName")
        self.error_on_dryrun()
        backend = self.ec2_backend
        bdms = []
        for m in mappings:
            b: dict[str, Any] = {"DeviceName": m.get("DeviceName")}
            if m.get("VirtualName"):
                b["VirtualName"] = m["VirtualName"]
            if "NoDevice" in m:
                b["NoDevice"] = ""
            ebs = m.get("Ebs")
            if ebs:
                snap = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
                size = ebs.get("VolumeSize")
                if size is None and snap is not None:
                    size = snap.volume_size
                if size is None:
                    raise _ec2_error("InvalidBlockDeviceMapping",
                                     f"snapshotId or volumeSize is required for device {b['DeviceName']}")
                dot = ebs.get("DeleteOnTermination")
                b["Ebs"] = {
                    "snapshot": snap,
                    "VolumeSize": int(size),
                    "DeleteOnTermination": True if dot is None else str(dot).lower() == "true",
                    "VolumeType": ebs.get("VolumeType") or "gp2",
                    "Iops": ebs.get("Iops"),
                    "Throughput": ebs.get("Throughput"),
                }
            bdms.append(b)
        ami = backend.register_image(name, description)
        for attr, param in (("architecture", "Architecture"), ("virtualization_type", "VirtualizationType"),
                            ("boot_mode", "BootMode")):
            value = self._get_param(param)
            if value:
                setattr(ami, attr, value)
        if not ami.architecture:
            ami.architecture = "x86_64"
        if not ami.virtualization_type:
            ami.virtualization_type = "hvm"
        if bdms:
            _set_bdms(ami, backend, bdms, root_device_name or bdms[0]["DeviceName"])
            for b in bdms:
                if b.get("Ebs") and b["Ebs"]["snapshot"] is not None and not b["Ebs"]["snapshot"].from_ami:
                    b["Ebs"]["snapshot"].from_ami = ami.id
        elif root_device_name:
            ami.root_device_name = root_device_name
        return ActionResult({"ImageId": ami.id})

    EC2Response.register_image = register_image


def patch_S1_copy_snapshot() -> None:
    """S1 — CopySnapshot: ``Encrypted`` without ``KmsKeyId`` encrypts with the destination region's
    ``aws/ebs`` key (vanilla leaves it unencrypted), the key is reported as an ARN, ``KmsKeyId``
    without ``Encrypted`` is ``InvalidParameterDependency``, and a snapshot shared with the caller
    can be copied (E5)."""
    (EC2Response,) = _import("S1", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("S1", "moto.core.responses", "ActionResult")
    (InvalidParameterDependency,) = _import("S1", "moto.ec2.exceptions", "InvalidParameterDependency")
    _need(EC2Response, "copy_snapshot", "S1")

    def copy_snapshot(self: Any) -> Any:
        source_snapshot_id = self._get_param("SourceSnapshotId")
        source_region = self._get_param("SourceRegion") or self.region
        description = self._get_param("Description")
        encrypted = self._get_bool_param("Encrypted", False)
        kms_key_id = self._get_param("KmsKeyId")
        tags = self._parse_tag_specification().get("snapshot", {})
        self.error_on_dryrun()
        if kms_key_id and not encrypted:
            raise InvalidParameterDependency("KmsKeyId", "Encrypted")
        dest = self.ec2_backend
        src = find_visible_snapshot(self.current_account, source_region, source_snapshot_id)
        key_arn = _key_arn_or_error(self.current_account, dest.region_name, kms_key_id) if kms_key_id else None
        enc, key = copy_encryption(dest, src, source_region, encrypted, key_arn)
        snap = new_snapshot(dest, src.volume, description, enc, key)
        snap.add_tags(tags)
        return ActionResult({"SnapshotId": snap.id, "Tags": snap.tag_set})

    EC2Response.copy_snapshot = copy_snapshot


def patch_E4() -> None:
    """E4 — ModifySnapshotAttribute accepts the ``CreateVolumePermission.Add.N.UserId`` /
    ``.Remove.N.UserId`` (and ``.Group``) form that Packer and the AWS SDKs (aws-sdk-rust included)
    send, besides ``OperationType`` + ``UserIds``/``GroupNames``; DescribeSnapshotAttribute returns
    them. Vanilla silently ignores the first form."""
    (EC2Response,) = _import("E4", "moto.ec2.responses", "EC2Response")
    (EmptyResult,) = _import("E4", "moto.core.responses", "EmptyResult")
    _need(EC2Response, "modify_snapshot_attribute", "E4")

    def modify_snapshot_attribute(self: Any) -> Any:
        snapshot_id = self._get_param("SnapshotId")
        operation_type = self._get_param("OperationType")
        cvp = self._get_param("CreateVolumePermission", {}) or {}
        self.error_on_dryrun()
        backend = self.ec2_backend
        backend.get_snapshot(snapshot_id)
        ops: list[tuple[str, list[str], list[str]]] = []
        for op, key in (("add", "Add"), ("remove", "Remove")):
            perms = cvp.get(key) or []
            users = [p["UserId"] for p in perms if p.get("UserId")]
            groups = [p["Group"] for p in perms if p.get("Group")]
            if users or groups:
                ops.append((op, users, groups))
        if operation_type in ("add", "remove"):
            ops.append((operation_type, self._get_param("UserIds", []) or [], self._get_param("GroupNames", []) or []))
        for op, users, groups in ops:
            for u in users:
                if not (len(u) == 12 and u.isdigit()):
                    raise _ec2_error("InvalidParameterValue", f"Value ({u}) for parameter userId is invalid.")
            if op == "add":
                backend.add_create_volume_permission(snapshot_id, user_ids=users, groups=groups)
            else:
                backend.remove_create_volume_permission(snapshot_id, user_ids=users, groups=groups)
        return EmptyResult()

    EC2Response.modify_snapshot_attribute = modify_snapshot_attribute


def patch_E5() -> None:
    """E5 — cross-account visibility. An AMI shared by launch permission (``UserId`` or ``all``) is
    visible to the other account in DescribeImages (by id, ``ExecutableUsers=self``, ``Owners=[A]``);
    a snapshot shared by ``createVolumePermission`` is visible in DescribeSnapshots (by id,
    ``RestorableByUserIds``, ``OwnerIds``). DescribeSnapshots honours ``OwnerIds`` (ids, ``self``,
    ``amazon``) and ``RestorableByUserIds`` (ids, ``self``, ``all``), which vanilla ignores. Only
    accounts moto has already instantiated are searched; Organization/OU permissions are not."""
    (EC2Response,) = _import("E5", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("E5", "moto.core.responses", "ActionResult")
    (generic_filter,) = _import("E5", "moto.ec2.utils", "generic_filter")
    (InvalidAMIIdError, InvalidSnapshotIdError) = _import("E5", "moto.ec2.exceptions", "InvalidAMIIdError",
                                                          "InvalidSnapshotIdError")
    _need(EC2Response, "describe_images", "E5")
    _need(EC2Response, "describe_snapshots", "E5")

    def describe_images(self: Any) -> Any:
        self.error_on_dryrun()
        me = self.current_account
        ami_ids = self._get_param("ImageIds", []) or []
        filters = self._filters_from_querystring()
        owners = self._get_param("Owners", []) or []
        exec_users = self._get_param("ExecutableUsers", []) or []
        try:
            images = self.ec2_backend.describe_images(
                ami_ids=ami_ids, filters=filters, exec_users=list(exec_users), owners=list(owners)
            )
        except InvalidAMIIdError:
            if not ami_ids:
                raise
            images = None
        remote = shared_images(me, self.region)
        if ami_ids:
            remote = [a for a in remote if a.id in ami_ids]
            if images is None and not remote:
                raise InvalidAMIIdError(ami_ids)
        else:
            if exec_users:
                users = {me if u == "self" else u for u in exec_users}
                remote = [a for a in remote if a.is_public or any(lp.get("UserId") in users for lp in a.launch_permissions)]
            if owners:
                owner_set = {me if o == "self" else o for o in owners}
                remote = [a for a in remote if a.owner_id in owner_set or a.owner_alias in owner_set]
            if filters:
                remote = generic_filter(filters, remote)
        seen = {a.id for a in images or []}
        return ActionResult({"Images": list(images or []) + [a for a in remote if a.id not in seen]})

    def describe_snapshots(self: Any) -> Any:
        from moto.ec2.models.amis import AMIS

        me = self.current_account
        filters = self._filters_from_querystring()
        snapshot_ids = self._get_param("SnapshotIds", []) or []
        owner_ids = self._get_param("OwnerIds", []) or []
        restorable = self._get_param("RestorableByUserIds", []) or []
        backend = self.ec2_backend
        local = list(backend.snapshots.values())
        remote = shared_snapshots(me, self.region)
        if snapshot_ids:
            found = [s for s in local + remote if s.id in snapshot_ids]
            if len({s.id for s in found}) < len(set(snapshot_ids)):
                raise InvalidSnapshotIdError()
            snaps = found
        else:
            snaps = local + remote
        if owner_ids:
            owner_set = {me if o == "self" else o for o in owner_ids}
            default_amis = {a["ami_id"] for a in AMIS} if "amazon" in owner_set else set()
            snaps = [s for s in snaps if s.owner_id in owner_set or (s.from_ami in default_amis and s.owner_id != me)]
        if restorable:
            users = {me if u == "self" else u for u in restorable}
            snaps = [
                s for s in snaps
                if ("all" in users and "all" in s.create_volume_permission_groups)
                or s.owner_id in users
                or users & s.create_volume_permission_userids
            ]
        if filters:
            snaps = generic_filter(filters, snaps)
        return ActionResult({"Snapshots": snaps})

    EC2Response.describe_images = describe_images
    EC2Response.describe_snapshots = describe_snapshots


def patch_E6() -> None:
    """E6 — GetEbsDefaultKmsKeyId returns the region's default EBS key ARN (``aws/ebs`` unless changed
    by ModifyEbsDefaultKmsKeyId; vanilla: 500 NotImplemented) and ResetEbsDefaultKmsKeyId restores
    ``aws/ebs``. Get/Enable/DisableEbsEncryptionByDefault work in vanilla; S1 and E1 make new volumes
    and copies honour the setting."""
    (EC2Response,) = _import("E6", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("E6", "moto.core.responses", "ActionResult")
    (EBSBackend,) = _import("E6", "moto.ec2.models.elastic_block_store", "EBSBackend")
    _need(EBSBackend, "_create_default_encryption_key", "E6")
    for m in ("get_ebs_encryption_by_default", "enable_ebs_encryption_by_default", "disable_ebs_encryption_by_default"):
        _need(EC2Response, m, "E6")

    def get_ebs_default_kms_key_id(self: Any) -> Any:
        self.error_on_dryrun()
        return ActionResult({"KmsKeyId": _default_ebs_key_arn(self.ec2_backend)})

    def reset_ebs_default_kms_key_id(self: Any) -> Any:
        self.error_on_dryrun()
        backend = self.ec2_backend
        backend.default_kms_key_id = ""
        return ActionResult({"KmsKeyId": backend._create_default_encryption_key()})

    EC2Response.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id
    EC2Response.reset_ebs_default_kms_key_id = reset_ebs_default_kms_key_id


# --------------------------------------------------------------------------------------------------
# KMS
# --------------------------------------------------------------------------------------------------


def _kms_key(backend: Any, key_id: str) -> Any:
    from moto.kms.exceptions import NotFoundException

    try:
        return backend.keys[backend.any_id_to_key_id(key_id)]
    except (KeyError, AttributeError, TypeError):
        raise NotFoundException(f"Key '{key_id}' does not exist") from None


def patch_K1() -> None:
    """K1 — keys behind reserved aliases (``alias/aws/*``, e.g. the lazily created ``aws/ebs`` key)
    report ``KeyManager=AWS``; CreateKey without ``KeyUsage`` gives ``KeyUsage=ENCRYPT_DECRYPT`` (the AWS
    default; vanilla reports none); CreateAlias/UpdateAlias with an ``alias/aws/`` name is rejected.

    Error choice: AWS rejects reserved names with ``NotAuthorizedException`` (moto already raises it
    for the exact reserved names); we raise it for the whole ``alias/aws/`` prefix, with the message
    "Alias must not begin with 'alias/aws/'. These aliases are reserved." (botocore's KMS model does
    not list it for CreateAlias, so SDKs surface it as an unmodelled service error)."""
    (Key, KmsBackend) = _import("K1", "moto.kms.models", "Key", "KmsBackend")
    (KmsResponse,) = _import("K1", "moto.kms.responses", "KmsResponse")
    (JsonRESTError,) = _import("K1", "moto.core.exceptions", "JsonRESTError")
    orig_to_dict = _need(Key, "to_dict", "K1")
    orig_create_key = _need(KmsBackend, "create_key", "K1")
    orig_set_alias = _need(KmsResponse, "_set_alias", "K1")

    def to_dict(self: Any) -> dict[str, Any]:
        d = orig_to_dict(self)
        if any(a.startswith("alias/aws/") for a in self.aliases):
            self.key_manager = "AWS"
            d["KeyMetadata"]["KeyManager"] = "AWS"
        return d

    def create_key(self: Any, policy: Any, key_usage: Any, key_spec: Any, *args: Any, **kwargs: Any) -> Any:
        return orig_create_key(self, policy, key_usage or "ENCRYPT_DECRYPT", key_spec, *args, **kwargs)

    def _set_alias(self: Any, update: bool = False) -> str:
        alias_name = self._get_param("AliasName") or ""
        if alias_name.startswith("alias/aws/"):
            raise JsonRESTError("NotAuthorizedException",
                                "Alias must not begin with 'alias/aws/'. These aliases are reserved.")
        return orig_set_alias(self, update)

    Key.to_dict = to_dict
    KmsBackend.create_key = create_key
    KmsResponse._set_alias = _set_alias
    # keys created through EBSBackend._create_default_encryption_key get the alias right after
    # create_key, so to_dict (above) is where KeyManager is decided.


GRANT_OPERATIONS: list[str] = []


def patch_K2() -> None:
    """K2 — CreateGrant: the same ``Name`` with identical parameters (grantee, operations, constraints,
    retiring principal) returns the same ``GrantId`` with a fresh token (idempotent, as on AWS); a key
    in ``PendingDeletion`` (or ``PendingImport``…) gives ``KMSInvalidStateException``, a ``Disabled`` key
    ``DisabledException``; operation names outside the KMS ``GrantOperation`` enum give
    ``ValidationException``. Grants also report ``CreationDate`` and ``IssuingAccount``."""
    (KmsBackend, Grant) = _import("K2", "moto.kms.models", "KmsBackend", "Grant")
    (JsonRESTError,) = _import("K2", "moto.core.exceptions", "JsonRESTError")
    (ValidationException,) = _import("K2", "moto.kms.exceptions", "ValidationException")
    _need(KmsBackend, "create_grant", "K2")
    orig_to_json = _need(Grant, "to_json", "K2")
    import botocore.session

    model = botocore.session.get_session().get_service_model("kms")
    GRANT_OPERATIONS[:] = list(model.shape_for("GrantOperation").enum)

    def create_grant(self: Any, key_id: str, grantee_principal: str, operations: list[str], name: str,
                     constraints: dict[str, Any], retiring_principal: str) -> tuple[str, str]:
        from moto.core.utils import unix_time
        from moto.moto_api._internal import mock_random

        key = _kms_key(self, key_id)
        bad = [op for op in operations or [] if op not in GRANT_OPERATIONS]
        if bad or not operations:
            raise ValidationException(
                f"1 validation error detected: Value '{operations}' at 'operations' failed to satisfy "
                f"constraint: Member must satisfy constraint: [Member must satisfy enum value set: "
                f"[{', '.join(GRANT_OPERATIONS)}]]"
            )
        if key.key_state == "Disabled":
            raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
        if key.key_state != "Enabled":
            state = {"PendingDeletion": "pending deletion", "PendingImport": "pending import",
                     "Unavailable": "unavailable"}.get(key.key_state, key.key_state)
            raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is {state}.")
        if name:
            for g in key.grants.values():
                if (g.name == name and g.grantee_principal == grantee_principal
                        and sorted(g.operations) == sorted(operations)
                        and (g.constraints or None) == (constraints or None)
                        and g.retiring_principal == retiring_principal):
                    g.token = mock_random.get_random_hex(64)
                    return g.id, g.token
        grant = key.add_grant(name, grantee_principal, operations, constraints=constraints,
                              retiring_principal=retiring_principal)
        # AWS grant ids are 64 hex characters; move the grant under its new id.
        key.grants.pop(grant.id, None)
        grant.id = mock_random.get_random_hex(64)
        grant.token = mock_random.get_random_hex(64)
        grant.creation_date = unix_time()
        grant.issuing_account = f"arn:aws:iam::{key.account_id}:root"
        key.grants[grant.id] = grant
        return grant.id, grant.token

    def to_json(self: Any) -> dict[str, Any]:
        d = orig_to_json(self)
        for k in ("Name", "RetiringPrincipal", "Constraints"):
            if d.get(k) is None:
                d.pop(k, None)
        if getattr(self, "creation_date", None) is not None:
            d["CreationDate"] = self.creation_date
        if getattr(self, "issuing_account", None):
            d["IssuingAccount"] = self.issuing_account
        return d

    KmsBackend.create_grant = create_grant
    Grant.to_json = to_json


def patch_K3() -> None:
    """K3 — ListGrants honours ``GranteePrincipal`` and ``GrantId`` (vanilla ignores the principal) and
    pages with ``Limit``/``Marker`` (``Truncated``/``NextMarker``); an unknown ``GrantId`` gives an empty
    list, not an error."""
    (KmsResponse,) = _import("K3", "moto.kms.responses", "KmsResponse")
    _need(KmsResponse, "list_grants", "K3")

    def list_grants(self: Any) -> str:
        key_id = self._get_param("KeyId")
        grant_id = self._get_param("GrantId")
        grantee = self._get_param("GranteePrincipal")
        limit = int(self._get_param("Limit") or 50)
        marker = self._get_param("Marker")
        self._validate_key_id(key_id)
        key = _kms_key(self.kms_backend, key_id)
        grants = list(key.grants.values())
        if grant_id:
            grants = [g for g in grants if g.id == grant_id]
        if grantee:
            grants = [g for g in grants if g.grantee_principal == grantee]
        start = int(marker) if marker and str(marker).isdigit() else 0
        page = grants[start:start + limit]
        out: dict[str, Any] = {"Grants": [g.to_json() for g in page], "Truncated": start + limit < len(grants)}
        if out["Truncated"]:
            out["NextMarker"] = str(start + limit)
        return json.dumps(out)

    KmsResponse.list_grants = list_grants


def patch_K4() -> None:
    """K4 — a key ARN or alias ARN naming another account is served from that account's (and that
    ARN's region's) KMS backend, so DescribeKey/CreateGrant/ListGrants/RevokeGrant/RetireGrant work
    across accounts (vanilla: NotFound or a 500, or silently the caller's own key with the same id).
    There is no key-policy check. Also DisableKey/EnableKey/ScheduleKeyDeletion/CancelKeyDeletion
    accept a key ARN (vanilla: 500 for an ARN)."""
    (KmsResponse,) = _import("K4", "moto.kms.responses", "KmsResponse")
    (KmsBackend,) = _import("K4", "moto.kms.models", "KmsBackend")
    _need(KmsResponse, "kms_backend", "K4")

    def kms_backend(self: Any) -> Any:
        from moto.kms.models import kms_backends

        try:
            body = json.loads(self.body) if self.body else {}
            key_id = body.get("KeyId") if isinstance(body, dict) else None
        except (ValueError, TypeError):
            key_id = None
        if isinstance(key_id, str):
            m = ARN_RE.match(key_id)
            if m and m.group("account") != self.current_account:
                return kms_backends[m.group("account")][m.group("region")]
        return kms_backends[self.current_account][self.region]

    KmsResponse.kms_backend = property(kms_backend)

    for name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion"):
        orig = _need(KmsBackend, name, "K4")

        def make(orig: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
                return orig(self, self.get_key_id(key_id), *args, **kwargs)

            wrapper.__name__ = orig.__name__
            wrapper.__doc__ = f"K4: {orig.__name__} accepting a key ARN."
            return wrapper

        setattr(KmsBackend, name, make(orig))


def patch_K5() -> None:
    """K5 — ReplicateKey: the primary stays ``PRIMARY`` and lists its replicas; each replica is
    ``REPLICA`` with the same ``PrimaryKey``, its own ARN, grants, aliases and state (vanilla shares the
    dicts, so the primary turns into ``REPLICA``); replicating a key that is not multi-Region is
    ``UnsupportedOperationException`` (vanilla: 500); replicating into the primary's region or a region
    that already has a replica is ``AlreadyExistsException``."""
    (KmsBackend, kms_backends) = _import("K5", "moto.kms.models", "KmsBackend", "kms_backends")
    (JsonRESTError,) = _import("K5", "moto.core.exceptions", "JsonRESTError")
    _need(KmsBackend, "replicate_key", "K5")
    _need(KmsBackend, "describe_key", "K5")

    def replicate_key(self: Any, key_id: str, replica_region: str) -> Any:
        key = _kms_key(self, key_id)
        if not key.multi_region:
            raise JsonRESTError("UnsupportedOperationException",
                                f"{key.arn} is not a multi-Region key. You can replicate only multi-Region keys.")
        config = key.multi_region_configuration
        primary_region = config["PrimaryKey"]["Region"]
        replicas = config["ReplicaKeys"]
        if replica_region == primary_region or any(r["Region"] == replica_region for r in replicas):
            raise JsonRESTError("AlreadyExistsException",
                                f"{key.id} already exists in {replica_region}.")
        replica = copy(key)
        replica.region = replica_region
        replica.arn = key.arn.replace(f":{key.region}:", f":{replica_region}:", 1)
        replica.grants = {}
        replica.aliases = {}
        replica.rotations = []
        replica.key_state = "Enabled"
        replica.enabled = True
        replica.deletion_date = None
        replicas.append({"Arn": replica.arn, "Region": replica_region})
        # Shared PrimaryKey/ReplicaKeys views (they are the same on every key of the set), own type.
        replica.multi_region_configuration = {
            "MultiRegionKeyType": "REPLICA",
            "PrimaryKey": config["PrimaryKey"],
            "ReplicaKeys": replicas,
        }
        kms_backends[self.account_id][replica_region].keys[replica.id] = replica
        return replica

    def describe_key(self: Any, key_id: str) -> Any:
        return self.keys[self.any_id_to_key_id(key_id)]

    KmsBackend.replicate_key = replicate_key
    KmsBackend.describe_key = describe_key


# --------------------------------------------------------------------------------------------------
# SSM
# --------------------------------------------------------------------------------------------------

AMI_VALUE_RE = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")


def patch_P1() -> None:
    """P1 — SSM PutParameter with ``DataType=aws:ec2:image`` validates the value: it must match
    ``ami-`` + 8 or 17 hex digits, and the AMI must exist and be visible to the calling account in that
    region (own, public or shared by launch permission). Vanilla accepts anything.

    Error choice: ``ValidationException`` (HTTP 400) for both cases. AWS rejects a malformed value
    synchronously with ValidationException; it checks existence asynchronously (the parameter never
    becomes usable). None of the error shapes botocore's SSM model lists for PutParameter
    (UnsupportedParameterType, ParameterPatternMismatchException, InvalidAllowedPatternException, ...)
    is about the value, so the harness fails the unknown AMI synchronously with the same
    ValidationException, message "Parameter value, <v>, is not a valid AMI ID or not visible to this
    account in <region>." (tests cannot wait for an asynchronous failure)."""
    (SSMBackend,) = _import("P1", "moto.ssm.models", "SimpleSystemManagerBackend")
    (ValidationException,) = _import("P1", "moto.ssm.exceptions", "ValidationException")
    orig = _need(SSMBackend, "put_parameter", "P1")

    def put_parameter(self: Any, name: str, description: str, value: str, parameter_type: str,
                      allowed_pattern: str, keyid: str, overwrite: bool, tags: Any, data_type: str,
                      *args: Any, **kwargs: Any) -> Any:
        if data_type == "aws:ec2:image" and value:
            if not AMI_VALUE_RE.match(value):
                raise ValidationException(
                    f"Parameter value, {value}, failed to satisfy constraint: Member must satisfy "
                    f"regular expression pattern: ^ami-[0-9a-f]{{8}}$|^ami-[0-9a-f]{{17}}$"
                )
            try:
                find_visible_image(self.account_id, self.region_name, value)
            except Exception:
                raise ValidationException(
                    f"Parameter value, {value}, is not a valid AMI ID or not visible to this account "
                    f"in {self.region_name}."
                ) from None
        return orig(self, name, description, value, parameter_type, allowed_pattern, keyid, overwrite,
                    tags, data_type, *args, **kwargs)

    SSMBackend.put_parameter = put_parameter


# --------------------------------------------------------------------------------------------------
# Lifecycle (deprecation, deregistration protection, retire): LC1-LC4
# --------------------------------------------------------------------------------------------------


def _iso_minute(value: str) -> Any:
    """An RFC 3339 / ISO 8601 instant rounded to the nearest minute (as EnableImageDeprecation does)."""
    from datetime import datetime, timedelta, timezone

    text = value.strip().replace("Z", "+00:00")
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    if t.second >= 30:
        t = t + timedelta(minutes=1)
    return t.replace(second=0, microsecond=0)


def _own_image(backend: Any, ami_id: str) -> Any:
    from moto.ec2.exceptions import InvalidAMIIdError

    if ami_id not in backend.amis:
        raise InvalidAMIIdError([ami_id])
    return backend.amis[ami_id]


def patch_LC1() -> None:
    """LC1 — EnableImageDeprecation / DisableImageDeprecation (vanilla: NotImplemented): the time is
    rounded to the nearest minute, must lie in the future (``InvalidParameterValue`` otherwise, as on
    AWS) and comes back in DescribeImages as ``DeprecationTime`` (``YYYY-MM-DDTHH:MM:00.000Z``)."""
    (EC2Response,) = _import("LC1", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("LC1", "moto.core.responses", "ActionResult")
    (Ami,) = _import("LC1", "moto.ec2.models.amis", "Ami")

    def enable_image_deprecation(self: Any) -> Any:
        from datetime import datetime, timezone

        ami_id = self._get_param("ImageId")
        raw = self._get_param("DeprecateAt")
        self.error_on_dryrun()
        ami = _own_image(self.ec2_backend, ami_id)
        try:
            at = _iso_minute(str(raw))
        except ValueError:
            raise _ec2_error("InvalidParameterValue", f"Invalid value '{raw}' for DeprecateAt.") from None
        if at <= datetime.now(timezone.utc):
            raise _ec2_error("InvalidParameterValue", "The deprecation time must be in the future.")
        ami.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:00.000Z")
        return ActionResult({"Return": True})

    def disable_image_deprecation(self: Any) -> Any:
        ami_id = self._get_param("ImageId")
        self.error_on_dryrun()
        _own_image(self.ec2_backend, ami_id).deprecation_time = None
        return ActionResult({"Return": True})

    Ami.deprecation_time = None
    EC2Response.enable_image_deprecation = enable_image_deprecation
    EC2Response.disable_image_deprecation = disable_image_deprecation


def patch_LC2() -> None:
    """LC2 — EnableImageDeregistrationProtection / DisableImageDeregistrationProtection (vanilla:
    NotImplemented). DescribeImages reports ``DeregistrationProtection``: ``disabled``, ``enabled``,
    ``enabled-with-cooldown``, or after disabling a cooldown protection ``disabled-until <time>``
    (24 h later). DeregisterImage of a protected AMI (or one in its cooldown) is refused with
    ``InvalidParameterValue`` (see LC3, which owns DeregisterImage)."""
    (EC2Response,) = _import("LC2", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("LC2", "moto.core.responses", "ActionResult")
    (Ami,) = _import("LC2", "moto.ec2.models.amis", "Ami")

    def enable(self: Any) -> Any:
        ami_id = self._get_param("ImageId")
        cooldown = self._get_bool_param("WithCooldown", False)
        self.error_on_dryrun()
        ami = _own_image(self.ec2_backend, ami_id)
        ami.deregistration_protection = "enabled-with-cooldown" if cooldown else "enabled"
        return ActionResult({"Return": True})

    def disable(self: Any) -> Any:
        from datetime import datetime, timedelta, timezone

        ami_id = self._get_param("ImageId")
        self.error_on_dryrun()
        ami = _own_image(self.ec2_backend, ami_id)
        if ami.deregistration_protection == "enabled-with-cooldown":
            until = datetime.now(timezone.utc) + timedelta(hours=24)
            ami.deregistration_protection = f"disabled-until {until.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
        elif not str(ami.deregistration_protection).startswith("disabled-until"):
            ami.deregistration_protection = "disabled"
        return ActionResult({"Return": True})

    Ami.deregistration_protection = "disabled"
    EC2Response.enable_image_deregistration_protection = enable
    EC2Response.disable_image_deregistration_protection = disable


def _protected(ami: Any) -> bool:
    from datetime import datetime, timezone

    state = str(getattr(ami, "deregistration_protection", "disabled") or "disabled")
    if state.startswith("enabled"):
        return True
    if state.startswith("disabled-until "):
        until = datetime.fromisoformat(state.split(" ", 1)[1].replace("Z", "+00:00"))
        return until > datetime.now(timezone.utc)
    return False


def patch_LC3() -> None:
    """LC3 — DeregisterImage honours ``DeleteAssociatedSnapshots`` (vanilla ignores it and keeps every
    snapshot): each EBS snapshot of the AMI is deleted (``success``) unless another AMI in the region
    still uses it (``skipped``, the snapshot stays), and ``DeleteSnapshotResults`` lists them. A
    protected AMI (LC2) is refused with ``InvalidParameterValue`` and nothing changes."""
    (EC2Response,) = _import("LC3", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("LC3", "moto.core.responses", "ActionResult")
    _need(EC2Response, "deregister_image", "LC3")

    def deregister_image(self: Any) -> Any:
        ami_id = self._get_param("ImageId")
        delete_snaps = self._get_bool_param("DeleteAssociatedSnapshots", False)
        self.error_on_dryrun()
        backend = self.ec2_backend
        ami = backend.amis.get(ami_id)
        if ami is not None and _protected(ami):
            raise _ec2_error(
                "InvalidParameterValue",
                f"The AMI {ami_id} has deregistration protection enabled. Disable it before deregistering.",
            )
        snaps = []
        if ami is not None:
            snaps = [b["Ebs"]["snapshot"] for b in ami_bdms(ami) if b.get("Ebs") and b["Ebs"].get("snapshot") is not None]
        backend.deregister_image(ami_id)
        results = []
        if delete_snaps:
            for snap in snaps:
                used = any(
                    snap.id in {b["Ebs"]["snapshot"].id for b in ami_bdms(other)
                                if b.get("Ebs") and b["Ebs"].get("snapshot") is not None}
                    for other in backend.amis.values()
                )
                if used or snap.id not in backend.snapshots:
                    results.append({"SnapshotId": snap.id, "ReturnCode": "skipped"})
                    continue
                backend.snapshots.pop(snap.id, None)
                results.append({"SnapshotId": snap.id, "ReturnCode": "success"})
        out: dict[str, Any] = {"Return": True}
        if delete_snaps:
            out["DeleteSnapshotResults"] = results
        return ActionResult(out)

    EC2Response.deregister_image = deregister_image


def patch_LC4() -> None:
    """LC4 — DescribeImageReferences (vanilla: NotImplemented), for the resource types
    ``ec2:Instance`` (instances not terminated, launched from the AMI), ``ec2:LaunchTemplate`` (the
    default or latest version names the AMI) and ``ssm:Parameter`` (a parameter of data type
    ``aws:ec2:image`` whose current value is the AMI), in the caller's account and region.
    ``IncludeAllResourceTypes`` selects all three; without either, nothing is checked."""
    (EC2Response,) = _import("LC4", "moto.ec2.responses", "EC2Response")
    (ActionResult,) = _import("LC4", "moto.core.responses", "ActionResult")

    def describe_image_references(self: Any) -> Any:
        from moto.ssm.models import ssm_backends

        ids = set(self._get_param("ImageIds", []) or [])
        everything = self._get_bool_param("IncludeAllResourceTypes", False)
        types = {t.get("ResourceType") for t in (self._get_param("ResourceTypes", []) or [])}
        self.error_on_dryrun()
        if everything:
            types |= {"ec2:Instance", "ec2:LaunchTemplate", "ssm:Parameter"}
        backend = self.ec2_backend
        acct, region = backend.account_id, backend.region_name
        refs: list[dict[str, str]] = []
        if "ec2:Instance" in types:
            for inst in backend.all_instances():
                if inst.image_id in ids and inst.state != "terminated":
                    refs.append({"ImageId": inst.image_id, "ResourceType": "ec2:Instance",
                                 "Arn": f"arn:aws:ec2:{region}:{acct}:instance/{inst.id}"})
        if "ec2:LaunchTemplate" in types:
            for lt in backend.launch_templates.values():
                used = {lt.default_version().image_id, lt.latest_version().image_id} & ids
                for image_id in sorted(i for i in used if i):
                    refs.append({"ImageId": image_id, "ResourceType": "ec2:LaunchTemplate",
                                 "Arn": f"arn:aws:ec2:{region}:{acct}:launch-template/{lt.id}"})
        if "ssm:Parameter" in types:
            for name, versions in ssm_backends[acct][region]._parameters.items():
                if not versions:
                    continue
                cur = versions[-1]
                if getattr(cur, "data_type", "text") == "aws:ec2:image" and cur.value in ids:
                    arn_name = name if name.startswith("/") else f"/{name}"
                    refs.append({"ImageId": cur.value, "ResourceType": "ssm:Parameter",
                                 "Arn": f"arn:aws:ssm:{region}:{acct}:parameter{arn_name}"})
        return ActionResult({"ImageReferences": refs})

    EC2Response.describe_image_references = describe_image_references
# Copy into consumer accounts (amikey copy / copy_to)
# --------------------------------------------------------------------------------------------------


def patch_C1() -> None:
    """C1 — CopyImage as a consumer account copies a shared AMI, like AWS:

    * the source of another account must be shared with the caller by launch permission (E5) *and*
      every source snapshot by ``createVolumePermission``; otherwise ``AuthFailure`` ("You do not have
      permission to access the storage of this ami"), and nothing is created;
    * ``ClientToken`` is idempotent per account and region: the same token returns the same ImageId and
      creates nothing (vanilla makes a new image each time);
    * ``TagSpecifications`` (``image`` and ``snapshot``) are applied to the new image and its snapshots
      (vanilla ignores them).
    Encryption under the requested key (resolved in the caller's account) is E1's."""
    (EC2Response,) = _import("C1", "moto.ec2.responses", "EC2Response")
    _import("C1", "moto.ec2.utils", "convert_tag_spec")
    previous = _need(EC2Response, "copy_image", "C1")

    def copy_image(self: Any) -> Any:
        me = self.current_account
        dest = self.ec2_backend
        token = self._get_param("ClientToken")
        tokens = dest.__dict__.setdefault("amikey_copy_tokens", {})
        if token and token in tokens and tokens[token] in dest.amis:
            from moto.core.responses import ActionResult

            return ActionResult({"ImageId": tokens[token]})
        source_region = self._get_param("SourceRegion") or self.region
        source = find_visible_image(me, source_region, self._get_param("SourceImageId"))
        if source.owner_id != me:
            for b in ami_bdms(source):
                snap = (b.get("Ebs") or {}).get("snapshot")
                if snap is not None and snap.owner_id != me and not _snapshot_visible_to(snap, me):
                    raise _ec2_error("AuthFailure", "You do not have permission to access the storage of this ami")
        tag_specs = self._parse_tag_specification()
        result = previous(self)
        ami_id = result.result["ImageId"]
        if token:
            tokens[token] = ami_id
        ami = dest.amis[ami_id]
        if tag_specs.get("image"):
            dest.create_tags([ami_id], tag_specs["image"])
        if tag_specs.get("snapshot"):
            snaps = [b["Ebs"]["snapshot"].id for b in ami_bdms(ami) if (b.get("Ebs") or {}).get("snapshot") is not None]
            if snaps:
                dest.create_tags(snaps, tag_specs["snapshot"])
        return result

    EC2Response.copy_image = copy_image


#: Tag on a source AMI: each copy of it stays ``pending`` this many seconds (C2).
COPY_SECONDS_TAG = "amikey-moto:copy-seconds"


def patch_C2() -> None:
    """C2 — a copy takes time, like AWS (minutes there; vanilla makes it ``available`` at once, so
    nothing that waits for a copy can be exercised): a copy of a source AMI tagged
    ``amikey-moto:copy-seconds=N`` is ``pending`` for N seconds, then ``available``. Untagged sources
    copy at once, as before. The tag is this emulator's knob, set with CreateTags like any tag; a
    reset removes it with the image. Repeating a ClientToken does not restart the wait."""
    (EC2Response,) = _import("C2", "moto.ec2.responses", "EC2Response")
    previous = _need(EC2Response, "copy_image", "C2")

    def copy_image(self: Any) -> Any:
        source_region = self._get_param("SourceRegion") or self.region
        source = find_visible_image(self.current_account, source_region, self._get_param("SourceImageId"))
        seconds = 0.0
        for t in source.get_tags():
            if t.get("key") == COPY_SECONDS_TAG:
                seconds = float(t.get("value") or 0)
        result = previous(self)
        ami = self.ec2_backend.amis[result.result["ImageId"]]
        if seconds > 0 and "amikey_copy_pending" not in ami.__dict__:
            ami.amikey_copy_pending = True
            ami.state = "pending"

            def done() -> None:
                if ami.state == "pending":
                    ami.state = "available"

            timer = threading.Timer(seconds, done)
            timer.daemon = True
            timer.start()
        return result

    EC2Response.copy_image = copy_image


# --------------------------------------------------------------------------------------------------

PATCHES: list[tuple[str, Callable[[], None]]] = [
    ("E3", patch_E3),
    ("S1", patch_S1),
    ("E2", patch_E2),
    ("L1", patch_L1),
    ("E1", patch_E1),
    ("R1", patch_R1),
    ("S1-copy", patch_S1_copy_snapshot),
    ("E4", patch_E4),
    ("E5", patch_E5),
    ("E6", patch_E6),
    ("K1", patch_K1),
    ("K2", patch_K2),
    ("K3", patch_K3),
    ("K4", patch_K4),
    ("K5", patch_K5),
    ("P1", patch_P1),
    ("LC1", patch_LC1),
    ("LC2", patch_LC2),
    ("LC3", patch_LC3),
    ("LC4", patch_LC4),
    ("C1", patch_C1),
    ("C2", patch_C2),
]


def apply_all() -> list[str]:
    """Apply every patch once (idempotent). Raises PatchError naming the patch on a moto mismatch."""
    if APPLIED:
        return list(APPLIED)
    import moto

    if getattr(moto, "__version__", None) != MOTO_VERSION:
        raise PatchError(f"amikey_moto patches need moto {MOTO_VERSION}, found {getattr(moto, '__version__', '?')}")
    for pid, fn in PATCHES:
        try:
            fn()
        except PatchError:
            raise
        except Exception as e:  # an internal changed shape in a way _need did not catch
            raise PatchError(f"amikey_moto patch {pid} failed to apply: {e!r}") from e
        APPLIED.append(pid)
    return list(APPLIED)
