//! Consumer-side KMS grants: which service-linked roles need one, with which operations, under
//! which deterministic name, and the plan that reconciles what exists with what is wanted.
//!
//! Owns: the service-linked-role catalog ([`CATALOG`]), grantee ARNs ([`grantee_arn`]), grant
//! names ([`grant_name`]), the reconcile plan ([`plan`]) and the AccessDenied explanation
//! ([`explain_access_denied`]). Must not know: AWS SDK types, how grants are listed or created,
//! the clock.
//!
//! Rules the plan follows: exactly one grant per key × region × grantee; an existing grant
//! satisfies if it has the same key, region and grantee and at least the needed operations,
//! whatever its name; amikey's own grants are recognised by the `amikey-` name prefix, and only
//! those are ever retired. Creates come before retires, so an interrupted run never leaves a
//! grantee without a grant.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::core::ids::{arn_account, arn_region, is_account_id};
use crate::core::policy::generate_command;

/// Every grant amikey creates has a name starting with this.
pub const NAME_PREFIX: &str = "amikey-";

/// One service-linked role amikey knows, and what AWS documents it needs on a customer managed
/// key used by an encrypted AMI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceLinkedRole {
    /// `--service` name.
    pub service: &'static str,
    /// IAM role name (without custom suffix).
    pub role_name: &'static str,
    /// Service principal; the role's path is `aws-service-role/<service_principal>/`.
    pub service_principal: &'static str,
    /// Whether AWS supports a custom suffix (`<role_name>_<suffix>`) for this role.
    pub custom_suffix: bool,
    /// Whether the role touches EBS at all; if not, no grant is needed and none is created.
    pub uses_grants: bool,
    /// Grant operations as AWS documents them (sorted); empty when `uses_grants` is false.
    pub operations: &'static [&'static str],
    /// Where AWS documents it.
    pub source: &'static str,
    /// One line for the README and for `--service` errors.
    pub note: &'static str,
}

/// The eight operations AWS documents for the Auto Scaling, Spot and Fleet roles (sorted).
pub const LAUNCH_OPERATIONS: &[&str] = &[
    "CreateGrant",
    "Decrypt",
    "DescribeKey",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];

/// Supported service-linked roles, sorted by `service`. README's table is derived from this.
pub const CATALOG: &[ServiceLinkedRole] = &[
    ServiceLinkedRole {
        service: "autoscaling",
        role_name: "AWSServiceRoleForAutoScaling",
        service_principal: "autoscaling.amazonaws.com",
        custom_suffix: true,
        uses_grants: true,
        operations: LAUNCH_OPERATIONS,
        source: "https://docs.aws.amazon.com/autoscaling/ec2/userguide/key-policy-requirements-EBS-encryption.html",
        note: "EC2 Auto Scaling groups (also ECS capacity providers and EKS managed node groups, which launch through Auto Scaling). Custom-suffix roles: --service AWSServiceRoleForAutoScaling_SUFFIX.",
    },
    ServiceLinkedRole {
        service: "ec2-fleet",
        role_name: "AWSServiceRoleForEC2Fleet",
        service_principal: "ec2fleet.amazonaws.com",
        custom_suffix: false,
        uses_grants: true,
        operations: LAUNCH_OPERATIONS,
        source: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-fleet-prerequisites.html",
        note: "EC2 Fleet of type maintain/request (an instant fleet launches as the caller and needs no grant).",
    },
    ServiceLinkedRole {
        service: "ecs-autoscaling",
        role_name: "AWSServiceRoleForApplicationAutoScaling_ECSService",
        service_principal: "ecs.application-autoscaling.amazonaws.com",
        custom_suffix: false,
        uses_grants: false,
        operations: &[],
        source: "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSApplicationAutoscalingECSServicePolicy.html",
        note: "No grant needed: Application Auto Scaling only changes an ECS service's desired count (ecs:UpdateService, CloudWatch alarms) and never launches instances. Container instances are launched by the capacity provider's Auto Scaling group: use --service autoscaling.",
    },
    ServiceLinkedRole {
        service: "spot",
        role_name: "AWSServiceRoleForEC2Spot",
        service_principal: "spot.amazonaws.com",
        custom_suffix: false,
        uses_grants: true,
        operations: LAUNCH_OPERATIONS,
        source: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/service-linked-roles-spot-instance-requests.html",
        note: "Spot Instance requests (and Auto Scaling launch configurations that request Spot).",
    },
    ServiceLinkedRole {
        service: "spot-fleet",
        role_name: "AWSServiceRoleForEC2SpotFleet",
        service_principal: "spotfleet.amazonaws.com",
        custom_suffix: false,
        uses_grants: true,
        operations: LAUNCH_OPERATIONS,
        source: "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-fleet-prerequisites.html",
        note: "Spot Fleet requests.",
    },
];

impl ServiceLinkedRole {
    /// The role name with an optional custom suffix.
    pub fn role_name_with(&self, suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!("{}_{s}", self.role_name),
            None => self.role_name.to_owned(),
        }
    }

    /// The `aws iam create-service-linked-role` command that creates this role.
    pub fn create_command(&self, suffix: Option<&str>) -> String {
        match suffix {
            Some(s) => format!(
                "aws iam create-service-linked-role --aws-service-name {} --custom-suffix {s}",
                self.service_principal
            ),
            None => {
                format!("aws iam create-service-linked-role --aws-service-name {}", self.service_principal)
            }
        }
    }
}

/// The catalog as a Markdown table, for the README (the single source is [`CATALOG`]).
pub fn catalog_markdown() -> String {
    let mut out = String::from(
        "| `--service` | Role (`aws-service-role/<principal>/`) | Grant operations | Notes |\n|---|---|---|---|\n",
    );
    for e in CATALOG {
        let ops = if e.uses_grants { e.operations.join(", ") } else { "none (no grant needed)".to_owned() };
        let role = if e.custom_suffix {
            format!("`{}` or `{}_SUFFIX`", e.role_name, e.role_name)
        } else {
            format!("`{}`", e.role_name)
        };
        out.push_str(&format!(
            "| `{}` | {role} (`{}`) | {ops} | {} [AWS docs]({}) |\n",
            e.service, e.service_principal, e.note, e.source
        ));
    }
    out
}

/// Looks up a catalog entry by `--service` name.
pub fn catalog_entry(service: &str) -> Option<&'static ServiceLinkedRole> {
    CATALOG.iter().find(|s| s.service == service)
}

/// Errors from grantee and grant inputs. Each says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// `--service` names no catalog entry.
    #[error(
        "unknown service {given:?}; supported: {supported}, or AWSServiceRoleForAutoScaling_SUFFIX for a custom-suffix Auto Scaling role"
    )]
    UnknownService {
        /// What was given.
        given: String,
        /// The catalog names, comma-separated.
        supported: String,
    },
    /// The service's role never uses the key.
    #[error("--service {service} needs no grant: {note}")]
    NoGrantNeeded {
        /// The service.
        service: String,
        /// Why (the catalog note).
        note: String,
    },
    /// A custom suffix with characters IAM does not allow.
    #[error(
        "custom suffix {suffix:?} is invalid: IAM allows 1-64 characters of letters, digits and + = , . @ -"
    )]
    BadSuffix {
        /// The suffix.
        suffix: String,
    },
    /// `--grantee-role` is not an IAM role ARN.
    #[error("grantee {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")]
    BadRoleArn {
        /// What was given.
        arn: String,
    },
    /// The account is not a 12-digit id.
    #[error("account {account:?} is not a 12-digit AWS account id")]
    BadAccount {
        /// What was given.
        account: String,
    },
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Grantee {
    /// A catalog service-linked role, optionally with a custom suffix.
    Service {
        /// Catalog `service` name.
        service: String,
        /// Custom suffix (`AWSServiceRoleForAutoScaling_<suffix>`).
        suffix: Option<String>,
    },
    /// Any IAM role, by ARN (Karpenter node role, EKS roles).
    Role {
        /// The role ARN.
        arn: String,
    },
}

fn valid_suffix(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
}

impl Grantee {
    /// Parses a `--service` value: a catalog name, or `AWSServiceRoleForAutoScaling_SUFFIX`.
    pub fn parse_service(spec: &str) -> Result<Grantee, GrantError> {
        if let Some(entry) = catalog_entry(spec) {
            return Ok(Grantee::Service { service: entry.service.to_owned(), suffix: None });
        }
        for entry in CATALOG.iter().filter(|e| e.custom_suffix) {
            if let Some(suffix) = spec.strip_prefix(entry.role_name).and_then(|r| r.strip_prefix('_')) {
                if !valid_suffix(suffix) {
                    return Err(GrantError::BadSuffix { suffix: suffix.to_owned() });
                }
                return Ok(Grantee::Service {
                    service: entry.service.to_owned(),
                    suffix: Some(suffix.to_owned()),
                });
            }
            if spec == entry.role_name {
                return Ok(Grantee::Service { service: entry.service.to_owned(), suffix: None });
            }
        }
        Err(GrantError::UnknownService {
            given: spec.to_owned(),
            supported: CATALOG.iter().map(|e| e.service).collect::<Vec<_>>().join(", "),
        })
    }

    /// A `--grantee-role` value.
    pub fn role(arn: &str) -> Result<Grantee, GrantError> {
        let ok = arn.starts_with("arn:")
            && arn.contains(":iam::")
            && arn_account(arn).is_some_and(is_account_id)
            && arn.splitn(6, ':').nth(5).is_some_and(|r| r.starts_with("role/") && r.len() > 5);
        if ok {
            Ok(Grantee::Role { arn: arn.to_owned() })
        } else {
            Err(GrantError::BadRoleArn { arn: arn.to_owned() })
        }
    }

    /// The label used in grant names and output: `autoscaling`, `autoscaling_SUFFIX`, `role`.
    pub fn label(&self) -> String {
        match self {
            Grantee::Service { service, suffix: None } => service.clone(),
            Grantee::Service { service, suffix: Some(s) } => format!("{service}_{s}"),
            Grantee::Role { .. } => "role".to_owned(),
        }
    }

    /// The grant operations this grantee needs. A role outside the catalog gets the Auto
    /// Scaling set, which covers every EBS launch path.
    pub fn operations(&self) -> Result<Vec<String>, GrantError> {
        let ops = match self {
            Grantee::Service { service, .. } => {
                let entry = catalog_entry(service).ok_or_else(|| GrantError::UnknownService {
                    given: service.clone(),
                    supported: CATALOG.iter().map(|e| e.service).collect::<Vec<_>>().join(", "),
                })?;
                if !entry.uses_grants {
                    return Err(GrantError::NoGrantNeeded {
                        service: service.clone(),
                        note: entry.note.to_owned(),
                    });
                }
                entry.operations
            }
            Grantee::Role { .. } => LAUNCH_OPERATIONS,
        };
        Ok(ops.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// The grantee principal ARN in `account`:
/// `arn:aws:iam::ACCOUNT:role/aws-service-role/<service principal>/<role name>[_<suffix>]`,
/// or the role ARN itself.
pub fn grantee_arn(grantee: &Grantee, account: &str) -> Result<String, GrantError> {
    match grantee {
        Grantee::Role { arn } => Ok(arn.clone()),
        Grantee::Service { service, suffix } => {
            if !is_account_id(account) {
                return Err(GrantError::BadAccount { account: account.to_owned() });
            }
            let entry = catalog_entry(service).ok_or_else(|| GrantError::UnknownService {
                given: service.clone(),
                supported: CATALOG.iter().map(|e| e.service).collect::<Vec<_>>().join(", "),
            })?;
            Ok(format!(
                "arn:aws:iam::{account}:role/aws-service-role/{}/{}",
                entry.service_principal,
                entry.role_name_with(suffix.as_deref())
            ))
        }
    }
}

/// 64-bit FNV-1a. Chosen because it is tiny, dependency-free and fully specified
/// (http://www.isthe.com/chongo/tech/comp/fnv/), so names stay identical across amikey versions
/// and platforms. It is not a security boundary: a name only needs to be stable and unlikely to
/// collide among one account's grants on one key. Changing it (or [`grant_name`]'s input
/// layout) would make every existing grant look foreign, so both are pinned by tests.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The deterministic grant `Name`: `amikey-<label>-<16 hex of FNV-1a 64 over
/// "amikey-grant-v1\n<key ARN>\n<grantee ARN>">`. Label characters outside KMS's
/// `^[a-zA-Z0-9:/_-]+$` become `_`; the result is at most 256 characters. The key ARN carries the
/// region, so each multi-Region replica gets its own name.
pub fn grant_name(label: &str, key_arn: &str, grantee_arn: &str) -> String {
    let hash = fnv1a64(format!("amikey-grant-v1\n{key_arn}\n{grantee_arn}").as_bytes());
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(256 - NAME_PREFIX.len() - 17)
        .collect();
    format!("{NAME_PREFIX}{label}-{hash:016x}")
}

/// The key ARN of each replica of a multi-Region key (`key/mrk-…`) in `regions`, sorted by
/// region; a single-Region key maps to itself in its own region only.
pub fn expand_multi_region(key_arn: &str, regions: &[String]) -> Vec<(String, String)> {
    let parts: Vec<&str> = key_arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[5].starts_with("key/mrk-") {
        let set: BTreeSet<&String> = regions.iter().collect();
        set.into_iter()
            .map(|r| {
                (r.clone(), format!("{}:{}:{}:{r}:{}:{}", parts[0], parts[1], parts[2], parts[4], parts[5]))
            })
            .collect()
    } else {
        vec![(arn_region(key_arn).unwrap_or_default().to_owned(), key_arn.to_owned())]
    }
}

/// A grant that should exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredGrant {
    /// Key (replica) ARN; grants on another account's key need the ARN.
    pub key_arn: String,
    /// The key's region.
    pub region: String,
    /// Grantee principal ARN.
    pub grantee_arn: String,
    /// Label for the name ([`Grantee::label`]).
    pub label: String,
    /// Operations needed (`Decrypt` or `kms:Decrypt`).
    pub operations: Vec<String>,
}

/// A grant as `ListGrants` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExistingGrant {
    /// Key ARN.
    pub key_arn: String,
    /// The key's region.
    pub region: String,
    /// Grant id.
    pub grant_id: String,
    /// Name, when the grant has one.
    pub name: Option<String>,
    /// Grantee principal ARN.
    pub grantee_arn: String,
    /// Operations.
    pub operations: Vec<String>,
}

impl ExistingGrant {
    fn is_amikeys(&self) -> bool {
        self.name.as_deref().is_some_and(|n| n.starts_with(NAME_PREFIX))
    }
}

/// Why amikey retires one of its own grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireReason {
    /// Its key is no longer published (`--retire-stale`).
    KeyNotPublished,
    /// A new grant with more operations replaces it.
    Superseded,
    /// Another grant already covers the same key, region and grantee.
    Duplicate,
}

/// One step of a [`GrantPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum GrantAction {
    /// `CreateGrant` with `Name`, so a retry returns the same grant.
    Create {
        /// Key ARN.
        key_arn: String,
        /// Region.
        region: String,
        /// Grantee ARN.
        grantee_arn: String,
        /// Sorted operations.
        operations: Vec<String>,
        /// Deterministic name.
        name: String,
    },
    /// An existing grant already satisfies.
    Unchanged {
        /// Key ARN.
        key_arn: String,
        /// Region.
        region: String,
        /// Grantee ARN.
        grantee_arn: String,
        /// The satisfying grant.
        grant_id: String,
        /// Its name.
        name: Option<String>,
    },
    /// `RetireGrant` on one of amikey's own grants.
    Retire {
        /// Key ARN.
        key_arn: String,
        /// Region.
        region: String,
        /// Grantee ARN.
        grantee_arn: String,
        /// Grant id.
        grant_id: String,
        /// Its name.
        name: Option<String>,
        /// Why.
        reason: RetireReason,
    },
}

/// Several grants cover the same key × region × grantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateGrants {
    /// Key ARN.
    pub key_arn: String,
    /// Region.
    pub region: String,
    /// Grantee ARN.
    pub grantee_arn: String,
    /// The grant kept (reported as `Unchanged`).
    pub kept: String,
    /// The others, sorted.
    pub others: Vec<String>,
}

/// The reconcile plan. Actions: creates, then unchanged, then retires, each sorted by key,
/// region, grantee.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GrantPlan {
    /// Steps to take (or, for `Unchanged`, already done).
    pub actions: Vec<GrantAction>,
    /// Groups of redundant grants (reported; amikey's own extras are retired with
    /// `--retire-stale`).
    pub duplicates: Vec<DuplicateGrants>,
    /// amikey grants that would be retired with `--retire-stale` (stale keys and superseded
    /// grants), when it was not given.
    pub kept_stale: Vec<ExistingGrant>,
}

impl GrantPlan {
    /// Whether applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.actions.iter().all(|a| matches!(a, GrantAction::Unchanged { .. }))
    }
}

impl std::fmt::Display for GrantPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for a in &self.actions {
            match a {
                GrantAction::Create { key_arn, grantee_arn, operations, name, .. } => {
                    writeln!(f, "+ create {name} on {key_arn} for {grantee_arn}: {}", operations.join(" "))?
                }
                GrantAction::Unchanged { key_arn, grantee_arn, grant_id, .. } => {
                    writeln!(f, "= keep grant {grant_id} on {key_arn} for {grantee_arn}")?
                }
                GrantAction::Retire { key_arn, grant_id, name, reason, .. } => {
                    let reason = match reason {
                        RetireReason::KeyNotPublished => "key no longer published",
                        RetireReason::Superseded => "superseded by a grant with more operations",
                        RetireReason::Duplicate => "duplicate",
                    };
                    writeln!(
                        f,
                        "- retire grant {grant_id} ({}) on {key_arn}: {reason}",
                        name.as_deref().unwrap_or("unnamed")
                    )?
                }
            }
        }
        for d in &self.duplicates {
            writeln!(
                f,
                "! {} grants on {} for {}: keeping {}, also {}",
                d.others.len() + 1,
                d.key_arn,
                d.grantee_arn,
                d.kept,
                d.others.join(", ")
            )?;
        }
        for g in &self.kept_stale {
            writeln!(
                f,
                "! kept {} ({}) on {}: pass --retire-stale to retire it",
                g.grant_id,
                g.name.as_deref().unwrap_or("unnamed"),
                g.key_arn
            )?;
        }
        Ok(())
    }
}

fn norm_ops(ops: &[String]) -> BTreeSet<String> {
    ops.iter().map(|o| o.strip_prefix("kms:").unwrap_or(o).to_owned()).collect()
}

/// Whether `existing` satisfies a need: same key, region and grantee, and operations ⊇
/// `operations`. Names are not compared.
pub fn satisfies(
    existing: &ExistingGrant,
    key_arn: &str,
    region: &str,
    grantee_arn: &str,
    operations: &[String],
) -> bool {
    existing.key_arn == key_arn
        && existing.region == region
        && existing.grantee_arn == grantee_arn
        && norm_ops(operations).is_subset(&norm_ops(&existing.operations))
}

type Slot = (String, String, String);

/// Reconciles `desired` against `existing` (from `ListGrants` on every desired key, and on
/// every key carrying amikey grants). Desired entries for the same key × region × grantee are
/// merged (union of operations). See the module doc for the rules.
pub fn plan(desired: &[DesiredGrant], existing: &[ExistingGrant], retire_stale: bool) -> GrantPlan {
    let mut wanted: BTreeMap<Slot, (String, BTreeSet<String>)> = BTreeMap::new();
    for d in desired {
        let e = wanted
            .entry((d.key_arn.clone(), d.region.clone(), d.grantee_arn.clone()))
            .or_insert_with(|| (d.label.clone(), BTreeSet::new()));
        if d.label < e.0 {
            e.0 = d.label.clone();
        }
        e.1.extend(norm_ops(&d.operations));
    }
    let mut existing: Vec<&ExistingGrant> = existing.iter().collect();
    existing.sort_by(|a, b| {
        (&a.key_arn, &a.region, &a.grantee_arn, &a.grant_id).cmp(&(
            &b.key_arn,
            &b.region,
            &b.grantee_arn,
            &b.grant_id,
        ))
    });

    let mut out = GrantPlan::default();
    let (mut creates, mut keeps, mut retires) = (Vec::new(), Vec::new(), Vec::new());
    let mut retire = |g: &ExistingGrant, reason, out: &mut GrantPlan| {
        if retire_stale {
            retires.push(GrantAction::Retire {
                key_arn: g.key_arn.clone(),
                region: g.region.clone(),
                grantee_arn: g.grantee_arn.clone(),
                grant_id: g.grant_id.clone(),
                name: g.name.clone(),
                reason,
            });
        } else {
            out.kept_stale.push(g.clone());
        }
    };

    for ((key_arn, region, grantee_arn), (label, ops)) in &wanted {
        let ops_vec: Vec<String> = ops.iter().cloned().collect();
        let name = grant_name(label, key_arn, grantee_arn);
        let same_slot: Vec<&ExistingGrant> = existing
            .iter()
            .copied()
            .filter(|g| g.key_arn == *key_arn && g.region == *region && g.grantee_arn == *grantee_arn)
            .collect();
        let (ok, short): (Vec<&ExistingGrant>, Vec<&ExistingGrant>) =
            same_slot.into_iter().partition(|g| satisfies(g, key_arn, region, grantee_arn, &ops_vec));
        if ok.is_empty() {
            creates.push(GrantAction::Create {
                key_arn: key_arn.clone(),
                region: region.clone(),
                grantee_arn: grantee_arn.clone(),
                operations: ops_vec.clone(),
                name: name.clone(),
            });
        } else {
            // Prefer the grant with our exact name, then any amikey grant, then the lowest id.
            let mut ranked = ok.clone();
            ranked.sort_by_key(|g| {
                (g.name.as_deref() != Some(name.as_str()), !g.is_amikeys(), g.grant_id.clone())
            });
            let kept = ranked[0];
            keeps.push(GrantAction::Unchanged {
                key_arn: key_arn.clone(),
                region: region.clone(),
                grantee_arn: grantee_arn.clone(),
                grant_id: kept.grant_id.clone(),
                name: kept.name.clone(),
            });
            if ranked.len() > 1 {
                let mut others: Vec<String> = ranked[1..].iter().map(|g| g.grant_id.clone()).collect();
                others.sort();
                out.duplicates.push(DuplicateGrants {
                    key_arn: key_arn.clone(),
                    region: region.clone(),
                    grantee_arn: grantee_arn.clone(),
                    kept: kept.grant_id.clone(),
                    others,
                });
                for g in ranked[1..].iter().filter(|g| g.is_amikeys()) {
                    retire(g, RetireReason::Duplicate, &mut out);
                }
            }
        }
        // amikey's own grants that no longer cover the need are superseded by the new one
        // (or by the satisfying one kept above).
        for g in short.into_iter().filter(|g| g.is_amikeys()) {
            retire(g, RetireReason::Superseded, &mut out);
        }
    }

    let wanted_keys: BTreeSet<&String> = wanted.keys().map(|(k, _, _)| k).collect();
    for g in existing.iter().filter(|g| g.is_amikeys() && !wanted_keys.contains(&g.key_arn)) {
        retire(g, RetireReason::KeyNotPublished, &mut out);
    }
    out.actions = creates;
    out.actions.extend(keeps);
    out.actions.extend(retires);
    out
}

/// Explains an AccessDenied from KMS for `operation` (`CreateGrant` or `kms:CreateGrant`) on
/// `key_arn`, called from `consumer_account`: which key-policy permission is missing, the
/// consumer-side IAM permission that is also needed, and the `amikey policy generate` line the
/// key owner runs.
pub fn explain_access_denied(operation: &str, key_arn: &str, consumer_account: &str) -> String {
    let op = operation.strip_prefix("kms:").unwrap_or(operation);
    let owner = arn_account(key_arn).unwrap_or("the key owner");
    let region = arn_region(key_arn).unwrap_or("its region");
    let fix = generate_command(&[consumer_account], Some(key_arn));
    let (statement, consequence) = match op {
        "CreateGrant" | "ListGrants" | "RevokeGrant" | "RetireGrant" => (
            format!(
                "allow arn:aws:iam::{consumer_account}:root kms:{op} without a \
                 `kms:GrantIsForAWSResource` condition (that key is false when the consumer \
                 grants its own service-linked role; Sid AmikeyConsumerGrants)"
            ),
            "the consumer cannot grant its Auto Scaling / Spot service-linked roles, and ASG \
             launches fail with Client.InternalError",
        ),
        "DescribeKey" => (
            format!("allow arn:aws:iam::{consumer_account}:root kms:DescribeKey (Sid AmikeyConsumerGrants)"),
            "amikey cannot resolve or check the key",
        ),
        _ => (
            format!(
                "allow arn:aws:iam::{consumer_account}:root kms:{op} (Sid AmikeyConsumerCrypto: \
                 Encrypt, Decrypt, ReEncrypt*, GenerateDataKey*, DescribeKey)"
            ),
            "instances launched from the AMI cannot decrypt its snapshots",
        ),
    };
    format!(
        "KMS denied kms:{op} on {key_arn} to account {consumer_account}: {consequence}. The key \
         policy of that key (account {owner}, region {region}; each multi-Region replica has its \
         own policy) must {statement}, and the calling identity's IAM policy in \
         {consumer_account} must allow kms:{op} on {key_arn}. The key owner can produce the \
         statement with `{fix}` and apply it with `aws kms put-key-policy`."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::AUTOSCALING_GRANT_OPERATIONS;

    const KEY: &str = "arn:aws:kms:eu-west-1:999999999999:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const ACCT: &str = "111111111111";
    const ASG: &str = "arn:aws:iam::111111111111:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";

    fn ops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn desired(key: &str, grantee: &str) -> DesiredGrant {
        DesiredGrant {
            key_arn: key.into(),
            region: arn_region(key).unwrap_or_default().into(),
            grantee_arn: grantee.into(),
            label: "autoscaling".into(),
            operations: ops(LAUNCH_OPERATIONS),
        }
    }

    fn existing(
        id: &str,
        key: &str,
        grantee: &str,
        name: Option<&str>,
        operations: &[&str],
    ) -> ExistingGrant {
        ExistingGrant {
            key_arn: key.into(),
            region: arn_region(key).unwrap_or_default().into(),
            grant_id: id.into(),
            name: name.map(str::to_owned),
            grantee_arn: grantee.into(),
            operations: ops(operations),
        }
    }

    #[test]
    fn catalog_is_sorted_and_matches_aws_documented_operations() {
        let names: Vec<&str> = CATALOG.iter().map(|e| e.service).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        // AWS Auto Scaling UG, cross-account Example 2 `create-grant --operations`.
        let asg = catalog_entry("autoscaling").unwrap();
        assert_eq!(asg.operations, AUTOSCALING_GRANT_OPERATIONS);
        for e in CATALOG {
            assert_eq!(e.uses_grants, !e.operations.is_empty(), "{}", e.service);
            let mut o = e.operations.to_vec();
            o.sort_unstable();
            assert_eq!(o, e.operations, "{}", e.service);
        }
    }

    #[test]
    fn catalog_renders_a_readme_table() {
        let md = catalog_markdown();
        assert_eq!(md.lines().count(), CATALOG.len() + 2);
        assert!(md.contains("| `ecs-autoscaling` | `AWSServiceRoleForApplicationAutoScaling_ECSService` (`ecs.application-autoscaling.amazonaws.com`) | none (no grant needed) |"));
        assert!(md.contains("`AWSServiceRoleForAutoScaling` or `AWSServiceRoleForAutoScaling_SUFFIX`"));
    }

    /// README's "Consumer side" carries exactly this table, so docs and code cannot drift.
    #[test]
    fn readme_contains_the_catalog_table() {
        let readme = include_str!("../../README.md");
        let table = catalog_markdown();
        assert!(readme.contains(&table), "README.md must contain exactly:\n{table}");
    }

    #[test]
    fn grantee_arns_follow_the_service_role_path() {
        assert_eq!(grantee_arn(&Grantee::parse_service("autoscaling").unwrap(), ACCT).unwrap(), ASG);
        assert_eq!(
            grantee_arn(&Grantee::parse_service("spot").unwrap(), ACCT).unwrap(),
            "arn:aws:iam::111111111111:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
        );
        let custom = Grantee::parse_service("AWSServiceRoleForAutoScaling_prod").unwrap();
        assert_eq!(custom, Grantee::Service { service: "autoscaling".into(), suffix: Some("prod".into()) });
        assert_eq!(grantee_arn(&custom, ACCT).unwrap(), format!("{ASG}_prod"));
        assert_eq!(custom.label(), "autoscaling_prod");
        assert_eq!(
            catalog_entry("autoscaling").unwrap().create_command(Some("prod")),
            "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com --custom-suffix prod"
        );
        assert!(matches!(
            Grantee::parse_service("AWSServiceRoleForAutoScaling_bad/x"),
            Err(GrantError::BadSuffix { .. })
        ));
        assert!(matches!(Grantee::parse_service("lambda"), Err(GrantError::UnknownService { .. })));
        assert!(grantee_arn(&Grantee::parse_service("spot").unwrap(), "12").is_err());
        let karpenter = Grantee::role("arn:aws:iam::111111111111:role/KarpenterNodeRole").unwrap();
        assert_eq!(
            grantee_arn(&karpenter, "ignored").unwrap(),
            "arn:aws:iam::111111111111:role/KarpenterNodeRole"
        );
        assert!(Grantee::role("arn:aws:iam::111111111111:user/bob").is_err());
        assert!(Grantee::role("KarpenterNodeRole").is_err());
    }

    #[test]
    fn ecs_autoscaling_needs_no_grant_and_says_why() {
        let g = Grantee::parse_service("ecs-autoscaling").unwrap();
        let err = g.operations().unwrap_err().to_string();
        assert!(err.contains("needs no grant") && err.contains("--service autoscaling"), "{err}");
        assert_eq!(Grantee::parse_service("spot").unwrap().operations().unwrap(), ops(LAUNCH_OPERATIONS));
    }

    /// Pinned: changing the hash or its input layout would orphan every grant amikey created.
    #[test]
    fn grant_names_are_pinned_valid_and_distinct_per_replica() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let n = grant_name("autoscaling", KEY, ASG);
        // Computed independently (Python FNV-1a 64 over the same bytes).
        assert_eq!(n, "amikey-autoscaling-fc353a87d30b856a");
        assert!(n.starts_with("amikey-autoscaling-") && n.len() == "amikey-autoscaling-".len() + 16, "{n}");
        let other_region = KEY.replace("eu-west-1", "us-east-1");
        assert_ne!(n, grant_name("autoscaling", &other_region, ASG));
        assert_ne!(n, grant_name("autoscaling", KEY, &format!("{ASG}_prod")));
        let weird = grant_name(&"x.y@z".repeat(100), KEY, ASG);
        assert!(weird.len() <= 256);
        assert!(weird.chars().all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c)), "{weird}");
    }

    #[test]
    fn multi_region_keys_expand_per_replica() {
        let mrk = "arn:aws:kms:eu-west-1:999999999999:key/mrk-abc";
        let regions = vec!["us-east-1".to_owned(), "eu-west-1".to_owned(), "us-east-1".to_owned()];
        assert_eq!(
            expand_multi_region(mrk, &regions),
            vec![
                ("eu-west-1".to_owned(), mrk.to_owned()),
                ("us-east-1".to_owned(), "arn:aws:kms:us-east-1:999999999999:key/mrk-abc".to_owned())
            ]
        );
        assert_eq!(expand_multi_region(KEY, &regions), vec![("eu-west-1".to_owned(), KEY.to_owned())]);
    }

    #[test]
    fn plan_creates_missing_grants_once_per_slot() {
        let p = plan(&[desired(KEY, ASG), desired(KEY, ASG)], &[], false);
        assert_eq!(p.actions.len(), 1);
        let GrantAction::Create { name, operations, .. } = &p.actions[0] else { panic!("{p:?}") };
        assert_eq!(name, &grant_name("autoscaling", KEY, ASG));
        assert_eq!(operations, &ops(LAUNCH_OPERATIONS));
        assert!(!p.is_noop());
        assert!(p.to_string().starts_with("+ create amikey-autoscaling-"));
    }

    /// A re-run after a successful run is a no-op; a hand-made grant (seed 001's `create-grant`
    /// has no name) counts too if it has every operation needed.
    #[test]
    fn plan_is_idempotent_and_accepts_foreign_satisfying_grants() {
        let name = grant_name("autoscaling", KEY, ASG);
        let ours = existing("g1", KEY, ASG, Some(&name), LAUNCH_OPERATIONS);
        let p = plan(&[desired(KEY, ASG)], std::slice::from_ref(&ours), true);
        assert!(p.is_noop());
        assert_eq!(
            p.actions,
            vec![GrantAction::Unchanged {
                key_arn: KEY.into(),
                region: "eu-west-1".into(),
                grantee_arn: ASG.into(),
                grant_id: "g1".into(),
                name: Some(name)
            }]
        );

        let mut superset = LAUNCH_OPERATIONS.to_vec();
        superset.push("RetireGrant");
        let by_hand = existing("h1", KEY, ASG, None, &superset);
        assert!(plan(&[desired(KEY, ASG)], &[by_hand], true).is_noop());
    }

    /// Seed 001's hand-made grant lacks Encrypt, GenerateDataKey and DescribeKey: not enough,
    /// so amikey creates its own and leaves the foreign one alone.
    #[test]
    fn plan_replaces_insufficient_grants_and_retires_only_its_own() {
        let seed_001 = existing(
            "cff2",
            KEY,
            ASG,
            None,
            &["Decrypt", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo", "CreateGrant"],
        );
        let old_ours = existing("g0", KEY, ASG, Some("amikey-autoscaling-0000000000000000"), &["Decrypt"]);
        let p = plan(&[desired(KEY, ASG)], &[seed_001.clone(), old_ours.clone()], true);
        assert!(matches!(p.actions[0], GrantAction::Create { .. }));
        assert!(
            matches!(&p.actions[1], GrantAction::Retire { grant_id, reason: RetireReason::Superseded, .. } if grant_id == "g0")
        );
        assert_eq!(p.actions.len(), 2);
        // Without --retire-stale the superseded grant is kept and reported.
        let p = plan(&[desired(KEY, ASG)], &[seed_001, old_ours.clone()], false);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.kept_stale, vec![old_ours]);
        assert!(p.to_string().contains("pass --retire-stale"));
    }

    #[test]
    fn plan_reports_duplicates_and_retires_stale_keys() {
        let name = grant_name("autoscaling", KEY, ASG);
        let a = existing("a", KEY, ASG, Some("manual"), LAUNCH_OPERATIONS);
        let b = existing("b", KEY, ASG, Some(&name), LAUNCH_OPERATIONS);
        let c = existing("c", KEY, ASG, Some("amikey-autoscaling-ffffffffffffffff"), LAUNCH_OPERATIONS);
        let gone = "arn:aws:kms:eu-west-1:999999999999:key/old";
        let stale = existing("s", gone, ASG, Some(&grant_name("autoscaling", gone, ASG)), LAUNCH_OPERATIONS);
        let foreign_on_gone = existing("f", gone, ASG, None, LAUNCH_OPERATIONS);
        let p = plan(&[desired(KEY, ASG)], &[stale, c, a, b, foreign_on_gone], true);
        assert_eq!(
            p.duplicates,
            vec![DuplicateGrants {
                key_arn: KEY.into(),
                region: "eu-west-1".into(),
                grantee_arn: ASG.into(),
                kept: "b".into(),
                others: vec!["a".into(), "c".into()]
            }]
        );
        let summary: Vec<(String, &str)> = p
            .actions
            .iter()
            .map(|a| match a {
                GrantAction::Create { name, .. } => (name.clone(), "create"),
                GrantAction::Unchanged { grant_id, .. } => (grant_id.clone(), "keep"),
                GrantAction::Retire { grant_id, reason: RetireReason::Duplicate, .. } => {
                    (grant_id.clone(), "dup")
                }
                GrantAction::Retire { grant_id, reason, .. } => (
                    grant_id.clone(),
                    if *reason == RetireReason::KeyNotPublished { "stale" } else { "super" },
                ),
            })
            .collect();
        assert_eq!(summary, vec![("b".into(), "keep"), ("c".into(), "dup"), ("s".into(), "stale")]);
        // The plan serializes for --dry-run JSON.
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["actions"][2]["action"], "retire");
        assert_eq!(v["actions"][2]["reason"], "key_not_published");
    }

    #[test]
    fn access_denied_explanations_name_the_missing_statement_and_command() {
        let m = explain_access_denied("CreateGrant", KEY, ACCT);
        assert!(m.contains("kms:CreateGrant without a `kms:GrantIsForAWSResource` condition"), "{m}");
        assert!(
            m.contains(&format!("amikey policy generate --consumer-account {ACCT} --key {KEY} --merge")),
            "{m}"
        );
        assert!(m.contains("account 999999999999, region eu-west-1"), "{m}");
        let m = explain_access_denied("kms:Decrypt", KEY, ACCT);
        assert!(m.contains("AmikeyConsumerCrypto") && m.contains("cannot decrypt"), "{m}");
    }
}
