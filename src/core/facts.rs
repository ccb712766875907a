//! Observed state, as plain structs: what the AWS layer gathered, in the shape the decide-core
//! needs. No SDK types: the `aws` module converts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Who manages a KMS key (`DescribeKey` `KeyManager`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyManager {
    /// `aws/ebs` and other AWS managed keys: never shareable, never usable outside their account.
    Aws,
    /// A customer managed key (CMK).
    Customer,
}

/// One KMS key, as DescribeKey (and ListAliases) report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyFacts {
    /// Key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`).
    pub arn: String,
    /// Key id (`1234abcd-…` or `mrk-…`).
    pub key_id: String,
    /// AWS or customer managed.
    pub manager: KeyManager,
    /// `Enabled`, `Disabled`, `PendingDeletion`, `PendingImport`, …
    pub state: String,
    /// An alias name (`alias/x`), when one is known.
    pub alias: Option<String>,
    /// True for a multi-Region key (primary or replica).
    pub multi_region: bool,
}

impl KeyFacts {
    /// The region named in the key ARN.
    pub fn region(&self) -> Option<&str> {
        super::ids::arn_region(&self.arn)
    }

    /// `arn (alias)` or `arn`.
    pub fn describe(&self) -> String {
        match &self.alias {
            Some(a) => format!("{} ({a})", self.arn),
            None => self.arn.clone(),
        }
    }
}

/// The result of resolving a key reference (intended key or a snapshot's key) in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KeyLookup {
    /// DescribeKey answered.
    Found(KeyFacts),
    /// DescribeKey said NotFound.
    NotFound,
    /// DescribeKey was refused (AccessDenied): the key exists, probably in another account.
    AccessDenied(String),
}

/// Facts the caller already read in this run, handed to the verifier so that it does not read
/// them again (a copy: the image as it became available, its destination key). Per region.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The AMI of the region (used only when its id is the AMI being verified).
    pub images: BTreeMap<String, ImageFacts>,
    /// Key lookups, by the reference that was looked up.
    pub keys: BTreeMap<String, BTreeMap<String, KeyLookup>>,
}

impl Known {
    /// `ami` in `region`, if it was read.
    pub fn image(&self, region: &str, ami: &str) -> Option<&ImageFacts> {
        self.images.get(region).filter(|i| i.ami_id == ami)
    }

    /// The lookup of `key` in `region`, if it was made.
    pub fn key(&self, region: &str, key: &str) -> Option<&KeyLookup> {
        self.keys.get(region).and_then(|k| k.get(key))
    }
}

/// One block-device mapping of an AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// `/dev/xvda`
    pub device_name: String,
    /// The EBS snapshot, for EBS mappings (None for ephemeral or `NoDevice` entries).
    pub snapshot_id: Option<String>,
    /// `Encrypted` of the EBS mapping, when AWS reports it.
    pub encrypted: Option<bool>,
}

/// One AMI as DescribeImages reports it (to the producer, or to a consumer it is shared with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFacts {
    /// `ami-…`
    pub ami_id: String,
    /// `available`, `pending`, `failed`, …
    pub state: String,
    /// Owner account.
    pub owner: Option<String>,
    /// Whether DescribeImages reports it public.
    pub public: bool,
    /// Block-device mappings in the order AWS lists them.
    pub block_devices: Vec<BlockDevice>,
    /// The AMI name (carried over to copies).
    pub name: Option<String>,
    /// The AMI description (carried over to copies).
    pub description: Option<String>,
    /// `CreationDate` as AWS reports it (RFC 3339).
    pub creation_date: Option<String>,
    /// `DeprecationTime` (RFC 3339), when deprecation is set.
    pub deprecation_time: Option<String>,
    /// `DeregistrationProtection`: `disabled`, `enabled`, `enabled-with-cooldown`, `disabled-until …`.
    pub deregistration_protection: Option<String>,
}

impl ImageFacts {
    /// The EBS mappings that carry a snapshot, in mapping order: (device, snapshot id,
    /// `Encrypted` of the mapping).
    pub fn ebs_snapshots(&self) -> Vec<(String, String, Option<bool>)> {
        self.block_devices
            .iter()
            .filter_map(|b| Some((b.device_name.clone(), b.snapshot_id.clone()?, b.encrypted)))
            .collect()
    }
}

/// One snapshot as DescribeSnapshots reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotFacts {
    /// `snap-…`
    pub snapshot_id: String,
    /// Encrypted flag.
    pub encrypted: bool,
    /// The key id or ARN AWS reports (an ARN on real AWS).
    pub kms_key_id: Option<String>,
}

/// Launch permissions of an AMI (DescribeImageAttribute launchPermission).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaunchPermissions {
    /// Account ids.
    pub users: BTreeSet<String>,
    /// Groups (`all` = public).
    pub groups: BTreeSet<String>,
    /// Organization ARNs.
    pub org_arns: BTreeSet<String>,
    /// Organizational unit ARNs.
    pub ou_arns: BTreeSet<String>,
}

/// An SSM parameter as GetParameters reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamFacts {
    /// Value.
    pub value: String,
    /// `String`, `StringList`, `SecureString`.
    pub param_type: String,
    /// `text` or `aws:ec2:image`.
    pub data_type: String,
}

/// Everything gathered in one region of the producer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionFacts {
    /// Region.
    pub region: String,
    /// The AMI to check there.
    pub ami_id: String,
    /// None when DescribeImages did not return it.
    pub image: Option<ImageFacts>,
    /// Snapshots by id (those DescribeSnapshots returned).
    pub snapshots: BTreeMap<String, SnapshotFacts>,
    /// Key lookups by the reference as given (intended key spec, snapshot key ids/ARNs).
    pub keys: BTreeMap<String, KeyLookup>,
    /// The intended key reference for this region, if one is configured.
    pub intended_key: Option<String>,
    /// Launch permissions (None when not gathered, e.g. the AMI is missing).
    pub launch_permissions: Option<LaunchPermissions>,
    /// createVolumePermission user ids per snapshot (and `all` as a user for the public group).
    pub snapshot_users: BTreeMap<String, BTreeSet<String>>,
    /// SSM parameters by (account, name): the producer's own and each publish account's.
    pub parameters: BTreeMap<(String, String), Option<ParamFacts>>,
    /// The intended key's policy (publish with `check_key_policy` on and consumers to check):
    /// the document, or why it could not be read. None when not gathered.
    pub key_policy: Option<Result<String, String>>,
}
