//! Suggestions for a mistyped subcommand: the nearest names by edit distance, nearest first,
//! and only a few. (clap's own tip listed every name it found similar, up to 17 for
//! `add-vcpo`, in no useful order, with the right one last.)

/// At most this many suggestions.
const SUGGESTIONS_MAX: usize = 3;

/// The names of `candidates` within a few edits of `typo`, nearest first (ties in name order).
pub fn closest<'a>(typo: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    // A third of the typo's length, at least 2: `lst` finds `list`, `add-vcpo` finds
    // `add-vcpu`, and a word that is nothing like any name finds nothing.
    let within = (typo.chars().count() / 3).max(2);
    let mut near: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|name| (strsim::levenshtein(typo, name), name))
        .filter(|(distance, _)| *distance <= within)
        .collect();
    near.sort_unstable();
    near.dedup_by(|a, b| a.1 == b.1);
    near.into_iter()
        .take(SUGGESTIONS_MAX)
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 8] = [
        "add-domain",
        "add-vcpu",
        "add-vcc",
        "add-core",
        "add-crypto",
        "list",
        "list-domain",
        "ls",
    ];

    #[test]
    fn the_nearest_comes_first_and_only_a_few_come() {
        assert_eq!(closest("add-vcpo", NAMES), ["add-vcpu", "add-vcc"]);
        assert_eq!(closest("lst", NAMES), ["list", "ls"]);
        assert_eq!(closest("list-domian", NAMES), ["list-domain"]);
        assert!(closest("frobnicate", NAMES).is_empty());
    }
}
