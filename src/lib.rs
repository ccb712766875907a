//! amikey: verify, share and publish KMS-encrypted AMIs, as a Packer post-processor and a CLI.
//!
//! # Layout
//! - [`core`]: the pure decide-core (configuration, facts, verification, planning, reports).

pub mod core;
pub mod lint;
