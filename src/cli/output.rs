//! The only place the CLI prints: results on stdout (text or JSON), progress and errors on
//! stderr. A closed pipe (`amikey check … | head`) is not an error.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use super::Format;
use crate::core::report::Report;
use crate::producer::Progress;

/// Writes to stdout, ignoring a closed pipe.
pub fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
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

/// Prints a report in the chosen format.
pub fn print_report(report: &Report, format: Format) {
    match format {
        Format::Text => stdout(&report.render_text()),
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
