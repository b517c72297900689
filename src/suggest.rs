//! "Did you mean": the closest known name to a misspelt one.

/// Insertions, deletions, substitutions and swaps of two adjacent
/// characters each cost one (the optimal string alignment distance, as
/// `strsim` computes it; `strsim` is already in the tree through clap).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

/// The closest of `candidates` to `name`, if it is close enough to be a typo.
pub fn closest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().max(name.len()))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_count_once() {
        assert_eq!(distance("kind", "kidn"), 1);
        assert_eq!(distance("owner", "ownr"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("ca", "abc"), 3);
    }

    #[test]
    fn closest_is_a_typo_or_nothing() {
        assert_eq!(closest("kidn", ["id", "kind"]), Some("kind"));
        assert_eq!(closest("ownr", ["owner", "id"]), Some("owner"));
        assert_eq!(closest("zzzzzz", ["owner", "id"]), None);
    }
}
