//! `packer-plugin-amikey`: the amikey Packer post-processor. argv → [`amikey::wire`] → exit code.
//! stdout carries only the handshake line (or the `describe` JSON); logs go to stderr.

// The post-processor's futures (a whole verify-share-publish-copy run, awaited
// inside the RPC service) nest deeper than rustc's default limit lets it compute their
// layout when the crate is compiled from scratch (an incremental build may not hit it).
#![recursion_limit = "256"]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use amikey::datasource::PreflightDatasource;
use amikey::postprocessor::AmikeyPostProcessor;
use amikey::wire::describe::{DEFAULT_PLUGIN_NAME, describe_json_with};
use amikey::wire::handshake::{self, Invocation, Listener};

const COMPONENT: &str = "amikey";

const HELP: &str = "\
packer-plugin-amikey: the amikey Packer post-processor (verifies that every regional snapshot of
the built AMIs is encrypted with the intended customer-managed KMS key, then shares the AMIs and
publishes AMI→key mappings to SSM).

This is a Packer plugin: Packer runs it, you do not.

Install (Packer >= 1.7):
    packer plugins install --path ./packer-plugin-amikey github.com/<org>/amikey
  then use   post-processor \"amikey\" { kms_key_id = \"alias/...\" }

Install (Packer 1.6.x): copy or link it as `packer-post-processor-amikey` into
~/.packer.d/plugins, the template's directory, or a directory in PACKER_PLUGIN_PATH. Packer
1.7-1.10 still run a binary named that way (without the data source); Packer 1.11+ do not.

Commands (used by Packer):
    describe                                  print the plugin description (JSON)
    start post-processor [--protobuf] NAME    serve one post-processor (Packer >= 1.7)
    start datasource [--protobuf] preflight   serve data \"amikey-preflight\" (Packer >= 1.7;
                                              Packer 1.6.x has no data sources)
    (no arguments)                            serve as packer-post-processor-amikey: the 3-field
                                              handshake for Packer 1.6.x, the 4-field one for
                                              later Packers (told apart by PACKER_LOG and
                                              PACKER_LOG_PATH, which 1.6.x always clears)

Environment: AMIKEY_HANDSHAKE=3 or 4 forces the handshake line (3 for Packer 1.6.x
multi-component mode); AMIKEY_LOG (e.g. debug) for more detail in PACKER_LOG=1 output; AWS_* as
for the AWS CLI.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let handshake_env = std::env::var(handshake::HANDSHAKE_ENV).ok();
    let no_args = handshake::no_args_handshake(
        std::env::var("PACKER_LOG").ok().as_deref(),
        std::env::var("PACKER_LOG_PATH").ok().as_deref(),
    );
    let invocation = match handshake::parse_args(&args, handshake_env.as_deref(), no_args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("packer-plugin-amikey: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (handshake_version, spec, name) = match invocation {
        Invocation::Describe => {
            let json = describe_json_with(
                env!("CARGO_PKG_VERSION"),
                &[DEFAULT_PLUGIN_NAME],
                &[amikey::datasource::COMPONENT],
            );
            let mut out = std::io::stdout().lock();
            return if writeln!(out, "{json}").and_then(|()| out.flush()).is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Invocation::Help => {
            eprint!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Invocation::Serve { handshake, spec, name } => {
            if name.is_none() && handshake == handshake::HandshakeVersion::Legacy3 && handshake_env.is_none()
            {
                eprintln!("packer-plugin-amikey: {}", handshake::LEGACY_RENAME_HINT);
            }
            (handshake, spec, name)
        }
        Invocation::ServeDatasource { handshake, spec, name } => {
            return serve_datasource_main(handshake, spec, &name);
        }
    };
    if !handshake::cookie_ok(std::env::var(handshake::MAGIC_COOKIE_KEY).ok().as_deref()) {
        eprintln!("{}", handshake::NOT_UNDER_PACKER);
        return ExitCode::FAILURE;
    }
    if let Some(name) = &name
        && name != COMPONENT
        && name != DEFAULT_PLUGIN_NAME
    {
        eprintln!(
            "packer-plugin-amikey: unknown post-processor {name:?}; this plugin has only {COMPONENT:?}"
        );
        return ExitCode::FAILURE;
    }
    run_component(handshake_version, spec, Component::PostProcessor)
}

/// `start datasource [--protobuf] preflight`: the `amikey-preflight` data source.
fn serve_datasource_main(
    version: handshake::HandshakeVersion,
    spec: amikey::wire::hcl_spec::SpecEncoding,
    name: &str,
) -> ExitCode {
    if !handshake::cookie_ok(std::env::var(handshake::MAGIC_COOKIE_KEY).ok().as_deref()) {
        eprintln!("{}", handshake::NOT_UNDER_PACKER);
        return ExitCode::FAILURE;
    }
    if name != amikey::datasource::COMPONENT {
        eprintln!(
            "packer-plugin-amikey: unknown datasource {name:?}; this plugin has only {:?} (data \"amikey-{}\")",
            amikey::datasource::COMPONENT,
            amikey::datasource::COMPONENT
        );
        return ExitCode::FAILURE;
    }
    run_component(version, spec, Component::Datasource)
}

/// Logging on stderr, a runtime, then the plugin server for `component` until Packer hangs up.
fn run_component(
    version: handshake::HandshakeVersion,
    spec: amikey::wire::hcl_spec::SpecEncoding,
    component: Component,
) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("packer-plugin-amikey: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(version, spec, component)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which component this process serves.
enum Component {
    PostProcessor,
    Datasource,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMIKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

async fn serve(
    version: handshake::HandshakeVersion,
    spec: amikey::wire::hcl_spec::SpecEncoding,
    component: Component,
) -> anyhow::Result<()> {
    ignore_signals();
    let tcp = cfg!(not(unix))
        || std::env::var("AMIKEY_PLUGIN_TRANSPORT").is_ok_and(|v| v.eq_ignore_ascii_case("tcp"));
    let ports = handshake::port_range(
        std::env::var("PACKER_PLUGIN_MIN_PORT").ok().as_deref(),
        std::env::var("PACKER_PLUGIN_MAX_PORT").ok().as_deref(),
    );
    let (listener, addr) = Listener::bind(tcp, ports)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", handshake::handshake_line(version, &addr))?;
        out.flush()?;
    }
    tracing::info!("amikey {} serving on {addr:?} ({spec:?} ConfigSpec)", env!("CARGO_PKG_VERSION"));
    let io = listener.accept_one().await?;
    match component {
        Component::PostProcessor => {
            amikey::wire::server::serve(io, Arc::new(AmikeyPostProcessor::new()), spec).await?;
        }
        Component::Datasource => {
            amikey::wire::server::serve_datasource(io, Arc::new(PreflightDatasource::new()), spec).await?;
        }
    }
    tracing::info!("Packer closed the connection; exiting");
    Ok(())
}

/// Packer's Ctrl-C reaches the whole process group; cancellation comes as an RPC instead.
fn ignore_signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            match signal(kind) {
                Ok(mut s) => {
                    tokio::spawn(async move {
                        let mut count = 0u64;
                        while s.recv().await.is_some() {
                            count += 1;
                            tracing::info!("Received interrupt signal (count: {count}). Ignoring.");
                        }
                    });
                }
                Err(e) => tracing::warn!("cannot install a signal handler: {e}"),
            }
        }
    }
}
