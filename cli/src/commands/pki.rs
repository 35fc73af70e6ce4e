//! `nexus pki init|issue`: the cluster CA and the certificates it signs.

use std::time::Duration;

use nexus_protocol::clock;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Identity;
use nexus_protocol::pki::{PkiDir, PkiError, SubjectName, Validity};
use serde_json::json;

use crate::args::{IssueCommand, OutputFormat, PkiCommand};
use crate::error::CliError;
use crate::output;

fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 24 * 3600)
}

pub fn pki_error(error: PkiError) -> CliError {
    let suggestion = match &error {
        PkiError::Exists { .. } => {
            "pass --force to replace it (certificates issued before stop working if it is the CA)"
        }
        PkiError::Read { .. } => {
            "run `nexus pki init --dir DIR` first, or point --dir at the PKI directory"
        }
        _ => "check the directory and the arguments",
    };
    let code = match &error {
        PkiError::Write { .. } | PkiError::Generate(_) => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    };
    CliError::local(code, error.to_string()).suggest(suggestion)
}

pub fn run(command: PkiCommand, format: OutputFormat) -> Result<(), CliError> {
    match command {
        PkiCommand::Init {
            dir,
            force,
            validity_days,
        } => {
            let pki = PkiDir::new(dir);
            pki.init(clock::now(), days(validity_days), force)
                .map_err(pki_error)?;
            let (cert, key) = (pki.ca_cert(), pki.ca_key());
            output::emit(format, &json!({ "ca": cert, "key": key }), || {
                format!(
                    "Made the cluster CA:\n  {}\n  {} (private, mode 0600)\n",
                    cert.display(),
                    key.display()
                )
            });
        }
        PkiCommand::Issue(issue) => {
            let (identity, common) = match issue {
                IssueCommand::Coordinator { node_id, common } => {
                    (Identity::Coordinator(node_id), common)
                }
                IssueCommand::Agent { host_id, common } => (Identity::Agent(host_id), common),
                IssueCommand::User { name, role, common } => {
                    (Identity::User { name, role }, common)
                }
            };
            let mut names: Vec<SubjectName> =
                common.ips.iter().copied().map(SubjectName::Ip).collect();
            names.extend(common.dns.iter().cloned().map(SubjectName::Dns));
            if names.is_empty() && matches!(identity, Identity::Coordinator(_) | Identity::Agent(_))
            {
                // A server with no names given is reachable on this machine only.
                names = vec![
                    SubjectName::Ip([127, 0, 0, 1].into()),
                    SubjectName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
                    SubjectName::Dns("localhost".into()),
                ];
            }
            let validity = Validity::starting(clock::now(), days(common.validity_days));
            let pki = PkiDir::new(common.dir);
            let (cert, key) = pki
                .issue(&identity, &names, validity, common.force)
                .map_err(pki_error)?;
            let uri = identity.uri();
            output::emit(
                format,
                &json!({ "identity": uri, "cert": cert, "key": key }),
                || {
                    format!(
                        "Issued {uri}:\n  {}\n  {} (private, mode 0600)\n",
                        cert.display(),
                        key.display()
                    )
                },
            );
        }
    }
    Ok(())
}
