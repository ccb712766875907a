//! Parse the AMIs to work on: the amazon builders' artifact id (`region:ami,region:ami`, as
//! `builder/common/artifact.go` in packer-plugin-amazon writes it) or repeated `REGION:AMI`.
//!
//! Owns: syntax checks of region names and AMI ids. Must not know: AWS, I/O.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Regions amikey knows. Others are refused unless `skip_region_validation` is set, so that a
/// typo (`us-east1`) is an error before any call instead of a DNS failure or a silent no-op.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// Why an artifact id or `REGION:AMI` pair was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Nothing to work on.
    #[error("no AMIs given: pass --artifact \"us-east-1:ami-0123…,eu-west-1:ami-0456…\" or --ami REGION:AMI")]
    Empty,
    /// An entry lacks the `region:ami` shape.
    #[error("malformed AMI entry {entry:?}: expected REGION:AMI, e.g. us-east-1:ami-0123456789abcdef0")]
    Malformed {
        /// The entry as given.
        entry: String,
    },
    /// The region part is not a region name.
    #[error(
        "unknown region {region:?} in {entry:?}: check the spelling (e.g. us-east-1), or set skip_region_validation for a region amikey does not know yet"
    )]
    UnknownRegion {
        /// The region as given.
        region: String,
        /// The entry as given.
        entry: String,
    },
    /// The AMI part is not an AMI id.
    #[error("malformed AMI id {ami:?} in {entry:?}: expected ami- followed by 8 or 17 hex digits")]
    BadAmiId {
        /// The AMI id as given.
        ami: String,
        /// The entry as given.
        entry: String,
    },
    /// Two different AMIs for one region.
    #[error("region {region} is given twice, with {first} and {second}: amikey expects one AMI per region")]
    DuplicateRegion {
        /// The region.
        region: String,
        /// The first AMI.
        first: String,
        /// The second AMI.
        second: String,
    },
}

/// One AMI per region, sorted by region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AmiSet(pub BTreeMap<String, String>);

/// True when `s` looks like a region name (`xx-name-N`), whether or not amikey knows it.
pub fn is_region_shaped(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// Checks a region name: shape always, membership in [`KNOWN_REGIONS`] unless `skip_validation`.
pub fn valid_region(region: &str, skip_validation: bool) -> bool {
    is_region_shaped(region) && (skip_validation || KNOWN_REGIONS.contains(&region))
}

/// True when `s` is `ami-` followed by 8 or 17 lowercase hex digits.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

impl AmiSet {
    /// Parses an amazon artifact id: comma-separated `region:ami` pairs, any order, spaces
    /// tolerated around entries.
    pub fn parse_artifact(id: &str, skip_region_validation: bool) -> Result<AmiSet, ArtifactError> {
        let entries: Vec<&str> = id.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        Self::from_pairs(entries, skip_region_validation)
    }

    /// Builds the set from `REGION:AMI` entries (each may also be a comma-separated list).
    pub fn from_pairs<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        skip_region_validation: bool,
    ) -> Result<AmiSet, ArtifactError> {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for raw in entries {
            for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let Some((region, ami)) = entry.split_once(':') else {
                    return Err(ArtifactError::Malformed { entry: entry.to_string() });
                };
                let (region, ami) = (region.trim(), ami.trim());
                if region.is_empty() || ami.is_empty() {
                    return Err(ArtifactError::Malformed { entry: entry.to_string() });
                }
                if !valid_region(region, skip_region_validation) {
                    return Err(ArtifactError::UnknownRegion {
                        region: region.to_string(),
                        entry: entry.to_string(),
                    });
                }
                if !is_ami_id(ami) {
                    return Err(ArtifactError::BadAmiId { ami: ami.to_string(), entry: entry.to_string() });
                }
                if let Some(first) = map.get(region)
                    && first != ami
                {
                    return Err(ArtifactError::DuplicateRegion {
                        region: region.to_string(),
                        first: first.clone(),
                        second: ami.to_string(),
                    });
                }
                map.insert(region.to_string(), ami.to_string());
            }
        }
        if map.is_empty() {
            return Err(ArtifactError::Empty);
        }
        Ok(AmiSet(map))
    }

    /// Regions, sorted.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Display for AmiSet {
    /// The artifact-id form, sorted by region.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(r, a)| format!("{r}:{a}")).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_artifact_in_any_order_with_spaces() {
        let s = AmiSet::parse_artifact(" us-west-2:ami-0123456789abcdef0 , eu-west-1:ami-12345678", false)
            .unwrap();
        assert_eq!(s.to_string(), "eu-west-1:ami-12345678,us-west-2:ami-0123456789abcdef0");
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in ["us-east-1", "us-east-1:", ":ami-12345678", "us-east-1;ami-12345678", "", " , "] {
            assert!(AmiSet::parse_artifact(bad, false).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_unknown_region_unless_skipped() {
        let e = AmiSet::parse_artifact("us-east1:ami-12345678", false).unwrap_err();
        assert!(matches!(e, ArtifactError::UnknownRegion { .. }), "{e}");
        assert!(AmiSet::parse_artifact("xx-moon-1:ami-12345678", false).is_err());
        assert!(AmiSet::parse_artifact("xx-moon-1:ami-12345678", true).is_ok());
        assert!(AmiSet::parse_artifact("us-east1:ami-12345678", true).is_err(), "shape is always checked");
    }

    #[test]
    fn rejects_bad_ami_ids() {
        for bad in ["ami-XYZ", "ami-1234567", "snap-12345678", "ami-0123456789ABCDEF0", "ami-123456789"] {
            let e = AmiSet::parse_artifact(&format!("us-east-1:{bad}"), false).unwrap_err();
            assert!(matches!(e, ArtifactError::BadAmiId { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_two_amis_for_one_region() {
        let e = AmiSet::parse_artifact("us-east-1:ami-12345678,us-east-1:ami-87654321", false).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(AmiSet::parse_artifact("us-east-1:ami-12345678,us-east-1:ami-12345678", false).is_ok());
    }
}
