//! How long the certificates this coordinator signs live: agents' and coordinators' own
//! (`cert_lifetime`, default 90 days) and users' sessions (`user_cert_lifetime`, default 12 h).
//! Given as `30s`, `15m`, `12h`, `90d` or bare seconds, as flags or TOML strings.

use std::time::Duration;

use nexus_protocol::join::{DEFAULT_NODE_CERT_SECS, DEFAULT_USER_CERT_SECS};

use nexus_protocol::settings::Problems;

use super::ConfigError;

/// The shortest lifetime accepted: renewal at two thirds of it must still leave time to renew.
pub const MIN_LIFETIME_SECS: u64 = 10;
/// The longest: ten years, the CA's own default life.
pub const MAX_LIFETIME_SECS: u64 = 10 * 365 * 86_400;

/// The lifetimes of the certificates a coordinator signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Agents' and coordinators' certificates.
    pub node: Duration,
    /// Users' certificates (a login session).
    pub user: Duration,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            node: Duration::from_secs(DEFAULT_NODE_CERT_SECS),
            user: Duration::from_secs(DEFAULT_USER_CERT_SECS),
        }
    }
}

/// Reads a lifetime given as `--flag` (or its file key), checking its range.
pub fn parse_lifetime(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let secs = nexus_protocol::policy::parse_secs(text)
        .map_err(|error| ConfigError::Invalid(format!("--{flag}: {}", error.0)))?;
    if !(MIN_LIFETIME_SECS..=MAX_LIFETIME_SECS).contains(&secs) {
        return Err(ConfigError::Invalid(format!(
            "--{flag} must be between {MIN_LIFETIME_SECS}s and {}d, not {text:?}",
            MAX_LIFETIME_SECS / 86_400
        )));
    }
    Ok(Duration::from_secs(secs))
}

/// The lifetimes from the flags, else the file, else the defaults; `None` with each problem
/// kept in `problems` (both are checked).
pub fn lifetimes(
    flags: (Option<&str>, Option<&str>),
    file: (Option<&str>, Option<&str>),
    problems: &mut Problems<ConfigError>,
) -> Option<Lifetimes> {
    let defaults = Lifetimes::default();
    let mut read = |flag: &str, text: Option<&str>, default: Duration| match text {
        Some(text) => problems.take(parse_lifetime(flag, text)),
        None => Some(default),
    };
    let node = read("cert-lifetime", flags.0.or(file.0), defaults.node);
    let user = read("user-cert-lifetime", flags.1.or(file.1), defaults.user);
    Some(Lifetimes {
        node: node?,
        user: user?,
    })
}

/// A lifetime as the configuration shows it: `90d`, `12h`, `20s`.
pub fn show(lifetime: Duration) -> String {
    let secs = lifetime.as_secs();
    for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= scale && secs.is_multiple_of(scale) {
            return format!("{}{unit}", secs / scale);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lifetimes, or every problem found.
    fn lifetimes(
        flags: (Option<&str>, Option<&str>),
        file: (Option<&str>, Option<&str>),
    ) -> Result<Lifetimes, ConfigError> {
        let mut problems = Problems::default();
        let found = super::lifetimes(flags, file, &mut problems);
        problems.finish(found).map_err(|mut all| {
            if all.len() == 1 {
                all.remove(0)
            } else {
                ConfigError::Several(all)
            }
        })
    }

    #[test]
    fn lifetimes_come_from_flags_then_the_file_then_the_defaults() {
        let none = lifetimes((None, None), (None, None)).unwrap();
        assert_eq!(none, Lifetimes::default());
        assert_eq!(show(none.node), "90d");
        assert_eq!(show(none.user), "12h");
        let set = lifetimes((Some("20s"), None), (Some("1h"), Some("30m"))).unwrap();
        assert_eq!(set.node, Duration::from_secs(20));
        assert_eq!(set.user, Duration::from_secs(1800));
        assert_eq!(show(set.node), "20s");
        for bad in ["0", "5s", "11y", "forever", "4000d"] {
            let error = lifetimes((Some(bad), None), (None, None)).unwrap_err();
            assert!(
                error.to_string().contains("--cert-lifetime"),
                "{bad}: {error}"
            );
        }
        let error = lifetimes((None, None), (None, Some("1s"))).unwrap_err();
        assert!(
            error.to_string().contains("--user-cert-lifetime"),
            "{error}"
        );
        // Both, when both are wrong.
        let error = lifetimes((Some("1s"), None), (None, Some("1s"))).unwrap_err();
        assert!(
            matches!(error, ConfigError::Several(ref all) if all.len() == 2),
            "{error}"
        );
    }
}
