//! Credentials: the user store (argon2id hashes on disk), the verifier pool that checks
//! passwords off the I/O threads, and local-peer credentials from the kernel.

pub mod argon;
pub mod guard;
pub mod peercred;
pub mod store;
pub mod verifier;

pub use store::UserStore;
pub use verifier::{Accounts, Verifier, VerifierConfig, VerifyRequest};
