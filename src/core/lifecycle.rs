//! AMI lifecycle decisions: deprecation and deregistration protection on publish, which images
//! `retire` removes (and why each other one stays), and what `rollback` re-points. Facts in,
//! plans out; no AWS, no I/O, no clock (the caller passes `now`).
//!
//! Times are whole seconds since the Unix epoch (UTC); AWS rounds deprecation times to the
//! minute, so amikey does too before comparing or writing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::config::Settings;
use super::facts::{ImageFacts, LaunchPermissions};
use super::plan::{Principals, Write};

// ------------------------------------------------------------------------------------------ time

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn num(s: &str, what: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    let n: i64 = s.parse().map_err(|_| format!("{what} {s:?} is out of range"))?;
    if !range.contains(&n) {
        return Err(format!("{what} {n} is out of range"));
    }
    Ok(n)
}

/// Parses an RFC 3339 instant (`2027-01-31T00:00:00Z`, fractional seconds and `+hh:mm` offsets
/// accepted) to epoch seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z");
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 || dp[0].len() != 4 || dp[1].len() != 2 || dp[2].len() != 2 {
        return Err(bad());
    }
    let (y, mo, d) =
        (num(dp[0], "year", 1970..=9999)?, num(dp[1], "month", 1..=12)?, num(dp[2], "day", 1..=31)?);
    let (time, offset) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let i = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (t, o) = rest.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
        (t, sign * (num(oh, "offset hours", 0..=23)? * 3600 + num(om, "offset minutes", 0..=59)? * 60))
    };
    let time = time
        .split_once('.')
        .map_or(time, |(t, frac)| if frac.bytes().all(|b| b.is_ascii_digit()) { t } else { "x" });
    let tp: Vec<&str> = time.split(':').collect();
    if tp.len() != 3 || tp.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let (h, mi, sec) =
        (num(tp[0], "hour", 0..=23)?, num(tp[1], "minute", 0..=59)?, num(tp[2], "second", 0..=60)?);
    if civil_from_days(days_from_civil(y, mo, d)) != (y, mo, d) {
        return Err(format!("{s:?}: {y:04}-{mo:02}-{d:02} is not a calendar date"));
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// Rounds to the nearest minute, as EnableImageDeprecation does.
pub fn round_to_minute(t: i64) -> i64 {
    (t + 30).div_euclid(60) * 60
}

/// Parses a duration such as `90d`, `2w`, `36h`, `30m` or a sum `1d12h` to seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration: use a number and a unit (m, h, d, w), e.g. 90d or 1d12h");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

// ------------------------------------------------------------------------ publish: deprecate/protect

/// When the published AMIs are deprecated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deprecation {
    /// `deprecate_at`: this instant (rounded to the minute).
    At(i64),
    /// `deprecate_after`: this many seconds after each AMI's CreationDate (so a re-run computes
    /// the same time and writes nothing).
    After(i64),
}

/// What `publish` enforces on every regional AMI besides sharing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LifecycleIntent {
    /// Deprecation, if configured.
    pub deprecation: Option<Deprecation>,
    /// Deregistration protection: None = leave as is; Some(cooldown).
    pub protection: Option<bool>,
}

/// Validates `deprecate_at`, `deprecate_after`, `deregistration_protection` and
/// `deregistration_protection_cooldown`, pushing every problem to `errors`.
pub fn build_intent(settings: &Settings, errors: &mut Vec<String>) -> LifecycleIntent {
    let mut out = LifecycleIntent::default();
    match (&settings.deprecate_at, &settings.deprecate_after) {
        (Some(_), Some(_)) => errors.push(
            "deprecate_at and deprecate_after are both set: use one (an instant, or a duration after each AMI's creation)"
                .into(),
        ),
        (Some(at), None) => match parse_rfc3339(at) {
            Ok(t) => out.deprecation = Some(Deprecation::At(round_to_minute(t))),
            Err(e) => errors.push(format!("deprecate_at: {e}")),
        },
        (None, Some(after)) => match parse_duration(after) {
            Ok(d) => out.deprecation = Some(Deprecation::After(d)),
            Err(e) => errors.push(format!("deprecate_after: {e}")),
        },
        (None, None) => {}
    }
    if settings.deregistration_protection {
        out.protection = Some(settings.deregistration_protection_cooldown);
    } else if settings.deregistration_protection_cooldown {
        errors.push(
            "deregistration_protection_cooldown needs deregistration_protection = true (--deregistration-protection)"
                .into(),
        );
    }
    out
}

/// The deprecation time wanted for an AMI created at `created` (None: none configured, or the
/// creation date is unknown for `deprecate_after`).
pub fn wanted_deprecation(intent: &LifecycleIntent, created: Option<i64>) -> Option<i64> {
    match intent.deprecation? {
        Deprecation::At(t) => Some(t),
        Deprecation::After(d) => created.map(|c| round_to_minute(c + d)),
    }
}

/// The `DeregistrationProtection` state AWS reports once protection is as wanted.
pub fn protection_state(with_cooldown: bool) -> &'static str {
    if with_cooldown { "enabled-with-cooldown" } else { "enabled" }
}

/// One lifecycle item of a published AMI: its report kind and target, and the write (None:
/// already as wanted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleStep {
    /// `deprecation` or `deregistration_protection`.
    pub kind: &'static str,
    /// `ami-… at 2027-…Z` / `ami-… enabled-with-cooldown`.
    pub target: String,
    /// The write, when the AMI differs.
    pub write: Option<Write>,
}

/// The deprecation and protection items for one AMI with the observed state (`created`,
/// `deprecation_time` and `protection` from DescribeImages).
pub fn publish_steps(
    intent: &LifecycleIntent,
    ami: &str,
    created: Option<i64>,
    deprecation_time: Option<i64>,
    protection: Option<&str>,
) -> Vec<LifecycleStep> {
    let mut out = Vec::new();
    if let Some(want) = wanted_deprecation(intent, created) {
        let at = format_rfc3339(want);
        out.push(LifecycleStep {
            kind: "deprecation",
            target: format!("{ami} at {at}"),
            write: (deprecation_time != Some(want))
                .then(|| Write::EnableImageDeprecation { ami_id: ami.into(), deprecate_at: at }),
        });
    }
    if let Some(cooldown) = intent.protection {
        let state = protection_state(cooldown);
        out.push(LifecycleStep {
            kind: "deregistration_protection",
            target: format!("{ami} {state}"),
            write: (protection != Some(state)).then(|| Write::EnableImageDeregistrationProtection {
                ami_id: ami.into(),
                with_cooldown: cooldown,
            }),
        });
    }
    out
}

fn time_of(s: Option<&str>) -> Option<i64> {
    s.and_then(|t| parse_rfc3339(t).ok())
}

/// [`publish_steps`] for an image as DescribeImages reported it.
pub fn image_steps(intent: &LifecycleIntent, image: &ImageFacts) -> Vec<LifecycleStep> {
    publish_steps(
        intent,
        &image.ami_id,
        time_of(image.creation_date.as_deref()),
        time_of(image.deprecation_time.as_deref()),
        image.deregistration_protection.as_deref(),
    )
}

/// [`verify_readback`] for an image as DescribeImages reported it after the writes.
pub fn image_readback(intent: &LifecycleIntent, image: &ImageFacts) -> Vec<String> {
    verify_readback(
        intent,
        &image.ami_id,
        time_of(image.creation_date.as_deref()),
        time_of(image.deprecation_time.as_deref()),
        image.deregistration_protection.as_deref(),
    )
}

/// The items of [`publish_steps`] named for a region whose image could not be read.
pub fn unread_items(intent: &LifecycleIntent, ami: &str) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if intent.deprecation.is_some() {
        v.push(("deprecation", ami.to_string()));
    }
    if let Some(c) = intent.protection {
        v.push(("deregistration_protection", format!("{ami} {}", protection_state(c))));
    }
    v
}

/// Read-back check after the writes: what still differs in one AMI (empty when as wanted).
pub fn verify_readback(
    intent: &LifecycleIntent,
    ami: &str,
    created: Option<i64>,
    deprecation_time: Option<i64>,
    protection: Option<&str>,
) -> Vec<String> {
    publish_steps(intent, ami, created, deprecation_time, protection)
        .into_iter()
        .filter(|s| s.write.is_some())
        .map(|s| match s.kind {
            "deprecation" => format!(
                "{ami}: deprecation time reads back as {}, wanted {}",
                deprecation_time.map(format_rfc3339).unwrap_or_else(|| "none".into()),
                s.target.rsplit(' ').next().unwrap_or_default()
            ),
            _ => format!(
                "{ami}: deregistration protection reads back as {:?}, wanted {:?}",
                protection.unwrap_or("unknown"),
                s.target.rsplit(' ').next().unwrap_or_default()
            ),
        })
        .collect()
}

// ------------------------------------------------------------------------------------------ retire

/// One version of `<PATH>/image_id` (GetParameterHistory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamVersion {
    /// Version number.
    pub version: i64,
    /// The value at that version.
    pub value: String,
    /// Labels on that version.
    pub labels: Vec<String>,
}

/// One image as `retire` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetireImage {
    /// `ami-…`
    pub ami_id: String,
    /// Owner account.
    pub owner: Option<String>,
    /// CreationDate, epoch seconds.
    pub created: Option<i64>,
    /// DescribeImages `DeregistrationProtection` (`disabled`, `enabled`, …).
    pub protection: Option<String>,
    /// EBS snapshots of the AMI.
    pub snapshots: Vec<String>,
    /// Launch permissions (to remove before deregistering).
    pub launch_permissions: LaunchPermissions,
    /// createVolumePermission per snapshot (`all` for the public group).
    pub snapshot_users: BTreeMap<String, BTreeSet<String>>,
}

/// Everything `retire` read in one region (and account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetireFacts {
    /// Region.
    pub region: String,
    /// The account whose images these are.
    pub account: String,
    /// `<PATH>/image_id` history, any order (empty with `--ami-filter`).
    pub history: Vec<ParamVersion>,
    /// Candidates from `--ami-filter` (None: the lineage is the parameter history).
    pub filtered: Option<Vec<String>>,
    /// Images that still exist, by id (a lineage id missing here is already gone).
    pub images: BTreeMap<String, RetireImage>,
    /// DescribeImageReferences: ami → resource ARNs (ours, the `<PATH>/image_id` parameter,
    /// excluded by the caller).
    pub references: BTreeMap<String, Vec<String>>,
}

/// `--keep` / `--keep-days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepPolicy {
    /// Keep the N most recent images of the lineage (the current one counts).
    pub keep: usize,
    /// Keep images created less than D days ago.
    pub keep_days: Option<u32>,
}

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// `<PATH>/image_id` points at it now.
    Current,
    /// A parameter version holding it carries labels.
    Labelled {
        /// The labels.
        labels: Vec<String>,
    },
    /// Instances, launch templates or parameters use it (DescribeImageReferences).
    Referenced {
        /// Their ARNs.
        by: Vec<String>,
    },
    /// Among the `--keep` most recent.
    KeepCount {
        /// Its rank (1 = newest).
        rank: usize,
    },
    /// Created within `--keep-days`.
    KeepDays {
        /// Age in whole days.
        age_days: i64,
    },
    /// Deregistration protection is on (reported, never forced).
    Protected {
        /// The state AWS reports.
        state: String,
    },
    /// Owned by another account (a shared image): never deregistered from here.
    NotOwned {
        /// Its owner.
        owner: String,
    },
}

impl KeepReason {
    /// Short text for people.
    pub fn text(&self) -> String {
        match self {
            KeepReason::Current => "current".into(),
            KeepReason::Labelled { labels } => format!("labelled {}", labels.join(",")),
            KeepReason::Referenced { by } => format!("referenced by {}", by.join(", ")),
            KeepReason::KeepCount { rank } => format!("within --keep (#{rank})"),
            KeepReason::KeepDays { age_days } => format!("within --keep-days ({age_days} d old)"),
            KeepReason::Protected { state } => format!("deregistration protection {state}"),
            KeepReason::NotOwned { owner } => format!("owned by {owner}"),
        }
    }
}

/// One image's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireItem {
    /// Region.
    pub region: String,
    /// `ami-…`
    pub ami_id: String,
    /// Why it stays (empty: it is retired).
    pub keep: Vec<KeepReason>,
    /// Already deregistered (a lineage entry with no image): nothing to do.
    pub gone: bool,
    /// Its snapshots (deleted with it when retired, unless another AMI uses one).
    pub snapshots: Vec<String>,
    /// The writes retiring it takes, in order (unshare, then deregister).
    pub writes: Vec<Write>,
}

/// The lineage, newest first: distinct image ids by their latest parameter version, or the
/// filtered images by creation date (newest first, then id).
pub fn lineage(facts: &RetireFacts) -> Vec<String> {
    if let Some(ids) = &facts.filtered {
        let mut v: Vec<&String> = ids.iter().collect();
        v.sort_by(|a, b| {
            let ca = facts.images.get(*a).and_then(|i| i.created);
            let cb = facts.images.get(*b).and_then(|i| i.created);
            cb.cmp(&ca).then(a.cmp(b))
        });
        v.dedup();
        return v.into_iter().cloned().collect();
    }
    let mut h: Vec<&ParamVersion> = facts.history.iter().collect();
    h.sort_by_key(|e| std::cmp::Reverse(e.version));
    let mut seen = BTreeSet::new();
    h.into_iter().filter(|p| seen.insert(p.value.clone())).map(|p| p.value.clone()).collect()
}

/// Decides every image of one region's lineage at `now`.
pub fn plan_retire(facts: &RetireFacts, policy: KeepPolicy, now: i64) -> Vec<RetireItem> {
    let current = facts.history.iter().max_by_key(|p| p.version).map(|p| p.value.clone());
    let mut labels: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in &facts.history {
        labels.entry(p.value.as_str()).or_default().extend(p.labels.iter().cloned());
    }
    lineage(facts)
        .into_iter()
        .enumerate()
        .map(|(i, ami)| {
            let Some(img) = facts.images.get(&ami) else {
                return RetireItem {
                    region: facts.region.clone(),
                    ami_id: ami,
                    keep: Vec::new(),
                    gone: true,
                    snapshots: Vec::new(),
                    writes: Vec::new(),
                };
            };
            let mut keep = Vec::new();
            if current.as_deref() == Some(ami.as_str()) {
                keep.push(KeepReason::Current);
            }
            if let Some(l) = labels.get(ami.as_str()).filter(|l| !l.is_empty()) {
                keep.push(KeepReason::Labelled { labels: l.iter().cloned().collect() });
            }
            if let Some(by) = facts.references.get(&ami).filter(|b| !b.is_empty()) {
                let mut by = by.clone();
                by.sort();
                by.dedup();
                keep.push(KeepReason::Referenced { by });
            }
            if i < policy.keep {
                keep.push(KeepReason::KeepCount { rank: i + 1 });
            }
            if let (Some(days), Some(created)) = (policy.keep_days, img.created)
                && now - created < i64::from(days) * 86_400
            {
                keep.push(KeepReason::KeepDays { age_days: (now - created).max(0) / 86_400 });
            }
            if let Some(state) = img.protection.as_deref().filter(|s| is_protected(s, now)) {
                keep.push(KeepReason::Protected { state: state.to_string() });
            }
            if let Some(owner) =
                img.owner.as_ref().filter(|o| !facts.account.is_empty() && **o != facts.account)
            {
                keep.push(KeepReason::NotOwned { owner: owner.clone() });
            }
            let writes = if keep.is_empty() { retire_writes(img) } else { Vec::new() };
            RetireItem {
                region: facts.region.clone(),
                ami_id: ami,
                keep,
                gone: false,
                snapshots: img.snapshots.clone(),
                writes,
            }
        })
        .collect()
}

/// True when a `DeregistrationProtection` state still blocks deregistration at `now`
/// (`enabled…`, or `disabled-until T` with T in the future).
pub fn is_protected(state: &str, now: i64) -> bool {
    if state.starts_with("enabled") {
        return true;
    }
    state.strip_prefix("disabled-until ").and_then(|t| parse_rfc3339(t).ok()).is_some_and(|until| until > now)
}

fn retire_writes(img: &RetireImage) -> Vec<Write> {
    let mut w = Vec::new();
    let lp = &img.launch_permissions;
    let remove = Principals {
        users: lp.users.iter().cloned().collect(),
        groups: lp.groups.iter().cloned().collect(),
        org_arns: lp.org_arns.iter().cloned().collect(),
        ou_arns: lp.ou_arns.iter().cloned().collect(),
    };
    if !remove.is_empty() {
        w.push(Write::ModifyLaunchPermission {
            ami_id: img.ami_id.clone(),
            add: Principals::default(),
            remove,
        });
    }
    for (snap, users) in &img.snapshot_users {
        if !users.is_empty() {
            w.push(Write::ModifyCreateVolumePermission {
                snapshot_id: snap.clone(),
                add: Vec::new(),
                remove: users.iter().cloned().collect(),
            });
        }
    }
    w.push(Write::DeregisterImage { ami_id: img.ami_id.clone(), delete_snapshots: true });
    w
}

// ---------------------------------------------------------------------------------------- rollback

/// Where `rollback` points each region: the image at `<PATH>/image_id` version N there.
pub fn rollback_targets(
    histories: &BTreeMap<String, Vec<ParamVersion>>,
    version: i64,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (region, h) in histories {
        match h.iter().find(|p| p.version == version) {
            Some(p) => {
                out.insert(region.clone(), p.value.clone());
            }
            None => {
                let mut have: Vec<i64> = h.iter().map(|p| p.version).collect();
                have.sort_unstable();
                errors.push(if have.is_empty() {
                    format!("{region}: the image_id parameter has no history (nothing published there)")
                } else {
                    format!(
                        "{region}: the image_id parameter has no version {version} (versions {}..{} are kept)",
                        have[0],
                        have[have.len() - 1]
                    )
                });
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// SSM keeps 100 versions of a parameter; a new version drops the oldest, and PutParameter fails
/// (`ParameterMaxVersionLimitExceeded`) when the oldest carries a label. `history` is one
/// parameter's; returns the refusal in words when a write would hit that.
pub fn version_limit_blocks(name: &str, where_: &str, history: &[ParamVersion]) -> Option<String> {
    const LIMIT: usize = 100;
    if history.len() < LIMIT {
        return None;
    }
    let oldest = history.iter().min_by_key(|p| p.version)?;
    (!oldest.labels.is_empty()).then(|| {
        format!(
            "{where_}: {name} holds {LIMIT} versions and the oldest (version {}) carries the label(s) {}: \
             SSM would refuse the new version (ParameterMaxVersionLimitExceeded). Move the label to a newer version \
             (aws ssm label-parameter-version) or remove it (aws ssm unlabel-parameter-version), then re-run; \
             amikey never deletes parameter history",
            oldest.version,
            oldest.labels.join(",")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_rejects_garbage() {
        for (s, want) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2027-01-31T00:00:00Z", 1_801_353_600),
            ("2027-01-31T01:00:00+01:00", 1_801_353_600),
            ("2027-01-30T23:00:00.250-01:00", 1_801_353_600),
            ("2024-02-29T12:34:56Z", 1_709_210_096),
        ] {
            assert_eq!(parse_rfc3339(s), Ok(want), "{s}");
        }
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        for bad in [
            "",
            "2027-01-31",
            "2027-02-30T00:00:00Z",
            "2027-01-31T25:00:00Z",
            "tomorrow",
            "2027-1-31T00:00:00Z",
            "2027-01-31T00:00:00.x1Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert_eq!(round_to_minute(89), 60);
        assert_eq!(round_to_minute(90), 120);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("1d12h"), Ok(36 * 3600));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        for bad in ["", "90", "d", "90x", "0d", "-1d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn settings(at: Option<&str>, after: Option<&str>, prot: bool, cool: bool) -> Settings {
        Settings {
            deprecate_at: at.map(Into::into),
            deprecate_after: after.map(Into::into),
            deregistration_protection: prot,
            deregistration_protection_cooldown: cool,
            ..Default::default()
        }
    }

    #[test]
    fn intent_validation() {
        let mut e = Vec::new();
        let i = build_intent(&settings(Some("2030-01-01T00:00:40Z"), None, true, true), &mut e);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(i.deprecation, Some(Deprecation::At(parse_rfc3339("2030-01-01T00:01:00Z").unwrap())));
        assert_eq!(i.protection, Some(true));
        for (s, needle) in [
            (settings(Some("2030-01-01T00:00:00Z"), Some("9d"), false, false), "both set"),
            (settings(Some("soon"), None, false, false), "deprecate_at"),
            (settings(None, Some("9y"), false, false), "deprecate_after"),
            (settings(None, None, false, true), "needs deregistration_protection"),
        ] {
            let mut e = Vec::new();
            build_intent(&s, &mut e);
            assert!(e.len() == 1 && e[0].contains(needle), "{e:?}");
        }
    }

    #[test]
    fn publish_steps_write_only_what_differs() {
        let i =
            LifecycleIntent { deprecation: Some(Deprecation::After(90 * 86_400)), protection: Some(false) };
        let created = parse_rfc3339("2026-01-01T10:00:10Z").unwrap();
        let want = parse_rfc3339("2026-04-01T10:00:00Z").unwrap();
        let steps = publish_steps(&i, "ami-1", Some(created), None, Some("disabled"));
        assert_eq!(
            steps.iter().map(|s| s.write.clone()).collect::<Vec<_>>(),
            [
                Some(Write::EnableImageDeprecation {
                    ami_id: "ami-1".into(),
                    deprecate_at: "2026-04-01T10:00:00Z".into()
                }),
                Some(Write::EnableImageDeregistrationProtection {
                    ami_id: "ami-1".into(),
                    with_cooldown: false
                }),
            ]
        );
        assert_eq!(steps[0].target, "ami-1 at 2026-04-01T10:00:00Z");
        let steps = publish_steps(&i, "ami-1", Some(created), Some(want), Some("enabled"));
        assert!(steps.iter().all(|s| s.write.is_none()), "{steps:?}");
        assert!(verify_readback(&i, "ami-1", Some(created), Some(want), Some("enabled")).is_empty());
        let v = verify_readback(&i, "ami-1", Some(created), None, Some("enabled-with-cooldown"));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("reads back as none, wanted 2026-04-01T10:00:00Z"), "{v:?}");
        // No configuration, no step; an unknown creation date cannot place deprecate_after.
        assert!(publish_steps(&LifecycleIntent::default(), "ami-1", None, None, None).is_empty());
        let only = LifecycleIntent { deprecation: Some(Deprecation::After(60)), protection: None };
        assert!(publish_steps(&only, "ami-1", None, None, None).is_empty());
    }

    const NOW: i64 = 1_800_000_000;

    fn pv(version: i64, value: &str, labels: &[&str]) -> ParamVersion {
        ParamVersion { version, value: value.into(), labels: labels.iter().map(|s| s.to_string()).collect() }
    }

    fn img(id: &str, age_days: i64) -> RetireImage {
        RetireImage {
            ami_id: id.into(),
            owner: Some("123456789012".into()),
            created: Some(NOW - age_days * 86_400),
            protection: Some("disabled".into()),
            snapshots: vec![format!("snap-{id}")],
            ..Default::default()
        }
    }

    /// Seven publishes, one per week: a-g (g current). b labelled, c referenced, a protected,
    /// d shared (unshare first); keep 3 → e,f,g by rank; only d is retired... plus nothing else.
    fn seven() -> RetireFacts {
        let ids = ["a", "b", "c", "d", "e", "f", "g"];
        let mut images: BTreeMap<String, RetireImage> =
            ids.iter().enumerate().map(|(i, id)| (id.to_string(), img(id, 7 * (6 - i as i64)))).collect();
        images.get_mut("a").unwrap().protection = Some("enabled-with-cooldown".into());
        let d = images.get_mut("d").unwrap();
        d.launch_permissions.users.insert("111122223333".into());
        d.snapshot_users.insert("snap-d".into(), ["111122223333".to_string()].into());
        d.snapshot_users.insert("snap-x".into(), BTreeSet::new());
        RetireFacts {
            region: "us-east-1".into(),
            account: "123456789012".into(),
            history: ids
                .iter()
                .enumerate()
                .map(|(i, id)| pv(i as i64 + 1, id, if *id == "b" { &["prod"] } else { &[] }))
                .collect(),
            filtered: None,
            images,
            references: [(
                "c".to_string(),
                vec!["arn:aws:ec2:us-east-1:123456789012:instance/i-1".to_string()],
            )]
            .into(),
        }
    }

    #[test]
    fn retire_keeps_each_with_its_reason() {
        let items = plan_retire(&seven(), KeepPolicy { keep: 3, keep_days: None }, NOW);
        let got: Vec<(&str, Vec<String>)> = items
            .iter()
            .map(|i| (i.ami_id.as_str(), i.keep.iter().map(KeepReason::text).collect()))
            .collect();
        assert_eq!(
            got,
            [
                ("g", vec!["current".to_string(), "within --keep (#1)".into()]),
                ("f", vec!["within --keep (#2)".into()]),
                ("e", vec!["within --keep (#3)".into()]),
                ("d", vec![]),
                ("c", vec!["referenced by arn:aws:ec2:us-east-1:123456789012:instance/i-1".into()]),
                ("b", vec!["labelled prod".into()]),
                ("a", vec!["deregistration protection enabled-with-cooldown".into()]),
            ]
        );
        let d = &items[3];
        assert_eq!(
            d.writes,
            [
                Write::ModifyLaunchPermission {
                    ami_id: "d".into(),
                    add: Principals::default(),
                    remove: Principals { users: vec!["111122223333".into()], ..Default::default() }
                },
                Write::ModifyCreateVolumePermission {
                    snapshot_id: "snap-d".into(),
                    add: vec![],
                    remove: vec!["111122223333".into()]
                },
                Write::DeregisterImage { ami_id: "d".into(), delete_snapshots: true },
            ]
        );
        assert!(items.iter().filter(|i| i.ami_id != "d").all(|i| i.writes.is_empty()));
    }

    #[test]
    fn retire_keep_days_gone_and_foreign_images() {
        let mut f = seven();
        f.images.remove("d");
        f.images.get_mut("c").unwrap().owner = Some("999988887777".into());
        f.references.clear();
        let items = plan_retire(&f, KeepPolicy { keep: 1, keep_days: Some(15) }, NOW);
        let by: BTreeMap<&str, &RetireItem> = items.iter().map(|i| (i.ami_id.as_str(), i)).collect();
        assert!(by["d"].gone && by["d"].writes.is_empty(), "a re-run after a kill converges");
        assert_eq!(by["e"].keep, [KeepReason::KeepDays { age_days: 14 }]);
        assert_eq!(by["c"].keep, [KeepReason::NotOwned { owner: "999988887777".into() }]);
        assert!(by["f"].keep.contains(&KeepReason::KeepDays { age_days: 7 }));
        assert_eq!(by["g"].keep[0], KeepReason::Current);
        assert_eq!(by["g"].keep.len(), 3);
        // Protection in its cooldown still protects; past the cooldown it does not.
        assert!(is_protected(&format!("disabled-until {}", format_rfc3339(NOW + 60)), NOW));
        assert!(!is_protected(&format!("disabled-until {}", format_rfc3339(NOW - 60)), NOW));
        assert!(!is_protected("disabled", NOW));
    }

    #[test]
    fn lineage_orders_by_latest_version_or_creation() {
        let f = RetireFacts {
            history: vec![pv(1, "x", &[]), pv(3, "y", &[]), pv(2, "x", &[]), pv(4, "x", &[])],
            ..Default::default()
        };
        assert_eq!(lineage(&f), ["x", "y"]);
        let mut f = seven();
        f.filtered = Some(vec!["a".into(), "g".into(), "c".into(), "g".into()]);
        assert_eq!(lineage(&f), ["g", "c", "a"]);
    }

    #[test]
    fn rollback_targets_need_the_version_everywhere() {
        let h: BTreeMap<String, Vec<ParamVersion>> = [
            ("eu-west-1".to_string(), vec![pv(1, "ami-a", &[]), pv(2, "ami-b", &[])]),
            ("us-east-1".to_string(), vec![pv(1, "ami-c", &[]), pv(2, "ami-d", &[]), pv(3, "ami-e", &[])]),
        ]
        .into();
        assert_eq!(
            rollback_targets(&h, 2).unwrap(),
            BTreeMap::from([("eu-west-1".into(), "ami-b".into()), ("us-east-1".into(), "ami-d".into())])
        );
        let e = rollback_targets(&h, 3).unwrap_err();
        assert_eq!(e, ["eu-west-1: the image_id parameter has no version 3 (versions 1..2 are kept)"]);
        let e = rollback_targets(&[("x".to_string(), vec![])].into(), 1).unwrap_err();
        assert!(e[0].contains("no history"));
    }

    #[test]
    fn version_limit_refusal_names_the_label() {
        let mut h: Vec<ParamVersion> = (5..105).map(|v| pv(v, "ami-1", &[])).collect();
        assert_eq!(version_limit_blocks("/p/image_id", "us-east-1", &h), None);
        h[0].labels.push("golden".into());
        let m = version_limit_blocks("/p/image_id", "us-east-1", &h).unwrap();
        assert!(
            m.contains("version 5") && m.contains("golden") && m.contains("ParameterMaxVersionLimitExceeded"),
            "{m}"
        );
        h.pop();
        assert_eq!(version_limit_blocks("/p/image_id", "us-east-1", &h), None, "99 versions: room left");
    }
}
