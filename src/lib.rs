//! amikey: verify, share and publish KMS-encrypted AMIs, as a Packer post-processor and a CLI.
//!
//! # Layout
//! - [`core`]: the pure decide-core (configuration, artifact ids, facts, verification, planning,
//!   reports). No AWS, no I/O.
//! - [`engine`]: gathers facts from AWS, runs the core, applies the plan (check / publish).
//! - [`consumer`]: the consumer side (grant, doctor, policy): gathers, runs the core, applies grants.
//! - [`wire`]: Packer's plugin protocol (yamux, mux broker, msgpack net/rpc, ConfigSpec); no AWS.
//! - [`aws`]: SDK clients, read-only fact gathering, one write per action.
//! - [`cli`]: the `amikey` command line.
//! - [`lint`]: `amikey lint` over Packer templates (HCL2, JSON); no AWS.
//! - [`postprocessor`]: the Packer post-processor, composing `wire` with `core` and `engine`.
//! - [`lambda`]: the AWS Lambda function (`bootstrap`): EventBridge and CloudFormation events
//!   over the consumer side.

pub mod aws;
pub mod cli;
pub mod consumer;
pub mod core;
pub mod datasource;
pub mod engine;
pub mod lambda;
pub mod lint;
pub mod postprocessor;
pub mod wire;
