//! ldmd: the Logical Domains Manager daemon.
//!
//! The crate is split along the sans-IO line (see `README.md`, "Architecture"):
//! - pure protocol and rules, no I/O, no clock: [`xml`], [`xmpp`], [`ldm`], [`cli`] (the
//!   `ldm` command's documents and renderings), the registry's rules, and [`migration`]'s two
//!   state machines and internal documents;
//! - the shell that owns sockets, threads and time: [`server`], [`auth`] (credential storage
//!   and the verifier pool), [`config`], [`metrics`], [`client`] (the `ldm` command's
//!   connection to the daemon).

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod docs;
pub mod fault;
#[doc(hidden)]
pub mod fuzz;
pub mod ldm;
pub mod limits;
pub mod metrics;
pub mod migration;
pub mod registry;
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod xml;
pub mod xmpp;
