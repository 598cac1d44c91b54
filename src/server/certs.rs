//! The daemon's TLS identity: load the configured certificate and key, or on first start
//! generate a self-signed ECDSA P-256 certificate into the state directory.
//!
//! P-256 keeps handshakes cheap; operators who want a CA-issued certificate configure
//! `tls.cert_file` and `tls.key_file`. The SHA-256 fingerprint printed at start-up is what
//! `ldm --fingerprint` and remote clients pin.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its key, as DER.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// SHA-256 of the leaf certificate, as colon-separated upper-case hex (what `openssl x509
    /// -fingerprint -sha256` prints).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Paths of the generated identity inside the state directory.
pub fn generated_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (
        state_dir.join("tls-cert.pem"),
        state_dir.join("tls-key.pem"),
    )
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Loads the identity from `cert`/`key`, or, when neither is configured, from the state
/// directory, generating it there on first start (key file mode 0600). Returns whether it was
/// generated now.
pub fn load_or_generate(
    configured: Option<(&Path, &Path)>,
    state_dir: &Path,
    names: &[String],
) -> io::Result<(Identity, bool)> {
    let (cert_path, key_path, generated) = match configured {
        Some((cert, key)) => (cert.to_path_buf(), key.to_path_buf(), false),
        None => {
            let (cert, key) = generated_paths(state_dir);
            let missing = !cert.exists() || !key.exists();
            if missing {
                let (cert_pem, key_pem) = generate(names).map_err(io::Error::other)?;
                crate::auth::store::write_atomically(&key, key_pem.as_bytes(), 0o600)?;
                crate::auth::store::write_atomically(&cert, cert_pem.as_bytes(), 0o644)?;
            }
            (cert, key, missing)
        }
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io::Error::other(format!("{}: {e}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(io::Error::other(format!(
            "{}: no certificate found",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| io::Error::other(format!("{}: {e}", key_path.display())))?;
    Ok((Identity { chain, key }, generated))
}

/// The server's rustls configuration: ring only, TLS 1.2 (as the reference daemon), and 1.3
/// when the operator allows it.
pub fn server_config(
    identity: Identity,
    allow_tls13: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls13 {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)?;
    // Tickets would cost a record and CPU per handshake; the stateful cache (bounded) suffices.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Reads a PEM file of certificates (for clients that trust the daemon's certificate).
pub fn read_certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}
