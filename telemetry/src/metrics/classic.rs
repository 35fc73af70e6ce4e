//! Prometheus' classic text format (0.0.4) from the crate's OpenMetrics, for scrapers that do
//! not ask for OpenMetrics (`curl`, `promtool check metrics`). The two differ, for what Nexus
//! exposes, in three places only, so the crate still encodes every value and label:
//!
//! - a counter's family is named with its `_total` in the classic format (`# TYPE x_total
//!   counter`), without it in OpenMetrics (`# TYPE x counter`); the samples are the same;
//! - OpenMetrics ends with `# EOF`;
//! - OpenMetrics may carry `# UNIT` lines (Nexus puts units in names and registers none).

/// The classic text of `open_metrics`, the crate's output.
pub(super) fn from_open_metrics(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), "");
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            match help.take() {
                Some((helped, text)) if helped == name => {
                    flush_help(&mut out, Some((helped, text)), suffix);
                }
                other => flush_help(&mut out, other, ""),
            }
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        flush_help(&mut out, help.take(), "");
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help, "");
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: &str) {
    if let Some((name, text)) = help {
        out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::from_open_metrics;

    #[test]
    fn counters_take_their_total_and_the_end_marker_goes() {
        let open = "# HELP a_seconds Time.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                    a_seconds_sum 1.0\n# HELP b Bs.\n# TYPE b counter\nb_total{x=\"1\"} 2\n\
                    # TYPE c unknown\nc 1\n# EOF\n";
        assert_eq!(
            from_open_metrics(open),
            "# HELP a_seconds Time.\n# TYPE a_seconds histogram\na_seconds_sum 1.0\n\
             # HELP b_total Bs.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\n\
             # TYPE c untyped\nc 1\n"
        );
    }

    #[test]
    fn a_help_text_with_spaces_and_escapes_passes_unchanged() {
        let open = "# HELP b Counts \\n things, and more.\n# TYPE b counter\nb_total 0\n# EOF\n";
        assert_eq!(
            from_open_metrics(open),
            "# HELP b_total Counts \\n things, and more.\n# TYPE b_total counter\nb_total 0\n"
        );
    }
}
