//! Man pages and shell completions, generated from the binaries' clap definitions so that they
//! never disagree with `--help`: `ldmd --generate KIND` and `ldm --generate KIND` print one on
//! stdout (the Debian package's build writes them all; see the README, "Installing as a
//! service"). Hidden: neither `--help` lists it.

use std::io::Write;

/// What `--generate` can print.
pub const KINDS: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// The first two arguments ask for generated documentation: `PROG --generate KIND`.
pub fn requested(args: &[std::ffi::OsString]) -> Option<String> {
    match args {
        [_, flag, kind] if flag == "--generate" => Some(kind.to_string_lossy().into_owned()),
        _ => None,
    }
}

/// Writes `kind` for `command` to `out`; a man page goes in `section` (8 for the daemon, 1 for
/// commands).
pub fn generate(
    mut command: clap::Command,
    kind: &str,
    section: &str,
    out: &mut dyn Write,
) -> Result<(), String> {
    let name = command.get_name().to_owned();
    // Rendered whole first: clap_complete panics on a write error (a closed pipe), and a
    // half-written page is no use anyway.
    let mut text = Vec::new();
    match kind {
        "man" => clap_mangen::Man::new(command)
            .section(section)
            .render(&mut text)
            .map_err(|e| e.to_string())?,
        "bash" | "zsh" | "fish" => {
            let shell = match kind {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command, name, &mut text);
        }
        _ => {
            return Err(format!(
                "--generate {kind}: expected one of {}",
                KINDS.join(", ")
            ));
        }
    }
    out.write_all(&text).map_err(|e| e.to_string())
}
