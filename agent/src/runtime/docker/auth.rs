//! Registry credentials for the engine: the credential store's, asked of the coordinators for
//! one pull of one workspace (held in memory for that pull only), and a login check through the
//! engine's `/auth` endpoint (`nexus admin credentials check`). bollard has no call for `/auth`,
//! so it is one small HTTP/1.1 request over the engine's unix socket. No secret is logged.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use nexus_protocol::WorkspaceName;
use nexus_protocol::credentials::{CredentialAsk, CredentialPurpose, Secret, registry_of};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AgentRequest, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::asker::Asker;

/// How long a pull waits for the coordinators' credential.
const ASK_LIMIT: Duration = Duration::from_secs(10);
/// How long the engine has to try a login.
const LOGIN_LIMIT: Duration = Duration::from_secs(45);
/// The most bytes of the engine's answer read.
const ANSWER_MAX: u64 = 64 << 10;

/// The credential store's credential for `image`'s registry, for a pull of `workspace`; `None`
/// when the image names no registry, none is stored, or the coordinators cannot say.
pub(super) async fn stored(
    asker: &Asker,
    workspace: &WorkspaceName,
    image: &str,
) -> Option<DockerCredentials> {
    let server = registry_of(image)?;
    let request = Request::Agent(AgentRequest::Credential(CredentialAsk {
        workspace: workspace.clone(),
        purpose: CredentialPurpose::Registry {
            server: server.to_string(),
        },
    }));
    match asker.ask(request, ASK_LIMIT).await {
        Ok(Response::Credential(Some(granted))) => {
            tracing::info!(image, credential = %granted.name, "pulling with the credential store's credential");
            Some(DockerCredentials {
                username: Some(granted.username.clone()),
                password: Some(granted.secret.expose().to_string()),
                serveraddress: Some(server.to_string()),
                ..Default::default()
            })
        }
        Ok(Response::Credential(None)) => None,
        Ok(_) => {
            tracing::warn!(
                image,
                "the coordinators answered a credential request with something else"
            );
            None
        }
        Err(error) => {
            tracing::warn!(image, code = %error.code, "cannot ask the coordinators for the registry's credential: {}", error.message);
            None
        }
    }
}

/// Asks the engine at `socket` to log in to `server`: `Ok` when the registry took it.
pub(super) async fn login(
    socket: &str,
    server: &str,
    username: &str,
    secret: &Secret,
) -> Result<(), WireError> {
    let mut body = serde_json::to_vec(&serde_json::json!({
        "username": username,
        "password": secret.expose(),
        "serveraddress": server,
    }))
    .map_err(|error| WireError::new(ErrorCode::Internal, error.to_string()))?;
    let attempt = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|error| {
                WireError::new(
                    ErrorCode::BackendUnavailable,
                    format!("cannot reach the engine at {socket}: {error}"),
                )
            })?;
        let head = format!(
            "POST /auth HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let sent = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.flush().await
        }
        .await;
        sent.map_err(|error| {
            WireError::new(
                ErrorCode::BackendUnavailable,
                format!("the engine at {socket} hung up: {error}"),
            )
        })?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(ANSWER_MAX)
            .read_to_end(&mut answer)
            .await
            .map_err(|error| {
                WireError::new(
                    ErrorCode::BackendUnavailable,
                    format!("the engine at {socket} did not answer: {error}"),
                )
            })?;
        Ok::<Vec<u8>, WireError>(answer)
    };
    let answer = tokio::time::timeout(LOGIN_LIMIT, attempt).await;
    body.fill(0);
    let answer = answer.map_err(|_| {
        WireError::new(
            ErrorCode::Timeout,
            format!(
                "the engine did not log in to {server} within {} s",
                LOGIN_LIMIT.as_secs()
            ),
        )
    })??;
    verdict(server, &String::from_utf8_lossy(&answer))
}

/// The engine's answer to `/auth`, as the check's outcome.
fn verdict(server: &str, answer: &str) -> Result<(), WireError> {
    let status: Option<u16> = answer
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok());
    let message = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .and_then(|body| {
            // A chunked body's JSON starts at its first `{`.
            let start = body.find('{')?;
            let value: serde_json::Value = serde_json::Deserializer::from_str(&body[start..])
                .into_iter::<serde_json::Value>()
                .next()?
                .ok()?;
            value
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let message: String = message.chars().take(400).collect();
    match status {
        Some(200) => Ok(()),
        Some(401 | 403) => Err(WireError::new(
            ErrorCode::PermissionDenied,
            format!("registry {server} refused the login: {message}"),
        )),
        // The engine answers 500 when the registry refused too (older engines), or could not be
        // reached.
        Some(_) if message.contains("unauthorized") || message.contains("401") => {
            Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!("registry {server} refused the login: {message}"),
            ))
        }
        Some(code) => Err(WireError::new(
            ErrorCode::NetworkError,
            format!("the engine could not log in to {server} (HTTP {code}): {message}"),
        )),
        None => Err(WireError::new(
            ErrorCode::BackendUnavailable,
            "the engine's answer to a login was not HTTP",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_answers_read_as_verdicts() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"IdentityToken\":\"\",\"Status\":\"Login Succeeded\"}\n";
        assert_eq!(verdict("r:5000", ok), Ok(()));
        let refused = "HTTP/1.1 401 Unauthorized\r\n\r\n{\"message\":\"login attempt to https://r:5000/v2/ failed with status: 401 Unauthorized\"}";
        let error = verdict("r:5000", refused).unwrap_err();
        assert_eq!(error.code, ErrorCode::PermissionDenied);
        assert!(error.message.contains("401 Unauthorized"), "{error:?}");
        let chunked = "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5a\r\n{\"message\":\"Get \\\"https://r:5000/v2/\\\": unauthorized: authentication required\"}\r\n0\r\n\r\n";
        assert_eq!(
            verdict("r:5000", chunked).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        let unreachable = "HTTP/1.1 500 Internal Server Error\r\n\r\n{\"message\":\"dial tcp 127.0.0.1:5999: connect: connection refused\"}";
        assert_eq!(
            verdict("r:5000", unreachable).unwrap_err().code,
            ErrorCode::NetworkError
        );
        assert_eq!(
            verdict("r:5000", "garbage").unwrap_err().code,
            ErrorCode::BackendUnavailable
        );
    }
}
