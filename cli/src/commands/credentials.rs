//! `nexus admin credentials ...`: the encrypted credential store. Passwords come only from stdin;
//! nothing here prints a secret. `new-key` runs locally (the key file never reaches a
//! coordinator over the wire); `rotate-key` first asks every coordinator which keys it holds and
//! refuses, naming the node, when one lacks the leader's newest.

use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::credentials::{
    CredentialKind, CredentialSpec, CredentialView, KeyRotationReport, MAX_SECRET_LEN, Secret,
};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::{NodeId, seal};
use serde_json::json;

use crate::args::{CredentialsCommand, OutputFormat, SetCredential};
use crate::cluster::leader_status;
use crate::error::CliError;
use crate::output;
use crate::settings::Settings;

/// A write (one Raft entry, sealed on the leader).
const TIMEOUT: Duration = Duration::from_secs(15);
/// A check: the host logs in to a registry or lists a remote.
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);
/// A key rotation re-seals every record.
const ROTATE_TIMEOUT: Duration = Duration::from_secs(120);

/// `new-key`: runs without a coordinator.
pub fn new_key(out: &Path, add: bool, format: OutputFormat) -> Result<(), CliError> {
    let made = if add {
        seal::append_key(out)
    } else {
        seal::write_new_key(out)
    };
    let id = made.map_err(|error| {
        CliError::local(ErrorCode::InvalidArgument, error.0).suggest(
            "make a new file with `nexus admin credentials new-key --out FILE`, or add a key to one with --add",
        )
    })?;
    output::emit(
        format,
        &json!({"key_id": id, "file": out.display().to_string(), "added": add}),
        || {
            format!(
                "{} key {id} in {} (mode 0600). Give the same file to every coordinator \
                 (--credentials-key-file), reload them, then `nexus admin credentials rotate-key`.\n",
                if add { "added" } else { "made" },
                out.display()
            )
        },
    );
    Ok(())
}

pub async fn run(
    command: CredentialsCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        CredentialsCommand::Set(set) => {
            let (spec, stdin) = match set {
                SetCredential::Git {
                    name,
                    url_prefix,
                    username,
                    password_stdin,
                } => (
                    spec(name, CredentialKind::Git, url_prefix, username),
                    password_stdin,
                ),
                SetCredential::Registry {
                    name,
                    server,
                    username,
                    password_stdin,
                } => (
                    spec(name, CredentialKind::Registry, server, username),
                    password_stdin,
                ),
            };
            spec.check().map_err(|error| {
                CliError::local(ErrorCode::InvalidArgument, error.0)
                    .suggest("nexus admin credentials set registry NAME --server HOST[:PORT] --username U --password-stdin")
            })?;
            let secret = password(stdin)?;
            let name = spec.name.clone();
            ack(
                settings,
                AdminRequest::SetCredential { spec, secret },
                TIMEOUT,
            )
            .await?;
            done(format, &name, "stored");
            Ok(())
        }
        CredentialsCommand::Rotate {
            name,
            password_stdin,
        } => {
            let secret = password(password_stdin)?;
            ack(
                settings,
                AdminRequest::RotateCredential {
                    name: name.clone(),
                    secret,
                },
                TIMEOUT,
            )
            .await?;
            done(format, &name, "rotated");
            Ok(())
        }
        CredentialsCommand::Delete { name } => {
            ack(
                settings,
                AdminRequest::DeleteCredential(name.clone()),
                TIMEOUT,
            )
            .await?;
            done(format, &name, "deleted");
            Ok(())
        }
        CredentialsCommand::List => {
            match settings
                .request(Request::Admin(AdminRequest::Credentials), TIMEOUT)
                .await?
            {
                Response::Credentials(views) => {
                    let now = clock::now();
                    output::emit(format, &list_json(&views), || list_table(&views, now));
                    Ok(())
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
        CredentialsCommand::Check { name, host, repo } => {
            let request = AdminRequest::CheckCredential {
                name,
                host,
                target: repo,
            };
            let report = match settings
                .request(Request::Admin(request), CHECK_TIMEOUT)
                .await?
            {
                Response::CredentialChecked(report) => report,
                other => return Err(CliError::unexpected(&other)),
            };
            match report.error {
                None => {
                    output::emit(
                        format,
                        &json!({"name": report.name, "host": report.host.to_string(), "ok": true}),
                        || format!("{}: ok from host {}\n", report.name, report.host),
                    );
                    Ok(())
                }
                Some(error) => {
                    // A registry's refusal comes as PERMISSION_DENIED, whose own suggestion is
                    // about Nexus' permissions: say what to do about the credential instead.
                    let suggestion = (error.code == ErrorCode::PermissionDenied).then(|| {
                        format!(
                            "the registry refused the username or password: store the right one with `nexus admin credentials rotate {} --password-stdin`",
                            report.name
                        )
                    });
                    let mut error = CliError {
                        error: Box::new(error),
                        suggestion,
                    };
                    error.error.message = format!(
                        "credential {} failed from host {}: {}",
                        report.name, report.host, error.error.message
                    );
                    Err(error)
                }
            }
        }
        CredentialsCommand::RotateKey => {
            let newest = check_members_hold_the_newest_key(settings).await?;
            let report = match settings
                .request(
                    Request::Admin(AdminRequest::RotateCredentialsKey),
                    ROTATE_TIMEOUT,
                )
                .await?
            {
                Response::KeysRotated(report) => report,
                other => return Err(CliError::unexpected(&other)),
            };
            print_rotation(format, &report, &newest);
            Ok(())
        }
        CredentialsCommand::NewKey { out, add } => new_key(&out, add, format),
    }
}

fn spec(name: String, kind: CredentialKind, scope: String, username: String) -> CredentialSpec {
    CredentialSpec {
        name,
        kind,
        scope,
        username,
    }
}

/// One line of stdin: the password.
fn password(from_stdin: bool) -> Result<Secret, CliError> {
    if !from_stdin {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            "a password is read only from stdin: pass --password-stdin",
        ));
    }
    // One line (a terminal's Enter, or a pipe's end), bounded.
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_LEN as u64 + 2)
        .read_line(&mut line)
        .map_err(|error| {
            CliError::local(
                ErrorCode::InvalidArgument,
                format!("cannot read the password from stdin: {error}"),
            )
        })?;
    let first = line.as_str();
    let secret = Secret::from_line(first).map_err(|error| {
        CliError::local(ErrorCode::InvalidArgument, error.0)
            .suggest("pipe the password in: `printf %s \"$TOKEN\" | nexus admin credentials ... --password-stdin`")
    });
    zeroize_string(&mut line);
    secret
}

/// Overwrites what was read from stdin before it is freed.
fn zeroize_string(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    bytes.fill(0);
    drop(std::hint::black_box(bytes));
}

async fn ack(
    settings: &Settings,
    request: AdminRequest,
    timeout: Duration,
) -> Result<(), CliError> {
    match settings.request(Request::Admin(request), timeout).await? {
        Response::Ack => Ok(()),
        other => Err(CliError::unexpected(&other)),
    }
}

fn done(format: OutputFormat, name: &str, what: &str) {
    output::emit(format, &json!({"name": name, "done": what}), || {
        format!("credential {name} {what}\n")
    });
}

/// `list -o json`: every field but a secret, which no view holds.
pub fn list_json(views: &[CredentialView]) -> serde_json::Value {
    serde_json::Value::Array(
        views
            .iter()
            .map(|view| {
                json!({
                    "name": view.spec.name,
                    "kind": view.spec.kind.as_str(),
                    "scope": view.spec.scope,
                    "username": view.spec.username,
                    "key_id": view.key_id,
                    "created_at": output::rfc3339(view.created_at),
                    "rotated_at": view.rotated_at.map(output::rfc3339),
                    "last_used": view.last_used.map(output::rfc3339),
                    "last_used_by": view.last_used_by.as_ref().map(ToString::to_string),
                })
            })
            .collect(),
    )
}

fn list_table(views: &[CredentialView], now: clock::Timestamp) -> String {
    output::table(
        &[
            "NAME",
            "KIND",
            "SCOPE",
            "USERNAME",
            "KEY",
            "CREATED",
            "LAST USED",
        ],
        views
            .iter()
            .map(|view| {
                vec![
                    view.spec.name.clone(),
                    view.spec.kind.as_str().to_string(),
                    view.spec.scope.clone(),
                    view.spec.username.clone(),
                    view.key_id.clone(),
                    output::ago(Some(view.created_at), now),
                    match (&view.last_used, &view.last_used_by) {
                        (Some(at), Some(host)) => {
                            format!("{} by {host}", output::ago(Some(*at), now))
                        }
                        (at, _) => output::ago(*at, now),
                    },
                ]
            })
            .collect(),
    )
}

/// Asks every member which keys it holds; the leader's newest must be held by all. Answers it.
async fn check_members_hold_the_newest_key(settings: &Settings) -> Result<String, CliError> {
    let status = leader_status(settings).await?;
    let Some(leader) = status.leader else {
        return Err(CliError::local(
            ErrorCode::NotLeader,
            "the cluster has no leader to rotate the key",
        ));
    };
    let mut held: Vec<(NodeId, Result<Vec<String>, String>)> = Vec::new();
    for member in &status.members {
        let keys = async {
            let connection = settings
                .connect_to(&member.addr)
                .await
                .map_err(|e| e.error.message.clone())?;
            let answer = connection
                .request(Request::Admin(AdminRequest::CredentialKeys))
                .await;
            connection.close();
            match answer {
                Ok(Response::CredentialKeys { node, keys }) if node == member.id => Ok(keys),
                Ok(Response::CredentialKeys { node, .. }) => Err(format!(
                    "{} answered as coordinator {node}, not {}",
                    member.addr, member.id
                )),
                Ok(_) => Err("an unexpected answer".to_string()),
                Err(error) => Err(error.message),
            }
        }
        .await;
        held.push((member.id, keys));
    }
    missing_newest(leader, &held)
}

/// The leader's newest key, when every member holds it; else which member lacks it.
fn missing_newest(
    leader: NodeId,
    held: &[(NodeId, Result<Vec<String>, String>)],
) -> Result<String, CliError> {
    let refuse = |message: String| {
        CliError::local(ErrorCode::CredentialsKeyMissing, message).suggest(
            "add the new key to every coordinator's key file (the same file everywhere), `nexus config reload` each, then rotate again",
        )
    };
    let newest = match held.iter().find(|(id, _)| *id == leader) {
        Some((_, Ok(keys))) => keys.last().cloned().ok_or_else(|| {
            refuse(format!(
                "the leader (coordinator {leader}) holds no credentials key"
            ))
        })?,
        Some((_, Err(why))) => {
            return Err(refuse(format!(
                "cannot ask the leader (coordinator {leader}) for its keys: {why}"
            )));
        }
        None => {
            return Err(refuse(format!(
                "the leader (coordinator {leader}) is not among the members"
            )));
        }
    };
    for (id, keys) in held {
        match keys {
            Ok(keys) if keys.contains(&newest) => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "coordinator {id} lacks the leader's newest key {newest}: it could not open the credentials after the rotation"
                )));
            }
            Err(why) => {
                return Err(refuse(format!(
                    "cannot ask coordinator {id} for its keys ({why}); every coordinator must hold key {newest} before a rotation"
                )));
            }
        }
    }
    Ok(newest)
}

fn print_rotation(format: OutputFormat, report: &KeyRotationReport, checked: &str) {
    output::emit(
        format,
        &json!({
            "key_id": report.key_id,
            "reencrypted": report.reencrypted,
            "already": report.already,
        }),
        || {
            let mut text = format!(
                "re-sealed {} credential(s) under key {}; {} already were\n",
                report.reencrypted, report.key_id, report.already
            );
            if report.key_id != checked {
                text.push_str(&format!(
                    "warning: the leader sealed under {}, not {checked} (its key file changed meanwhile): run rotate-key again\n",
                    report.key_id
                ));
            } else {
                text.push_str(
                    "every coordinator holds it: the old key may now be removed from their key files (then reload them)\n",
                );
            }
            text
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    type Held = Vec<(NodeId, Result<Vec<String>, String>)>;
    type Case = (&'static str, Held, Result<&'static str, &'static str>);

    #[test]
    fn a_rotation_is_refused_naming_a_member_without_the_newest_key() {
        let keys = |ids: &[&str]| Ok(ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let cases: Vec<Case> = vec![
            (
                "all hold it",
                vec![(n(1), keys(&["a", "b"])), (n(2), keys(&["b"]))],
                Ok("b"),
            ),
            (
                "one lacks it",
                vec![(n(1), keys(&["a", "b"])), (n(2), keys(&["a"]))],
                Err("coordinator 2 lacks"),
            ),
            (
                "one is unreachable",
                vec![(n(1), keys(&["b"])), (n(3), Err("timed out".into()))],
                Err("cannot ask coordinator 3"),
            ),
            (
                "the leader has none",
                vec![(n(1), keys(&[]))],
                Err("holds no credentials key"),
            ),
        ];
        for (what, held, expected) in cases {
            let got = missing_newest(n(1), &held).map_err(|e| e.error.message);
            match expected {
                Ok(key) => assert_eq!(got.as_deref(), Ok(key), "{what}"),
                Err(part) => {
                    let message = got.unwrap_err();
                    assert!(message.contains(part), "{what}: {message}");
                }
            }
        }
    }

    #[test]
    fn the_list_shows_no_secret_field() {
        let view = CredentialView {
            spec: spec(
                "reg".into(),
                CredentialKind::Registry,
                "r:5000".into(),
                "bot".into(),
            ),
            key_id: "0123456789abcdef".into(),
            created_at: clock::Timestamp::from_millis(0),
            rotated_at: None,
            last_used: None,
            last_used_by: None,
        };
        let json = list_json(&[view]);
        let keys: Vec<&String> = json[0].as_object().unwrap().keys().collect();
        assert!(
            !keys
                .iter()
                .any(|k| k.contains("secret") || k.contains("password"))
        );
        assert_eq!(json[0]["key_id"], "0123456789abcdef");
    }
}
