//! The user store: `<state_dir>/users.toml`, one `[[user]]` per account with its authorization
//! and an argon2id hash (PHC string). Mode 0600, rewritten atomically, changes serialized with
//! an exclusive lock so concurrent `ldmd user` commands cannot lose an update. Passwords are
//! never stored or logged.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ldm::Role;
use crate::xmpp::sasl::FIELD_BYTES_MAX;

/// Longest user name we accept (the localpart of `name@domain`).
pub const USER_NAME_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// `read` or `write`.
    pub auth: String,
    /// argon2id PHC string.
    pub hash: String,
}

impl UserRecord {
    pub fn role(&self) -> Role {
        self.auth.parse().unwrap_or(Role::None)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "user '{0}' already exists (`ldmd user passwd` changes its password, `ldmd user set` its authorization)"
    )]
    Exists(String),
    #[error("no user '{0}'")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

/// The users, as read from the file.
#[derive(Debug, Default)]
pub struct UserStore {
    users: Vec<UserRecord>,
}

impl UserStore {
    /// Reads the store; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<UserStore, StoreError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UserStore::default()),
            Err(e) => return Err(e.into()),
        };
        let file: UsersFile = toml::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(UserStore { users: file.users })
    }

    pub fn users(&self) -> &[UserRecord] {
        &self.users
    }

    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Adds a user under the store's lock and rewrites the file.
    pub fn add(path: &Path, name: &str, role: Role, password: &str) -> Result<(), StoreError> {
        check_user_name(name)?;
        check_password(password)?;
        if role == Role::None {
            return Err(StoreError::Invalid(
                "authorization must be read or write".into(),
            ));
        }
        let hash = hash_password(password)?;
        locked(path, |store| {
            if store.get(name).is_some() {
                return Err(StoreError::Exists(name.to_owned()));
            }
            store.users.push(UserRecord {
                name: name.to_owned(),
                auth: role.as_str().to_owned(),
                hash,
            });
            Ok(())
        })
    }

    /// Gives `name` a new password. The daemon then ends the streams opened with the old one.
    pub fn set_password(path: &Path, name: &str, password: &str) -> Result<(), StoreError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        locked(path, |store| {
            let user = store.get_mut(name)?;
            user.hash = hash;
            Ok(())
        })
    }

    /// Gives `name` a new authorization. The daemon applies it to the user's open streams at
    /// once (a stream downgraded to read has its next write refused).
    pub fn set_role(path: &Path, name: &str, role: Role) -> Result<(), StoreError> {
        if role == Role::None {
            return Err(StoreError::Invalid(
                "authorization must be read or write".into(),
            ));
        }
        locked(path, |store| {
            let user = store.get_mut(name)?;
            user.auth = role.as_str().to_owned();
            Ok(())
        })
    }

    fn get_mut(&mut self, name: &str) -> Result<&mut UserRecord, StoreError> {
        self.users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| StoreError::Missing(name.to_owned()))
    }

    /// Removes a user under the store's lock and rewrites the file.
    pub fn remove(path: &Path, name: &str) -> Result<(), StoreError> {
        locked(path, |store| {
            let before = store.users.len();
            store.users.retain(|u| u.name != name);
            if store.users.len() == before {
                return Err(StoreError::Missing(name.to_owned()));
            }
            Ok(())
        })
    }

    fn save(&self, path: &Path) -> io::Result<()> {
        let text = toml::to_string(&UsersFile {
            users: self.users.clone(),
        })
        .map_err(io::Error::other)?;
        let header =
            "# ldmd users: managed by `ldmd user add|passwd|set|remove`. Hashes are argon2id.\n";
        write_atomically(path, format!("{header}{text}").as_bytes(), 0o600)
    }
}

/// Runs `change` on the store with an exclusive lock held across read, change and write.
fn locked(
    path: &Path,
    change: impl FnOnce(&mut UserStore) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let lock_path = dir.join(".users.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut store = UserStore::load(path)?;
    change(&mut store)?;
    store.save(path)?;
    Ok(())
}

/// User names are the localpart of the JID a user logs in as: letters, digits, `.`, `_`, `-`.
pub fn check_user_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= USER_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        // Reserved for the identities of migration resolvers (crate::migration).
        && !name.starts_with(crate::migration::RESOLVER_USER_PREFIX);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid user name '{name}': 1 to {USER_NAME_BYTES_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit, and not starting with {}",
            crate::migration::RESOLVER_USER_PREFIX
        )))
    }
}

/// A SASL PLAIN password is 1..=255 bytes (RFC 4616).
pub fn check_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::Invalid("the password is empty".into()));
    }
    if password.len() > FIELD_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "the password is longer than {FIELD_BYTES_MAX} bytes"
        )));
    }
    if password.contains('\0') {
        return Err(StoreError::Invalid(
            "the password contains a NUL byte".into(),
        ));
    }
    Ok(())
}

/// argon2id with the crate's default (OWASP) cost: 19 MiB, 2 passes, 1 lane. The working
/// memory is mapped for the call only (see `auth::argon`).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    crate::auth::argon::hash(password)
        .map_err(|e| StoreError::Invalid(format!("hashing failed: {e}")))
}

/// Checks a password against a PHC string (constant-time comparison).
pub fn verify_password(hash: &str, password: &str) -> bool {
    crate::auth::argon::verify(hash, password)
}

/// Creates `dir` (and parents) readable by its owner only, if it does not exist yet.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file: write a
/// temporary file beside it with `mode`, fsync it, rename it over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    // The mode given to open() is filtered by the umask, and an old temporary file keeps its
    // mode: set it exactly.
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_list_remove_round_trip_with_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/users.toml");
        UserStore::add(&path, "alice", Role::Write, "correct horse").unwrap();
        UserStore::add(&path, "bob", Role::Read, "battery staple").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("correct horse"));
        let store = UserStore::load(&path).unwrap();
        let alice = store.get("alice").unwrap();
        assert_eq!(alice.role(), Role::Write);
        assert!(verify_password(&alice.hash, "correct horse"));
        assert!(!verify_password(&alice.hash, "Correct horse"));
        assert!(matches!(
            UserStore::add(&path, "alice", Role::Read, "x"),
            Err(StoreError::Exists(_))
        ));
        UserStore::remove(&path, "alice").unwrap();
        assert!(matches!(
            UserStore::remove(&path, "alice"),
            Err(StoreError::Missing(_))
        ));
        assert_eq!(UserStore::load(&path).unwrap().users().len(), 1);
    }

    #[test]
    fn bad_names_and_passwords_are_refused() {
        for name in ["", "-x", "a b", "a@b", "ä", &"n".repeat(65)] {
            assert!(check_user_name(name).is_err(), "{name:?}");
        }
        assert!(check_password("").is_err());
        assert!(check_password(&"p".repeat(256)).is_err());
        assert!(check_password("a\0b").is_err());
    }
}
