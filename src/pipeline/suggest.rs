//! "Did you mean ...?" for misspelled names and keys.

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("errros", ["errors", "access"]), Some("errors"));
        assert_eq!(did_you_mean("paralelism", ["parallelism", "name"]), Some("parallelism"));
        assert_eq!(did_you_mean("zzz", ["errors", "access"]), None);
    }
}
