//! Liveness and readiness as checks, and how `/livez` and `/readyz` answer them: 200 when every
//! check passes, 503 otherwise, with `?verbose` listing each as `[+]name ok` or
//! `[-]name failed: why` (the Kubernetes API server's convention).

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// Why it failed, or `None` when it passed.
    pub failure: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str) -> Check {
        Check {
            name,
            failure: None,
        }
    }

    pub fn failed(name: &'static str, why: impl Into<String>) -> Check {
        Check {
            name,
            failure: Some(why.into()),
        }
    }

    /// Passes when `failure` is `None`.
    pub fn from_failure(name: &'static str, failure: Option<String>) -> Check {
        Check { name, failure }
    }

    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// An HTTP answer to a health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The answer for `checks` (`what` names the probe, "livez" or "readyz"). Without `verbose`, the
/// body is a line: `ok`, or the failed checks' names and reasons; with it, every check.
pub fn answer(what: &str, checks: &[Check], verbose: bool) -> Answer {
    let healthy = checks.iter().all(Check::passed);
    let mut body = String::new();
    for check in checks {
        match &check.failure {
            None if verbose => body.push_str(&format!("[+]{} ok\n", check.name)),
            None => {}
            Some(why) => body.push_str(&format!("[-]{} failed: {}\n", check.name, one_line(why))),
        }
    }
    if healthy {
        body.push_str(&format!("{what} check passed\n"));
    } else {
        body.push_str(&format!("{what} check failed\n"));
    }
    Answer {
        status: if healthy { 200 } else { 503 },
        body,
    }
}

/// A reason on one line, whatever it holds.
fn one_line(why: &str) -> String {
    why.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        vec![
            Check::ok("raft-leader"),
            Check::failed("applied", "applied index 7 is behind\nthe commit index 9"),
        ]
    }

    #[test]
    fn one_failure_makes_it_unavailable_and_names_itself() {
        let answer = answer("readyz", &checks(), false);
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.body,
            "[-]applied failed: applied index 7 is behind the commit index 9\nreadyz check failed\n"
        );
    }

    #[test]
    fn verbose_lists_every_check() {
        let answer = answer("readyz", &checks(), true);
        assert_eq!(
            answer.body,
            "[+]raft-leader ok\n[-]applied failed: applied index 7 is behind the commit index 9\n\
             readyz check failed\n"
        );
    }

    #[test]
    fn all_passing_is_200() {
        let checks = [Check::ok("loop"), Check::from_failure("store", None)];
        assert_eq!(answer("livez", &checks, false).status, 200);
        assert_eq!(
            answer("livez", &checks, true).body,
            "[+]loop ok\n[+]store ok\nlivez check passed\n"
        );
        assert_eq!(answer("livez", &[], false).body, "livez check passed\n");
    }
}
