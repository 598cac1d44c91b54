//! The Python the interop and metrics tests drive, in a virtual environment of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python the interop and metrics tests run: a virtual environment in the target
/// directory with the pinned packages of `tests/interop/requirements.txt`, made on first use
/// (under a lock: test binaries run at once) and again when the requirements change. It needs
/// `python3` with its `venv` module (Debian: python3-venv) and, the first time, pip's index.
pub fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-venv");
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let marker = root.join("requirements.installed");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let lock = std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-venv.lock"))
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&root);
        let run = |command: &mut Command, what: &str| {
            let out = command
                .output()
                .unwrap_or_else(|e| panic!("{what}: {e} (the tests need python3)"));
            assert!(
                out.status.success(),
                "{what} failed (the tests need python3 with venv, and pip's index once): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&root),
            "python3 -m venv",
        );
        run(
            Command::new(root.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
            "pip install -r tests/interop/requirements.txt",
        );
        std::fs::write(&marker, &wanted).unwrap();
    }
    drop(lock);
    root.join("bin/python3")
}
