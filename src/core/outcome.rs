//! What a run's report means for the Packer build: pass, fail (and so Packer deletes the
//! builder's AMIs) or warn (keep them), decided from the report and the configured choice
//! (`on_violation`, `on_copy_failure`). The post-processor only carries the decision out.

use super::config::OnViolation;
use super::report::Report;

/// The build's outcome after the producer's publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Verified, shared and published: the build passes.
    Passed,
    /// Every AMI verified, but some region could not be read or changed (an AWS problem, not
    /// a misencrypted AMI): the build fails whatever `on_violation` says; a re-run finishes.
    Incomplete,
    /// Findings with `on_violation = "fail"`: the build fails, nothing shared or published.
    FindingsFail,
    /// Findings with `on_violation = "warn"`: the build passes, the AMIs are kept, marked as not
    /// verified; nothing shared or published.
    FindingsWarn,
}

/// The outcome of a publish report under `on_violation`.
pub fn publish_outcome(report: &Report, on_violation: OnViolation) -> PublishOutcome {
    publish_outcome_of(report.findings().is_empty(), report.is_clean(), on_violation)
}

fn publish_outcome_of(no_findings: bool, clean: bool, on_violation: OnViolation) -> PublishOutcome {
    match (no_findings, clean, on_violation) {
        (_, true, _) => PublishOutcome::Passed,
        (true, false, _) => PublishOutcome::Incomplete,
        (false, false, OnViolation::Fail) => PublishOutcome::FindingsFail,
        (false, false, OnViolation::Warn) => PublishOutcome::FindingsWarn,
    }
}

/// The outcome of the `copy_to` step, after a clean publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Every copy done and verified (or nothing to copy).
    Done,
    /// A copy failed and `on_copy_failure = "fail"`: the build fails (Packer then deletes the
    /// producer's AMIs).
    Fail,
    /// A copy failed and `on_copy_failure` is `"warn"` (the default): reported, the producer's
    /// AMIs kept; `amikey copy` finishes it.
    Warn,
}

/// The outcome of the copies: `copied_cleanly` is false for a report with problems or a run
/// that ended in an error.
pub fn copy_outcome(copied_cleanly: bool, on_copy_failure: Option<OnViolation>) -> CopyOutcome {
    match (copied_cleanly, on_copy_failure.unwrap_or(OnViolation::Warn)) {
        (true, _) => CopyOutcome::Done,
        (false, OnViolation::Fail) => CopyOutcome::Fail,
        (false, OnViolation::Warn) => CopyOutcome::Warn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_outcome_table() {
        use OnViolation::{Fail, Warn};
        use PublishOutcome::*;
        // (no findings, clean, on_violation) → outcome
        let table = [
            (true, true, Fail, Passed),
            (true, true, Warn, Passed),
            (true, false, Fail, Incomplete),
            (true, false, Warn, Incomplete),
            (false, false, Fail, FindingsFail),
            (false, false, Warn, FindingsWarn),
        ];
        for (no_findings, clean, on, want) in table {
            assert_eq!(publish_outcome_of(no_findings, clean, on), want, "{no_findings} {clean} {on:?}");
        }
        assert_eq!(publish_outcome(&Report::default(), Fail), Passed, "an empty report is clean");
    }

    #[test]
    fn copy_outcome_table() {
        use CopyOutcome::*;
        let table = [
            (true, None, Done),
            (true, Some(OnViolation::Fail), Done),
            (false, None, Warn),
            (false, Some(OnViolation::Warn), Warn),
            (false, Some(OnViolation::Fail), Fail),
        ];
        for (clean, on, want) in table {
            assert_eq!(copy_outcome(clean, on), want, "{clean} {on:?}");
        }
    }
}
