//! amikey: verify, share and publish KMS-encrypted AMIs, as a Packer post-processor and a CLI.
//!
//! # Layout
//! - [`core`]: the pure decide-core (configuration, artifact ids, facts, verification, planning,
//!   reports). No AWS, no I/O.
//! - [`producer`]: the producer side (check, publish, preflight): gathers facts from AWS, runs the
//!   core, applies the plan.
//! - [`copy`]: copies into consumer accounts (`amikey copy`, `copy_to`): gathers, runs
//!   [`core::copy`], copies, then verifies and publishes each copy with [`producer`].
//! - [`consumer`]: the consumer side (grant, doctor, policy): gathers, runs the core, applies grants.
//! - [`lifecycle`]: deprecation/protection read-back on publish, `retire`, `rollback`.
//! - [`wire`]: Packer's plugin protocol (yamux, mux broker, msgpack net/rpc, ConfigSpec); no AWS.
//! - [`aws`]: SDK clients, read-only fact gathering, one write per action.
//! - [`cli`]: the `amikey` command line.
//! - [`lint`]: `amikey lint` over Packer templates (HCL2, JSON); no AWS.
//! - [`postprocessor`]: the Packer post-processor, composing `wire` with `core` and `producer`.
//! - [`lambda`]: the AWS Lambda function (`bootstrap`): EventBridge and CloudFormation events
//!   over the consumer side.

pub mod aws;
pub mod cli;
pub mod consumer;
pub mod copy;
pub mod core;
pub mod datasource;
pub mod lambda;
pub mod lifecycle;
pub mod lint;
pub mod postprocessor;
pub mod producer;
pub mod wire;
