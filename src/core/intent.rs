//! From [`Settings`] (what the user wrote) to [`Intent`] (what amikey will enforce): every value
//! checked for shape before any AWS call, so bad input fails fast with exit 2 and nothing written.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::artifact::{AmiSet, valid_region};
use super::config::Settings;
use super::ids::{arn_region, is_account_id, is_aws_managed_alias, is_key_ref};

/// The validated desired state for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intent {
    /// One AMI per region.
    pub amis: AmiSet,
    /// The intended key reference per AMI region (None: none configured → a finding).
    pub keys: BTreeMap<String, Option<String>>,
    /// Accounts to grant launch permission (`ami_users` ∪ `publish_accounts`).
    pub launch_users: BTreeSet<String>,
    /// Whether `all` (public) is desired.
    pub public: bool,
    /// Organization ARNs.
    pub org_arns: BTreeSet<String>,
    /// OU ARNs.
    pub ou_arns: BTreeSet<String>,
    /// Accounts to grant createVolumePermission on every snapshot.
    pub snapshot_users: BTreeSet<String>,
    /// SSM path, without trailing slash.
    pub ssm_path: Option<String>,
    /// Consumer accounts to publish parameters in, with the role to assume there.
    pub publish_accounts: BTreeSet<String>,
    /// Role name assumed in each publish account.
    pub publish_role_name: Option<String>,
    /// Remove permissions not in the configuration.
    pub prune: bool,
    /// `allow_public`.
    pub allow_public: bool,
    /// `check_key_policy`: whether `publish` checks the intended keys' policies for the
    /// consumer accounts, and how it reacts.
    pub check_key_policy: crate::core::config::PolicyCheck,
    /// Deprecation and deregistration protection for every regional AMI.
    pub lifecycle: super::lifecycle::LifecycleIntent,
    /// A copy's source AMI, published as `source_image_id` beside the other parameters
    /// (`amikey copy` sets it; never from user settings).
    pub source_image_id: Option<String>,
}

impl Intent {
    /// Whether `publish` needs the AMIs' launch permissions: only to add or keep what is wanted,
    /// or to remove the rest with `prune`. (A public AMI is seen in DescribeImages.)
    pub fn reads_launch_permissions(&self) -> bool {
        self.public
            || self.prune
            || !self.launch_users.is_empty()
            || !self.org_arns.is_empty()
            || !self.ou_arns.is_empty()
    }

    /// Whether `publish` needs the snapshots' createVolumePermission.
    pub fn reads_snapshot_users(&self) -> bool {
        self.prune || !self.snapshot_users.is_empty()
    }
}

fn is_org_arn(s: &str) -> bool {
    let p: Vec<&str> = s.split(':').collect();
    p.len() == 6
        && p[0] == "arn"
        && p[1].starts_with("aws")
        && p[2] == "organizations"
        && p[3].is_empty()
        && is_account_id(p[4])
        && p[5].strip_prefix("organization/o-").is_some_and(|o| {
            (10..=32).contains(&o.len()) && o.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn is_ou_arn(s: &str) -> bool {
    let p: Vec<&str> = s.split(':').collect();
    if p.len() != 6
        || p[0] != "arn"
        || !p[1].starts_with("aws")
        || p[2] != "organizations"
        || !p[3].is_empty()
        || !is_account_id(p[4])
    {
        return false;
    }
    let r: Vec<&str> = p[5].split('/').collect();
    r.len() == 3
        && r[0] == "ou"
        && r[1].starts_with("o-")
        && r[2].starts_with("ou-")
        && r[1..].iter().all(|x| x.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

/// Checks an SSM parameter path prefix as AWS does: starts with `/`, only `a-zA-Z0-9_.-/`, not
/// under the reserved `/aws` or `/ssm` prefixes, at most 15 levels.
pub fn check_ssm_path(p: &str) -> Result<String, String> {
    let trimmed = p.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(format!(
            "ssm_path {p:?} must start with '/' and name at least one level, e.g. /images/base"
        ));
    }
    if let Some(c) = trimmed.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c))) {
        return Err(format!("ssm_path {p:?} contains {c:?}: only letters, digits and _ . - / are allowed"));
    }
    if trimmed.contains("//") {
        return Err(format!("ssm_path {p:?} contains an empty level (//)"));
    }
    let first = trimmed[1..].split('/').next().unwrap_or("").to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(format!(
            "ssm_path {p:?} starts with a reserved prefix (aws, ssm): choose another first level"
        ));
    }
    if trimmed.split('/').count() - 1 > 14 {
        return Err(format!("ssm_path {p:?} is too deep: SSM allows 15 levels and amikey adds one"));
    }
    Ok(trimmed.to_string())
}

/// Validates `settings` against the AMIs to work on. Returns every problem at once.
pub fn build(settings: &Settings, amis: &AmiSet) -> Result<Intent, Vec<String>> {
    let mut errors = Vec::new();
    let skip = settings.skip_region_validation;

    let check_key = |what: &str, k: &str, errors: &mut Vec<String>| {
        if !is_key_ref(k) {
            errors.push(format!(
                "{what} {k:?} is not a KMS key reference: use a key id (1234abcd-12ab-34cd-56ef-1234567890ab), \
                 a multi-Region id (mrk-…), alias/NAME, or a key or alias ARN"
            ));
        } else if is_aws_managed_alias(k) {
            errors.push(format!(
                "{what} {k:?} is an AWS managed key: snapshots encrypted with it can never be shared. \
                 Use a customer managed key (CMK)"
            ));
        }
    };
    if let Some(k) = &settings.kms_key_id {
        check_key("kms_key_id", k, &mut errors);
    }
    for (region, k) in &settings.region_kms_key_ids {
        if !valid_region(region, skip) {
            errors.push(format!("region_kms_key_ids: unknown region {region:?} (check the spelling, or set skip_region_validation)"));
        }
        check_key(&format!("region_kms_key_ids[{region:?}]"), k, &mut errors);
        if let Some(kr) = arn_region(k)
            && kr != region
        {
            errors.push(format!(
                "region_kms_key_ids[{region:?}] is a key ARN in {kr}: a KMS key only encrypts in its own region; \
                 use the key (or multi-Region replica) that lives in {region}"
            ));
        }
    }
    let mut keys = BTreeMap::new();
    for region in amis.regions() {
        let k = settings.region_kms_key_ids.get(region).or(settings.kms_key_id.as_ref()).cloned();
        keys.insert(region.to_string(), k);
    }

    let mut public = false;
    let mut launch_users = BTreeSet::new();
    for u in &settings.ami_users {
        if u == "all" {
            public = true;
        } else if is_account_id(u) {
            launch_users.insert(u.clone());
        } else {
            errors.push(format!("ami_users: {u:?} is not a 12-digit AWS account id"));
        }
    }
    if public && !settings.allow_public {
        errors.push("ami_users contains \"all\", which makes the AMIs public: set allow_public = true (--allow-public) if that is really intended".into());
    }
    let mut snapshot_users = BTreeSet::new();
    for u in &settings.snapshot_users {
        if u == "all" && !settings.allow_public {
            errors.push("snapshot_users contains \"all\", which makes the snapshots public: set allow_public = true (--allow-public) if that is really intended".into());
        } else if u == "all" || is_account_id(u) {
            snapshot_users.insert(u.clone());
        } else {
            errors.push(format!("snapshot_users: {u:?} is not a 12-digit AWS account id"));
        }
    }
    for a in &settings.ami_org_arns {
        if !is_org_arn(a) {
            errors.push(format!("ami_org_arns: {a:?} is not an organization ARN (arn:aws:organizations::ACCOUNT:organization/o-…)"));
        }
    }
    for a in &settings.ami_ou_arns {
        if !is_ou_arn(a) {
            errors.push(format!(
                "ami_ou_arns: {a:?} is not an OU ARN (arn:aws:organizations::ACCOUNT:ou/o-…/ou-…)"
            ));
        }
    }
    let ssm_path = match &settings.ssm_path {
        Some(p) => match check_ssm_path(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let mut publish_accounts = BTreeSet::new();
    for a in &settings.publish_accounts {
        if is_account_id(a) {
            publish_accounts.insert(a.clone());
            launch_users.insert(a.clone());
        } else {
            errors.push(format!("publish_accounts: {a:?} is not a 12-digit AWS account id"));
        }
    }
    if !publish_accounts.is_empty() {
        if settings.ssm_path.is_none() {
            errors.push("publish_accounts needs ssm_path: the path to write the parameters under".into());
        }
        match &settings.publish_role_name {
            None => errors.push("publish_accounts needs publish_role_name: the role amikey assumes in each account (arn:aws:iam::ACCOUNT:role/NAME)".into()),
            Some(r) if !is_role_name(r) => errors.push(format!("publish_role_name {r:?} is not an IAM role name")),
            Some(_) => {}
        }
    }
    if let Some(r) = &settings.region
        && !valid_region(r, skip)
    {
        errors.push(format!(
            "region {r:?} is not a known region (check the spelling, or set skip_region_validation)"
        ));
    }
    if let Some(n) = settings.max_retries
        && (n == 0 || n > 50)
    {
        errors.push(format!(
            "max_retries {n} is out of range: use 1 to 50 (retries after the first attempt, as in packer-plugin-amazon)"
        ));
    }
    for k in settings.assume_role.keys() {
        if !["role_arn", "session_name", "external_id", "duration_seconds"].contains(&k.as_str()) {
            errors.push(format!("assume_role: unknown key {k:?} (known: role_arn, session_name, external_id, duration_seconds)"));
        }
    }
    if !settings.assume_role.is_empty() && !settings.assume_role.contains_key("role_arn") {
        errors.push("assume_role needs role_arn".into());
    }
    if settings.access_key.is_some() != settings.secret_key.is_some() {
        errors.push("access_key and secret_key go together: set both or neither".into());
    }
    let lifecycle = super::lifecycle::build_intent(settings, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Intent {
        amis: amis.clone(),
        keys,
        launch_users,
        public,
        org_arns: settings.ami_org_arns.iter().cloned().collect(),
        ou_arns: settings.ami_ou_arns.iter().cloned().collect(),
        snapshot_users,
        ssm_path,
        publish_accounts,
        publish_role_name: settings.publish_role_name.clone(),
        prune: settings.prune,
        allow_public: settings.allow_public,
        check_key_policy: settings.check_key_policy,
        lifecycle,
        source_image_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amis() -> AmiSet {
        AmiSet::parse_artifact("us-east-1:ami-12345678,eu-west-1:ami-87654321", false).unwrap()
    }

    #[test]
    fn key_references_of_every_form_are_accepted() {
        for k in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/my-key",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-east-1:111122223333:alias/my-key",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/my-key",
        ] {
            assert!(is_key_ref(k), "{k}");
        }
        for k in
            ["", "my-key", "alias/", "arn:aws:kms:us-east-1:1111:key/x", "key/1234", "mrk-12", "alias/a b"]
        {
            assert!(!is_key_ref(k), "{k}");
        }
    }

    #[test]
    fn sharing_state_is_read_only_when_publish_can_change_or_keep_it() {
        let quiet = build(&Settings::default(), &amis()).unwrap();
        assert!(!quiet.reads_launch_permissions() && !quiet.reads_snapshot_users());
        let cases: [(Settings, bool, bool); 6] = [
            (Settings { ami_users: vec!["111122223333".into()], ..Default::default() }, true, false),
            (Settings { snapshot_users: vec!["111122223333".into()], ..Default::default() }, false, true),
            (Settings { prune: true, ..Default::default() }, true, true),
            (
                Settings { ami_users: vec!["all".into()], allow_public: true, ..Default::default() },
                true,
                false,
            ),
            (
                Settings {
                    ami_org_arns: vec![
                        "arn:aws:organizations::111122223333:organization/o-abc123def4".into(),
                    ],
                    ..Default::default()
                },
                true,
                false,
            ),
            (
                Settings {
                    ami_ou_arns: vec![
                        "arn:aws:organizations::111122223333:ou/o-abc123def4/ou-ab12-cdef3456".into(),
                    ],
                    ..Default::default()
                },
                true,
                false,
            ),
        ];
        for (s, launch, volume) in cases {
            let i = build(&s, &amis()).unwrap();
            assert_eq!((i.reads_launch_permissions(), i.reads_snapshot_users()), (launch, volume), "{s:?}");
        }
    }

    #[test]
    fn region_keys_override_the_default_and_missing_ones_stay_none() {
        let s = Settings {
            region_kms_key_ids: [("eu-west-1".to_string(), "alias/eu".to_string())].into(),
            ..Default::default()
        };
        let i = build(&s, &amis()).unwrap();
        assert_eq!(i.keys["eu-west-1"].as_deref(), Some("alias/eu"));
        assert_eq!(i.keys["us-east-1"], None);
        let s = Settings { kms_key_id: Some("alias/all".into()), ..s };
        assert_eq!(build(&s, &amis()).unwrap().keys["us-east-1"].as_deref(), Some("alias/all"));
    }

    #[test]
    fn bad_input_is_reported_all_at_once() {
        let s = Settings {
            kms_key_id: Some("garbage key".into()),
            region_kms_key_ids: [
                (
                    "eu-west-1".to_string(),
                    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_string(),
                ),
                ("us-east1".to_string(), "alias/aws/ebs".to_string()),
            ]
            .into(),
            ami_users: vec!["12345".into(), "all".into()],
            ssm_path: Some("images".into()),
            publish_accounts: vec!["111122223333".into()],
            ..Default::default()
        };
        let errs = build(&s, &amis()).unwrap_err();
        let all = errs.join("\n");
        for needle in [
            "\"garbage key\" is not a KMS key reference",
            "is a key ARN in us-east-1",
            "unknown region \"us-east1\"",
            "AWS managed key",
            "\"12345\" is not a 12-digit",
            "allow_public",
            "must start with '/'",
            "publish_role_name",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn publish_accounts_get_launch_permission() {
        let s = Settings {
            ami_users: vec!["111122223333".into()],
            publish_accounts: vec!["444455556666".into()],
            publish_role_name: Some("amikey-publisher".into()),
            ssm_path: Some("/images/base/".into()),
            ..Default::default()
        };
        let i = build(&s, &amis()).unwrap();
        assert_eq!(i.launch_users.iter().cloned().collect::<Vec<_>>(), ["111122223333", "444455556666"]);
        assert_eq!(i.ssm_path.as_deref(), Some("/images/base"));
    }

    #[test]
    fn ssm_path_rules() {
        assert!(check_ssm_path("/a/b").is_ok());
        for bad in ["a/b", "/", "/aws/x", "/ssm/x", "/a b", "/a//b"] {
            assert!(check_ssm_path(bad).is_err(), "{bad}");
        }
    }
}
