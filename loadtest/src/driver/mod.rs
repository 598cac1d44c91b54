//! The machinery request/reply scenarios share.

pub mod pacing;
