//! The pure domain: plain structs in, findings and plans out. No AWS SDK types, no tokio, no I/O,
//! no clock (callers pass `now`). Everything here is deterministic and unit-tested without AWS.

pub mod config;
pub mod doctor;
pub mod grants;
pub mod policy;
