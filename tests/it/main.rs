//! The single integration-test binary (one link of the AWS SDK). Modules:

// Harness: a patched moto server per test binary, serialised tests, seeding through the SDK.
mod moto;
// `amikey check` and `amikey publish` against moto.
mod engine;
// The consumer side (grant, doctor, policy) against moto, run as the consumer account.
mod consumer;
// CLI behaviour that needs no AWS: bad input, help, exit codes.
mod cli;
// Plays Packer's side of the plugin protocol against the built plugin binary (and, for the
// result artifact, against the in-process server).
mod conformance;
// Module boundaries: src/wire stands alone.
mod architecture;
// Real Packer 1.6.6 (`/usr/bin/packer`): validate/build JSON and HCL2 templates; skips if absent.
mod packer;
// Property tests: arbitrary bytes into every decoder never panic.
mod props;
