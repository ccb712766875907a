//! The single integration-test binary (one link of the AWS SDK). Modules:

// Harness: a patched moto server per test binary, serialised tests, seeding through the SDK.
mod moto;
// `amikey check` and `amikey publish` against moto.
mod engine;
// CLI behaviour that needs no AWS: bad input, help, exit codes.
mod cli;
