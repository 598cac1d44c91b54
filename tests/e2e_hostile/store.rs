//! A store that fails: a panic, an I/O error, a store that cannot be opened, a full disk, a
//! first start whose first commit fails.

use super::*;

#[cfg(feature = "fault-points")]
#[test]
fn a_panic_anywhere_ends_the_process_and_nothing_acknowledged_is_lost() {
    // A live daemon with a dead thread is the worst outcome: a panic ends the process with a
    // log line, and a restart on the same state has every acknowledged change.
    let daemon = Daemon::start_with_env(REMOTE, &[], &[("LDMD_FAULTS", "registry.commit=panic@2")]);
    let mut client = local(&daemon);
    assert_eq!(
        document_status(&client.request(&add_domain("kept"))).0,
        "success"
    );
    let lost = client.try_request(&add_domain("lost"));
    assert!(
        lost.is_err(),
        "a document of the batch that panicked was answered: {lost:?}"
    );
    let (status, stderr, dir) = daemon.wait_for_exit();
    assert!(!status.success(), "{status:?}");
    assert!(
        stderr.contains("panic in thread ldmd-registry") && stderr.contains("ending the process"),
        "{stderr}"
    );
    let daemon = Daemon::start_in(dir, REMOTE);
    let names = listed(&mut local(&daemon));
    assert!(names.contains(&"kept".to_owned()), "{names:?}");
    assert!(!names.contains(&"lost".to_owned()), "{names:?}");
}

#[cfg(feature = "fault-points")]
#[test]
fn an_io_error_refuses_that_batchs_writes_serves_reads_and_retries_the_store() {
    // A failed commit used to exit the daemon (status 70). Now its writes are refused with the
    // reason, reads are answered, and the store is tried again until it takes changes.
    let daemon = Daemon::start_with_env(REMOTE, &[], &[("LDMD_FAULTS", "store.commit=eio*3@1")]);
    let mut client = local(&daemon);
    let (status, message) = document_status(&client.request(&add_domain("g1")));
    assert_eq!(status, "failure");
    let message = message.unwrap();
    assert!(message.starts_with(NOT_SAVED), "{message}");
    assert!(message.contains("Input/output error"), "{message}");
    let names = listed(&mut client);
    assert!(names.contains(&"primary".to_owned()) && !names.contains(&"g1".to_owned()));
    bystander_is_answered(&daemon);
    let deadline = Instant::now() + BYSTANDER_BOUND * 2;
    loop {
        let (status, message) = document_status(&client.request(&add_domain("g1")));
        if status == "success" {
            break;
        }
        assert!(message.unwrap().starts_with(NOT_SAVED));
        assert!(Instant::now() < deadline, "the store was never taken back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = daemon.crash();
    let daemon = Daemon::start_in(dir, REMOTE);
    assert!(listed(&mut local(&daemon)).contains(&"g1".to_owned()));
}

#[cfg(feature = "fault-points")]
#[test]
fn a_daemon_that_cannot_open_its_store_for_writing_starts_and_serves_reads() {
    // A full disk used to make every start exit at the first write: a crash loop.
    let first = Daemon::start(REMOTE);
    assert_eq!(
        document_status(&local(&first).request(&add_domain("g"))).0,
        "success"
    );
    let (status, dir) = stop(first);
    assert!(status.success());
    let daemon = Daemon::start_in_with_env(dir, REMOTE, &[("LDMD_FAULTS", "store.open=enospc*2")]);
    let mut client = local(&daemon);
    assert!(listed(&mut client).contains(&"g".to_owned()), "reads work");
    let (status, message) = document_status(&client.request(&add_domain("h")));
    assert_eq!(status, "failure");
    assert!(message.unwrap().contains("No space left on device"));
    let deadline = Instant::now() + BYSTANDER_BOUND * 2;
    while document_status(&client.request(&add_domain("h"))).0 != "success" {
        assert!(Instant::now() < deadline, "the store was never opened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then the exit status and the directory to start again in.
#[cfg(feature = "fault-points")]
fn stop(daemon: Daemon) -> (std::process::ExitStatus, tempfile::TempDir) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let (status, _, dir) = daemon.wait_for_exit();
    (status, dir)
}

/// A tmpfs of `bytes` mounted at `path` for the life of the value (root only).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, bytes: usize) -> std::io::Result<SmallDisk> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(path)?;
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={bytes},mode=0700")).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SmallDisk {
            path: path.to_owned(),
        })
    }

    /// Writes a filler file until the disk is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.path.as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) with a valid path; MNT_DETACH so a test's failure never blocks.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Adds domains with long names (`<prefix><n>-xxx…`) until one is refused, at most 20,000;
/// the acknowledged ones join `acknowledged`. Returns the refusal's message.
fn add_until_refused(
    client: &mut Client,
    prefix: &str,
    acknowledged: &mut Vec<String>,
) -> Option<String> {
    for n in 0..20_000 {
        let name = format!("{prefix}{n}-{}", "x".repeat(200));
        let (status, message) = document_status(&client.request(&add_domain(&name)));
        if status != "success" {
            return message;
        }
        acknowledged.push(name);
    }
    None
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_recovers_and_a_restart_serves_reads() {
    // A failed commit used to exit the daemon, and every restart exited again at its first
    // write: a crash loop on a full disk. Run on a tmpfs of 16 MiB that the test fills.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: mounting a small tmpfs to fill needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(&dir.path().join("state"), 16 << 20) {
        Ok(disk) => disk,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    let daemon = Daemon::start_in(dir, REMOTE);
    let mut client = local(&daemon);
    assert_eq!(
        document_status(&client.request(&add_domain("before"))).0,
        "success"
    );
    let filler = disk.fill();
    // Each domain grows the store; the first that needs a new page finds no space.
    let mut acknowledged = vec!["before".to_owned()];
    let refusal = add_until_refused(&mut client, "d", &mut acknowledged)
        .expect("a full disk never refused a write");
    assert!(refusal.starts_with(NOT_SAVED), "{refusal}");
    assert!(refusal.contains("No space left on device"), "{refusal}");
    // Reads are served, from exactly what was acknowledged.
    let names = listed(&mut client);
    for name in &acknowledged {
        assert!(names.contains(name), "{name} was acknowledged and is gone");
    }
    bystander_is_answered(&daemon);

    // A restart on the full disk starts and serves reads (no crash loop).
    let dir = daemon.crash();
    let daemon = Daemon::start_in(dir, REMOTE);
    let mut client = local(&daemon);
    let names = listed(&mut client);
    for name in &acknowledged {
        assert!(names.contains(name), "{name} lost across the restart");
    }
    // The journal's space is allocated ahead of time: writes that fit in what is left of it
    // are taken even now, and the first that needs more of the disk is refused.
    let refused = add_until_refused(&mut client, "while-full-", &mut acknowledged)
        .expect("a full disk never refused a write after the restart");
    assert!(refused.starts_with(NOT_SAVED), "{refused}");

    // Space comes back: the store is retried and takes changes again.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + BYSTANDER_BOUND * 2;
    while document_status(&client.request(&add_domain("after"))).0 != "success" {
        assert!(Instant::now() < deadline, "writes never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(client);
    let dir = daemon.crash();
    let daemon = Daemon::start_in(dir, REMOTE);
    let names = listed(&mut local(&daemon));
    assert!(names.contains(&"after".to_owned()));
    for name in &acknowledged {
        assert!(names.contains(name), "{name} lost across the last restart");
    }
    // Unmounted first (lazily), so that the daemon's directory can then be removed.
    drop(disk);
    drop(daemon);
}

#[cfg(feature = "fault-points")]
#[test]
fn a_first_start_whose_first_commit_fails_saves_its_whole_state_later() {
    // The machine's first state (the control domain, the counters) is not on disk until a
    // commit takes it: when the disk refuses the first ones, none of it may be forgotten.
    let daemon = Daemon::start_with_env(REMOTE, &[], &[("LDMD_FAULTS", "store.commit=enospc*1")]);
    let mut client = local(&daemon);
    assert!(listed(&mut client).contains(&"primary".to_owned()));
    let deadline = Instant::now() + BYSTANDER_BOUND * 2;
    while document_status(&client.request(&add_domain("g"))).0 != "success" {
        assert!(Instant::now() < deadline, "the store was never taken back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = daemon.crash();
    let daemon = Daemon::start_in(dir, REMOTE);
    let names = listed(&mut local(&daemon));
    assert!(
        names.contains(&"primary".to_owned()) && names.contains(&"g".to_owned()),
        "{names:?}"
    );
}
