//! The credential store's vocabulary: what an admin stores ([`CredentialSpec`] and a [`Secret`]),
//! what anyone may see of it ([`CredentialView`], never the secret), what an agent asks for
//! ([`CredentialAsk`]) and is given ([`GrantedCredential`]).
//!
//! A [`Secret`] crosses the wire only inside the mutually authenticated connection, is never
//! shown by `Debug` (it prints `<redacted>`), has no `Display`, and is wiped from memory when
//! dropped. The coordinators keep it sealed with an AEAD under a key that is never replicated.
//! Which credential serves a URL or a registry is decided here, purely ([`choose`]).

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::InvalidValue;
use crate::{HostId, WorkspaceName};

/// The longest name, username or scope taken.
pub const MAX_FIELD_LEN: usize = 512;
/// The longest secret taken (a token or a password).
pub const MAX_SECRET_LEN: usize = 16 << 10;
/// The most credentials the store holds.
pub const MAX_CREDENTIALS: usize = 1024;

/// A password or token. Never printed; wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that hands it on (git's environment, the engine's
    /// auth header, the AEAD).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A secret read from a line of stdin: trailing newlines removed; empty or too long refused.
    pub fn from_line(line: &str) -> Result<Secret, InvalidValue> {
        let value = line.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(InvalidValue("the password is empty".into()));
        }
        if value.len() > MAX_SECRET_LEN {
            return Err(InvalidValue(format!(
                "the password is longer than {MAX_SECRET_LEN} bytes"
            )));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(InvalidValue(
                "the password must not contain control characters".into(),
            ));
        }
        Ok(Secret(value.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CredentialKind {
    /// HTTP basic authentication for git remotes whose URL starts with the scope.
    Git,
    /// A container registry (the scope is its server, e.g. `registry.example.com:5000`).
    Registry,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Git => "git",
            CredentialKind::Registry => "registry",
        }
    }
}

/// A credential's public part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSpec {
    /// `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
    pub name: String,
    pub kind: CredentialKind,
    /// For git, a URL prefix (`https://git.example.com/team/`); for a registry, its server.
    pub scope: String,
    pub username: String,
}

impl CredentialSpec {
    pub fn check(&self) -> Result<(), InvalidValue> {
        check_name(&self.name)?;
        for (what, value) in [("scope", &self.scope), ("username", &self.username)] {
            if value.is_empty() || value.len() > MAX_FIELD_LEN {
                return Err(InvalidValue(format!(
                    "the {what} must be 1 to {MAX_FIELD_LEN} bytes long"
                )));
            }
            if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(InvalidValue(format!(
                    "the {what} must not contain whitespace or control characters"
                )));
            }
        }
        if self.username.contains(':') {
            return Err(InvalidValue("a username must not contain ':'".into()));
        }
        match self.kind {
            CredentialKind::Git => crate::git::check_url(&self.scope),
            CredentialKind::Registry if self.scope.contains('/') => Err(InvalidValue(format!(
                "a registry's scope is its server (host[:port]), not {:?}",
                self.scope
            ))),
            CredentialKind::Registry => Ok(()),
        }
    }
}

/// A credential's name: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
pub fn check_name(name: &str) -> Result<(), InvalidValue> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!(
            "{name:?} is not a credential name (lowercase letters, digits, '.', '_', '-'; at most 64)"
        )))
    }
}

/// What anyone may see of a stored credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub spec: CredentialSpec,
    /// The id of the key its secret is sealed with.
    pub key_id: String,
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
    pub last_used_by: Option<HostId>,
}

/// What an agent needs a credential for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialPurpose {
    /// Fetching this repository URL.
    Git { url: String },
    /// Pulling from this registry server.
    Registry { server: String },
}

/// An agent's request for a credential, for one of its own workspaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialAsk {
    pub workspace: WorkspaceName,
    pub purpose: CredentialPurpose,
}

/// A credential given to an agent for one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedCredential {
    pub name: String,
    pub username: String,
    pub secret: Secret,
}

/// What a host found when it tried a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialCheckReport {
    pub name: String,
    pub host: HostId,
    /// `None` when the remote or registry took it.
    pub error: Option<crate::WireError>,
}

/// What a host is asked to try: a credential and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialProbe {
    pub spec: CredentialSpec,
    pub secret: Secret,
    /// For git, the repository to `ls-remote` (the scope itself when it names one).
    pub target: String,
}

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotationReport {
    pub key_id: String,
    pub reencrypted: u32,
    pub already: u32,
}

/// Of `candidates` (kind, scope, name), the one that serves `purpose`: for git, the longest URL
/// prefix of the repository's URL that ends at a path boundary; for a registry, the server
/// itself. Ties go to the first name in order.
pub fn choose<'a>(
    candidates: impl IntoIterator<Item = (CredentialKind, &'a str, &'a str)>,
    purpose: &CredentialPurpose,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for (kind, scope, name) in candidates {
        let fits = match purpose {
            CredentialPurpose::Git { url } => kind == CredentialKind::Git && url_under(url, scope),
            CredentialPurpose::Registry { server } => {
                kind == CredentialKind::Registry && scope == server
            }
        };
        let better = match best {
            None => true,
            Some((len, held)) => scope.len() > len || (scope.len() == len && name < held),
        };
        if fits && better {
            best = Some((scope.len(), name));
        }
    }
    best.map(|(_, name)| name)
}

/// Whether `url` is `prefix` or lies under it at a path boundary: `https://x/team` covers
/// `https://x/team/app.git` but not `https://x/teamwork.git`.
fn url_under(url: &str, prefix: &str) -> bool {
    let Some(rest) = url.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
}

/// The registry server an image reference pulls from, when it names one: `host[:port]/repo:tag`
/// names `host[:port]` (the first part holds a `.` or `:`, or is `localhost`); `repo:tag` and
/// `team/repo` pull from Docker Hub, which has no server here.
pub fn registry_of(image: &str) -> Option<&str> {
    let (first, rest) = image.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_and_reads_one_line() {
        let secret = Secret::from_line("hunter2\n").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let granted = GrantedCredential {
            name: "ci".into(),
            username: "bot".into(),
            secret,
        };
        assert!(!format!("{granted:?}").contains("hunter2"));
        assert!(Secret::from_line("\n").is_err());
        assert!(Secret::from_line("a\u{7}b").is_err());
        assert!(Secret::from_line(&"x".repeat(MAX_SECRET_LEN + 1)).is_err());
    }

    #[test]
    fn specs_and_names_are_checked() {
        let spec = |kind, scope: &str, username: &str| CredentialSpec {
            name: "team-git".into(),
            kind,
            scope: scope.into(),
            username: username.into(),
        };
        assert!(
            spec(CredentialKind::Git, "https://git.example.com/team/", "bot")
                .check()
                .is_ok()
        );
        assert!(
            spec(CredentialKind::Registry, "127.0.0.1:5000", "bot")
                .check()
                .is_ok()
        );
        assert!(
            spec(CredentialKind::Registry, "127.0.0.1:5000/x", "bot")
                .check()
                .is_err()
        );
        assert!(
            spec(CredentialKind::Git, "git.example.com", "bot")
                .check()
                .is_err()
        );
        assert!(
            spec(CredentialKind::Git, "https://x/", "a:b")
                .check()
                .is_err()
        );
        assert!(spec(CredentialKind::Git, "https://x/", "").check().is_err());
        for name in ["", "-x", "UP", "a b", &"a".repeat(65)] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        assert!(check_name("ci.bot_1-a").is_ok());
    }

    #[test]
    fn the_longest_prefix_at_a_path_boundary_serves_a_url() {
        let stored = [
            (CredentialKind::Git, "https://x/", "all"),
            (CredentialKind::Git, "https://x/team", "team"),
            (CredentialKind::Git, "https://x/team/app.git", "app"),
            (CredentialKind::Registry, "x", "reg"),
        ];
        let git = |url: &str| CredentialPurpose::Git { url: url.into() };
        assert_eq!(choose(stored, &git("https://x/team/app.git")), Some("app"));
        assert_eq!(choose(stored, &git("https://x/team/web.git")), Some("team"));
        assert_eq!(
            choose(stored, &git("https://x/teamwork/a.git")),
            Some("all")
        );
        assert_eq!(choose(stored, &git("https://y/team/a.git")), None);
        let registry = |server: &str| CredentialPurpose::Registry {
            server: server.into(),
        };
        assert_eq!(choose(stored, &registry("x")), Some("reg"));
        assert_eq!(choose(stored, &registry("y")), None);
    }

    #[test]
    fn images_name_their_registry_when_they_have_one() {
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), Some("127.0.0.1:5000"));
        assert_eq!(
            registry_of("registry.example.com/team/app"),
            Some("registry.example.com")
        );
        assert_eq!(registry_of("localhost/app"), Some("localhost"));
        assert_eq!(registry_of("team/app:1"), None);
        assert_eq!(registry_of("busybox"), None);
    }
}
