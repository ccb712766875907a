//! What a template will do, per region, for `amikey preflight --template` and the data source:
//! the regions each amazon AMI builder touches (its `region` plus `ami_regions`), the key the
//! build encrypts each regional AMI with, and the accounts it shares them with. Pure: a function
//! of evaluated [`Template`]s.
//!
//! The builder's keys win, since they are what the build will do (`kms_key_id` for the build
//! region, `region_kms_key_ids` for copies, both only with `encrypt_boot = true`; a current
//! amazon plugin also accepts the build region in the map). Where the builder sets no key,
//! the amikey post-processor's intended key is used. Where both are set and differ (the lint's
//! AMK009), a warning says so. Values that cannot be evaluated statically are errors here,
//! since preflight needs the actual regions and keys: the message says which `-var` to pass.

use std::collections::{BTreeMap, BTreeSet};

use super::{AMI_BUILDERS, Block, Template, Val, chain_applies, same_key};

/// A warning about the template found while deriving the intent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IntentWarning {
    /// Stable code: `AMIKEY_KEY_DISAGREES` or `BUILDERS_DISAGREE`.
    pub code: &'static str,
    /// The region concerned.
    pub region: String,
    /// What differs and what to do.
    pub message: String,
}

/// Per region, the key the build will use; the accounts the AMIs are shared with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateIntent {
    /// Region → intended key reference (`None`: neither the builder nor amikey names one).
    pub keys: BTreeMap<String, Option<String>>,
    /// `ami_users` of the builders and the amikey post-processors, sorted.
    pub ami_users: BTreeSet<String>,
    /// Disagreements, sorted.
    pub warnings: Vec<IntentWarning>,
}

fn known<'a>(b: &'a Block, k: &str, what: &str, errors: &mut Vec<String>) -> Option<&'a Val> {
    let v = b.val(k)?;
    if v.is_unknown() {
        errors.push(format!(
            "{} `{k}` cannot be evaluated without running Packer ({what}); give its variables values with -var or -var-file",
            b.name
        ));
        return None;
    }
    Some(v)
}

fn key_in(b: &Block, r: &str, use_map: bool, use_kms: bool, errors: &mut Vec<String>) -> Option<String> {
    if use_map
        && let Some(Val::Map(m)) = known(b, "region_kms_key_ids", "a region's key", errors)
        && let Some(Val::Str(k)) = m.get(r)
        && !k.is_empty()
    {
        return Some(k.clone());
    }
    if use_kms && let Some(Val::Str(k)) = known(b, "kms_key_id", "the key", errors) {
        return Some(k.clone()).filter(|k| !k.is_empty());
    }
    None
}

/// Derives the intent of every amazon AMI builder of `templates`. `Err` lists what could not
/// be evaluated or is missing (no amazon builder, no region).
pub fn template_intent(templates: &[Template]) -> Result<TemplateIntent, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = TemplateIntent::default();
    let mut chosen_by: BTreeMap<String, String> = BTreeMap::new();
    let mut builders = 0;
    for t in templates {
        for build in &t.builds {
            for b in build.builders.iter().filter(|b| AMI_BUILDERS.contains(&b.kind.as_str())) {
                builders += 1;
                let amikeys: Vec<&Block> = build
                    .chains
                    .iter()
                    .filter(|c| chain_applies(c, &b.name))
                    .flat_map(|c| c.iter())
                    .filter(|p| p.kind == "amikey" && super::applies(p, &b.name))
                    .collect();
                let region = match known(b, "region", "the build region", &mut errors) {
                    Some(Val::Str(r)) if !r.is_empty() => r.clone(),
                    Some(_) => continue,
                    None => {
                        if b.val("region").is_none() {
                            errors.push(format!(
                                "{} has no `region`; preflight needs the build region (set it in the template or with -var)",
                                b.name
                            ));
                        }
                        continue;
                    }
                };
                let mut regions = vec![region.clone()];
                if known(b, "ami_regions", "the copy regions", &mut errors).is_some() {
                    regions.extend(b.list("ami_regions").unwrap_or_default());
                }
                for k in ["ami_users"] {
                    if known(b, k, "the accounts", &mut errors).is_some() {
                        out.ami_users.extend(b.list(k).unwrap_or_default());
                    }
                    for a in &amikeys {
                        if known(a, k, "the accounts", &mut errors).is_some() {
                            out.ami_users.extend(a.list(k).unwrap_or_default());
                        }
                    }
                }
                let encrypts = b.boolean("encrypt_boot") == Some(true);
                for r in regions {
                    let is_build = r == region;
                    let builder_key = if encrypts {
                        key_in(b, &r, !is_build || t.requires_amazon_plugin, is_build, &mut errors)
                    } else {
                        None
                    };
                    let amikey_key = amikeys.first().and_then(|a| key_in(a, &r, true, true, &mut errors));
                    if let (Some(bk), Some(ak)) = (&builder_key, &amikey_key)
                        && same_key(bk, ak) == Some(false)
                    {
                        out.warnings.push(IntentWarning {
                            code: "AMIKEY_KEY_DISAGREES",
                            region: r.clone(),
                            message: format!(
                                "{r}: {} encrypts with {bk} but the amikey post-processor expects {ak}; preflight checks the builder's key, and amikey would fail the build: make them equal (amikey lint AMK009)",
                                b.name
                            ),
                        });
                    }
                    let key = builder_key.or(amikey_key);
                    match out.keys.get(&r) {
                        Some(prev) if prev != &key => {
                            let by = chosen_by.get(&r).cloned().unwrap_or_default();
                            out.warnings.push(IntentWarning {
                                code: "BUILDERS_DISAGREE",
                                region: r.clone(),
                                message: format!(
                                    "{r}: {by} uses {} but {} uses {}; preflight checked the first",
                                    prev.as_deref().unwrap_or("no key"),
                                    b.name,
                                    key.as_deref().unwrap_or("no key")
                                ),
                            });
                        }
                        Some(_) => {}
                        None => {
                            chosen_by.insert(r.clone(), b.name.clone());
                            out.keys.insert(r, key);
                        }
                    }
                }
            }
        }
    }
    if builders == 0 && errors.is_empty() {
        errors.push(
            "the template has no amazon AMI builder (amazon-ebs, amazon-ebssurrogate, amazon-instance, amazon-chroot); pass --regions and --kms-key-id instead".into(),
        );
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(errors);
    }
    out.warnings.sort();
    out.warnings.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::{LoadedVars, VarInputs, hcl};

    fn intent(src: &str, vars: &[(&str, &str)]) -> Result<TemplateIntent, Vec<String>> {
        let v = VarInputs {
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            var_files: vec![],
        };
        template_intent(&[hcl::parse_template(src, &LoadedVars::from_cli(&v))])
    }

    const T: &str = r#"
variable "copy" {
  type = string
}
source "amazon-ebs" "app" {
  region             = "us-east-1"
  ami_regions        = [var.copy]
  encrypt_boot       = true
  kms_key_id         = "alias/build"
  region_kms_key_ids = { (var.copy) = "alias/copy" }
  ami_users          = ["444455556666"]
}
build {
  sources = ["source.amazon-ebs.app"]
  post-processor "amikey" {
    kms_key_id = "alias/other"
    ami_users  = ["777788889999"]
  }
}
"#;

    #[test]
    fn builder_keys_win_amikey_disagreement_is_a_warning() {
        let i = intent(T, &[("copy", "eu-west-1")]).unwrap();
        assert_eq!(
            i.keys,
            BTreeMap::from([
                ("eu-west-1".to_string(), Some("alias/copy".to_string())),
                ("us-east-1".to_string(), Some("alias/build".to_string())),
            ])
        );
        assert_eq!(i.ami_users.iter().collect::<Vec<_>>(), ["444455556666", "777788889999"]);
        let codes: Vec<_> = i.warnings.iter().map(|w| (w.code, w.region.as_str())).collect();
        assert_eq!(codes, [("AMIKEY_KEY_DISAGREES", "eu-west-1"), ("AMIKEY_KEY_DISAGREES", "us-east-1")]);
    }

    #[test]
    fn unknown_values_are_errors_naming_the_attribute() {
        let e = intent(T, &[]).unwrap_err();
        assert!(e.iter().any(|m| m.contains("ami_regions") && m.contains("-var")), "{e:?}");
    }

    #[test]
    fn without_encrypt_boot_amikey_s_key_is_used() {
        let src = r#"
source "amazon-ebs" "a" {
  region = "us-west-2"
}
build {
  sources = ["source.amazon-ebs.a"]
  post-processor "amikey" {
    kms_key_id = "alias/k"
  }
}
"#;
        let i = intent(src, &[]).unwrap();
        assert_eq!(i.keys["us-west-2"].as_deref(), Some("alias/k"));
        assert!(i.warnings.is_empty());
    }

    #[test]
    fn no_amazon_builder_and_no_region_are_errors() {
        let e =
            intent("source \"null\" \"n\" {}\nbuild { sources = [\"source.null.n\"] }\n", &[]).unwrap_err();
        assert!(e[0].contains("no amazon AMI builder"), "{e:?}");
        let e =
            intent("source \"amazon-ebs\" \"a\" {}\nbuild { sources = [\"source.amazon-ebs.a\"] }\n", &[])
                .unwrap_err();
        assert!(e[0].contains("no `region`"), "{e:?}");
    }
}
