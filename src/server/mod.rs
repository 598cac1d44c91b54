//! The I/O shell: listeners, connection actors, buffer pools, the handler thread, shutdown.

pub mod certs;
