//! Packer's plugin protocol, natively: the seam between Packer and amikey.
//!
//! Packer (1.6.x and ≥ 1.7) talks to an external post-processor over a yamux session on a unix
//! socket, a "mux broker" that numbers streams, and Go `net/rpc` with msgpack bodies; the HCL2
//! schema travels as gob (or protobuf with `--protobuf`). This module speaks all of it and knows
//! nothing of AWS or of amikey's domain: a post-processor is anything implementing
//! [`PostProcessor`]. See `docs/protocol.md` for the wire facts each file relies on.
//!
//! # Layout
//! - [`handshake`]: cookie check, argv modes, listener, the handshake line (pure formatting).
//! - [`describe`]: the `describe` JSON.
//! - [`codec`]: net/rpc over msgpack, pure, incremental.
//! - [`mux`]: yamux header codec, session driver, `MuxBroker`.
//! - [`conn`]: the type owning a stream; RPC client and server loops.
//! - [`hcl_spec`]: the ConfigSpec in gob and protobuf.
//! - [`cty`]: cty JSON (HCL2 `Configure`) to `serde_json::Value`.
//! - [`template`]: the subset of Packer's Go-template language for JSON-template mode.
//! - [`cty_msgpack`]: a data source's `Execute` value as go-cty msgpack (protobuf mode).
//! - [`cty_gob`]: the same value as go-cty's own gob (gob mode: Packer 1.7–1.11).
//! - [`server`]: `PostProcessor.*` and `Datasource.*` dispatch, Ui/Artifact callbacks, the
//!   result artifact.

pub mod codec;
pub mod conn;
pub mod cty;
pub mod cty_gob;
pub mod cty_msgpack;
pub mod describe;
pub mod handshake;
pub mod hcl_spec;
pub mod mux;
pub mod server;
pub mod template;

use std::collections::BTreeMap;
use std::future::Future;

use tokio_util::sync::CancellationToken;

pub use hcl_spec::{AttrSpec, BlockListSpec, CtyType};

/// The arguments of `PostProcessor.Configure`, decoded by template mode.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigureRequest {
    /// JSON template: the user's block (values raw, un-interpolated), Packer's config map and the
    /// generated-data placeholder map (docs/protocol.md §5).
    Json {
        /// The block minus `type`/`name`/`only`/`except`/`keep_input_artifact`; empty if nil.
        user: serde_json::Map<String, serde_json::Value>,
        /// `packer_build_name`, `packer_builder_type`, `packer_user_variables`, ….
        packer: PackerConfig,
        /// `{{ build `X` }}` placeholders (string → string).
        placeholders: BTreeMap<String, String>,
    },
    /// HCL2 template: builder variables and the fully evaluated block (docs/protocol.md §5).
    Hcl2 {
        /// `packer_build_name`, `packer_builder_type` (strings).
        builder_vars: BTreeMap<String, serde_json::Value>,
        /// The decoded cty value: an object with one key per ConfigSpec attribute (nulls for
        /// unset ones).
        config: serde_json::Value,
        /// True when some string holds an unknown placeholder (`<unknown>`): the first of the
        /// two HCL2 `Configure` calls, made before the build ran. Validate leniently.
        has_unknowns: bool,
    },
}

/// Packer's config map in JSON mode (`common.PackerConfig`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackerConfig {
    /// `packer_build_name`.
    pub build_name: String,
    /// `packer_builder_type`.
    pub builder_type: String,
    /// `packer_user_variables` (1.6.6 adds a stray `"": ""`; it is dropped).
    pub user_variables: BTreeMap<String, String>,
    /// `packer_core_version`.
    pub core_version: String,
    /// `packer_template_path`.
    pub template_path: String,
}

/// Packer's `Ui`, reached over the stream dialled for `PostProcess`.
pub trait Ui: Send + Sync {
    /// `Ui.Say`: a bold headline.
    fn say(&self, msg: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// `Ui.Message`: an indented detail line.
    fn message(&self, msg: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// `Ui.Error`: an error-coloured line.
    fn error(&self, msg: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// The input artifact (the builder's, or the previous post-processor's), served by Packer.
pub trait InputArtifact: Send + Sync {
    /// `Artifact.BuilderId`.
    fn builder_id(&self) -> impl Future<Output = Result<String, String>> + Send;
    /// `Artifact.Id`.
    fn id(&self) -> impl Future<Output = Result<String, String>> + Send;
    /// `Artifact.String`.
    fn string(&self) -> impl Future<Output = Result<String, String>> + Send;
    /// `Artifact.State(key)`; `Null` when unset.
    fn state(&self, key: &str) -> impl Future<Output = Result<serde_json::Value, String>> + Send;
}

/// What `post_process` gets: the Ui, the input artifact and a token cancelled by
/// `PostProcessor.Cancel` (or when Packer goes away).
pub struct PostProcessContext<U, A> {
    /// Packer's Ui.
    pub ui: U,
    /// The input artifact.
    pub input: A,
    /// Cancelled by `PostProcessor.Cancel`.
    pub cancel: CancellationToken,
}

/// The artifact a post-processor returns; served to Packer as `Artifact.*` on a fresh broker id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultArtifact {
    /// `Artifact.BuilderId`.
    pub builder_id: String,
    /// `Artifact.Id`.
    pub id: String,
    /// `Artifact.String`: the line Packer prints under "The artifacts of successful builds are".
    pub string: String,
    /// `Artifact.Files`.
    pub files: Vec<String>,
    /// `Artifact.State(key)`; missing keys answer nil. Keep values flat (strings, ints, bools)
    /// for `generated_data`: Packer 1.6.6 refuses anything else there.
    pub state: BTreeMap<String, serde_json::Value>,
    /// `Keep`: keep the input artifact. `true` for anything that only records or shares AMIs:
    /// `false` makes Packer destroy (deregister) the builder's AMIs.
    pub keep: bool,
    /// `ForceOverride`: `Keep` wins over the user's `keep_input_artifact = false`.
    pub force_override: bool,
}

/// A Packer post-processor. The server calls `config_spec` (HCL2 only) and `configure` (once in
/// JSON mode, twice in HCL2 mode), then `post_process` once per build; `Cancel` cancels
/// `ctx.cancel`. All methods may run concurrently with each other.
pub trait PostProcessor: Send + Sync + 'static {
    /// The HCL2 schema (flat attributes).
    fn config_spec(&self) -> Vec<AttrSpec>;
    /// Repeated nested blocks of the schema (`copy_to { … }`); none by default.
    fn config_blocks(&self) -> Vec<BlockListSpec> {
        Vec::new()
    }
    /// Validates and stores the configuration; the error is shown to the user verbatim.
    fn configure(&self, req: ConfigureRequest) -> Result<(), String>;
    /// Does the work. An error makes Packer report "Post-processor failed" and (for the first
    /// post-processor of a chain) destroy the input artifact.
    fn post_process<U: Ui + 'static, A: InputArtifact + 'static>(
        &self,
        ctx: PostProcessContext<U, A>,
    ) -> impl Future<Output = Result<ResultArtifact, String>> + Send;
}

/// A Packer data source (`data "TYPE" "NAME" { … }`, Packer ≥ 1.7; SDK `packer/datasource.go`).
/// Packer calls `config_spec`, `configure` once with the evaluated block, then `execute`;
/// `output_spec` lets it type-check `data.TYPE.NAME.ATTR` references without running it.
/// Configure arrives as cty JSON in both encodings; `Execute`'s value is go-cty msgpack under
/// `--protobuf` ([`cty_msgpack`]) and a gob-encoded `cty.Value` otherwise ([`cty_gob`]).
pub trait Datasource: Send + Sync + 'static {
    /// The HCL2 schema of the block (flat attributes).
    fn config_spec(&self) -> Vec<AttrSpec>;
    /// The schema of the result object (flat attributes).
    fn output_spec(&self) -> Vec<AttrSpec>;
    /// Validates and stores the block (the decoded cty object; `null` for unset attributes).
    fn configure(&self, config: serde_json::Value) -> Result<(), String>;
    /// Runs; returns the result object's attributes (each must fit `output_spec`). The error is
    /// shown to the user as the data source's diagnostic. `cancel` is cancelled by
    /// `Datasource.Cancel` or when Packer goes away.
    fn execute(
        &self,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<serde_json::Map<String, serde_json::Value>, String>> + Send;
}
