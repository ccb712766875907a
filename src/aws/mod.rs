//! The AWS edge: builds SDK clients one way, gathers facts (read-only) into [`crate::core::facts`],
//! and applies one [`crate::core::plan::Write`] at a time. No decisions are made here.

pub mod apply;
pub mod audit;
pub mod clients;
pub mod consumer;
pub mod error;
pub mod gather;
pub mod lifecycle;

pub use clients::{Aws, AwsOptions};
pub use error::AwsError;
