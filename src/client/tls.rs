//! The client's TLS settings: what "verified" means for each [`Trust`], and the pinning
//! verifier (handshake signatures are always checked, whatever is pinned).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::DigitallySignedStruct;
use rustls::SignatureScheme;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::{ClientError, Trust, fingerprint};

pub(super) fn tls_config(trust: &Trust) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let pinned = |expect| {
        builder
            .clone()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                expect,
                provider: provider.clone(),
            }))
            .with_no_client_auth()
    };
    let config = match trust {
        Trust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_pem(path)? {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
            }
            builder
                .clone()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        Trust::Pinned(path) => {
            let leaf = read_pem(path)?.into_iter().next().ok_or_else(|| {
                ClientError::Setup(format!("{}: no certificate in the file", path.display()))
            })?;
            pinned(Expect::Certificate(leaf.as_ref().to_vec(), path.clone()))
        }
        Trust::Fingerprint(digest) => pinned(Expect::Sha256(digest.clone())),
        Trust::SocketPath | Trust::Insecure => pinned(Expect::Anything),
        Trust::Peers {
            pins,
            fingerprints,
            ca,
        } => {
            if pins.is_empty() && fingerprints.is_empty() && ca.is_none() {
                return Err(ClientError::Setup(
                    "no peer certificate is trusted: add the target's certificate with `ldmd trust add FILE`, or set migration.ca_file or migration.fingerprints".into(),
                ));
            }
            let chained = match ca {
                Some(path) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in read_pem(path)? {
                        roots
                            .add(cert)
                            .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
                    }
                    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
                    Some(verifier)
                }
                None => None,
            };
            builder
                .clone()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PeerVerifier {
                    pins: pins.clone(),
                    fingerprints: fingerprints.clone(),
                    chained,
                    provider: provider.clone(),
                }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The handshake-signature checks of a [`ServerCertVerifier`] whose `provider` field is the
/// crypto provider: every verifier here decides only which certificate to accept, and leaves
/// the signatures to the provider's algorithms.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies a peer daemon: a pinned certificate or fingerprint, else a CA chain with the host
/// name checked. Handshake signatures are always checked.
#[derive(Debug)]
struct PeerVerifier {
    pins: Vec<Vec<u8>>,
    fingerprints: Vec<Vec<u8>>,
    chained: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = end_entity.as_ref();
        let digest = ring::digest::digest(&ring::digest::SHA256, presented);
        if self.pins.iter().any(|pin| pin.as_slice() == presented)
            || self
                .fingerprints
                .iter()
                .any(|pin| pin.as_slice() == digest.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chained {
            Some(verifier) => verifier
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| {
                    rustls::Error::General(format!(
                        "the target's certificate (SHA-256 {}) is not trusted: {e}",
                        fingerprint(presented)
                    ))
                }),
            None => Err(rustls::Error::General(format!(
                "the target's certificate (SHA-256 {}) is not trusted: add it with `ldmd trust add FILE`, or set migration.ca_file or migration.fingerprints",
                fingerprint(presented)
            ))),
        }
    }

    provider_signature_checks!();
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = crate::server::certs::read_certificates(path)
        .map_err(|e| ClientError::Setup(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Setup(format!(
            "{}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// What the presented certificate must be.
#[derive(Debug)]
enum Expect {
    /// Exactly this certificate (DER), read from this file.
    Certificate(Vec<u8>, PathBuf),
    Sha256(Vec<u8>),
    Anything,
}

/// Verifies the daemon by pinning (or not at all); handshake signatures are always checked.
#[derive(Debug)]
struct Pinned {
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = end_entity.as_ref();
        let digest = ring::digest::digest(&ring::digest::SHA256, presented);
        let refuse = |expected: String| {
            Err(rustls::Error::General(format!(
                "the daemon's certificate (SHA-256 {}) is not {expected}",
                fingerprint(presented)
            )))
        };
        match &self.expect {
            Expect::Anything => Ok(ServerCertVerified::assertion()),
            Expect::Certificate(der, _) if der == presented => Ok(ServerCertVerified::assertion()),
            Expect::Certificate(_, path) => refuse(format!("the one in {}", path.display())),
            Expect::Sha256(pin) if pin.as_slice() == digest.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            Expect::Sha256(pin) => refuse(format!("the pinned {}", fingerprint_of_digest(pin))),
        }
    }

    provider_signature_checks!();
}

pub(super) fn fingerprint_of_digest(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
