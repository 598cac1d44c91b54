//! The operator's `ldm` command, its pure part: request documents built from command-line
//! words, the client's reading of the daemon's stream, and the renderings of replies (the
//! familiar table, `-l`, `-p`, JSON). No I/O here (`tests/sans_io.rs` checks); the sockets,
//! TLS and prompts are in [`crate::client`], the command line itself in `src/bin/ldm/`.

pub mod devices;
pub mod json;
pub mod raw;
pub mod request;
pub mod stream;
pub mod suggest;
pub mod text;
pub mod view;

pub use request::UsageError;
