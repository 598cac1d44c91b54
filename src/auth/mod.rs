//! Credentials: the user store (argon2id hashes on disk), the verifier pool that checks
//! passwords off the I/O threads, and local-peer credentials from the kernel.

pub mod store;
