//! The sans-IO line (architecture.md): the protocol and rules modules never touch sockets,
//! files, threads, async runtimes or the clock. This test fails if one of them starts to.

use std::fs;
use std::path::Path;

/// Modules that must stay pure.
const PURE: &[&str] = &[
    "src/xml",
    "src/xmpp",
    "src/ldm",
    "src/cli",
    "src/limits.rs",
    "src/registry/state.rs",
    "src/registry/run.rs",
    "src/registry/actions",
    "src/registry/listing.rs",
    "src/registry/listing",
    "src/registry/machine.rs",
    "src/registry/model.rs",
    "src/registry/units.rs",
    "src/migration/mod.rs",
    "src/migration/plan.rs",
    "src/migration/source.rs",
    "src/migration/target.rs",
    "src/migration/wire.rs",
];

/// What a pure module must not mention (outside its tests).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "Instant::now",
    "SystemTime::now",
    "std::net",
    "std::fs",
    "std::thread",
    "std::process",
    "libc::",
    "getrandom",
    "crate::server",
    "crate::auth",
    "crate::metrics",
];

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for entry in fs::read_dir(path).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's text before its `#[cfg(test)]` module, if any; whole test files are skipped.
fn non_test_source(path: &Path) -> Option<String> {
    let is_test_file = path.file_name().is_some_and(|n| n == "tests.rs")
        || path
            .components()
            .any(|c| c.as_os_str() == "checklist" || c.as_os_str() == "tests");
    if is_test_file {
        return None;
    }
    let text = fs::read_to_string(path).unwrap();
    Some(match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    })
}

#[test]
fn pure_modules_do_no_io_and_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for module in PURE {
        rust_files(&root.join(module), &mut files);
    }
    assert!(files.len() > 10, "the pure modules were not found");
    let mut offences = Vec::new();
    for file in &files {
        let Some(source) = non_test_source(file) else {
            continue;
        };
        for (number, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!(
                        "{}:{}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "pure modules must stay sans-IO:\n{}",
        offences.join("\n")
    );
}
