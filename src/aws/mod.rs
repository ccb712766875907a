//! The AWS edge: builds SDK clients one way, gathers facts (read-only) into [`crate::core::facts`],
//! and applies one write at a time ([`apply`]). Each single AWS read exists once, in [`read`]. No decisions are made here.

pub mod apply;
pub mod audit;
pub mod clients;
pub mod copy;
pub mod error;
pub mod gather;
pub mod lifecycle;
pub mod read;

pub use clients::{Aws, AwsOptions};
pub use error::AwsError;
