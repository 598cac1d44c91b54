//! ldmd: the Logical Domains Manager daemon.
//!
//! The crate is split along the sans-IO line (see `README.md`, "Architecture"):
//! - pure protocol and rules, no I/O, no clock: [`xml`], [`xmpp`], [`ldm`];
//! - the shell that owns sockets, threads and time: [`server`], [`auth`] (credential storage
//!   and the verifier pool), [`config`], [`metrics`].

pub mod auth;
pub mod config;
pub mod ldm;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod xml;
pub mod xmpp;
