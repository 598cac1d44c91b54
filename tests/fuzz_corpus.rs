//! Replays every seed-corpus file of every fuzz target (`fuzz/corpus/<target>/`) through the same
//! body the fuzzer runs (`ldmd::fuzz`), so the corpus, including each crash the fuzzer ever
//! found, is checked by an ordinary stable `cargo test` on every run.

use std::path::Path;

/// Runs `body` on every file of `fuzz/corpus/<target>`; there must be some.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn framer_corpus() {
    replay("framer", ldmd::fuzz::framer);
}

#[test]
fn connection_corpus() {
    replay("connection", ldmd::fuzz::connection);
}

#[test]
fn sasl_plain_corpus() {
    replay("sasl_plain", ldmd::fuzz::sasl_plain);
}

#[test]
fn config_corpus() {
    replay("config", ldmd::fuzz::config);
}

#[test]
fn ldm_document_corpus() {
    replay("ldm_document", ldmd::fuzz::ldm_document);
}

#[test]
fn registry_corpus() {
    replay("registry", ldmd::fuzz::registry);
}

#[test]
fn migration_offer_corpus() {
    replay("migration_offer", ldmd::fuzz::migration_offer);
}
