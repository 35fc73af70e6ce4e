//! The standing of this agent's certificate at start, and what to do about it: start with it,
//! enrol with the join token first, or refuse to start saying what is wrong and which flag fixes
//! it. [`decide`] and [`explain`] are pure; [`inspect`] reads the tls dir. Apart from `enrol`
//! (which acts on the decision) so that the configuration's check can judge a start too.

use std::path::{Path, PathBuf};

use nexus_protocol::identity::Identity;
use nexus_protocol::pki::PkiDir;
use nexus_protocol::transport::Credentials;

/// The state of this agent's certificate in its tls dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Loadable and not expired.
    Valid { not_after: i64 },
    /// The certificate or the key file is not there (named).
    Missing(Vec<PathBuf>),
    /// The files are there but cannot be used (why).
    Unusable(String),
    /// Expired at `not_after` (seconds since the epoch).
    Expired { not_after: i64 },
}

/// What to do at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start with the certificate there; `token_unused`: a token was given all the same.
    Start { token_unused: bool },
    /// Enrol with the token first.
    Enrol,
    /// Refuse to start: there is no usable certificate and no token.
    Refuse,
}

/// What to do with the certificate's `standing`, given a token or not.
pub fn decide(standing: &Standing, token: bool) -> Decision {
    match (standing, token) {
        (Standing::Valid { .. }, token_unused) => Decision::Start { token_unused },
        (_, true) => Decision::Enrol,
        (_, false) => Decision::Refuse,
    }
}

/// Why the certificate cannot be used, in a sentence; with no token, what fixes it.
pub fn explain(standing: &Standing, identity: &Identity, token: bool) -> String {
    let what = match standing {
        Standing::Valid { not_after } => {
            return format!(
                "{identity}'s certificate is valid until {not_after} (seconds since the epoch)"
            );
        }
        Standing::Missing(paths) => {
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!(
                "this agent has no certificate for {identity}: {} missing",
                paths.join(" and ")
            )
        }
        Standing::Unusable(reason) => {
            format!("this agent's certificate for {identity} cannot be used: {reason}")
        }
        Standing::Expired { not_after } => format!(
            "this agent's certificate for {identity} expired at {not_after} (seconds since the epoch; it was off past its expiry)"
        ),
    };
    if token {
        return what;
    }
    format!(
        "{what}. Give it a join token from `nexus admin token create --role agent` in a file, \
         --join-token-file PATH (`-` reads it from stdin), or in the environment variable \
         NEXUS_JOIN_TOKEN, and it enrols itself; or point --tls-dir at a directory with files \
         from `nexus pki issue agent`"
    )
}

/// Reads the standing of `identity`'s certificate in `dir` at `now_secs`.
pub fn inspect(dir: &Path, identity: &Identity, now_secs: i64) -> Standing {
    let pki = PkiDir::new(dir);
    let missing: Vec<PathBuf> = [pki.cert(identity), pki.key(identity)]
        .into_iter()
        .filter(|path| !path.exists())
        .collect();
    if !missing.is_empty() {
        return Standing::Missing(missing);
    }
    let credentials = match Credentials::from_pki_dir(dir, identity) {
        Ok(credentials) => credentials,
        Err(error) => return Standing::Unusable(error.to_string()),
    };
    match credentials.expiries().own {
        Some(not_after) if not_after <= now_secs => Standing::Expired { not_after },
        Some(not_after) => Standing::Valid { not_after },
        None => Standing::Unusable("its expiry cannot be read".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_protocol::HostId;

    fn host() -> Identity {
        Identity::Agent(HostId::new("h1").unwrap())
    }

    #[test]
    fn an_agent_enrols_only_when_it_must_and_can() {
        let valid = Standing::Valid { not_after: 100 };
        let expired = Standing::Expired { not_after: 100 };
        let missing = Standing::Missing(vec!["/t/agent-h1.pem".into()]);
        let unusable = Standing::Unusable("the key does not go with the certificate".into());
        assert_eq!(
            decide(&valid, false),
            Decision::Start {
                token_unused: false
            }
        );
        assert_eq!(decide(&valid, true), Decision::Start { token_unused: true });
        for standing in [&expired, &missing, &unusable] {
            assert_eq!(decide(standing, true), Decision::Enrol, "{standing:?}");
            assert_eq!(decide(standing, false), Decision::Refuse, "{standing:?}");
        }
    }

    #[test]
    fn a_refusal_says_what_is_wrong_and_which_flag_fixes_it() {
        let missing = Standing::Missing(vec!["/t/agent-h1.pem".into(), "/t/agent-h1.key".into()]);
        let text = explain(&missing, &host(), false);
        for part in [
            "/t/agent-h1.pem and /t/agent-h1.key missing",
            "--join-token-file PATH",
            "NEXUS_JOIN_TOKEN",
            "--tls-dir",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        let text = explain(&Standing::Expired { not_after: 1_700 }, &host(), false);
        assert!(
            text.contains("expired at 1700") && text.contains("--join-token-file"),
            "{text}"
        );
        let text = explain(&Standing::Expired { not_after: 1_700 }, &host(), true);
        assert!(!text.contains("--join-token-file"), "{text}");
    }
}
