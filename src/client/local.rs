//! Trusting a daemon on this machine by who can write where: the rule is in the module
//! documentation of [`crate::client`]. Every check here runs before anything is connected.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::wire::describe_io;
use super::{ClientError, Trust};

/// Who may own what `ldm` trusts: root, or the user running it.
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// The directory a path's entry lives in (`.` for a bare name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A directory only root or the caller can add entries to: owned by one of them, and not
/// writable by group or others (the sticky bit does not help: anyone may still create).
fn private_directory(directory: &Path, meta: &Metadata) -> Result<(), String> {
    if !trusted_owner(meta.uid()) {
        return Err(format!(
            "{} belongs to another user (uid {})",
            directory.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} can be written by other users (mode {:04o})",
            directory.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A certificate only root or the caller can have written: owned by one of them, not
/// writable by others, in a [`private_directory`].
fn private_certificate(certificate: &Path, meta: &Metadata) -> Result<(), String> {
    if !trusted_owner(meta.uid()) {
        return Err(format!(
            "{} belongs to another user (uid {})",
            certificate.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "{} can be written by other users (mode {:04o})",
            certificate.display(),
            meta.mode() & 0o7777
        ));
    }
    let directory = directory_of(certificate);
    let dir_meta =
        std::fs::metadata(&directory).map_err(|e| format!("{}: {e}", directory.display()))?;
    private_directory(&directory, &dir_meta)
}

fn refuse(socket: &Path, why: &str) -> ClientError {
    ClientError::Setup(format!(
        "cannot trust ldmd at {}: {why}; give --ca, --fingerprint or --insecure to say how to verify it",
        socket.display()
    ))
}

/// How to trust the daemon behind `socket` when the operator gave no `--ca`, `--fingerprint`
/// or `--insecure`: its `certificate` pinned when it can be opened, else the socket's
/// directory alone; either way only after the checks of the module documentation.
pub fn local_trust(socket: &Path, certificate: &Path) -> Result<Trust, ClientError> {
    let directory = directory_of(socket);
    let meta = std::fs::metadata(&directory).map_err(|e| ClientError::Unreachable {
        // No directory, no socket: say so as connecting would, without connecting.
        at: socket.display().to_string(),
        reason: describe_io(&e),
    })?;
    private_directory(&directory, &meta).map_err(|why| refuse(socket, &why))?;
    match std::fs::File::open(certificate) {
        Ok(file) => {
            // The opened file's own metadata: what is pinned is what was checked.
            let meta = file
                .metadata()
                .map_err(|e| refuse(socket, &format!("{}: {e}", certificate.display())))?;
            private_certificate(certificate, &meta).map_err(|why| refuse(socket, &why))?;
            Ok(Trust::Pinned(certificate.to_path_buf()))
        }
        // Not there, or not ours to read (a daemon of another user): the directory rule
        // above is the anchor.
        Err(_) => Ok(Trust::SocketPath),
    }
}

/// For `--host` without `--ca`/`--fingerprint`/`--insecure`: the certificate of
/// `--config`/`--state-dir` as the trust root, when it exists and passes the same checks.
/// `Ok(None)` when there is no such file.
pub fn local_certificate(certificate: &Path) -> Result<Option<Trust>, ClientError> {
    let file = match std::fs::File::open(certificate) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::Setup(format!(
                "{}: {}",
                certificate.display(),
                describe_io(&e)
            )));
        }
    };
    let refuse = |why: String| {
        ClientError::Setup(format!(
            "cannot trust {}: {why}; give --ca, --fingerprint or --insecure to say how to verify the daemon",
            certificate.display()
        ))
    };
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("{}: {e}", certificate.display())))?;
    private_certificate(certificate, &meta).map_err(refuse)?;
    Ok(Some(Trust::Ca(certificate.to_path_buf())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(result: Result<Trust, ClientError>) -> String {
        match result {
            Err(ClientError::Setup(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A private directory with a certificate in it (tests run as root or as the owner).
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let socket = dir.path().join("ldmd.sock");
        let cert = dir.path().join("tls-cert.pem");
        std::fs::write(&cert, "not read here").unwrap();
        chmod(&cert, 0o644);
        (dir, socket, cert)
    }

    #[test]
    fn a_private_directory_pins_a_readable_certificate_or_else_anchors_on_the_socket() {
        let (dir, socket, cert) = layout();
        assert_eq!(local_trust(&socket, &cert).unwrap(), Trust::Pinned(cert));
        let missing = dir.path().join("none.pem");
        assert_eq!(local_trust(&socket, &missing).unwrap(), Trust::SocketPath);
    }

    #[test]
    fn a_directory_others_can_write_is_refused_even_with_a_readable_certificate() {
        for mode in [0o777, 0o1777, 0o770, 0o702] {
            let (dir, socket, cert) = layout();
            chmod(dir.path(), mode);
            let message = refusal(local_trust(&socket, &cert));
            assert!(
                message.contains("can be written by other users")
                    && message.ends_with(
                        "give --ca, --fingerprint or --insecure to say how to verify it"
                    ),
                "{mode:o}: {message}"
            );
        }
    }

    #[test]
    fn a_certificate_others_can_write_or_in_an_open_directory_is_refused() {
        let (_dir, socket, cert) = layout();
        chmod(&cert, 0o666);
        let message = refusal(local_trust(&socket, &cert));
        assert!(message.contains("tls-cert.pem can be written by other users (mode 0666)"));
        // The certificate elsewhere, in a directory anyone can write to.
        let (_dir, socket, _) = layout();
        let open = tempfile::tempdir().unwrap();
        chmod(open.path(), 0o1777);
        let planted = open.path().join("tls-cert.pem");
        std::fs::write(&planted, "x").unwrap();
        let message = refusal(local_trust(&socket, &planted));
        assert!(
            message.contains("can be written by other users (mode 1777)"),
            "{message}"
        );
        assert!(matches!(
            local_certificate(&planted),
            Err(ClientError::Setup(_))
        ));
    }

    #[test]
    fn what_another_user_owns_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // Only root can give a file away.
        }
        let (dir, socket, cert) = layout();
        std::os::unix::fs::chown(&cert, Some(4242), None).unwrap();
        let message = refusal(local_trust(&socket, &cert));
        assert!(
            message.contains("tls-cert.pem belongs to another user (uid 4242)"),
            "{message}"
        );
        std::os::unix::fs::chown(dir.path(), Some(4242), None).unwrap();
        let message = refusal(local_trust(&socket, &cert));
        assert!(
            message.contains("belongs to another user (uid 4242)"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_directory_is_unreachable_before_anything_connects() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nowhere").join("ldmd.sock");
        match local_trust(&socket, &dir.path().join("tls-cert.pem")) {
            Err(error @ ClientError::Unreachable { .. }) => assert_eq!(error.exit_code(), 3),
            other => panic!("{other:?}"),
        }
    }
}
