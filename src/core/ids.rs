//! AWS identifiers: ARNs, account ids and KMS key references. The one home of every question
//! about their shape ("which region does this ARN name", "is this an account id", "is this an AWS
//! managed key"); every caller in the crate uses these, so the answers cannot drift apart.
//!
//! An ARN has six fields, `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` (the resource may hold
//! more colons). Anything with fewer fields or without the `arn` prefix is not an ARN, and every
//! function here answers `None`/`false` for it.

/// The six fields of an ARN, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let mut p = s.splitn(6, ':');
    match (p.next(), p.next(), p.next(), p.next(), p.next(), p.next()) {
        (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) => {
            Some(Arn { partition, service, region, account, resource })
        }
        _ => None,
    }
}

/// The region field of an ARN, when it is an ARN and the field is not empty (IAM ARNs have none).
pub fn arn_region(arn: &str) -> Option<&str> {
    parse_arn(arn).map(|a| a.region).filter(|r| !r.is_empty())
}

/// The account field of an ARN, when it is an ARN and the field is not empty (S3 ARNs have none).
/// Not checked for shape: see [`is_account_id`].
pub fn arn_account(arn: &str) -> Option<&str> {
    parse_arn(arn).map(|a| a.account).filter(|a| !a.is_empty())
}

/// Whether `s` is a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` is a KMS key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`) with a region, a
/// 12-digit account and a key id. Alias ARNs are not key ARNs: a grant needs the key itself.
pub fn is_key_arn(s: &str) -> bool {
    parse_arn(s).is_some_and(|a| {
        a.service == "kms"
            && !a.region.is_empty()
            && is_account_id(a.account)
            && a.resource.strip_prefix("key/").is_some_and(|id| !id.is_empty())
    })
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `mrk-` and 32 hex digits (AWS), also in the dashed UUID layout some emulators use.
fn is_mrk(s: &str) -> bool {
    s.strip_prefix("mrk-")
        .is_some_and(|h| (h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())) || is_uuid(h))
}

fn is_alias_name(s: &str) -> bool {
    s.strip_prefix("alias/").is_some_and(|n| {
        !n.is_empty() && n.len() <= 250 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
    })
}

/// True when `s` is a syntactically valid KMS key reference: key id, `mrk-` id, `alias/NAME`, key
/// ARN or alias ARN (in a known region, with a 12-digit account).
pub fn is_key_ref(s: &str) -> bool {
    if is_uuid(s) || is_mrk(s) || is_alias_name(s) {
        return true;
    }
    let Some(a) = parse_arn(s) else { return false };
    if !a.partition.starts_with("aws") || a.service != "kms" {
        return false;
    }
    if !super::artifact::valid_region(a.region, true) || !is_account_id(a.account) {
        return false;
    }
    match a.resource.strip_prefix("key/") {
        Some(id) => is_uuid(id) || is_mrk(id),
        None => is_alias_name(a.resource),
    }
}

/// True for references to an AWS managed key: any `alias/aws/…`, bare or as an alias ARN
/// (`aws/ebs`, `aws/lambda`, …). Such keys can never be shared with another account.
pub fn is_aws_managed_alias(s: &str) -> bool {
    let name = s.rsplit_once(":alias/").map(|(_, n)| n).or_else(|| s.strip_prefix("alias/"));
    name.is_some_and(|n| n.starts_with("aws/"))
}

/// The region a KMS key reference is pinned to: the region of a key ARN or alias ARN, except for
/// a multi-Region key (`key/mrk-…`), whose replicas share its id in other regions. `None` for
/// bare ids and aliases, and for anything that is not a KMS ARN.
pub fn pinned_key_region(s: &str) -> Option<&str> {
    let a = parse_arn(s).filter(|a| a.service == "kms" && !a.region.is_empty())?;
    match (a.resource.strip_prefix("key/"), a.resource.strip_prefix("alias/")) {
        (Some(id), _) if !id.starts_with("mrk-") => Some(a.region),
        (_, Some(_)) => Some(a.region),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_parts() {
        let k = "arn:aws:kms:us-east-1:444455556666:key/12ee9c11";
        assert_eq!(arn_account(k), Some("444455556666"));
        assert_eq!(arn_region(k), Some("us-east-1"));
        assert_eq!(arn_account("arn:aws:iam::111122223333:root"), Some("111122223333"));
        assert_eq!(arn_region("arn:aws:iam::111122223333:root"), None);
        assert_eq!(arn_account("mrk-1"), None);
        assert!(is_account_id("111122223333"));
        assert!(!is_account_id("11112222333x"));
    }

    const KEY: &str = "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    /// Before one home existed, `core::facts::arn_region` answered for 4-field strings and
    /// `core::policy::arn_region` required 6 fields: an ARN has 6, so 4 or 5 are not one.
    #[test]
    fn arn_region_needs_six_fields_and_a_region() {
        for (arn, want) in [
            (KEY, Some("us-east-1")),
            ("arn:aws:kms:eu-west-1:444455556666:alias/a:b", Some("eu-west-1")),
            ("arn:aws-us-gov:ssm:us-gov-west-1:111122223333:parameter/x", Some("us-gov-west-1")),
            ("arn:aws:kms:eu-west-1", None),
            ("arn:aws:kms:eu-west-1:444455556666", None),
            ("arn:aws:iam::111122223333:root", None),
            ("xrn:aws:kms:us-east-1:444455556666:key/k", None),
            ("mrk-1234", None),
            ("", None),
        ] {
            assert_eq!(arn_region(arn), want, "{arn}");
        }
    }

    /// Before one home existed, `core::facts::arn_account` took the fifth field of anything
    /// (no `arn` prefix check); `core::policy::arn_account` required an ARN.
    #[test]
    fn arn_account_needs_the_arn_prefix() {
        for (arn, want) in [
            (KEY, Some("444455556666")),
            ("arn:aws:iam::111122223333:root", Some("111122223333")),
            ("arn:aws:iam::111122223333:role/a:b", Some("111122223333")),
            ("arn:aws:s3:::bucket", None),
            ("not:an:arn:at:111122223333:all", None),
            ("arn:aws:kms:us-east-1:444455556666", None),
            ("mrk-1", None),
        ] {
            assert_eq!(arn_account(arn), want, "{arn}");
        }
    }

    #[test]
    fn account_ids_are_exactly_twelve_digits() {
        for (s, want) in [
            ("111122223333", true),
            ("000000000000", true),
            ("11112222333", false),
            ("1111222233334", false),
            ("11112222333x", false),
            ("１１１１２２２２３３３３", false),
            ("", false),
            ("all", false),
        ] {
            assert_eq!(is_account_id(s), want, "{s:?}");
        }
    }

    #[test]
    fn key_arns_name_a_key_not_an_alias() {
        for (s, want) in [
            (KEY, true),
            ("arn:aws:kms:eu-west-1:444455556666:key/mrk-0123", true),
            ("arn:aws-cn:kms:cn-north-1:444455556666:key/k", true),
            ("arn:aws:kms:eu-west-1:444455556666:key/", false),
            ("arn:aws:kms:eu-west-1:444455556666:alias/a", false),
            ("arn:aws:kms::444455556666:key/k", false),
            ("arn:aws:kms:eu-west-1:4444:key/k", false),
            ("arn:aws:ec2:eu-west-1:444455556666:key/k", false),
            ("1234abcd-12ab-34cd-56ef-1234567890ab", false),
            ("alias/a", false),
        ] {
            assert_eq!(is_key_arn(s), want, "{s}");
        }
    }

    #[test]
    fn key_references_of_every_form() {
        for (s, want) in [
            ("1234abcd-12ab-34cd-56ef-1234567890ab", true),
            ("mrk-1234abcd12ab34cd56ef1234567890ab", true),
            ("mrk-1234abcd-12ab-34cd-56ef-1234567890ab", true),
            ("alias/my-key", true),
            ("alias/aws/ebs", true),
            (KEY, true),
            ("arn:aws:kms:us-east-1:111122223333:alias/my-key", true),
            ("arn:aws:kms:us-east-1:111122223333:key/not-a-uuid", false),
            ("arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab", false),
            ("arn:other:kms:us-east-1:111122223333:alias/my-key", false),
            ("alias/", false),
            ("alias/a b", false),
            ("mrk-12", false),
            ("", false),
        ] {
            assert_eq!(is_key_ref(s), want, "{s}");
        }
    }

    /// Before one home existed, `core::doctor` recognised only names ending in `alias/aws/ebs`
    /// and so missed `alias/aws/other`; the intent's meaning (any `alias/aws/…`) is the right one.
    #[test]
    fn aws_managed_aliases_are_any_alias_under_aws() {
        for (s, want) in [
            ("alias/aws/ebs", true),
            ("alias/aws/other", true),
            ("arn:aws:kms:us-east-1:111122223333:alias/aws/ebs", true),
            ("arn:aws:kms:us-east-1:111122223333:alias/aws/lambda", true),
            ("alias/my/aws/ebs", false),
            ("myalias/aws/ebs", false),
            ("alias/awsome", false),
            ("alias/aws", false),
            (KEY, false),
            ("", false),
        ] {
            assert_eq!(is_aws_managed_alias(s), want, "{s}");
        }
    }

    #[test]
    fn pinned_key_region_leaves_out_multi_region_keys() {
        for (s, want) in [
            (KEY, Some("us-east-1")),
            ("arn:aws:kms:eu-west-1:444455556666:alias/a", Some("eu-west-1")),
            ("arn:aws:kms:eu-west-1:444455556666:key/mrk-0123", None),
            ("arn:aws:kms::444455556666:alias/a", None),
            ("arn:aws:ssm:eu-west-1:444455556666:parameter/a", None),
            ("arn:aws:kms:eu-west-1", None),
            ("alias/a", None),
            ("1234abcd-12ab-34cd-56ef-1234567890ab", None),
        ] {
            assert_eq!(pinned_key_region(s), want, "{s}");
        }
    }
}
