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
fn journal_corpus() {
    replay("journal", ldmd::fuzz::journal);
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

/// The ldm_document seed that is a whole reply (every listing of a daemon set up like the
/// guide's examples, with a C1 control character in a variable) reaches the renderings: its
/// domains are read, and the control character is escaped before a terminal sees it.
#[test]
fn the_reply_seed_reaches_every_rendering_and_its_control_character_is_escaped() {
    use ldmd::cli::{text, view};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ldm_document/reply-every-listing");
    let seed = std::fs::read_to_string(path).unwrap();
    let reply = ldmd::ldm::Reply::from_xml(&seed).unwrap();
    let names: Vec<String> = view::domain_rows(&reply)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["primary", "ldg1", "ldg2"]);
    let long = text::long_listing(&reply, &[], false);
    assert!(long.contains("nvramrc=\u{9b}31mred"), "{long}");
    assert!(text::terminal_safe(&long).contains("nvramrc=\\u{9b}31mred"));
    ldmd::fuzz::ldm_document(seed.as_bytes());
}
