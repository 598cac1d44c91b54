//! argon2id hashing and verification whose working memory is mapped for the call and unmapped
//! right after.
//!
//! The default parameters need 19 MiB per call. Through the global allocator that block stays
//! resident after the first login: glibc raises its mmap threshold once a large block has been
//! freed and then serves the next one from an arena it keeps, and mimalloc keeps it in the idle
//! verifier thread's heap. Measured here: +20 MiB RSS after a single login. Mapping the blocks
//! per call costs about a millisecond of page faults on a ~50 ms hash, and the daemon's memory
//! returns to its baseline when nobody is logging in.

use std::io;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Hashes `password` with argon2id and the crate's default (OWASP) cost, as a PHC string.
pub fn hash(password: &str) -> io::Result<String> {
    let params = Params::default();
    let mut salt_bytes = [0u8; 16];
    OsRng.fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(io::Error::other)?;
    let output = compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        &salt_bytes,
    )?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(io::Error::other)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a PHC string, comparing in constant time.
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Some(expected), Some(salt)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed.hash,
        parsed.salt,
    ) else {
        return false;
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let params = match Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(expected.len()),
    ) {
        Ok(params) => params,
        Err(_) => return false,
    };
    // Output's equality is constant-time.
    compute(algorithm, version, params, password.as_bytes(), salt_bytes)
        .is_ok_and(|computed| computed == expected)
}

fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
) -> io::Result<Output> {
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut memory = MappedBlocks::new(params.block_count())?;
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(output_len, |out| {
        argon
            .hash_password_into_with_memory(password, salt, out, memory.blocks())
            .map_err(Into::into)
    })
    .map_err(io::Error::other)
}

/// Anonymous memory for argon2's blocks, returned to the kernel on drop.
struct MappedBlocks {
    ptr: *mut Block,
    count: usize,
}

impl MappedBlocks {
    fn new(count: usize) -> io::Result<MappedBlocks> {
        let len = count * std::mem::size_of::<Block>();
        // SAFETY: a fresh private anonymous mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedBlocks {
            ptr: ptr.cast(),
            count,
        })
    }

    fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping is page-aligned (Block needs 64), zero-filled (a valid Block is
        // any bit pattern of u64s), `count` blocks long, and exclusively ours while borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.count) }
    }
}

impl Drop for MappedBlocks {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.count * std::mem::size_of::<Block>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn round_trips_and_interoperates_with_the_crate() {
        let ours = hash("correct horse").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(verify(&ours, "correct horse"));
        assert!(!verify(&ours, "correct horsE"));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok(),
            "the crate accepts ours"
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&theirs, "battery"), "we accept the crate's");
        assert!(!verify("not a hash", "battery"));
    }
}
