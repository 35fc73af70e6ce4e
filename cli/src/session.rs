//! A user's session is their certificate: `nexus login` gets a short-lived one, and when it runs
//! out, commands say "Session expired" with the suggestion `nexus login`. Pure: the certificate's
//! expiry and the time come in, an error goes out.
//!
//! Only an expired certificate of one's own is a session that expired: any other refusal
//! (another CA, a denied identity, a name the server's certificate lacks) keeps its own message,
//! so that an operator is never sent to `nexus login` to fix a certificate that does not match.

use std::path::Path;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::{ErrorCode, WireError};

use crate::error::CliError;

/// What a user whose session expired runs.
pub const LOGIN_SUGGESTION: &str = "run `nexus login` with a user token from an admin (`nexus admin token create --role user --name U`) for a new session";

/// What the transport says when a server refused this client's certificate as expired (TLS
/// alert 45, `certificate expired`).
const REFUSED_AS_EXPIRED: &str = "refused this client's certificate: certificate expired";

/// Fails with AUTHENTICATION_FAILED ("Session expired at T") when the certificate at `cert`,
/// which expires at `not_after` (seconds since the epoch; `None`: unknown), has expired at `now`.
pub fn check(not_after: Option<i64>, now: Timestamp, cert: &Path) -> Result<(), CliError> {
    let Some(not_after) = not_after else {
        return Ok(());
    };
    let now_secs = i64::try_from(now.as_millis() / 1000).unwrap_or(i64::MAX);
    if now_secs < not_after {
        return Ok(());
    }
    Err(CliError::local(
        ErrorCode::AuthenticationFailed,
        format!(
            "Session expired at {} (your certificate {} is no longer valid)",
            crate::output::time_of(not_after),
            cert.display()
        ),
    )
    .suggest(LOGIN_SUGGESTION))
}

/// An error from connecting or a request, as the user should read it: a server's refusal of
/// this client's certificate as expired becomes "Session expired" with the suggestion `nexus
/// login`; every other error is left as it is (its code's suggestion, or a more specific one).
pub fn explain(error: WireError) -> CliError {
    if error.code == ErrorCode::AuthenticationFailed && error.message.contains(REFUSED_AS_EXPIRED) {
        let mut error = error;
        error.message = format!(
            "Session expired (the server refused your certificate as expired: {})",
            error.message
        );
        return CliError::from(error).suggest(LOGIN_SUGGESTION);
    }
    CliError::from(error)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const NOW: Timestamp = Timestamp(1_790_000_000_000);

    #[test]
    fn an_expired_certificate_is_an_expired_session() {
        let cert = PathBuf::from("/home/u/.local/state/nexus/login/user-u.pem");
        let error = check(Some(1_789_999_999), NOW, &cert).unwrap_err();
        assert_eq!(error.error.code, ErrorCode::AuthenticationFailed);
        expect_test::expect![[r#"
            error: Session expired at 2026-09-21T14:13:19Z (your certificate /home/u/.local/state/nexus/login/user-u.pem is no longer valid)
              code:       AUTHENTICATION_FAILED (Authentication failed)
              suggestion: run `nexus login` with a user token from an admin (`nexus admin token create --role user --name U`) for a new session
        "#]]
        .assert_eq(&error.render_text());
        // The very second it ends, it has ended.
        assert!(check(Some(1_790_000_000), NOW, &cert).is_err());
        assert!(check(Some(1_790_000_001), NOW, &cert).is_ok());
        assert!(check(None, NOW, &cert).is_ok());
    }

    #[test]
    fn only_a_refusal_as_expired_says_session_expired() {
        let expired = WireError::new(
            ErrorCode::AuthenticationFailed,
            "127.0.0.1:7400: the server refused this client's certificate: certificate expired (TLS alert 45)",
        );
        let error = explain(expired);
        assert!(error.error.message.starts_with("Session expired"));
        assert!(error.render_text().contains("`nexus login`"));
        let others = [
            WireError::new(
                ErrorCode::AuthenticationFailed,
                "the server refused this client's certificate: unknown CA (TLS alert 48)",
            ),
            WireError::new(
                ErrorCode::AuthenticationFailed,
                "the peer closed the connection: certificate denied",
            ),
            WireError::new(
                ErrorCode::CertificateMismatch,
                "the peer's certificate does not name the address it was reached at: x",
            ),
        ];
        for other in others {
            let error = explain(other.clone());
            assert_eq!(*error.error, other);
            let text = error.render_text();
            assert!(!text.contains("Session expired"), "{text}");
            assert!(!text.contains(LOGIN_SUGGESTION), "{text}");
        }
        let mismatch = explain(WireError::new(ErrorCode::CertificateMismatch, "no name"));
        assert!(
            mismatch
                .render_text()
                .contains(ErrorCode::CertificateMismatch.suggestion())
        );
    }

    /// The CLI's own files: a certificate for `bob` that began `began_secs_ago` and lives
    /// `life_secs`.
    fn settings_with(dir: &Path, began_secs_ago: u64, life_secs: u64) -> crate::settings::Settings {
        use nexus_protocol::identity::{Identity, Role};
        use nexus_protocol::pki::{CertificateAuthority, Validity};
        let now = nexus_protocol::clock::now();
        let began = Timestamp(now.0 - began_secs_ago * 1000);
        let year = std::time::Duration::from_secs(365 * 86_400);
        let ca = CertificateAuthority::generate(
            "test CA",
            Validity::starting(Timestamp(began.0 - 1000), year),
        )
        .unwrap();
        let bob = Identity::User {
            name: nexus_protocol::UserName::new("bob").unwrap(),
            role: Role::User,
        };
        let validity = Validity::starting(began, std::time::Duration::from_secs(life_secs));
        let issued = ca.issue(&bob, &[], validity).unwrap();
        let paths = ["ca.pem", "user-bob.pem", "user-bob.key"].map(|name| dir.join(name));
        std::fs::write(&paths[0], ca.cert_pem()).unwrap();
        std::fs::write(&paths[1], &issued.cert_pem).unwrap();
        std::fs::write(&paths[2], &issued.key_pem).unwrap();
        let [ca, cert, key] = paths;
        crate::settings::Settings {
            coordinators: vec!["127.0.0.1:1".into()],
            ca,
            cert,
            key,
            request_id: None,
        }
    }

    // A connector opens its UDP socket on the runtime.
    #[tokio::test]
    async fn a_command_with_an_expired_certificate_fails_before_it_connects() {
        let dir = tempfile::tempdir().unwrap();
        // Twelve hours, ended an hour ago.
        let expired = settings_with(dir.path(), 13 * 3600, 12 * 3600);
        let error = expired.connector().unwrap_err();
        assert_eq!(error.error.code, ErrorCode::AuthenticationFailed);
        assert!(
            error.error.message.starts_with("Session expired at "),
            "{}",
            error.error.message
        );
        assert!(error.error.message.contains("user-bob.pem"));
        assert_eq!(error.suggestion.as_deref(), Some(LOGIN_SUGGESTION));
        // Twelve hours, begun an hour ago: no error.
        let valid = settings_with(dir.path(), 3600, 12 * 3600);
        valid.connector().unwrap();
    }

    #[test]
    fn times_print_as_rfc3339() {}
}
