//! The single integration-test binary (one link of the AWS SDK). Modules:

// Test code may unwrap, expect, panic and print: a failed expectation is a panic by design. The
// [lints] table in Cargo.toml denies these in the crate's own code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, missing_docs)]

// The rule for external parts (moto, Packer, zip, Go peers): ignored unless required.
mod external;
// Harness: a patched moto server per test binary, serialised tests, seeding through the SDK.
mod moto;
// `amikey check` and `amikey publish` against moto.
mod engine;
// `amikey preflight` against moto: EBS default encryption, wrong-region and disabled keys,
// consumers vs the key policy, a template-driven run.
mod preflight;
// The consumer side (grant, doctor, policy) against moto, run as the consumer account.
mod consumer;
// CLI behaviour that needs no AWS: bad input, help, exit codes.
mod cli;
// `amikey lint` on the command line: exit codes, text and JSON, -var/-var-file.
mod lint_cli;
// Plays Packer's side of the plugin protocol against the built plugin binary (and, for the
// result artifact, against the in-process server).
mod conformance;
// The amikey-preflight data source through the conformance harness (Execute on moto).
mod datasource;
// Module boundaries: src/wire and src/core import only themselves, core does no I/O (parsed by module).
mod architecture;
// Real Packer 1.6.6 and 1.9.4: the legacy-named binary on both, data "amikey-preflight" on 1.9.4.
mod packer;
// Real Packer 1.6.6 amazon-ebs builds on moto with amikey in the chain: publish, aws/ebs failure,
// on_violation = "warn", SIGINT during post-processing; also the machinery packer_modern uses.
mod packer_e2e;
// scripts/release: archive and checksum names from `describe`, on fake binaries.
mod release;
// `amikey audit` against moto: finding codes, filters, call pattern.
mod audit;
// `publish` through the relay: throttling, SIGKILL between writes, a failing region, broken answers.
mod resilience;
// Property tests: arbitrary bytes into every decoder never panic.
mod props;
// The Lambda function under the Runtime Interface Emulator on moto; the org rollout; deploy/ templates.
mod lambda;
// stdout write errors: a closed pipe is ignored, a full disk is exit 2 (lintout).
mod output;
// The plugin driven by packer-plugin-sdk v0.6.10's RPC client (our Go host): protobuf and gob.
mod sdkhost;
// `amikey copy` against moto: push into two accounts, pull, preconditions, SIGKILL + re-run.
mod copy;
// Deprecation/protection on publish, `amikey retire`, `amikey rollback` against moto.
mod lifecycle;
// The repository stands on its own: cited paths resolve inside it, no absolute machine paths.
mod references;
// Real Packer 1.9.4 (built by scripts/setup) on moto: required_plugins install, packer init
// offline, validate, builds with the bundled and the current amazon plugin, SIGINT, JSON.
mod packer_modern;
