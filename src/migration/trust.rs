//! The peer certificates a migrating ldmd trusts its targets by: every `*.pem` in
//! `<state_dir>/trust/`, read at each connection (adding one needs no restart). A certificate
//! there is trusted as exactly that certificate, a pin, at whatever address the target is
//! reached: the certificate ldmd generates names only its domains, 127.0.0.1 and ::1. Or
//! `migration.ca_file` (a CA, with the host name checked, as `ldm --ca`) and
//! `migration.fingerprints`.
//!
//! `ldmd trust add FILE [--name NAME]` stores `NAME.pem` (NAME defaults to the file's stem),
//! `ldmd trust list` prints each name, SHA-256 fingerprint and subject names, and
//! `ldmd trust remove NAME` deletes one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use super::worker::Settings;
use crate::client::{ClientError, Trust};
use crate::server::certs::{fingerprint, read_certificates};

/// The directory of trusted peer certificates.
pub fn directory(state_dir: &Path) -> PathBuf {
    state_dir.join("trust")
}

/// How the worker verifies a target now: the trust directory as it is at this moment, and the
/// configured CA and fingerprints.
pub fn peer_trust(settings: &Settings) -> Result<Trust, ClientError> {
    let pins = pinned(&settings.state_dir).map_err(|e| {
        ClientError::Setup(format!(
            "reading the trusted peer certificates in {}: {e}",
            directory(&settings.state_dir).display()
        ))
    })?;
    Ok(Trust::Peers {
        pins: pins
            .into_iter()
            .map(|(_, der)| der.as_ref().to_vec())
            .collect(),
        fingerprints: settings.fingerprints.clone(),
        ca: settings.ca_file.clone(),
    })
}

/// Every certificate of every `*.pem` in the trust directory, with the name it is stored
/// under. A missing directory trusts nothing.
fn pinned(state_dir: &Path) -> io::Result<Vec<(String, CertificateDer<'static>)>> {
    let mut out = Vec::new();
    for (name, path) in entries(state_dir)? {
        for cert in read_certificates(&path)? {
            out.push((name.clone(), cert));
        }
    }
    Ok(out)
}

/// `(name, path)` of each `*.pem` in the trust directory, sorted by name.
fn entries(state_dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let dir = directory(state_dir);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in listing {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.push((stem.to_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// A name for a trusted certificate: what a file name may safely be.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a usable name: letters, digits, '-', '_' and '.', at most 64, not starting with '.'"
        ))
    }
}

/// `ldmd trust add FILE [--name NAME]`: checks that FILE holds certificates, then stores it as
/// `NAME.pem`. Returns the name and the fingerprints.
pub fn add(
    state_dir: &Path,
    file: &Path,
    name: Option<&str>,
) -> Result<(String, Vec<String>), String> {
    let name = match name {
        Some(name) => name.to_owned(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| {
                format!(
                    "{}: give the certificate a name with --name",
                    file.display()
                )
            })?
            .to_owned(),
    };
    check_name(&name)?;
    let certs = read_certificates(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", file.display()));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("{}: not a certificate: {e}", file.display()))?;
    }
    let dir = directory(state_dir);
    crate::auth::store::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join(format!("{name}.pem"));
    if target.exists() {
        return Err(format!(
            "a trusted certificate named {name} exists: remove it first (ldmd trust remove {name})"
        ));
    }
    let text = fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // Written beside, then renamed: a reader never sees half a file.
    let fresh = dir.join(format!(".{name}.pem.new"));
    fs::write(&fresh, &text)
        .and_then(|()| fs::rename(&fresh, &target))
        .map_err(|e| format!("{}: {e}", target.display()))?;
    Ok((name, certs.iter().map(fingerprint).collect()))
}

/// One trusted certificate, for `ldmd trust list`.
pub struct Listed {
    pub name: String,
    pub fingerprint: String,
    /// The subject's common name and its DNS and IP subject alternative names.
    pub subjects: Vec<String>,
}

/// `ldmd trust list`.
pub fn list(state_dir: &Path) -> Result<Vec<Listed>, String> {
    let pinned = pinned(state_dir).map_err(|e| e.to_string())?;
    Ok(pinned
        .into_iter()
        .map(|(name, cert)| Listed {
            name,
            fingerprint: fingerprint(&cert),
            subjects: subjects(cert.as_ref()),
        })
        .collect())
}

fn subjects(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return vec!["(unreadable)".into()];
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(|s| format!("CN={s}")))
        .collect();
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => out.push((*dns).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(std::net::IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .map(std::net::IpAddr::from)
                            .ok(),
                        _ => None,
                    };
                    out.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    out
}

/// `ldmd trust remove NAME`.
pub fn remove(state_dir: &Path, name: &str) -> Result<(), String> {
    check_name(name)?;
    let path = directory(state_dir).join(format!("{name}.pem"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("no trusted certificate is named {name}"))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_added_listed_trusted_and_removed_by_name() {
        let state = tempfile::tempdir().unwrap();
        let peer = tempfile::tempdir().unwrap();
        let (identity, _) =
            crate::server::certs::load_or_generate(None, peer.path(), &["peer.example".to_owned()])
                .unwrap();
        let (cert_path, _) = crate::server::certs::generated_paths(peer.path());
        let settings = Settings {
            state_dir: state.path().to_owned(),
            ..Settings::default()
        };
        // Nothing trusted yet: a peer cannot be verified, and the worker says how to fix it.
        let Trust::Peers { pins, .. } = peer_trust(&settings).unwrap() else {
            panic!()
        };
        assert!(pins.is_empty());
        let (name, fingerprints) = add(state.path(), &cert_path, None).unwrap();
        assert_eq!(name, "tls-cert");
        assert_eq!(fingerprints, [identity.fingerprint()]);
        assert!(
            add(state.path(), &cert_path, None)
                .unwrap_err()
                .contains("exists")
        );
        add(state.path(), &cert_path, Some("host2")).unwrap();
        let listed = list(state.path()).unwrap();
        assert_eq!(
            listed.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["host2", "tls-cert"]
        );
        assert_eq!(listed[0].fingerprint, identity.fingerprint());
        assert!(
            listed[0].subjects.iter().any(|s| s == "peer.example"),
            "{:?}",
            listed[0].subjects
        );
        let Trust::Peers { pins, .. } = peer_trust(&settings).unwrap() else {
            panic!()
        };
        assert_eq!(pins.len(), 2);
        remove(state.path(), "tls-cert").unwrap();
        assert!(remove(state.path(), "tls-cert").is_err());
        assert!(add(state.path(), &cert_path, Some("../evil")).is_err());
        let not_pem = state.path().join("x.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        assert!(add(state.path(), &not_pem, Some("x")).is_err());
    }
}
