//! The composer of the Packer data source `data "amikey-preflight"`: the only module besides
//! [`crate::postprocessor`] that imports both [`crate::wire`] and [`crate::producer`].
//!
//! When a modern Packer (>= 1.7; gob or protobuf protocol, see [`crate::wire::server`]) evaluates the
//! template, it runs `amikey preflight` for the block's `regions` and exposes, per region, the
//! resolved key ARN, so `region_kms_key_ids` can be fed from it:
//!
//! ```hcl
//! data "amikey-preflight" "keys" {
//!   regions    = ["us-east-1", "eu-west-1"]
//!   kms_key_id = "alias/images"
//! }
//! source "amazon-ebs" "app" {
//!   region             = "us-east-1"
//!   ami_regions        = ["eu-west-1"]
//!   encrypt_boot       = true
//!   kms_key_id         = data.amikey-preflight.keys.kms_key_arns["us-east-1"]
//!   region_kms_key_ids = { "eu-west-1" = data.amikey-preflight.keys.kms_key_arns["eu-west-1"] }
//! }
//! ```
//!
//! * **Config** (all optional except `regions`): the AWS keys of the post-processor
//!   (`access_key`, `secret_key`, `token`, `profile`, `region`, `assume_role`, `endpoint_url`,
//!   `max_retries`, `skip_region_validation`), `regions`, `kms_key_id`, `region_kms_key_ids`,
//!   `ami_users` (consumers whose use of the key is checked against its policy).
//! * **Output** (flat): `kms_key_arns` map(string) region → resolved key ARN;
//!   `ebs_encryption_by_default` map(bool) region → on/off; `ebs_default_kms_key_arns`
//!   map(string) region → the default EBS key's ARN; `warnings` list(string), sorted.
//! * **Execute** fails with the preflight text when any region has an error-level finding, so
//!   a wrong key stops the build before an instance is launched.

use std::sync::Mutex;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::core::config::{FIELDS, Settings};
use crate::core::preflight::Severity;
use crate::postprocessor::decode_settings;
use crate::producer;
use crate::wire::{AttrSpec, CtyType, Datasource};

/// The component name in `describe`; Packer calls it `amikey-preflight`.
pub const COMPONENT: &str = "preflight";

/// The amikey keys the data source accepts besides `regions`.
pub const SETTINGS_KEYS: &[&str] = &[
    "access_key",
    "ami_users",
    "assume_role",
    "endpoint_url",
    "kms_key_id",
    "max_retries",
    "profile",
    "region",
    "region_kms_key_ids",
    "secret_key",
    "skip_region_validation",
    "token",
];

/// The ConfigSpec: `regions` plus [`SETTINGS_KEYS`], typed as in [`FIELDS`].
pub fn config_spec() -> Vec<AttrSpec> {
    let mut v: Vec<AttrSpec> = crate::postprocessor::config_spec()
        .into_iter()
        .filter(|a| SETTINGS_KEYS.contains(&a.name.as_str()))
        .collect();
    v.push(AttrSpec { name: "regions".into(), ty: CtyType::List(Box::new(CtyType::String)), required: true });
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The OutputSpec.
pub fn output_spec() -> Vec<AttrSpec> {
    let map = |t: CtyType| CtyType::Map(Box::new(t));
    vec![
        AttrSpec { name: "ebs_default_kms_key_arns".into(), ty: map(CtyType::String), required: false },
        AttrSpec { name: "ebs_encryption_by_default".into(), ty: map(CtyType::Bool), required: false },
        AttrSpec { name: "kms_key_arns".into(), ty: map(CtyType::String), required: false },
        AttrSpec { name: "warnings".into(), ty: CtyType::List(Box::new(CtyType::String)), required: false },
    ]
}

#[derive(Debug, Clone)]
struct Config {
    settings: Settings,
    regions: Vec<String>,
}

/// The `amikey-preflight` data source.
#[derive(Default)]
pub struct PreflightDatasource {
    config: Mutex<Option<Config>>,
}

impl PreflightDatasource {
    /// A data source with no configuration yet.
    pub fn new() -> PreflightDatasource {
        PreflightDatasource::default()
    }
}

fn decode(config: Value) -> Result<Config, String> {
    let Value::Object(block) = config else {
        return Err(format!("amikey-preflight: the block decoded to {config}, not an object"));
    };
    let mut rest = Map::new();
    let mut regions = None;
    for (k, v) in block {
        if v.is_null() {
            continue;
        }
        if k == "regions" {
            regions = Some(v);
        } else if SETTINGS_KEYS.contains(&k.as_str()) || !FIELDS.iter().any(|f| f.name == k) {
            rest.insert(k, v);
        } else {
            return Err(format!(
                "amikey-preflight: `{k}` is a post-processor key; the data source accepts regions, {}",
                SETTINGS_KEYS.join(", ")
            ));
        }
    }
    let settings = decode_settings(rest, false).map_err(|e| e.replace("amikey:", "amikey-preflight:"))?;
    let regions: Vec<String> = match regions {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let mut r: Vec<String> = items.iter().filter_map(Value::as_str).map(str::to_string).collect();
            r.sort();
            r.dedup();
            r
        }
        Some(other) => return Err(format!("amikey-preflight: `regions` must be list(string), got {other}")),
        None => Vec::new(),
    };
    if regions.is_empty() {
        return Err(
            "amikey-preflight: `regions` is required: the build region and every ami_regions entry, e.g. regions = [\"us-east-1\", \"eu-west-1\"]".into(),
        );
    }
    Ok(Config { settings, regions })
}

impl Datasource for PreflightDatasource {
    fn config_spec(&self) -> Vec<AttrSpec> {
        config_spec()
    }

    fn output_spec(&self) -> Vec<AttrSpec> {
        output_spec()
    }

    fn configure(&self, config: Value) -> Result<(), String> {
        let c = decode(config)?;
        if let Ok(mut slot) = self.config.lock() {
            *slot = Some(c);
        }
        Ok(())
    }

    async fn execute(&self, cancel: CancellationToken) -> Result<Map<String, Value>, String> {
        let Some(c) = self.config.lock().ok().and_then(|c| c.clone()) else {
            return Err("amikey-preflight: Execute before Configure".into());
        };
        let run = producer::preflight(&c.settings, &c.regions);
        let report = tokio::select! {
            r = run => r.map_err(|e| format!("amikey-preflight: {e}"))?,
            () = cancel.cancelled() => return Err("amikey-preflight: cancelled".into()),
        };
        if !report.is_clean() {
            return Err(format!(
                "amikey-preflight: the intended keys are not usable for this build:\n{}",
                report.render_text()
            ));
        }
        let mut keys = Map::new();
        let mut by_default = Map::new();
        let mut default_keys = Map::new();
        let mut warnings = Vec::new();
        for r in &report.regions {
            if let Some(k) = &r.intended_kms_key_arn {
                keys.insert(r.region.clone(), json!(k));
            }
            if let Some(b) = r.ebs_encryption_by_default {
                by_default.insert(r.region.clone(), json!(b));
            }
            if let Some(k) = &r.ebs_default_kms_key_arn {
                default_keys.insert(r.region.clone(), json!(k));
            }
            warnings.extend(
                r.findings
                    .iter()
                    .filter(|f| f.severity == Severity::Warning)
                    .map(|f| format!("{}: {}", f.code, f.message)),
            );
        }
        warnings.sort();
        let mut out = Map::new();
        out.insert("kms_key_arns".into(), Value::Object(keys));
        out.insert("ebs_encryption_by_default".into(), Value::Object(by_default));
        out.insert("ebs_default_kms_key_arns".into(), Value::Object(default_keys));
        out.insert("warnings".into(), json!(warnings));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_flat_sorted_and_typed_from_fields() {
        let names: Vec<String> = config_spec().into_iter().map(|a| a.name).collect();
        let mut want: Vec<String> = SETTINGS_KEYS.iter().map(|s| s.to_string()).collect();
        want.push("regions".into());
        want.sort();
        assert_eq!(names, want);
        for k in SETTINGS_KEYS {
            assert!(FIELDS.iter().any(|f| f.name == *k), "{k} is not an amikey key");
        }
        let out: Vec<String> = output_spec().into_iter().map(|a| a.name).collect();
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(out, sorted);
    }

    #[test]
    fn configure_needs_regions_and_refuses_post_processor_keys() {
        let ds = PreflightDatasource::new();
        let e = ds.configure(json!({"regions": null, "kms_key_id": "alias/x"})).unwrap_err();
        assert!(e.contains("`regions` is required"), "{e}");
        let e = ds.configure(json!({"regions": ["us-east-1"], "ssm_path": "/x"})).unwrap_err();
        assert!(e.contains("post-processor key"), "{e}");
        let e = ds.configure(json!({"regions": ["us-east-1"], "kms_key": "alias/x"})).unwrap_err();
        assert!(e.contains("kms_key"), "{e}");
        let e = ds.configure(json!({"regions": "us-east-1"})).unwrap_err();
        assert!(e.contains("list(string)"), "{e}");
        ds.configure(json!({"regions": ["eu-west-1", "us-east-1", "eu-west-1"], "kms_key_id": "alias/x"}))
            .unwrap();
        let c = ds.config.lock().unwrap().clone().unwrap();
        assert_eq!(c.regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(c.settings.kms_key_id.as_deref(), Some("alias/x"));
    }

    #[test]
    fn execute_before_configure_is_an_error() {
        let ds = PreflightDatasource::new();
        let r = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ds.execute(CancellationToken::new()));
        assert!(r.unwrap_err().contains("before Configure"));
    }
}
