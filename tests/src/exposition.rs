//! Reading what a daemon's `/metrics` says, in the classic text format: which metric families it
//! exports and a sample's value. A reader for tests, not a parser for production: it trusts the
//! daemons' own output (label values here hold no `,` or `"`).

use std::collections::BTreeSet;

/// The families named by `# TYPE` lines (a counter's name with its `_total`, as the classic
/// format writes it).
pub fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The value of the sample `name` whose labels include every one of `labels` (others may be
/// there too); the first such sample.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample, label_text) = match series.split_once('{') {
                Some((sample, rest)) => (sample, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if sample != name {
                return None;
            }
            let present: Vec<(&str, &str)> = label_text
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, quoted) = pair.split_once('=')?;
                    Some((key, quoted.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|wanted| present.contains(wanted))
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// The sum of every sample `name` whose labels include `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| value(line, name, labels))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP nexus_starts_total Starts.\n# TYPE nexus_starts_total counter\n\
        nexus_starts_total{kind=\"cold\",outcome=\"ok\"} 2\n\
        nexus_starts_total{kind=\"warm\",outcome=\"ok\"} 1\n\
        # TYPE nexus_up gauge\nnexus_up 1.0\n";

    #[test]
    fn families_and_values() {
        assert_eq!(
            families(TEXT),
            BTreeSet::from(["nexus_starts_total".to_string(), "nexus_up".to_string()])
        );
        assert_eq!(
            value(TEXT, "nexus_starts_total", &[("kind", "warm")]),
            Some(1.0)
        );
        assert_eq!(
            value(TEXT, "nexus_starts_total", &[("kind", "switch")]),
            None
        );
        assert_eq!(value(TEXT, "nexus_up", &[]), Some(1.0));
        assert_eq!(value(TEXT, "nexus_u", &[]), None);
        assert_eq!(sum(TEXT, "nexus_starts_total", &[("outcome", "ok")]), 3.0);
    }
}
