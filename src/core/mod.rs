//! The pure domain: plain structs in, findings and plans out. No AWS SDK types, no tokio, no I/O,
//! no clock (callers pass `now`). Everything here is deterministic and unit-tested without AWS.

pub mod artifact;
pub mod audit;
pub mod config;
pub mod copy;
pub mod doctor;
pub mod facts;
pub mod grants;
pub mod ids;
pub mod intent;
pub mod lambda;
pub mod lifecycle;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod preflight;
pub mod report;
pub mod verify;
