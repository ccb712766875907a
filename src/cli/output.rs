//! The only place the CLI prints: results on stdout (text or JSON), progress and errors on
//! stderr. A closed pipe (`amikey check … | head`) is not an error; any other stdout write error
//! (a full disk, a revoked file) is: it is recorded, further output is dropped, and
//! [`exit_code`] turns the run's exit code into 2 with the reason on stderr, so a pipeline never
//! sees exit 0 with truncated JSON.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use serde::Serialize;

use super::Format;
use crate::core::report::Report;
use crate::producer::Progress;

/// What happened to stdout so far: the first failed write, unless it was a closed pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stdout {
    Open,
    /// The reader went away (EPIPE): the rest of the output is dropped, not an error.
    Closed,
    /// Any other write error: the output is incomplete.
    Failed,
}

static STDOUT: Mutex<(Stdout, String)> = Mutex::new((Stdout::Open, String::new()));

/// Writes `text` to `out` and flushes. `Ok(true)` written, `Ok(false)` the reader closed the
/// pipe (ignored), `Err` any other write error (with the reason).
fn write_to(out: &mut impl Write, text: &str) -> Result<bool, String> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes to stdout. A closed pipe drops the rest of the output silently; any other error is
/// recorded for [`exit_code`] (and drops the rest too: no output after a gap).
pub fn stdout(text: &str) {
    let mut state = STDOUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if state.0 != Stdout::Open {
        return;
    }
    match write_to(&mut std::io::stdout().lock(), text) {
        Ok(true) => {}
        Ok(false) => state.0 = Stdout::Closed,
        Err(e) => *state = (Stdout::Failed, e),
    }
}

/// The exit code once everything is printed: `code`, unless a stdout write failed for another
/// reason than a closed pipe; then `error: …` on stderr and 2.
pub fn exit_code(code: std::process::ExitCode) -> std::process::ExitCode {
    let state = STDOUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*state {
        (Stdout::Failed, reason) => {
            error(&format!(
                "cannot write the output to stdout ({reason}); the output is incomplete: free space or \
                 redirect it elsewhere and run again"
            ));
            std::process::ExitCode::from(2)
        }
        _ => code,
    }
}

/// Prints `error: …` on stderr.
pub fn error(msg: &str) {
    let _ = writeln!(std::io::stderr(), "error: {msg}");
}

/// Sets up `tracing` on stderr: warnings by default, `-vv` debug, `RUST_LOG` wins.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 | 1 => "amikey=warn,error",
        2 => "amikey=debug,warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Progress on stderr, shown on a terminal or with `-v`.
pub struct StderrProgress {
    show: bool,
}

impl StderrProgress {
    /// Progress for the given verbosity.
    pub fn new(verbose: u8) -> StderrProgress {
        StderrProgress { show: verbose > 0 || std::io::stderr().is_terminal() }
    }
}

impl Progress for StderrProgress {
    fn say(&self, msg: &str) {
        if self.show {
            let _ = writeln!(std::io::stderr(), "==> {msg}");
        }
    }
    fn message(&self, msg: &str) {
        if self.show {
            let _ = writeln!(std::io::stderr(), "    {msg}");
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    summary: String,
    clean: bool,
}

/// Prints a report in the chosen format; `verbose` (text): every warning in full and every
/// unchanged item (JSON always has everything).
pub fn print_report(report: &Report, format: Format, verbose: bool) {
    match format {
        Format::Text => stdout(&report.render_text_with(crate::core::report::TextOptions { verbose })),
        Format::Json => {
            let j = JsonReport { report, summary: report.summary(), clean: report.is_clean() };
            match serde_json::to_string_pretty(&j) {
                Ok(s) => stdout(&(s + "\n")),
                Err(e) => error(&format!("cannot render JSON: {e}")),
            }
        }
    }
}

/// Prints any serialisable value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => stdout(&(s + "\n")),
        Err(e) => error(&format!("cannot render JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write with `kind` (after accepting `room` bytes).
    struct Failing {
        kind: std::io::ErrorKind,
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_a_closed_pipe_is_not_an_error() {
        use std::io::ErrorKind::{BrokenPipe, PermissionDenied, StorageFull, WriteZero};
        let mut ok = Vec::new();
        assert_eq!(write_to(&mut ok, "{}\n"), Ok(true));
        assert_eq!(ok, b"{}\n");
        let mut pipe = Failing { kind: BrokenPipe, room: 1, got: Vec::new() };
        assert_eq!(write_to(&mut pipe, "{}\n"), Ok(false));
        for kind in [StorageFull, PermissionDenied, WriteZero] {
            let mut w = Failing { kind, room: 2, got: Vec::new() };
            let got = write_to(&mut w, "{\"a\": 1}\n");
            assert!(got.is_err(), "{kind:?}: {got:?}");
            assert_eq!(w.got, b"{\"");
        }
    }
}
