//! Commands of the `aitrail` binary other than the daemon itself.

pub mod admin;
pub mod archive;
pub mod doctor;
pub mod query;
pub mod replay;
pub mod store;
