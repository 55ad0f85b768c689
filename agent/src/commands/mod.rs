//! Commands of the `aitrail` binary other than the daemon itself.

pub mod doctor;
pub mod query;
pub mod replay;
