//! The composer of the Packer post-processor: the only module that imports both [`crate::wire`]
//! (Packer's protocol) and [`crate::core`]/[`crate::producer`] (amikey's domain).
//!
//! * **ConfigSpec** is generated from [`FIELDS`], so the gob and protobuf schemas can never drift
//!   from [`Settings`]: flat, all optional.
//! * **Configure** accepts both template modes. JSON: values arrive raw, so `{{user `x`}}` & co
//!   are rendered here ([`crate::wire::template`]); strings are weakly converted to bools and
//!   numbers where the schema says so (as Go plugins' mapstructure does, since user variables are
//!   strings); JSON numbers arrive as floats. HCL2: cty JSON, `null` for unset attributes
//!   (dropped); the first call carries `<unknown>` placeholders for `build.*` values, and those
//!   attributes are skipped rather than failed. Unknown keys and wrong types are errors naming
//!   the key. The last good [`Settings`] is kept.
//! * **PostProcess** accepts Amazon AMI builders only, runs `producer::run(Publish)` and returns a
//!   pass-through artifact (same `Id` and `BuilderId`, so later amazon-aware post-processors keep
//!   working) with `Keep` and `ForceOverride` set: returning an error or `Keep=false` makes
//!   Packer destroy the builder's AMIs (docs/protocol.md §5, "Keep").
//! * **Cancel** (Ctrl-C): reads stop at once; writes already sent are allowed to finish (up to
//!   [`CANCEL_GRACE`]) and no new one starts, so nothing is half-written; the step then fails
//!   with the report of what was and was not done (a re-run applies only what is missing).
//!
//! # Result artifact state
//! * `generated_data` (flat string map, usable as `build.X` by later HCL2 post-processors):
//!   `AmikeyVerified = "true"`, and per region, with `-` replaced by `_`,
//!   `KmsKeyArn_<region>` (the verified key ARN) and `AmiId_<region>`.
//! * `par.artifact.metadata`: HCP Packer registry image records
//!   `{ImageID, ProviderName: "aws", ProviderRegion, SourceImageID: "", Labels: {kms_key_arn,
//!   encrypted: "true", snapshot_ids}}`.
//! * `atlas.artifact.metadata`: `{"region.<region>": ami}`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::core::artifact::AmiSet;
use crate::core::config::{FIELDS, FieldKind, Settings};
use crate::core::outcome::{CopyOutcome, PublishOutcome};
use crate::core::report::Report;
use crate::producer::{self, Mode, Progress, RunOptions};
use crate::wire::template::{self, TemplateContext};
use crate::wire::{
    AttrSpec, BlockListSpec, ConfigureRequest, CtyType, InputArtifact, PostProcessContext, PostProcessor,
    ResultArtifact, Ui,
};

/// Builder ids whose artifacts are AMIs (`region:ami,…`).
pub const AMI_BUILDERS: &[&str] = &[
    "mitchellh.amazonebs",
    "mitchellh.amazon.ebssurrogate",
    "mitchellh.amazon.instance",
    "mitchellh.amazon.chroot",
];

/// amazon-ebsvolume: its artifact is EBS volumes, not AMIs.
pub const EBSVOLUME_BUILDER: &str = "mitchellh.amazon.ebsvolume";

/// What an error from `PostProcess` does, appended to every such error.
pub const DESTROY_NOTE: &str = "Because the post-processor failed, Packer will now delete the builder's AMIs and snapshots (even with keep_input_artifact = true). Set on_violation = \"warn\" to keep them and only report.";

/// What an error from a failed `copy_to` copy does (only with `on_copy_failure = "fail"`).
pub const COPY_DESTROY_NOTE: &str = "Because the post-processor failed, Packer will now delete the builder's AMIs and snapshots (even with keep_input_artifact = true), although they were verified, shared and published. Set on_copy_failure = \"warn\" (the default) to keep them and only report.";

/// How long a cancelled `PostProcess` waits for AWS calls already sent before giving up.
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The amikey post-processor.
#[derive(Default)]
pub struct AmikeyPostProcessor {
    settings: Mutex<Option<Settings>>,
}

impl AmikeyPostProcessor {
    /// A post-processor with no configuration yet.
    pub fn new() -> AmikeyPostProcessor {
        AmikeyPostProcessor::default()
    }

    /// The last configuration `Configure` accepted (`None` before one). Fails only when the lock
    /// is poisoned: an earlier call panicked while holding it, an amikey bug.
    pub fn settings(&self) -> Result<Option<Settings>, String> {
        self.settings.lock().map(|s| s.clone()).map_err(|_| POISONED.to_string())
    }
}

/// What a poisoned settings lock is: amikey's own failure, never Packer's.
const POISONED: &str = "amikey: internal error: the configuration lock is poisoned (an earlier call \
     panicked while holding it); this is an amikey bug, not a Packer one: re-run the build, and \
     report it with the log (PACKER_LOG=1)";

fn cty_of(kind: FieldKind) -> Option<CtyType> {
    Some(match kind {
        FieldKind::String => CtyType::String,
        FieldKind::Bool => CtyType::Bool,
        FieldKind::Number => CtyType::Number,
        FieldKind::ListOfString => CtyType::List(Box::new(CtyType::String)),
        FieldKind::MapOfString => CtyType::Map(Box::new(CtyType::String)),
        FieldKind::Blocks(_) => return None,
    })
}

fn attr_specs(fields: &[crate::core::config::Field]) -> Vec<AttrSpec> {
    fields
        .iter()
        .filter_map(|f| Some(AttrSpec { name: f.name.to_string(), ty: cty_of(f.kind)?, required: false }))
        .collect()
}

/// The ConfigSpec's attributes, from [`FIELDS`] (every kind but blocks).
pub fn config_spec() -> Vec<AttrSpec> {
    attr_specs(FIELDS)
}

/// The ConfigSpec's repeated nested blocks (`copy_to`), from [`FIELDS`].
pub fn config_blocks() -> Vec<BlockListSpec> {
    FIELDS
        .iter()
        .filter_map(|f| match f.kind {
            FieldKind::Blocks(nested) => {
                Some(BlockListSpec { name: f.name.to_string(), nested: attr_specs(nested) })
            }
            _ => None,
        })
        .collect()
}

/// A block list as it arrives (HCL2: a list of objects with `null` for unset keys; JSON: a list
/// of maps or one map) made into a list of objects without nulls.
fn normalize_blocks(v: Value) -> Value {
    let items = match v {
        Value::Object(m) => vec![Value::Object(m)],
        Value::Array(a) => a,
        other => return other,
    };
    Value::Array(
        items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, normalize_number(v)))
                        .collect(),
                ),
                other => other,
            })
            .collect(),
    )
}

fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    };
    let shown: String = v.to_string().chars().take(60).collect();
    format!("{kind} ({shown})")
}

/// Weak typing for JSON templates: `"true"` for a bool, `"5"` for a number.
fn coerce(v: Value, kind: FieldKind) -> Value {
    match (kind, &v) {
        (FieldKind::Bool, Value::String(s)) => match s.as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" | "" => Value::Bool(false),
            _ => v,
        },
        (FieldKind::Number, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| s.trim().parse::<f64>().map(|f| json!(f)))
            .unwrap_or(v),
        _ => v,
    }
}

/// Integral floats (JSON-template numbers arrive as float64) become integers.
fn normalize_number(v: Value) -> Value {
    if let Value::Number(n) = &v
        && n.is_f64()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        return Value::from(f as i64);
    }
    v
}

fn kind_ok(v: &Value, kind: FieldKind) -> bool {
    match kind {
        FieldKind::String => v.is_string(),
        FieldKind::Bool => v.is_boolean(),
        FieldKind::Number => v.is_number(),
        FieldKind::ListOfString => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        FieldKind::MapOfString => v.as_object().is_some_and(|o| o.values().all(Value::is_string)),
        FieldKind::Blocks(nested) => v.as_array().is_some_and(|items| {
            items.iter().all(|i| {
                i.as_object().is_some_and(|o| {
                    o.iter().all(|(k, v)| nested.iter().any(|f| f.name == k && kind_ok(v, f.kind)))
                })
            })
        }),
    }
}

/// Decodes a block (nulls already dropped) into [`Settings`]; every problem names its key.
pub fn decode_settings(block: Map<String, Value>, weak: bool) -> Result<Settings, String> {
    let mut errors = Vec::new();
    let mut clean = Map::new();
    for (key, value) in block {
        let Some(field) = FIELDS.iter().find(|f| f.name == key) else {
            let valid: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
            errors.push(format!(
                "unknown configuration key `{key}` in the amikey post-processor block (valid keys: {})",
                valid.join(", ")
            ));
            continue;
        };
        let value = if weak { coerce(value, field.kind) } else { value };
        let value = match field.kind {
            FieldKind::Blocks(_) => normalize_blocks(value),
            _ => normalize_number(value),
        };
        if !kind_ok(&value, field.kind) {
            let want = match field.kind {
                FieldKind::Blocks(nested) => format!(
                    "one or more `{key} {{ … }}` blocks with the keys {}",
                    nested
                        .iter()
                        .map(|f| format!("{} ({})", f.name, f.kind.hcl()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                k => k.hcl().to_string(),
            };
            errors.push(format!("`{key}` must be {want}, got {}", describe(&value)));
            continue;
        }
        let single: Map<String, Value> = [(key.clone(), value.clone())].into_iter().collect();
        if let Err(e) = serde_json::from_value::<Settings>(Value::Object(single)) {
            errors.push(format!("`{key}`: {e}"));
            continue;
        }
        clean.insert(key, value);
    }
    if !errors.is_empty() {
        return Err(format!("amikey: invalid configuration:\n  * {}", errors.join("\n  * ")));
    }
    serde_json::from_value(Value::Object(clean)).map_err(|e| format!("amikey: invalid configuration: {e}"))
}

fn now_unix() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

impl PostProcessor for AmikeyPostProcessor {
    fn config_spec(&self) -> Vec<AttrSpec> {
        config_spec()
    }

    fn config_blocks(&self) -> Vec<BlockListSpec> {
        config_blocks()
    }

    fn configure(&self, req: ConfigureRequest) -> Result<(), String> {
        let settings = match req {
            ConfigureRequest::Json { user, packer, .. } => {
                let timestamp = now_unix();
                let env = |k: &str| std::env::var(k).ok();
                let ctx = TemplateContext {
                    user_variables: &packer.user_variables,
                    build_name: &packer.build_name,
                    build_type: &packer.builder_type,
                    timestamp: &timestamp,
                    env: &env,
                };
                let mut rendered = Map::new();
                for (k, v) in user {
                    let v = template::render_value(&v, &ctx).map_err(|e| format!("amikey: `{k}`: {e}"))?;
                    if !v.is_null() {
                        rendered.insert(k, v);
                    }
                }
                decode_settings(rendered, true)?
            }
            ConfigureRequest::Hcl2 { config, has_unknowns, .. } => {
                let Value::Object(block) = config else {
                    return Err(format!(
                        "amikey: the HCL2 block decoded to {}, not an object",
                        describe(&config)
                    ));
                };
                let block: Map<String, Value> = block
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    // First call: values that depend on the build are not known yet.
                    .filter(|(_, v)| !(has_unknowns && crate::wire::cty::contains_unknown(v)))
                    .collect();
                decode_settings(block, false)?
            }
        };
        *self.settings.lock().map_err(|_| POISONED.to_string())? = Some(settings);
        Ok(())
    }

    async fn post_process<U: Ui + 'static, A: InputArtifact + 'static>(
        &self,
        ctx: PostProcessContext<U, A>,
    ) -> Result<ResultArtifact, String> {
        let cancel = ctx.cancel.clone();
        let run = self.run(&ctx);
        tokio::pin!(run);
        tokio::select! {
            biased;
            // The run may notice the cancel before this select does: word it the same way.
            r = &mut run => match r {
                Err(e) if cancel.is_cancelled() => Err(format!("cancelled: Packer cancelled the build.\n{e}")),
                r => r,
            },
            () = cancel.cancelled() => {
                // The producer run sees the same token: it stops reading at once and starts no new
                // write, but lets writes already sent finish, so an SSM parameter set or a
                // permission is never left half-written. Dropping the run here instead would
                // abandon requests AWS may still apply, and we could not say what was done.
                tracing::info!("cancel received: letting AWS calls in flight finish, starting no new write");
                match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                    Ok(Ok(done)) => Ok(done),
                    Ok(Err(e)) => Err(format!("cancelled: Packer cancelled the build.\n{e}")),
                    Err(_) => Err(format!(
                        "cancelled: Packer cancelled the build and AWS calls already sent did not finish within {} s; \
                         run `amikey check` (or `amikey publish`, which applies only what is missing) on these AMIs",
                        CANCEL_GRACE.as_secs()
                    )),
                }
            }
        }
    }
}

enum Line {
    Say(String),
    Message(String),
}

/// [`Progress`] over a channel: the producer's sync callbacks become queued Ui calls.
struct ChannelProgress(mpsc::UnboundedSender<Line>);

impl Progress for ChannelProgress {
    fn say(&self, msg: &str) {
        let _ = self.0.send(Line::Say(msg.to_string()));
    }
    fn message(&self, msg: &str) {
        let _ = self.0.send(Line::Message(msg.to_string()));
    }
}

impl AmikeyPostProcessor {
    async fn run<U: Ui, A: InputArtifact>(
        &self,
        ctx: &PostProcessContext<U, A>,
    ) -> Result<ResultArtifact, String> {
        // Reading Packer's artifact writes nothing: a cancel stops it at once.
        let builder_id = unless_cancelled(&ctx.cancel, ctx.input.builder_id()).await?;
        check_builder(&builder_id)?;
        let mut settings = self
            .settings()?
            .ok_or("amikey: PostProcess called before a successful Configure (this is a Packer bug)")?;
        imply_copy_accounts(&mut settings);
        let id = unless_cancelled(&ctx.cancel, ctx.input.id()).await?;
        let amis = AmiSet::parse_artifact(&id, settings.skip_region_validation).map_err(|e| {
            format!("amikey: cannot read the AMI list {id:?} of the {builder_id} artifact: {e}")
        })?;

        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = async {
            let progress = ChannelProgress(tx);
            let opts = RunOptions { mode: Mode::Publish, dry_run: false };
            producer::run(&settings, &amis, opts, &progress, &ctx.cancel).await
        };
        let forward = async {
            while let Some(line) = rx.recv().await {
                let _ = match line {
                    Line::Say(m) => ctx.ui.say(&m).await,
                    Line::Message(m) => ctx.ui.message(&m).await,
                };
            }
        };
        let (report, ()) = tokio::join!(run, forward);
        let report = report.map_err(|e| format!("amikey: {e}\n\n{DESTROY_NOTE}"))?;

        match crate::core::outcome::publish_outcome(&report, settings.on_violation) {
            PublishOutcome::Passed => {}
            // Some writes failed or a region could not be read: an AWS problem, not a
            // misencrypted AMI.
            PublishOutcome::Incomplete => {
                return Err(format!(
                    "amikey could not read or change every region (see the ERROR, FAILED and skipped lines); \
                     a re-run applies only what is missing.\n\n{}\n{DESTROY_NOTE}",
                    report.render_text()
                ));
            }
            PublishOutcome::FindingsFail => {
                return Err(format!(
                    "amikey found problems with the AMIs; nothing was shared or published.\n\n{}\n{DESTROY_NOTE}",
                    report.render_text()
                ));
            }
            PublishOutcome::FindingsWarn => {
                let _ = ctx
                    .ui
                    .error(&format!(
                        "amikey found problems with the AMIs (on_violation = \"warn\": the AMIs are kept, nothing was shared or published):\n{}",
                        report.render_text()
                    ))
                    .await;
                return Ok(ResultArtifact {
                    builder_id,
                    string: format!(
                        "amikey: NOT verified, nothing shared or published ({})",
                        report.summary()
                    ),
                    id,
                    keep: true,
                    force_override: true,
                    ..ResultArtifact::default()
                });
            }
        }
        // check_key_policy = "warn": consumers that the key policy would stop, said but not failed.
        // Grouped per consumer account (the full text of each is in the CLI's -v / --format json).
        for w in report.warning_texts(crate::core::report::TextOptions::default()) {
            let _ = ctx.ui.message(&format!("amikey warning: {w}")).await;
        }
        let _ = ctx.ui.say(&format!("amikey: {}", report.summary())).await;
        if !settings.copy_to.is_empty() {
            self.copy(ctx, &settings, &amis).await?;
        }
        Ok(success_artifact(builder_id, id, &report))
    }

    /// The `copy_to` blocks, after a clean publish. A failure is reported through the Ui and,
    /// with `on_copy_failure = "warn"` (the default), never fails the build.
    async fn copy<U: Ui, A: InputArtifact>(
        &self,
        ctx: &PostProcessContext<U, A>,
        settings: &Settings,
        amis: &AmiSet,
    ) -> Result<(), String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run = async {
            let progress = ChannelProgress(tx);
            let opts = crate::copy::CopyOptions::from_settings(settings, false)?;
            crate::copy::run_push(settings, amis, opts, &progress, &ctx.cancel).await
        };
        let forward = async {
            while let Some(line) = rx.recv().await {
                let _ = match line {
                    Line::Say(m) => ctx.ui.say(&m).await,
                    Line::Message(m) => ctx.ui.message(&m).await,
                };
            }
        };
        let (report, ()) = tokio::join!(run, forward);
        let problem = match report {
            Ok(r) if r.is_clean() => None,
            Ok(r) => Some(format!("amikey could not copy into every consumer account:\n{}", r.render_text())),
            Err(e) => Some(format!("amikey could not copy into the consumer accounts: {e}")),
        };
        match (crate::core::outcome::copy_outcome(problem.is_none(), settings.on_copy_failure), problem) {
            (CopyOutcome::Done, _) | (_, None) => Ok(()),
            (CopyOutcome::Fail, Some(problem)) => Err(format!("{problem}\n{COPY_DESTROY_NOTE}")),
            (CopyOutcome::Warn, Some(problem)) => {
                let _ = ctx
                    .ui
                    .error(&format!(
                        "{problem}\n(on_copy_failure = \"warn\": the producer's AMIs are kept; re-run `amikey copy` to finish)"
                    ))
                    .await;
                Ok(())
            }
        }
    }
}

/// `copy_to` accounts are implied into `ami_users` and `snapshot_users`: a copy needs both.
pub fn imply_copy_accounts(settings: &mut Settings) {
    for t in &settings.copy_to {
        for list in [&mut settings.ami_users, &mut settings.snapshot_users] {
            if !list.contains(&t.account) {
                list.push(t.account.clone());
            }
        }
    }
}

/// `fut`, or an error as soon as `cancel` fires (for calls that change nothing).
async fn unless_cancelled<T>(
    cancel: &tokio_util::sync::CancellationToken,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err("amikey: cancelled before any change was made".to_string()),
        r = fut => r,
    }
}

/// Accepts Amazon AMI builders; a clear refusal otherwise.
pub fn check_builder(builder_id: &str) -> Result<(), String> {
    if AMI_BUILDERS.contains(&builder_id) {
        return Ok(());
    }
    if builder_id == EBSVOLUME_BUILDER {
        return Err(format!(
            "amikey: unsupported builder {builder_id:?} (amazon-ebsvolume): it produces EBS volumes, not AMIs, so there is nothing for amikey to verify"
        ));
    }
    Err(format!(
        "amikey: unsupported builder {builder_id:?}: amikey verifies AMIs and runs after amazon-ebs, amazon-ebssurrogate, amazon-instance or amazon-chroot (builder ids {})",
        AMI_BUILDERS.join(", ")
    ))
}

/// The success artifact: the input AMIs passed through, plus the verified key mapping.
pub fn success_artifact(builder_id: String, id: String, report: &Report) -> ResultArtifact {
    let keys = report.key_mapping();
    let mut generated = Map::new();
    generated.insert("AmikeyVerified".into(), json!("true"));
    let mut images = Vec::new();
    let mut atlas = Map::new();
    for r in &report.regions {
        let flat = r.region.replace('-', "_");
        let key = keys.get(&r.region).cloned().unwrap_or_default();
        generated.insert(format!("KmsKeyArn_{flat}"), json!(key));
        generated.insert(format!("AmiId_{flat}"), json!(r.ami_id));
        atlas.insert(format!("region.{}", r.region), json!(r.ami_id));
        let snapshots: Vec<&str> = r.snapshots.iter().map(|s| s.snapshot_id.as_str()).collect();
        images.push(json!({
            "ImageID": r.ami_id,
            "ProviderName": "aws",
            "ProviderRegion": r.region,
            "SourceImageID": "",
            "Labels": {
                "kms_key_arn": key,
                "encrypted": "true",
                "snapshot_ids": snapshots.join(","),
            },
        }));
    }
    let state: BTreeMap<String, Value> = [
        ("generated_data".to_string(), Value::Object(generated)),
        ("par.artifact.metadata".to_string(), Value::Array(images)),
        ("atlas.artifact.metadata".to_string(), Value::Object(atlas)),
    ]
    .into();
    let mapping: Vec<String> = keys.iter().map(|(r, k)| format!("{r}: {k}")).collect();
    ResultArtifact {
        builder_id,
        id,
        string: format!(
            "amikey verified {} AMI(s): {}; {}",
            report.regions.len(),
            mapping.join(", "),
            report.summary()
        ),
        files: Vec::new(),
        state,
        keep: true,
        force_override: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_req(user: Value) -> ConfigureRequest {
        let Value::Object(user) = user else { panic!() };
        ConfigureRequest::Json {
            user,
            packer: crate::wire::PackerConfig {
                build_name: "b".into(),
                builder_type: "amazon-ebs".into(),
                user_variables: [("key".to_string(), "alias/x".to_string())].into(),
                ..Default::default()
            },
            placeholders: BTreeMap::new(),
        }
    }

    fn hcl_req(config: Value, has_unknowns: bool) -> ConfigureRequest {
        ConfigureRequest::Hcl2 { builder_vars: BTreeMap::new(), config, has_unknowns }
    }

    #[test]
    fn spec_covers_every_field() {
        let spec = config_spec();
        let blocks = config_blocks();
        assert_eq!(spec.len() + blocks.len(), FIELDS.len());
        assert_eq!(blocks.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), vec!["copy_to"]);
        assert!(spec.iter().chain(blocks.iter().flat_map(|b| &b.nested)).all(|a| !a.required));
        let gob = crate::wire::hcl_spec::encode_gob_spec_with_blocks(&spec, &blocks);
        assert_eq!(crate::wire::hcl_spec::decode_gob_spec_with_blocks(&gob).unwrap(), (spec, blocks));
    }

    #[test]
    fn json_mode_renders_templates_and_weakly_types() {
        let pp = AmikeyPostProcessor::new();
        pp.configure(json_req(json!({
            "kms_key_id": "{{user `key`}}",
            "max_retries": 3.0,
            "allow_public": "false",
            "ssm_path": "/amis/{{build_name}}",
            "ami_users": ["111122223333"],
        })))
        .unwrap();
        let s = pp.settings().unwrap().unwrap();
        assert_eq!(s.kms_key_id.as_deref(), Some("alias/x"));
        assert_eq!(s.max_retries, Some(3));
        assert_eq!(s.ssm_path.as_deref(), Some("/amis/b"));
    }

    #[test]
    fn errors_name_the_key() {
        let pp = AmikeyPostProcessor::new();
        let e = pp.configure(json_req(json!({"kms_key": "x"}))).unwrap_err();
        assert!(e.contains("`kms_key`"), "{e}");
        let e = pp.configure(hcl_req(json!({"max_retries": "lots"}), false)).unwrap_err();
        assert!(e.contains("`max_retries` must be number"), "{e}");
        let e = pp.configure(hcl_req(json!({"on_violation": "explode"}), false)).unwrap_err();
        assert!(e.contains("`on_violation`"), "{e}");
        let e = pp.configure(json_req(json!({"kms_key_id": "{{uuid}}"}))).unwrap_err();
        assert!(e.contains("uuid") && e.contains("kms_key_id"), "{e}");
        assert!(pp.settings().unwrap().is_none());
    }

    #[test]
    fn hcl2_drops_nulls_and_tolerates_unknowns_on_the_first_call() {
        let pp = AmikeyPostProcessor::new();
        let mut block: Map<String, Value> =
            FIELDS.iter().map(|f| (f.name.to_string(), Value::Null)).collect();
        block.insert("kms_key_id".into(), json!("<unknown>"));
        block.insert("ami_users".into(), json!(["111122223333"]));
        pp.configure(hcl_req(Value::Object(block.clone()), true)).unwrap();
        assert_eq!(pp.settings().unwrap().unwrap().kms_key_id, None);
        block.insert("kms_key_id".into(), json!("alias/real"));
        pp.configure(hcl_req(Value::Object(block), false)).unwrap();
        assert_eq!(pp.settings().unwrap().unwrap().kms_key_id.as_deref(), Some("alias/real"));
    }

    /// A panic while the settings lock was held poisons it: later calls say so, as amikey's own
    /// failure, and never blame Packer.
    #[test]
    fn a_poisoned_settings_lock_is_reported_as_what_it_is() {
        let pp = std::sync::Arc::new(AmikeyPostProcessor::new());
        pp.configure(json_req(json!({"kms_key_id": "alias/x"}))).unwrap();
        let holder = pp.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = holder.settings.lock().unwrap();
            panic!("a bug while holding the settings lock");
        })
        .join();
        assert!(panicked.is_err());
        for e in [
            pp.settings().unwrap_err(),
            pp.configure(json_req(json!({"kms_key_id": "alias/x"}))).unwrap_err(),
        ] {
            assert!(e.contains("lock is poisoned") && e.contains("amikey bug"), "{e}");
            assert!(!e.contains("Packer bug"), "{e}");
        }
    }

    #[test]
    fn copy_to_blocks_decode_in_both_modes_and_imply_sharing() {
        let pp = AmikeyPostProcessor::new();
        // HCL2: a list of objects, null for unset keys.
        let mut block: Map<String, Value> =
            FIELDS.iter().map(|f| (f.name.to_string(), Value::Null)).collect();
        block.insert(
            "copy_to".into(),
            json!([{"account": "210987654321", "kms_key_id": "alias/mine", "region_kms_key_ids": null, "regions": null, "role_name": "r", "ssm_path": null}]),
        );
        pp.configure(hcl_req(Value::Object(block), false)).unwrap();
        let mut s = pp.settings().unwrap().unwrap();
        assert_eq!(s.copy_to.len(), 1);
        assert_eq!(s.copy_to[0].kms_key_id.as_deref(), Some("alias/mine"));
        imply_copy_accounts(&mut s);
        assert_eq!(s.ami_users, vec!["210987654321".to_string()]);
        assert_eq!(s.snapshot_users, vec!["210987654321".to_string()]);
        // JSON: one map or a list of maps.
        pp.configure(json_req(json!({"copy_to": {"account": "111122223333", "role_name": "r"}}))).unwrap();
        assert_eq!(pp.settings().unwrap().unwrap().copy_to[0].account, "111122223333");
        let e = pp.configure(json_req(json!({"copy_to": [{"acount": "111122223333"}]}))).unwrap_err();
        assert!(e.contains("`copy_to`") && e.contains("account (string)"), "{e}");
        let e = pp.configure(json_req(json!({"copy_to": "111122223333"}))).unwrap_err();
        assert!(e.contains("`copy_to` must be one or more"), "{e}");
    }

    #[test]
    fn builder_check() {
        assert!(check_builder("mitchellh.amazonebs").is_ok());
        assert!(check_builder("mitchellh.amazon.chroot").is_ok());
        assert!(check_builder(EBSVOLUME_BUILDER).unwrap_err().contains("volumes"));
        let e = check_builder("packer.null").unwrap_err();
        assert!(e.contains("unsupported builder \"packer.null\""), "{e}");
    }

    #[test]
    fn success_artifact_state() {
        let report = Report {
            command: "publish".into(),
            regions: vec![crate::core::report::RegionReport {
                region: "us-east-1".into(),
                ami_id: "ami-0123456789abcdef0".into(),
                intended_kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
                snapshots: vec![],
                findings: vec![],
            }],
            ..Report::default()
        };
        let a =
            success_artifact("mitchellh.amazonebs".into(), "us-east-1:ami-0123456789abcdef0".into(), &report);
        assert!(a.keep && a.force_override);
        assert_eq!(
            a.state["generated_data"]["KmsKeyArn_us_east_1"],
            json!("arn:aws:kms:us-east-1:111122223333:key/k")
        );
        assert_eq!(a.state["atlas.artifact.metadata"]["region.us-east-1"], json!("ami-0123456789abcdef0"));
        assert_eq!(a.state["par.artifact.metadata"][0]["ProviderName"], json!("aws"));
    }
}
