//! The domain registry: one machine's logical domains, their resources, SP configurations and
//! long operations.
//!
//! - [`state`], [`actions`], [`listing`], [`machine`], [`model`], [`units`]: the pure rules.
//! - [`store`], [`journal`]: durability, one journal frame per batch in front of redb.
//! - [`actor`]: the single writer, on its own thread, and the memory DR workers.
//! - [`replica`]: reads answered on the I/O threads from copies of the committed state.
//! - [`host_load`]: the host's CPU utilisation, the control domain's UTIL.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod actions;
pub mod actor;
pub mod host_load;
pub mod journal;
pub mod listing;
pub mod machine;
pub mod model;
pub mod replica;
pub mod run;
pub mod state;
pub mod store;
pub mod units;

/// The control domain, which always exists.
pub const CONTROL_DOMAIN: &str = "primary";

pub use state::{Registry, Settings};
#[cfg(test)]
mod tests;
