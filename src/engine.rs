//! The composer of `check` and `publish`: gathers facts from AWS, runs the pure verify and plan
//! of [`crate::core`], applies the plan. Used by the CLI and by the Packer post-processor alike.

use tokio_util::sync::CancellationToken;

use crate::core::artifact::AmiSet;
use crate::core::config::Settings;
use crate::core::report::Report;

/// What to do after verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only.
    Check,
    /// Verify, then converge sharing and SSM parameters.
    Publish,
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Check or publish.
    pub mode: Mode,
    /// Plan only; make no write call.
    pub dry_run: bool,
}

/// Where progress lines go: stderr for the CLI, Packer's `Ui` for the plugin.
pub trait Progress: Send + Sync {
    /// A headline (`Ui.Say`).
    fn say(&self, msg: &str);
    /// A detail line (`Ui.Message`).
    fn message(&self, msg: &str);
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Configuration or input is invalid; nothing was called.
    #[error("{0}")]
    Input(String),
    /// An AWS call failed.
    #[error("{0}")]
    Aws(String),
    /// The run was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

/// Runs `check` or `publish` for `amis` with `settings`. Findings are in the report (not an
/// error); an error means no trustworthy report could be made.
pub async fn run(
    settings: &Settings,
    amis: &AmiSet,
    opts: RunOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<Report, EngineError> {
    let _ = (settings, amis, opts, progress, cancel);
    Err(EngineError::Input("engine not implemented yet".into()))
}
