//! Enrolment at start: an agent whose certificate is missing, unusable or expired, and that was
//! given a join token, makes a key here (it never leaves the host), asks the coordinators for a
//! certificate over a connection that pins the token's CA, and writes both into its tls dir
//! before starting as usual. Without a token it refuses to start, saying what is missing and
//! which flag fixes it; with a valid certificate, a token is left unused.
//!
//! The decision (`standing::decide`) is pure; [`ensure`] reads the files and the token, and talks to the
//! coordinators. The labels a token gives the host are kept in the data dir
//! ([`token_labels`]), so that they are still the host's after a restart.
//! Not here: renewing a certificate in force (`renewal`), loading it (`transport::Credentials`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_protocol::clock;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{EnrolRequest, Issued, JoinToken};
use nexus_protocol::model::Labels;
use nexus_protocol::pki::{KeyRequest, PkiDir};
use nexus_protocol::transport::{self, TransportConfig};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JOIN_TOKEN_ENV, TokenSource};
use crate::standing::{Decision, decide, explain, inspect};

/// The first wait between rounds of enrolment attempts; each round doubles it, up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The file in the data dir that keeps the labels the host's token gave it.
const LABELS_FILE: &str = "token-labels.json";
const LABELS_VERSION: u32 = 1;

/// Makes sure this agent has a usable certificate in its tls dir before it starts: enrols with
/// its join token when it needs to and has one, refuses (with what is wrong and the fix) when it
/// needs to and has none. `host_name` is this machine's, for the certificate's names.
pub async fn ensure(config: &Config, host_name: Option<&str>) -> anyhow::Result<()> {
    let identity = Identity::Agent(config.host_id.clone());
    let standing = inspect(&config.tls_dir, &identity, now_secs());
    match decide(&standing, config.join_token.is_some()) {
        Decision::Start { token_unused } => {
            if token_unused {
                tracing::info!(
                    tls_dir = %config.tls_dir.display(),
                    "this host's certificate is valid: the join token given is unused"
                );
            }
            Ok(())
        }
        Decision::Refuse => bail!(
            "cannot load this agent's TLS files from {}: {}",
            config.tls_dir.display(),
            explain(&standing, &identity, false)
        ),
        Decision::Enrol => {
            let source = config
                .join_token
                .as_ref()
                .context("a join token was given")?;
            tracing::info!(
                "{}; enrolling with the join token from {source}",
                explain(&standing, &identity, true)
            );
            let token = read_token(source).await?;
            let names = crate::names::wanted(config.listen, config.advertise.as_deref(), host_name);
            let issued = enrol(config, &identity, &token, names).await?;
            save_token_labels(&config.data_dir, &token, &issued.labels)?;
            Ok(())
        }
    }
}

/// Enrols `identity` with `token`: a fresh key, a request to each coordinator in turn until one
/// answers, and the files written. A refusal of the token is final; a coordinator that cannot
/// be reached, or is of another cluster, is passed over, and rounds of attempts go on (backing
/// off) until one answers, unless every coordinator is of another cluster.
pub async fn enrol(
    config: &Config,
    identity: &Identity,
    token: &JoinToken,
    names: Vec<String>,
) -> anyhow::Result<Issued> {
    let key = KeyRequest::generate(&format!("nexus {identity} (enrolment)"))
        .context("cannot make this agent's key")?;
    let request = EnrolRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        csr_pem: key.csr_pem.clone(),
        host_id: Some(config.host_id.clone()),
        names,
    };
    let issued = enrol_any(
        &config.coordinators,
        &token.ca_fingerprint,
        &request,
        &config.transport(),
    )
    .await?;
    if &issued.identity != identity {
        bail!(
            "the coordinators issued a certificate for {}, not {identity}: nothing was written",
            issued.identity
        );
    }
    PkiDir::new(&config.tls_dir)
        .write_issued(
            identity,
            &issued.cert_pem,
            key.key_pem.expose(),
            &issued.ca_pem,
        )
        .with_context(|| {
            format!(
                "cannot write the enrolled certificate into {}",
                config.tls_dir.display()
            )
        })?;
    tracing::info!(
        %identity,
        token = %token.id,
        tls_dir = %config.tls_dir.display(),
        labels = ?issued.labels,
        "enrolled: this host's certificate and key are in its tls dir"
    );
    Ok(issued)
}

/// Whether a coordinator's refusal is the same everywhere: the token's or the request's fault.
fn is_final(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TokenInvalid
            | ErrorCode::TokenExpired
            | ErrorCode::TokenUsedUp
            | ErrorCode::TokenRevoked
            | ErrorCode::InvalidArgument
            | ErrorCode::PermissionDenied
            | ErrorCode::CertificateMismatch
    )
}

async fn enrol_any(
    coordinators: &[String],
    fingerprint: &str,
    request: &EnrolRequest,
    transport_config: &TransportConfig,
) -> anyhow::Result<Issued> {
    let mut wait = FIRST_RETRY;
    loop {
        let mut errors: Vec<WireError> = Vec::new();
        for target in coordinators {
            match transport::enrol(target, fingerprint, request, transport_config).await {
                Ok(issued) => return Ok(issued),
                Err(error) if is_final(error.code) => {
                    bail!("the enrolment was refused by {target}: {error}")
                }
                Err(error) => {
                    tracing::warn!(coordinator = %target, code = %error.code, "cannot enrol there: {}", error.message);
                    errors.push(error);
                }
            }
        }
        if errors
            .iter()
            .all(|error| error.code == ErrorCode::CaMismatch)
        {
            let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!(
                "no coordinator is of the join token's cluster: {}",
                messages.join("; ")
            );
        }
        tracing::warn!(
            retry_in = ?wait,
            "no coordinator enrolled this host yet; trying again"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Reads and parses the token; the error never repeats the text.
async fn read_token(source: &TokenSource) -> anyhow::Result<JoinToken> {
    let text = match source {
        TokenSource::File(path) => {
            warn_if_others_may_read(path);
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the join token file {}", path.display()))?
        }
        TokenSource::Stdin => tokio::task::spawn_blocking(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
        })
        .await
        .context("reading the join token from stdin")?
        .context("cannot read the join token from stdin")?,
        TokenSource::Environment => std::env::var(JOIN_TOKEN_ENV)
            .with_context(|| format!("cannot read the join token from {JOIN_TOKEN_ENV}"))?,
    };
    JoinToken::parse(&text).map_err(|error| {
        anyhow::anyhow!(
            "{}: the join token from {source}: {}",
            ErrorCode::TokenInvalid,
            error.0
        )
    })
}

/// A token file others may read is a secret shared with them: said, not refused (the token is
/// spent on enrolment, and the file is the admin's to fix).
fn warn_if_others_may_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                "the join token file may be read by other users of this machine: chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// What the data dir keeps of the last enrolment: the token's id and the labels it gave.
#[derive(Debug, Serialize, Deserialize)]
struct TokenLabels {
    version: u32,
    token_id: String,
    labels: Labels,
}

fn save_token_labels(data_dir: &Path, token: &JoinToken, labels: &Labels) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let kept = TokenLabels {
        version: LABELS_VERSION,
        token_id: token.id.to_string(),
        labels: labels.clone(),
    };
    let path = data_dir.join(LABELS_FILE);
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(&kept).context("the token's labels")?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The labels this host's join token gave it (none if it did not enrol with one). A file that
/// cannot be read is logged and taken as none: labels are no reason not to start.
pub fn token_labels(data_dir: &Path) -> Labels {
    let path = data_dir.join(LABELS_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Labels::new();
    };
    match serde_json::from_slice::<TokenLabels>(&bytes) {
        Ok(kept) if kept.version == LABELS_VERSION => kept.labels,
        Ok(kept) => {
            tracing::warn!(path = %path.display(), version = kept.version, "the token's labels are of an unknown version; ignored");
            Labels::new()
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), "the token's labels cannot be read; ignored: {error}");
            Labels::new()
        }
    }
}

/// The host's labels: the token's, then the agent's own (which win).
pub fn with_token_labels(token: Labels, own: &Labels) -> Labels {
    let mut labels = token;
    labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

fn now_secs() -> i64 {
    i64::try_from(clock::now().0 / 1000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_labels_stay_with_the_host_and_its_own_win() {
        let dir = tempfile::tempdir().unwrap();
        assert!(token_labels(dir.path()).is_empty());
        let token = JoinToken::generate(&"ab".repeat(32)).unwrap();
        let given = Labels::from([
            ("zone".to_string(), "a".to_string()),
            ("gpu".to_string(), "yes".to_string()),
        ]);
        save_token_labels(dir.path(), &token, &given).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LABELS_FILE)).unwrap();
        assert!(!text.contains(token.secret.expose()), "{text}");
        let kept = token_labels(dir.path());
        assert_eq!(kept, given);
        let own = Labels::from([("zone".to_string(), "b".to_string())]);
        let labels = with_token_labels(kept, &own);
        assert_eq!(labels.get("zone").map(String::as_str), Some("b"));
        assert_eq!(labels.get("gpu").map(String::as_str), Some("yes"));
        std::fs::write(dir.path().join(LABELS_FILE), "{").unwrap();
        assert!(token_labels(dir.path()).is_empty());
    }
}
