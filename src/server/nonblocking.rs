//! The two socket calls the connection actor makes itself, outside io_uring: a receive when
//! the socket is readable, and a send that the socket takes at once.

use std::io;
use std::os::fd::RawFd;

/// `recv(MSG_DONTWAIT)` into the spare capacity of `buffer`.
pub(super) fn receive(fd: RawFd, buffer: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buffer.spare_capacity_mut();
    // SAFETY: the kernel writes at most `spare.len()` bytes into memory we own; we then mark
    // exactly the bytes written as initialized.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: `n` bytes after the current length were initialized by recv.
    unsafe { buffer.set_len(buffer.len() + n) };
    Ok(n)
}

/// One non-blocking send of `bytes`; how many the socket took.
pub(super) fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `bytes.len()` bytes from memory we own. MSG_NOSIGNAL: a
    // peer that closed gives EPIPE, not SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::Interrupted => Ok(0),
            _ => Err(error),
        };
    }
    Ok(n as usize)
}
