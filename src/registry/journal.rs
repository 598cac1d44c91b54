//! The registry's write-ahead journal: one frame per commit, written with one `pwrite` into
//! space that already exists and made durable with one `fdatasync`.
//!
//! A redb commit rewrites about twenty B-tree pages and its commit slot; a journal frame is one
//! write of the batch's records. The journal sits in front of the redb store (see `store`):
//! commits go to the journal, and when it is full the records it holds are written to redb in
//! one transaction (a *checkpoint*) and the journal starts again at its beginning.
//!
//! ```text
//!  frame := magic "LDJ1" | epoch u64 | payload length u32 | crc32 u32 | payload
//!  payload := count u32 | record*
//!  record := kind u8 | key length u32 | key | present u8 | value length u32 | value
//! ```
//!
//! All integers are little-endian; the CRC covers the epoch, the length and the payload.
//!
//! **Epochs.** redb records the epoch of the journal that follows its state. A checkpoint
//! writes the journal's records and the next epoch in one redb transaction, and only then are
//! frames of the new epoch written, from offset 0. Replay reads frames from offset 0 while each
//! is whole, checksummed and of the current epoch: frames of older epochs still in the file,
//! zeros and a frame torn by a crash all end it. Replaying a frame that a checkpoint already
//! holds cannot happen, since the checkpoint moved to a new epoch.
//!
//! **Space.** The file is only ever overwritten in place: it grows in zero-filled steps (the
//! one time an `fdatasync` also writes the file's size) up to its capacity, and then wraps
//! through a checkpoint. So a commit's `fdatasync` writes data blocks only, at the disk's pace,
//! and disk use is bounded by the capacity. A frame larger than the whole journal is not
//! journaled: it goes to redb directly.
//!
//! The frame codec is pure and never trusts the file: a corrupt or hostile journal ends replay
//! at the first bad frame, never panics.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::registry::state::{Change, Key};

const MAGIC: [u8; 4] = *b"LDJ1";
/// magic, epoch, payload length, crc32.
const HEADER_LEN: usize = 4 + 8 + 4 + 4;
const KIND_DOMAIN: u8 = 0;
const KIND_SPCONFIGS: u8 = 1;
const KIND_META: u8 = 2;
const KIND_MIGRATION: u8 = 3;

/// The journal's size at most: about a second of commits at full speed between checkpoints,
/// and the records it holds (kept in memory until the checkpoint) stay this small.
pub const CAPACITY: u64 = 16 << 20;
/// The journal grows by this much at a time, so a daemon that writes little uses little disk.
const GROW_STEP: u64 = 1 << 20;

/// Appends the frame of `changes` for `epoch` to `out`.
pub fn encode_frame(epoch: u64, changes: &[Change], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and crc, filled in below
    let payload_start = out.len();
    put_u32(out, changes.len());
    for (key, value) in changes {
        let (kind, name) = match key {
            Key::Domain(name) => (KIND_DOMAIN, name.clone()),
            Key::SpConfigs => (KIND_SPCONFIGS, String::new()),
            Key::Meta => (KIND_META, String::new()),
            Key::Migration(id) => (KIND_MIGRATION, id.to_string()),
        };
        out.push(kind);
        put_u32(out, name.len());
        out.extend_from_slice(name.as_bytes());
        match value {
            Some(bytes) => {
                out.push(1);
                put_u32(out, bytes.len());
                out.extend_from_slice(bytes);
            }
            None => {
                out.push(0);
                put_u32(out, 0);
            }
        }
    }
    let payload_len = out.len().saturating_sub(payload_start);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&epoch.to_le_bytes());
    crc.update(&(payload_len as u32).to_le_bytes());
    crc.update(out.get(payload_start..).unwrap_or_default());
    let crc = crc.finalize();
    let mut fields = [0u8; 8];
    fields[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    fields[4..].copy_from_slice(&crc.to_le_bytes());
    if let Some(slot) = out.get_mut(start.saturating_add(12)..start.saturating_add(HEADER_LEN)) {
        slot.copy_from_slice(&fields);
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Records are far below 4 GiB: the registry's own serialized state.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// The frames of `epoch` at the start of `bytes`, in order, and where the last one ends.
pub fn decode_frames(bytes: &[u8], epoch: u64) -> (Vec<Vec<Change>>, usize) {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while let Some((changes, next)) = decode_frame(bytes, at, epoch) {
        frames.push(changes);
        at = next;
    }
    (frames, at)
}

/// The frame at `at`, if it is whole, checksummed and of `epoch`; and where it ends.
fn decode_frame(bytes: &[u8], at: usize, epoch: u64) -> Option<(Vec<Change>, usize)> {
    let mut reader = Reader { bytes, at };
    if reader.take(4)? != MAGIC {
        return None;
    }
    let frame_epoch = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let payload_len = reader.u32()?;
    let crc = reader.u32()?;
    if frame_epoch != epoch {
        return None;
    }
    let payload = reader.take(payload_len)?;
    let end = reader.at;
    let mut check = crc32fast::Hasher::new();
    check.update(&frame_epoch.to_le_bytes());
    check.update(&(payload_len as u32).to_le_bytes());
    check.update(payload);
    if check.finalize() != crc as u32 {
        return None;
    }
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let count = reader.u32()?;
    // Each record takes at least 10 bytes: a count larger than that is not believed.
    let mut changes = Vec::with_capacity(count.min(payload.len() / 10));
    for _ in 0..count {
        let kind = *reader.take(1)?.first()?;
        let name_len = reader.u32()?;
        let name = std::str::from_utf8(reader.take(name_len)?).ok()?;
        // One encoding per record: anything else is corruption.
        let key = match kind {
            KIND_DOMAIN => Key::Domain(name.to_owned()),
            KIND_SPCONFIGS if name.is_empty() => Key::SpConfigs,
            KIND_META if name.is_empty() => Key::Meta,
            KIND_MIGRATION => {
                let id = crate::migration::MigrationId::parse(name)?;
                (id.to_string() == name).then_some(Key::Migration(id))?
            }
            _ => return None,
        };
        let present = *reader.take(1)?.first()?;
        let value_len = reader.u32()?;
        let value = reader.take(value_len)?;
        let value = match present {
            1 => Some(value.to_vec()),
            0 if value.is_empty() => None,
            _ => return None,
        };
        changes.push((key, value));
    }
    if reader.at != payload.len() {
        return None;
    }
    Some((changes, end))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<usize> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    }
}

/// The journal file, open for writing at the end of its last frame.
pub struct Journal {
    file: File,
    path: PathBuf,
    epoch: u64,
    /// Where the next frame goes.
    end: u64,
    /// The file's length: space that exists (zeros or old frames) and is overwritten in place.
    len: u64,
    frame: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` whose frames of `epoch` follow the store's
    /// state; returns it, positioned after them, and their changes in order.
    pub fn open(path: &Path, epoch: u64) -> io::Result<(Journal, Vec<Vec<Change>>)> {
        let created = !path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if created {
            // The file's name must survive a crash, or so would no frame in it.
            sync_parent(path)?;
        }
        let bytes = read_bounded(&file)?;
        let (frames, end) = decode_frames(&bytes, epoch);
        let len = file.metadata()?.len();
        let journal = Journal {
            file,
            path: path.to_owned(),
            epoch,
            end: end as u64,
            len,
            frame: Vec::new(),
        };
        Ok((journal, frames))
    }

    /// The changes of the frames of `epoch` in the journal at `path`, without writing anything
    /// (none when there is no journal).
    pub fn read(path: &Path, epoch: u64) -> io::Result<Vec<Vec<Change>>> {
        match File::open(path) {
            Ok(file) => Ok(decode_frames(&read_bounded(&file)?, epoch).0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a frame of `changes` could ever be journaled: one larger than the whole journal
    /// goes to the store directly.
    pub fn takes(&mut self, changes: &[Change]) -> bool {
        self.frame.clear();
        encode_frame(self.epoch, changes, &mut self.frame);
        (self.frame.len() as u64) <= CAPACITY
    }

    /// Writes the frame [`Journal::takes`] encoded, durably. `Ok(false)`: the journal is full
    /// and needs a checkpoint first (nothing was written).
    pub fn append(&mut self) -> io::Result<bool> {
        let frame_len = self.frame.len() as u64;
        let end = self.end.saturating_add(frame_len);
        if end > CAPACITY {
            return Ok(false);
        }
        if end > self.len {
            // Grow in zero-filled steps: this fdatasync also writes the new size, the ones of
            // later frames in this space do not.
            let new_len = end
                .div_ceil(GROW_STEP)
                .saturating_mul(GROW_STEP)
                .min(CAPACITY);
            let zeros = vec![0u8; usize::try_from(new_len.saturating_sub(self.len)).unwrap_or(0)];
            self.file.write_all_at(&zeros, self.len)?;
            self.len = new_len;
        }
        self.file.write_all_at(&self.frame, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(true)
    }

    /// Starts the journal again at its beginning with `epoch`, once the store holds every
    /// record of the frames before (and records `epoch`, so those are never replayed). A
    /// growth that failed halfway may have left the file longer than `len`: that space is
    /// zero-filled again when it is reached, which is harmless.
    pub fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.end = 0;
    }

    /// Bytes of frames written in this epoch.
    pub fn used(&self) -> u64 {
        self.end
    }
}

/// The whole file, refused beyond the journal's capacity plus a step (a file that large was
/// not written by this daemon).
fn read_bounded(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    if len > CAPACITY.saturating_add(GROW_STEP) {
        return Err(io::Error::other(format!(
            "the journal is {len} bytes, larger than the {CAPACITY} this daemon writes"
        )));
    }
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(n: usize) -> Vec<Change> {
        (0..n)
            .map(|i| {
                let value = (i % 3 != 2).then(|| format!("{{\"n\":{i}}}").into_bytes());
                (Key::Domain(format!("d{i}")), value)
            })
            .chain([
                (Key::Meta, Some(b"{}".to_vec())),
                (Key::SpConfigs, Some(b"[]".to_vec())),
                (
                    Key::Migration(crate::migration::MigrationId(0xabc)),
                    Some(b"m".to_vec()),
                ),
            ])
            .collect()
    }

    #[test]
    fn frames_decode_to_what_was_encoded_and_stop_at_another_epoch_or_a_torn_frame() {
        let mut bytes = Vec::new();
        encode_frame(7, &changes(4), &mut bytes);
        encode_frame(7, &changes(1), &mut bytes);
        let two = bytes.len();
        encode_frame(6, &changes(2), &mut bytes); // an older epoch's frame left in the file
        let (frames, end) = decode_frames(&bytes, 7);
        assert_eq!(frames, [changes(4), changes(1)]);
        assert_eq!(end, two);
        // Torn: a frame cut anywhere is not replayed; the whole ones before it are.
        let mut first = Vec::new();
        encode_frame(7, &changes(4), &mut first);
        for cut in 0..two {
            let (frames, end) = decode_frames(&bytes[..cut], 7);
            let whole = if cut >= first.len() { 1 } else { 0 };
            assert_eq!(frames.len(), whole, "cut at {cut}");
            assert_eq!(end, whole * first.len());
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_frame_ends_replay_there() {
        let mut bytes = Vec::new();
        encode_frame(1, &changes(3), &mut bytes);
        let first = bytes.len();
        encode_frame(1, &changes(2), &mut bytes);
        for at in first..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x10;
            let (frames, end) = decode_frames(&corrupt, 1);
            assert_eq!(frames, [changes(3)], "flip at {at}");
            assert_eq!(end, first);
        }
    }

    #[test]
    fn a_record_with_a_second_encoding_is_refused() {
        // Meta with a name, or a migration id in capitals, would decode to a record that
        // encodes differently: the journal takes both for corruption.
        let frame_of = |kind: u8, name: &str| {
            let mut payload = Vec::new();
            put_u32(&mut payload, 1);
            payload.push(kind);
            put_u32(&mut payload, name.len());
            payload.extend_from_slice(name.as_bytes());
            payload.extend_from_slice(&[1, 1, 0, 0, 0, b'x']);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&0u64.to_le_bytes());
            crc.update(&(payload.len() as u32).to_le_bytes());
            crc.update(&payload);
            let mut frame = MAGIC.to_vec();
            frame.extend_from_slice(&0u64.to_le_bytes());
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc.finalize().to_le_bytes());
            frame.extend_from_slice(&payload);
            frame
        };
        let id = "0".repeat(29) + "abc";
        assert_eq!(decode_frames(&frame_of(KIND_META, ""), 0).0.len(), 1);
        assert_eq!(decode_frames(&frame_of(KIND_MIGRATION, &id), 0).0.len(), 1);
        assert!(decode_frames(&frame_of(KIND_META, "x"), 0).0.is_empty());
        assert!(
            decode_frames(&frame_of(KIND_SPCONFIGS, "x"), 0)
                .0
                .is_empty()
        );
        assert!(
            decode_frames(&frame_of(KIND_MIGRATION, &id.to_uppercase()), 0)
                .0
                .is_empty()
        );
    }

    #[test]
    fn hostile_bytes_never_panic_and_zeros_are_no_frame() {
        assert_eq!(decode_frames(&[0u8; 4096], 0), (Vec::new(), 0));
        let mut bytes = Vec::new();
        encode_frame(0, &changes(2), &mut bytes);
        // Every prefix, and lengths that claim more than there is.
        for cut in 0..bytes.len() {
            let _ = decode_frames(&bytes[..cut], 0);
        }
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_frames(&huge, 0).0.is_empty());
    }

    #[test]
    fn appended_frames_are_read_back_after_a_reopen_and_a_restart_hides_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.journal");
        let (mut journal, frames) = Journal::open(&path, 3).unwrap();
        assert!(frames.is_empty());
        for n in 1..=3 {
            assert!(journal.takes(&changes(n)));
            assert!(journal.append().unwrap());
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), GROW_STEP);
        drop(journal);
        let (mut journal, frames) = Journal::open(&path, 3).unwrap();
        assert_eq!(frames, [changes(1), changes(2), changes(3)]);
        assert_eq!(Journal::read(&path, 3).unwrap().len(), 3);
        // A checkpoint moved the store to epoch 4: the old frames are never replayed, and the
        // new ones overwrite them from the start.
        journal.restart(4);
        assert!(journal.takes(&changes(5)));
        assert!(journal.append().unwrap());
        drop(journal);
        let (_, frames) = Journal::open(&path, 4).unwrap();
        assert_eq!(frames, [changes(5)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), GROW_STEP);
    }

    #[test]
    fn a_full_journal_asks_for_a_checkpoint_and_a_frame_larger_than_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(&dir.path().join("j"), 0).unwrap();
        let big = vec![(Key::Meta, Some(vec![7u8; (CAPACITY / 3) as usize]))];
        assert!(journal.takes(&big));
        assert!(journal.append().unwrap());
        assert!(journal.append().unwrap());
        assert!(!journal.append().unwrap(), "a fourth third does not fit");
        assert!(journal.used() <= CAPACITY);
        let too_big = vec![(Key::Meta, Some(vec![7u8; CAPACITY as usize]))];
        assert!(!journal.takes(&too_big));
    }
}
