//! `publish`: from the [`Intent`] and the gathered facts to the writes that converge AWS on it.
//! Only what differs is written; nothing is removed unless `prune`; parameters in publish
//! accounts come in a later wave than the launch permission that makes the AMI visible there.

use std::collections::BTreeSet;

use serde::Serialize;

use super::copy::SOURCE_IMAGE_PARAMETER;
use super::facts::{LaunchPermissions, ParamFacts, RegionFacts};
use super::intent::Intent;
use super::report::{ActionReport, RegionReport, Status};

/// Tag key and value amikey puts on the parameters it creates.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "amikey");

/// Principals of a launch-permission change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Principals {
    /// Account ids.
    pub users: Vec<String>,
    /// Groups (`all`).
    pub groups: Vec<String>,
    /// Organization ARNs.
    pub org_arns: Vec<String>,
    /// OU ARNs.
    pub ou_arns: Vec<String>,
}

impl Principals {
    /// True when nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.org_arns.is_empty() && self.ou_arns.is_empty()
    }
}

/// One write call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "call")]
pub enum Write {
    /// ModifyImageAttribute launchPermission.
    ModifyLaunchPermission {
        /// AMI.
        ami_id: String,
        /// Principals to add.
        add: Principals,
        /// Principals to remove (only with prune).
        remove: Principals,
    },
    /// ModifySnapshotAttribute createVolumePermission.
    ModifyCreateVolumePermission {
        /// Snapshot.
        snapshot_id: String,
        /// Accounts (or `all`) to add.
        add: Vec<String>,
        /// Accounts (or `all`) to remove (only with prune).
        remove: Vec<String>,
    },
    /// PutParameter.
    PutParameter {
        /// Full name.
        name: String,
        /// Value.
        value: String,
        /// `String` or `StringList`.
        param_type: String,
        /// `aws:ec2:image` or `text`.
        data_type: String,
        /// Whether it exists already (Overwrite, no tags) or not (create with the managed tag).
        overwrite: bool,
    },
    /// EnableImageDeprecation (see [`super::lifecycle`]).
    EnableImageDeprecation {
        /// AMI.
        ami_id: String,
        /// RFC 3339, whole minutes.
        deprecate_at: String,
    },
    /// EnableImageDeregistrationProtection.
    EnableImageDeregistrationProtection {
        /// AMI.
        ami_id: String,
        /// `WithCooldown`.
        with_cooldown: bool,
    },
    /// DeregisterImage (`amikey retire`), deleting the snapshots no other AMI uses.
    DeregisterImage {
        /// AMI.
        ami_id: String,
        /// `DeleteAssociatedSnapshots`.
        delete_snapshots: bool,
    },
}

/// One item of desired state and the write that achieves it (None: already as desired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Region.
    pub region: String,
    /// The account it lives in: None for the producer's own, Some for a publish account.
    pub account: Option<String>,
    /// `launch_permission`, `create_volume_permission`, `ssm_parameter`.
    pub kind: &'static str,
    /// The items, for the report (`ami-… user 1111…`).
    pub targets: Vec<String>,
    /// 0: sharing and the producer's parameters; 1: publish accounts' parameters (they need the
    /// AMI shared first, or AWS refuses an `aws:ec2:image` value the account cannot see).
    pub wave: u8,
    /// The write, or None when unchanged.
    pub write: Option<Write>,
}

fn diff(
    have: &BTreeSet<String>,
    want: &BTreeSet<String>,
    prune: bool,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let add = want.difference(have).cloned().collect();
    let keep = want.intersection(have).cloned().collect();
    let remove = if prune { have.difference(want).cloned().collect() } else { Vec::new() };
    (add, keep, remove)
}

/// The suffixes of the parameters published under `ssm_path`, in publishing order.
pub const PARAMETER_SUFFIXES: [&str; 3] = ["image_id", "kms_key_arn", "snapshot_ids"];

/// The full names of the parameters `intent` publishes under `path` (known before anything is
/// read, so `publish` can read them while it verifies): the three of every AMI, then a copy's
/// `source_image_id`.
pub fn parameter_names(intent: &Intent, path: &str) -> Vec<String> {
    let copy = intent.source_image_id.as_ref().map(|_| SOURCE_IMAGE_PARAMETER);
    PARAMETER_SUFFIXES.iter().copied().chain(copy).map(|s| format!("{path}/{s}")).collect()
}

/// The parameter values for a verified region: `(suffix, value, type, data type)`.
pub fn parameter_values(
    intent: &Intent,
    report: &RegionReport,
) -> Vec<(&'static str, String, &'static str, &'static str)> {
    let snaps: Vec<&str> = report.snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
    let [image_id, kms_key_arn, snapshot_ids] = PARAMETER_SUFFIXES;
    let mut v = vec![
        (image_id, report.ami_id.clone(), "String", "aws:ec2:image"),
        (kms_key_arn, report.intended_kms_key_arn.clone().unwrap_or_default(), "String", "text"),
        (snapshot_ids, snaps.join(","), "StringList", "text"),
    ];
    if let Some(source) = &intent.source_image_id {
        v.push((SOURCE_IMAGE_PARAMETER, source.clone(), "String", "text"));
    }
    v
}

fn param_steps(
    intent: &Intent,
    region: &str,
    account: Option<&str>,
    path: &str,
    report: &RegionReport,
    facts: &RegionFacts,
    wave: u8,
) -> Vec<Step> {
    let key_account = account.unwrap_or("");
    parameter_values(intent, report)
        .into_iter()
        .map(|(suffix, value, ty, dt)| {
            let name = format!("{path}/{suffix}");
            let have: Option<&ParamFacts> =
                facts.parameters.get(&(key_account.to_string(), name.clone())).and_then(Option::as_ref);
            let same = have.is_some_and(|p| p.value == value && p.param_type == ty && p.data_type == dt);
            let write = (!same).then(|| Write::PutParameter {
                name: name.clone(),
                value: value.clone(),
                param_type: ty.to_string(),
                data_type: dt.to_string(),
                overwrite: have.is_some(),
            });
            Step {
                region: region.to_string(),
                account: account.map(str::to_string),
                kind: "ssm_parameter",
                targets: vec![format!("{name} = {value}")],
                wave,
                write,
            }
        })
        .collect()
}

/// Plans one verified, finding-free region.
pub fn plan_region(intent: &Intent, facts: &RegionFacts, report: &RegionReport) -> Vec<Step> {
    let region = facts.region.as_str();
    let ami = facts.ami_id.as_str();
    let mut steps = Vec::new();

    // Launch permissions: one ModifyImageAttribute for all additions, one for removals.
    let have = facts.launch_permissions.clone().unwrap_or_default();
    let LaunchPermissions { users, groups, org_arns, ou_arns } = &have;
    let want_groups: BTreeSet<String> =
        if intent.public { ["all".to_string()].into() } else { BTreeSet::new() };
    let (au, ku, ru) = diff(users, &intent.launch_users, intent.prune);
    let (ag, kg, rg) = diff(groups, &want_groups, intent.prune);
    let (ao, ko, ro) = diff(org_arns, &intent.org_arns, intent.prune);
    let (aou, kou, rou) = diff(ou_arns, &intent.ou_arns, intent.prune);
    let label = |kind: &str, v: &[String]| v.iter().map(|x| format!("{ami} {kind} {x}")).collect::<Vec<_>>();
    let kept: Vec<String> =
        [label("user", &ku), label("group", &kg), label("org", &ko), label("ou", &kou)].concat();
    if !kept.is_empty() {
        steps.push(Step {
            region: region.into(),
            account: None,
            kind: "launch_permission",
            targets: kept,
            wave: 0,
            write: None,
        });
    }
    let add = Principals { users: au, groups: ag, org_arns: ao, ou_arns: aou };
    let remove = Principals { users: ru, groups: rg, org_arns: ro, ou_arns: rou };
    if !add.is_empty() || !remove.is_empty() {
        let mut targets = [
            label("user", &add.users),
            label("group", &add.groups),
            label("org", &add.org_arns),
            label("ou", &add.ou_arns),
        ]
        .concat();
        targets.extend(
            [
                label("user", &remove.users),
                label("group", &remove.groups),
                label("org", &remove.org_arns),
                label("ou", &remove.ou_arns),
            ]
            .concat()
            .into_iter()
            .map(|t| format!("remove {t}")),
        );
        steps.push(Step {
            region: region.into(),
            account: None,
            kind: "launch_permission",
            targets,
            wave: 0,
            write: Some(Write::ModifyLaunchPermission { ami_id: ami.into(), add, remove }),
        });
    }

    // Deprecation and deregistration protection (see `core::lifecycle`).
    if let Some(image) = &facts.image {
        for l in super::lifecycle::image_steps(&intent.lifecycle, image) {
            steps.push(Step {
                region: region.into(),
                account: None,
                kind: l.kind,
                targets: vec![l.target],
                wave: 0,
                write: l.write,
            });
        }
    }

    // createVolumePermission, per snapshot.
    for s in &report.snapshots {
        let have = facts.snapshot_users.get(&s.snapshot_id).cloned().unwrap_or_default();
        let (add, keep, remove) = diff(&have, &intent.snapshot_users, intent.prune);
        let sid = &s.snapshot_id;
        if !keep.is_empty() {
            steps.push(Step {
                region: region.into(),
                account: None,
                kind: "create_volume_permission",
                targets: keep.iter().map(|u| format!("{sid} user {u}")).collect(),
                wave: 0,
                write: None,
            });
        }
        if !add.is_empty() || !remove.is_empty() {
            let mut targets: Vec<String> = add.iter().map(|u| format!("{sid} user {u}")).collect();
            targets.extend(remove.iter().map(|u| format!("remove {sid} user {u}")));
            steps.push(Step {
                region: region.into(),
                account: None,
                kind: "create_volume_permission",
                targets,
                wave: 0,
                write: Some(Write::ModifyCreateVolumePermission { snapshot_id: sid.clone(), add, remove }),
            });
        }
    }

    // SSM parameters: the producer's, then each publish account's.
    if let Some(path) = &intent.ssm_path {
        steps.extend(param_steps(intent, region, None, path, report, facts, 0));
        for account in &intent.publish_accounts {
            steps.extend(param_steps(intent, region, Some(account), path, report, facts, 1));
        }
    }
    steps
}

/// The items `publish` would have converged in a region whose state could not be read, as
/// `(account, kind, target)` (account None: the producer's), for the report's `skipped` actions.
/// Snapshot ids may be unknown there, so snapshot permissions are named by their AMI.
pub fn unread_region_items(intent: &Intent, ami: &str) -> Vec<(Option<String>, &'static str, String)> {
    let mut out = Vec::new();
    let lp = |kind: &str, set: &BTreeSet<String>| {
        set.iter().map(|x| format!("{ami} {kind} {x}")).collect::<Vec<_>>()
    };
    let mut launch =
        [lp("user", &intent.launch_users), lp("org", &intent.org_arns), lp("ou", &intent.ou_arns)].concat();
    if intent.public {
        launch.push(format!("{ami} group all"));
    }
    out.extend(launch.into_iter().map(|t| (None, "launch_permission", t)));
    out.extend(
        intent
            .snapshot_users
            .iter()
            .map(|u| (None, "create_volume_permission", format!("snapshots of {ami} user {u}"))),
    );
    out.extend(super::lifecycle::unread_items(&intent.lifecycle, ami).into_iter().map(|(k, t)| (None, k, t)));
    if let Some(path) = &intent.ssm_path {
        for name in parameter_names(intent, path) {
            out.push((None, "ssm_parameter", name.clone()));
            for account in &intent.publish_accounts {
                out.push((Some(account.clone()), "ssm_parameter", name.clone()));
            }
        }
    }
    out
}

/// The report lines of one step with its outcome: one per target, in the step's account (the
/// producer's own is `producer_account`).
pub fn step_actions(
    step: &Step,
    producer_account: &str,
    status: Status,
    error: Option<String>,
) -> Vec<ActionReport> {
    step.targets
        .iter()
        .map(|t| ActionReport {
            region: step.region.clone(),
            account: step.account.clone().unwrap_or_else(|| producer_account.to_string()),
            kind: step.kind.to_string(),
            target: t.clone(),
            status,
            error: error.clone(),
        })
        .collect()
}

/// `--dry-run`: the report lines of a step, `planned` when it has a write, else `unchanged`.
pub fn dry_run_actions(step: &Step, producer_account: &str) -> Vec<ActionReport> {
    let status = if step.write.is_some() { Status::Planned } else { Status::Unchanged };
    step_actions(step, producer_account, status, None)
}

/// Whether to make a step's write: the write, or the outcome without it. A step without a
/// write is `unchanged`; after `earlier_failure` (why an earlier change in its region failed)
/// or a cancel it is `skipped` with the reason, the failure first.
pub fn attempt<'s>(
    step: &'s Step,
    earlier_failure: Option<&str>,
    cancelled: bool,
) -> Result<&'s Write, (Status, Option<String>)> {
    let Some(w) = &step.write else {
        return Err((Status::Unchanged, None));
    };
    if let Some(why) = earlier_failure {
        return Err((Status::Skipped, Some(format!("not attempted: {why}"))));
    }
    if cancelled {
        return Err((Status::Skipped, Some("not attempted: cancelled".to_string())));
    }
    Ok(w)
}

/// The `skipped` report lines of a region whose state could not be read (`why`): every item
/// of [`unread_region_items`], in its account (the producer's own is `producer_account`).
pub fn unread_region_actions(
    intent: &Intent,
    region: &str,
    ami: &str,
    producer_account: &str,
    why: &str,
) -> Vec<ActionReport> {
    unread_region_items(intent, ami)
        .into_iter()
        .map(|(acct, kind, target)| ActionReport {
            region: region.to_string(),
            account: acct.unwrap_or_else(|| producer_account.to_string()),
            kind: kind.to_string(),
            target,
            status: Status::Skipped,
            error: Some(format!("not attempted: the state in {region} could not be read ({why})")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::artifact::AmiSet;
    use crate::core::config::Settings;
    use crate::core::facts::{KeyLookup, ParamFacts};
    use crate::core::intent;
    use crate::core::report::SnapshotReport;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn setup(settings: Settings) -> (Intent, RegionFacts, RegionReport) {
        let amis = AmiSet::parse_artifact("us-east-1:ami-12345678", false).unwrap();
        let intent = intent::build(&Settings { kms_key_id: Some(KEY.into()), ..settings }, &amis).unwrap();
        let facts = RegionFacts {
            region: "us-east-1".into(),
            ami_id: "ami-12345678".into(),
            image: None,
            snapshots: BTreeMap::new(),
            keys: BTreeMap::from([(KEY.to_string(), KeyLookup::NotFound)]),
            intended_key: Some(KEY.into()),
            launch_permissions: Some(LaunchPermissions::default()),
            snapshot_users: BTreeMap::new(),
            parameters: BTreeMap::new(),
            key_policy: None,
        };
        let report = RegionReport {
            region: "us-east-1".into(),
            ami_id: "ami-12345678".into(),
            intended_kms_key_arn: Some(KEY.into()),
            snapshots: vec![SnapshotReport {
                snapshot_id: "snap-1".into(),
                device: "/dev/xvda".into(),
                encrypted: true,
                kms_key_arn: Some(KEY.into()),
                kms_key_alias: None,
            }],
            findings: vec![],
        };
        (intent, facts, report)
    }

    fn sharing() -> Settings {
        Settings {
            ami_users: vec!["222233334444".into()],
            snapshot_users: vec!["222233334444".into()],
            ssm_path: Some("/images/base".into()),
            publish_accounts: vec!["555566667777".into()],
            publish_role_name: Some("publisher".into()),
            ..Default::default()
        }
    }

    #[test]
    fn first_run_writes_everything_in_two_waves() {
        let (i, f, r) = setup(sharing());
        let steps = plan_region(&i, &f, &r);
        let writes: Vec<_> = steps.iter().filter(|s| s.write.is_some()).collect();
        assert_eq!(writes.len(), 1 + 1 + 3 + 3, "{steps:#?}");
        let Some(Write::ModifyLaunchPermission { add, .. }) = &writes[0].write else { panic!() };
        assert_eq!(add.users, ["222233334444", "555566667777"], "publish accounts get launch permission");
        assert!(steps.iter().filter(|s| s.account.is_some()).all(|s| s.wave == 1));
        let Some(Write::PutParameter { name, data_type, overwrite, .. }) = &writes[2].write else { panic!() };
        assert_eq!(
            (name.as_str(), data_type.as_str(), *overwrite),
            ("/images/base/image_id", "aws:ec2:image", false)
        );
    }

    #[test]
    fn converged_state_plans_no_write() {
        let (i, mut f, r) = setup(sharing());
        f.launch_permissions = Some(LaunchPermissions {
            users: ["222233334444".to_string(), "555566667777".to_string()].into(),
            ..Default::default()
        });
        f.snapshot_users.insert("snap-1".into(), ["222233334444".to_string()].into());
        for account in ["", "555566667777"] {
            for (suffix, value, ty, dt) in parameter_values(&i, &r) {
                f.parameters.insert(
                    (account.to_string(), format!("/images/base/{suffix}")),
                    Some(ParamFacts { value, param_type: ty.into(), data_type: dt.into() }),
                );
            }
        }
        let steps = plan_region(&i, &f, &r);
        assert!(steps.iter().all(|s| s.write.is_none()), "{steps:#?}");
        assert_eq!(steps.len(), 1 + 1 + 3 + 3);
    }

    #[test]
    fn extra_permissions_are_kept_unless_prune() {
        let (i, mut f, r) = setup(Settings { ami_users: vec!["222233334444".into()], ..Default::default() });
        f.launch_permissions = Some(LaunchPermissions {
            users: ["222233334444".to_string(), "999988887777".to_string()].into(),
            ..Default::default()
        });
        assert!(plan_region(&i, &f, &r).iter().all(|s| s.write.is_none()));
        let (i, _, _) =
            setup(Settings { ami_users: vec!["222233334444".into()], prune: true, ..Default::default() });
        let steps = plan_region(&i, &f, &r);
        let Some(Write::ModifyLaunchPermission { add, remove, .. }) =
            &steps.iter().find_map(|s| s.write.clone()).map(Some).unwrap()
        else {
            panic!("{steps:#?}")
        };
        assert!(add.is_empty());
        assert_eq!(remove.users, ["999988887777"]);
    }

    #[test]
    fn changed_parameter_is_overwritten() {
        let (i, mut f, r) = setup(Settings { ssm_path: Some("/p".into()), ..Default::default() });
        f.parameters.insert(
            (String::new(), "/p/image_id".into()),
            Some(ParamFacts {
                value: "ami-00000000".into(),
                param_type: "String".into(),
                data_type: "aws:ec2:image".into(),
            }),
        );
        let steps = plan_region(&i, &f, &r);
        let w: Vec<_> = steps.iter().filter_map(|s| s.write.as_ref()).collect();
        assert!(matches!(w[0], Write::PutParameter { overwrite: true, .. }));
        assert!(matches!(w[1], Write::PutParameter { overwrite: false, .. }));
    }

    #[test]
    fn a_copy_publishes_its_source_image_beside_the_others_and_only_when_it_differs() {
        let (mut i, mut f, r) = setup(Settings { ssm_path: Some("/golden".into()), ..Default::default() });
        i.source_image_id = Some("ami-0aaaaaaaaaaaaaaaa".into());
        assert_eq!(
            parameter_names(&i, "/golden"),
            ["/golden/image_id", "/golden/kms_key_arn", "/golden/snapshot_ids", "/golden/source_image_id"]
        );
        let put = |steps: &[Step]| -> Vec<String> {
            steps
                .iter()
                .filter_map(|s| match &s.write {
                    Some(Write::PutParameter { name, value, param_type, data_type, .. }) => {
                        Some(format!("{name}={value} {param_type} {data_type}"))
                    }
                    _ => None,
                })
                .collect()
        };
        let first = put(&plan_region(&i, &f, &r));
        assert_eq!(
            first.last().map(String::as_str),
            Some("/golden/source_image_id=ami-0aaaaaaaaaaaaaaaa String text")
        );
        for (suffix, value, ty, dt) in parameter_values(&i, &r) {
            f.parameters.insert(
                (String::new(), format!("/golden/{suffix}")),
                Some(ParamFacts { value, param_type: ty.into(), data_type: dt.into() }),
            );
        }
        assert_eq!(put(&plan_region(&i, &f, &r)), Vec::<String>::new());
        // Another source (the producer rebuilt and the copy was redone): only that one is rewritten.
        i.source_image_id = Some("ami-0bbbbbbbbbbbbbbbb".into());
        assert_eq!(
            put(&plan_region(&i, &f, &r)),
            ["/golden/source_image_id=ami-0bbbbbbbbbbbbbbbb String text"]
        );
    }

    #[test]
    fn unread_region_lists_every_item_publish_would_converge() {
        let (i, ..) = setup(sharing());
        let all = unread_region_items(&i, "ami-12345678");
        let items: Vec<(Option<&str>, &str, &str)> =
            all.iter().map(|(a, k, t)| (a.as_deref(), *k, t.as_str())).collect();
        assert_eq!(
            items,
            [
                (None, "launch_permission", "ami-12345678 user 222233334444"),
                (None, "launch_permission", "ami-12345678 user 555566667777"),
                (None, "create_volume_permission", "snapshots of ami-12345678 user 222233334444"),
                (None, "ssm_parameter", "/images/base/image_id"),
                (Some("555566667777"), "ssm_parameter", "/images/base/image_id"),
                (None, "ssm_parameter", "/images/base/kms_key_arn"),
                (Some("555566667777"), "ssm_parameter", "/images/base/kms_key_arn"),
                (None, "ssm_parameter", "/images/base/snapshot_ids"),
                (Some("555566667777"), "ssm_parameter", "/images/base/snapshot_ids"),
            ]
        );
        assert_eq!(parameter_names(&i, "/p"), ["/p/image_id", "/p/kms_key_arn", "/p/snapshot_ids"]);
    }

    fn step(account: Option<&str>, write: bool) -> Step {
        Step {
            region: "us-east-1".into(),
            account: account.map(Into::into),
            kind: "ssm_parameter",
            targets: vec!["/p/image_id".into(), "/p/snapshot_ids".into()],
            wave: 0,
            write: write.then(|| Write::PutParameter {
                name: "/p/image_id".into(),
                value: "ami-12345678".into(),
                param_type: "String".into(),
                data_type: "aws:ec2:image".into(),
                overwrite: false,
            }),
        }
    }

    /// Whether a write is made: a step without one is unchanged; an earlier failure in the
    /// region outranks a cancel.
    #[test]
    fn attempt_table() {
        /// Has a write, earlier failure, cancelled, and the outcome without a write (None: write).
        type Case<'a> = (bool, Option<&'a str>, bool, Option<(Status, Option<&'a str>)>);
        let cases: &[Case] = &[
            (true, None, false, None),
            (false, None, false, Some((Status::Unchanged, None))),
            (false, Some("x failed"), true, Some((Status::Unchanged, None))),
            (true, Some("x failed"), false, Some((Status::Skipped, Some("not attempted: x failed")))),
            (true, Some("x failed"), true, Some((Status::Skipped, Some("not attempted: x failed")))),
            (true, None, true, Some((Status::Skipped, Some("not attempted: cancelled")))),
        ];
        for (write, earlier, cancelled, want) in cases {
            let s = step(None, *write);
            let got = attempt(&s, *earlier, *cancelled);
            match want {
                None => assert_eq!(got.ok(), s.write.as_ref(), "{write} {earlier:?} {cancelled}"),
                Some((status, err)) => assert_eq!(
                    got.err(),
                    Some((*status, err.map(str::to_string))),
                    "{write} {earlier:?} {cancelled}"
                ),
            }
        }
    }

    /// One report line per target, in the step's account or the producer's.
    #[test]
    fn step_and_dry_run_actions_table() {
        let cases: &[(Option<&str>, bool, Status, &str)] = &[
            (None, true, Status::Planned, "111122223333"),
            (None, false, Status::Unchanged, "111122223333"),
            (Some("555566667777"), true, Status::Planned, "555566667777"),
        ];
        for (account, write, status, want_account) in cases {
            let s = step(*account, *write);
            let got = dry_run_actions(&s, "111122223333");
            assert_eq!(got.len(), 2);
            for (a, t) in got.iter().zip(&s.targets) {
                assert_eq!(
                    (a.region.as_str(), a.account.as_str(), a.kind.as_str(), &a.target, a.status, &a.error),
                    ("us-east-1", *want_account, "ssm_parameter", t, *status, &None)
                );
            }
        }
        let failed = step_actions(&step(None, true), "111122223333", Status::Failed, Some("boom".into()));
        assert!(failed.iter().all(|a| a.status == Status::Failed && a.error.as_deref() == Some("boom")));
    }

    #[test]
    fn unread_region_actions_are_skipped_with_the_reason() {
        let (i, ..) = setup(sharing());
        let got = unread_region_actions(&i, "us-east-1", "ami-12345678", "111122223333", "throttled");
        assert_eq!(got.len(), unread_region_items(&i, "ami-12345678").len());
        assert_eq!(got[0].account, "111122223333");
        assert!(got.iter().any(|a| a.account == "555566667777"));
        for a in &got {
            assert_eq!(a.status, Status::Skipped);
            assert_eq!(
                a.error.as_deref(),
                Some("not attempted: the state in us-east-1 could not be read (throttled)")
            );
        }
    }
}
