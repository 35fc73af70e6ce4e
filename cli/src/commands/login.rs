//! `nexus login [--coordinator ADDR] [--token-file FILE]`: a user's session. The token (from an
//! admin's `nexus admin token create --role user --name U`) comes from a file, stdin,
//! `NEXUS_TOKEN` or a prompt, never from the command line. A key is made on this machine and
//! never leaves it; the coordinator, reached only if its CA is the one the token pins, signs a
//! short-lived certificate for it. The key (0600), the certificate and the CA go to the state
//! directory's `login/`, and the CLI's settings point at them (`settings::written`'s rule: a
//! config file the user wrote is never overwritten).

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};

use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{EnrolRequest, Issued, JoinToken};
use nexus_protocol::pki::{KeyRequest, PkiDir};
use nexus_protocol::transport::{self, Credentials, TransportConfig};
use serde_json::json;

use crate::args::{ConnectionArgs, LoginArgs, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::output::time_of;
use crate::settings::written::write_settings;
use crate::settings::{FileSettings, default_config_path};

/// The environment variable a token may come in.
pub const TOKEN_VARIABLE: &str = "NEXUS_TOKEN";

pub async fn run(
    args: LoginArgs,
    connection: &ConnectionArgs,
    file: FileSettings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let coordinators = crate::settings::coordinators(connection, &file)?;
    if coordinators.is_empty() {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            "no coordinator address configured",
        )
        .suggest("pass --coordinator HOST:PORT (or set NEXUS_COORDINATORS)"));
    }
    let token = read_token(args.token_file.as_deref())?;
    let key = KeyRequest::generate("nexus login").map_err(|e| internal(&e))?;
    let request = EnrolRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        csr_pem: key.csr_pem.clone(),
        host_id: None,
        names: Vec::new(),
    };
    let (coordinator, issued) = enrol_any(&coordinators, &token, &request).await?;
    let Identity::User { name, role } = issued.identity.clone() else {
        return Err(CliError::local(
            ErrorCode::TokenInvalid,
            format!(
                "the token is for {}, not for a user",
                issued.identity
            ),
        )
        .suggest("an agent token is for `nexus-agent --join-token-file FILE`; ask an admin for a user token (`nexus admin token create --role user --name U`)"));
    };
    // Absolute: the settings that name these files are read from any directory.
    let dir = crate::commands::up::state_dir(&args.state())?.join("login");
    let dir = std::path::absolute(&dir).map_err(|e| internal(&e))?;
    let files = write_session(&dir, &issued, key.key_pem.expose())?;
    let settings = FileSettings {
        coordinators: coordinators.clone(),
        ca: Some(files.ca.clone()),
        cert: Some(files.cert.clone()),
        key: Some(files.key.clone()),
        output: file.output,
    };
    let config = connection.config.clone().or_else(default_config_path);
    let written = write_settings(
        &dir.join("cli.toml"),
        config.as_deref(),
        &settings,
        "session",
    )?;
    let until = files
        .not_after
        .map_or("an unknown time".to_string(), time_of);
    let json = json!({
        "user": name.as_str(),
        "role": role.as_str(),
        "until": files.not_after.map(time_of),
        "coordinator": coordinator,
        "ca": files.ca,
        "cert": files.cert,
        "key": files.key,
        "config": written.file,
    });
    output::emit(format, &json, || {
        let mut text = format!("logged in as {name} ({}) until {until}\n", role.as_str());
        text.push_str(&format!(
            "  certificate  {} (key {}, made here)\n  settings     {}\n",
            files.cert.display(),
            files.key.display(),
            written.file.display()
        ));
        if let Some(hint) = &written.hint {
            text.push_str(&format!("  note         {hint}\n"));
        }
        text
    });
    Ok(())
}

/// Asks the coordinators in order until one answers: a refusal (a spent token, another CA) is
/// the answer; only a coordinator that cannot be reached sends the request on to the next.
async fn enrol_any(
    coordinators: &[String],
    token: &JoinToken,
    request: &EnrolRequest,
) -> Result<(String, Issued), CliError> {
    let config = TransportConfig::default();
    let mut last = None;
    for coordinator in coordinators {
        match transport::enrol(coordinator, &token.ca_fingerprint, request, &config).await {
            Ok(issued) => return Ok((coordinator.clone(), issued)),
            Err(error) if matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout) => {
                last = Some(error);
            }
            Err(error) => return Err(CliError::from(error)),
        }
    }
    Err(last.map_or_else(
        || CliError::local(ErrorCode::NetworkError, "no coordinator configured"),
        CliError::from,
    ))
}

/// Where a session's files are, and when its certificate ends (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub not_after: Option<i64>,
}

/// Checks that the issued certificate, the key made here and the CA go together, then writes
/// them into `dir` (the key 0600, each file whole): `ca.pem`, `user-U.pem`, `user-U.key`.
pub fn write_session(dir: &Path, issued: &Issued, key_pem: &str) -> Result<SessionFiles, CliError> {
    let credentials = Credentials::from_pem(
        issued.ca_pem.as_bytes(),
        Some((issued.cert_pem.as_bytes(), key_pem.as_bytes())),
    )
    .map_err(|e| {
        CliError::local(
            ErrorCode::ProtocolError,
            format!("the coordinator's certificate is not usable with the key made here: {e}"),
        )
    })?;
    let pki = PkiDir::new(dir);
    pki.write_issued(&issued.identity, &issued.cert_pem, key_pem, &issued.ca_pem)
        .map_err(|e| internal(&e))?;
    Ok(SessionFiles {
        ca: pki.ca_cert(),
        cert: pki.cert(&issued.identity),
        key: pki.key(&issued.identity),
        not_after: credentials.expiries().own,
    })
}

/// The token from `--token-file` (`-`: stdin), else `NEXUS_TOKEN`, else a prompt on a terminal.
fn read_token(file: Option<&Path>) -> Result<JoinToken, CliError> {
    let text = match file {
        Some(path) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                CliError::local(
                    ErrorCode::InvalidArgument,
                    format!("cannot read the token from stdin: {e}"),
                )
            })?;
            text
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::local(
                ErrorCode::InvalidArgument,
                format!("cannot read the token from {}: {e}", path.display()),
            )
        })?,
        None => match std::env::var(TOKEN_VARIABLE) {
            Ok(text) if !text.trim().is_empty() => text,
            _ => prompt()?,
        },
    };
    parse_token(&text)
}

/// A token as typed or stored; the error never repeats it.
pub fn parse_token(text: &str) -> Result<JoinToken, CliError> {
    JoinToken::parse(text).map_err(|e| CliError::local(ErrorCode::TokenInvalid, e.0))
}

/// Asks for the token on the terminal, without echoing it (through `stty`, when there is one).
fn prompt() -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            "no token given, and no terminal to ask on",
        )
        .suggest(&format!(
            "pass --token-file FILE (or - for stdin), or set {TOKEN_VARIABLE}; never the token itself as an argument"
        )));
    }
    eprint!("Join token (from `nexus admin token create --role user --name U`): ");
    let echo = |on: &str| {
        std::process::Command::new("stty")
            .arg(on)
            .stdin(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let hidden = echo("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        echo("echo");
        eprintln!();
    }
    read.map_err(|e| {
        CliError::local(
            ErrorCode::InvalidArgument,
            format!("cannot read the token: {e}"),
        )
    })?;
    Ok(line)
}

fn internal(error: &dyn std::fmt::Display) -> CliError {
    CliError::local(ErrorCode::Internal, error.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nexus_protocol::UserName;
    use nexus_protocol::clock::Timestamp;
    use nexus_protocol::identity::Role;
    use nexus_protocol::pki::{CertificateAuthority, Validity};

    use super::*;

    const NOW: Timestamp = Timestamp(1_790_000_000_000);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate(
            "test CA",
            Validity::starting(NOW, std::time::Duration::from_secs(86_400)),
        )
        .unwrap()
    }

    fn alice() -> Identity {
        Identity::User {
            name: UserName::new("alice").unwrap(),
            role: Role::User,
        }
    }

    fn issued(ca: &CertificateAuthority, key: &KeyRequest) -> Issued {
        let validity = Validity::starting(NOW, std::time::Duration::from_secs(12 * 3600));
        let cert_pem = ca
            .sign_request(&key.csr_pem, &alice(), &[], validity)
            .unwrap();
        Issued {
            identity: alice(),
            cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            labels: Default::default(),
        }
    }

    #[test]
    fn a_session_is_written_with_its_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let login = dir.path().join("login");
        let ca = ca();
        let key = KeyRequest::generate("nexus login").unwrap();
        let files = write_session(&login, &issued(&ca, &key), key.key_pem.expose()).unwrap();
        assert_eq!(files.key, login.join("user-alice.key"));
        assert_eq!(files.cert, login.join("user-alice.pem"));
        assert_eq!(files.ca, login.join("ca.pem"));
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&files.key).unwrap(),
            key.key_pem.expose()
        );
        assert_eq!(files.not_after, Some(1_790_000_000 + 12 * 3600));
        // The files work as the CLI's credentials.
        Credentials::load(&files.ca, &files.cert, &files.key).unwrap();
    }

    #[test]
    fn a_certificate_for_another_key_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let login = dir.path().join("login");
        let ca = ca();
        let key = KeyRequest::generate("nexus login").unwrap();
        let other = KeyRequest::generate("someone else").unwrap();
        let error = write_session(&login, &issued(&ca, &other), key.key_pem.expose()).unwrap_err();
        assert_eq!(error.error.code, ErrorCode::ProtocolError);
        assert!(!login.exists());
    }

    #[test]
    fn a_mistyped_token_is_token_invalid_and_not_repeated() {
        let text = format!(
            "NXJT1-{}-0123456789abcdef-{}",
            "ab".repeat(32),
            "c".repeat(63)
        );
        let error = parse_token(&text).unwrap_err();
        assert_eq!(error.error.code, ErrorCode::TokenInvalid);
        assert!(!error.render_text().contains(&"c".repeat(63)));
        let good = format!(
            "NXJT1-{}-0123456789abcdef-{}\n",
            "ab".repeat(32),
            "c".repeat(64)
        );
        assert_eq!(parse_token(&good).unwrap().id.as_str(), "0123456789abcdef");
    }

    #[test]
    fn a_token_is_read_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let text = format!(
            "NXJT1-{}-0123456789abcdef-{}\n",
            "ab".repeat(32),
            "d".repeat(64)
        );
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            read_token(Some(&path)).unwrap().secret.expose(),
            "d".repeat(64)
        );
        let missing = read_token(Some(&dir.path().join("nope"))).unwrap_err();
        assert_eq!(missing.error.code, ErrorCode::InvalidArgument);
    }
}
