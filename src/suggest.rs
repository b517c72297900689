//! Edit distance for "did you mean" suggestions.

/// Insertions, deletions, substitutions and swaps of two adjacent
/// characters each cost one (the optimal string alignment distance, as
/// `strsim` computes it; `strsim` is already in the tree through clap).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
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
}
