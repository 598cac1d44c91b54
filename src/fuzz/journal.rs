//! The journal's frame decoder, fed a file's bytes (a disk can hand back anything).
//!
//! Invariant: any bytes decode to some whole frames of epoch 0 and where they end, never a
//! panic; what decodes encodes back to exactly the bytes it came from (one encoding per frame); and the input cut anywhere inside
//! the last frame decodes to the frames before it.

use crate::registry::journal::{decode_frames, encode_frame};

pub fn journal(data: &[u8]) {
    // Frames of any other epoch in the input must end the replay.
    let epoch = 0;
    let (frames, end) = decode_frames(data, epoch);
    assert!(end <= data.len());
    let mut again = Vec::new();
    for frame in &frames {
        encode_frame(epoch, frame, &mut again);
    }
    assert_eq!(
        again.as_slice(),
        &data[..end],
        "a decoded frame encodes back"
    );
    if let Some(last) = frames.len().checked_sub(1) {
        let mut before = Vec::new();
        for frame in &frames[..last] {
            encode_frame(epoch, frame, &mut before);
        }
        let cut = (before.len() + end) / 2;
        let (shorter, shorter_end) = decode_frames(&data[..cut], epoch);
        assert_eq!(shorter.len(), last);
        assert_eq!(shorter_end, before.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::MigrationId;
    use crate::registry::state::Key;

    /// Three frames of every kind of record, a deletion among them, then a frame of another
    /// epoch and a torn one: the seed of `fuzz/corpus/journal`, kept as generated
    /// (`LDMD_WRITE_SEEDS=1` rewrites it).
    #[test]
    fn the_seed_holds_every_kind_of_record_and_both_ends_of_a_replay() {
        let mut seed = Vec::new();
        encode_frame(
            0,
            &[
                (
                    Key::Domain("ldg1".into()),
                    Some(br#"{"name":"ldg1"}"#.to_vec()),
                ),
                (Key::Meta, Some(b"{}".to_vec())),
            ],
            &mut seed,
        );
        encode_frame(0, &[(Key::SpConfigs, Some(b"[]".to_vec()))], &mut seed);
        encode_frame(
            0,
            &[
                (Key::Domain("ldg1".into()), None),
                (Key::Migration(MigrationId(0xabc)), Some(b"m".to_vec())),
            ],
            &mut seed,
        );
        let whole = seed.len();
        encode_frame(1, &[(Key::Meta, None)], &mut seed);
        let mut torn = Vec::new();
        encode_frame(0, &[(Key::Meta, None)], &mut torn);
        seed.extend_from_slice(&torn[..torn.len() - 3]);
        assert_eq!(decode_frames(&seed, 0).1, whole);
        journal(&seed);

        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/journal/frames");
        if std::env::var_os("LDMD_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &seed).unwrap();
        }
        assert_eq!(
            std::fs::read(&path).unwrap_or_default(),
            seed,
            "{} is stale: run with LDMD_WRITE_SEEDS=1",
            path.display()
        );
    }
}
