//! The support bundle (`nexus admin support-bundle`): what it holds, pure.
//!
//! A bundle is a `.tar.gz` of sections, each a file under a path that names its source, with a
//! `manifest.json` that names every section planned and whether it was collected (a daemon that
//! did not answer is recorded with why, never fatal). Redaction is by allow-list: every section
//! is built from fields chosen one by one (the workspaces' views, never their specs' environment;
//! each daemon's configuration as the daemon renders it with only known, non-secret settings),
//! and, as a last guard, a section that still looks like it holds a private key or a certificate
//! request's secret is left out and recorded so.
//!
//! Here: the plan (which sections, from whom), the manifest, the guard. The collecting is
//! `commands::bundle`; writing the archive is `archive`.

pub mod archive;

use nexus_protocol::debug::Diagnostic;
use serde_json::{Value, json};

use crate::fleet::Daemon;

/// One file of the bundle and where its content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The file's path inside the archive.
    pub path: String,
    pub what: Source,
}

/// Where a section's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The CLI's own version and each daemon's, from their handshakes.
    Versions,
    /// From the coordinators (answered by the leader, or whichever replies).
    ClusterStatus,
    Hosts,
    Limits,
    Workspaces,
    /// From one daemon.
    Diagnostic(Daemon, Diagnostic),
    Logs(Daemon),
}

impl Source {
    /// A few words for `--dry-run` and the manifest.
    pub fn describe(&self) -> String {
        match self {
            Source::Versions => "the CLI's and every daemon's software version".into(),
            Source::ClusterStatus => "the cluster's members, leader, term and indexes".into(),
            Source::Hosts => "every host: status, capacity, latest stats".into(),
            Source::Limits => "the cluster's limits and each host's overrides".into(),
            Source::Workspaces => "every workspace (no environment values)".into(),
            Source::Diagnostic(daemon, diagnostic) => {
                let what = match diagnostic {
                    Diagnostic::Config => "configuration (secrets redacted)",
                    Diagnostic::Metrics => "metrics",
                    Diagnostic::Certificates => "certificates' subjects and expiries",
                    Diagnostic::Readiness => "readiness checks",
                    Diagnostic::Engine => "engine version and containers",
                };
                format!("{daemon}'s {what}")
            }
            Source::Logs(daemon) => format!("{daemon}'s logs"),
        }
    }

    /// The daemon asked, if one is.
    pub fn daemon(&self) -> Option<&Daemon> {
        match self {
            Source::Diagnostic(daemon, _) | Source::Logs(daemon) => Some(daemon),
            _ => None,
        }
    }
}

/// Every section a bundle of these daemons holds, in the archive's order.
pub fn plan(daemons: &[Daemon]) -> Vec<Section> {
    let mut sections = vec![
        section("versions.json", Source::Versions),
        section("cluster/status.json", Source::ClusterStatus),
        section("fleet/hosts.json", Source::Hosts),
        section("fleet/limits.json", Source::Limits),
        section("fleet/workspaces.json", Source::Workspaces),
    ];
    for daemon in daemons {
        let dir = match daemon {
            Daemon::Coordinator { .. } => format!("coordinators/{}", daemon.label()),
            Daemon::Agent { .. } => format!("agents/{}", daemon.label()),
        };
        let mut diagnostics = vec![
            (Diagnostic::Config, "config.toml"),
            (Diagnostic::Metrics, "metrics.txt"),
            (Diagnostic::Certificates, "certificates.json"),
            (Diagnostic::Readiness, "readiness.txt"),
        ];
        if daemon.is_agent() {
            diagnostics.push((Diagnostic::Engine, "engine.json"));
        }
        for (diagnostic, file) in diagnostics {
            sections.push(section(
                &format!("{dir}/{file}"),
                Source::Diagnostic(daemon.clone(), diagnostic),
            ));
        }
        sections.push(section(
            &format!("{dir}/logs.jsonl"),
            Source::Logs(daemon.clone()),
        ));
    }
    sections
}

fn section(path: &str, what: Source) -> Section {
    Section {
        path: path.to_string(),
        what,
    }
}

/// What became of one planned section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    Bytes(usize),
    /// Not collected, and why (a daemon that did not answer, a refusal, the guard).
    Missing(String),
}

/// The manifest: the bundle's own description, and every section's fate.
pub fn manifest(
    header: &BundleHeader,
    sections: &[(Section, Collected)],
    missing_daemons: &[(String, String)],
) -> Value {
    let sections: Vec<Value> = sections
        .iter()
        .map(|(section, collected)| {
            let mut entry = json!({
                "path": section.path,
                "what": section.what.describe(),
                "source": section.what.daemon().map_or("coordinators".to_string(), Daemon::label),
            });
            match collected {
                Collected::Bytes(bytes) => {
                    entry["collected"] = json!(true);
                    entry["bytes"] = json!(bytes);
                }
                Collected::Missing(why) => {
                    entry["collected"] = json!(false);
                    entry["error"] = json!(why);
                }
            }
            entry
        })
        .collect();
    json!({
        "format": 1,
        "created_at": header.created_at,
        "cli_version": nexus_protocol::SOFTWARE_VERSION,
        "request_id": header.request_id,
        "since_seconds": header.since_seconds,
        "log_records_per_source": header.log_limit,
        "sections": sections,
        "unreachable": missing_daemons
            .iter()
            .map(|(who, why)| json!({"source": who, "error": why}))
            .collect::<Vec<_>>(),
    })
}

/// What the manifest says of the bundle as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    pub created_at: String,
    pub request_id: String,
    pub since_seconds: u64,
    pub log_limit: u32,
}

/// The last guard: content that looks like key material never enters a bundle, whatever its
/// section was meant to hold. `Err` says what was found.
pub fn guard(content: &[u8]) -> Result<(), &'static str> {
    const MARKERS: &[(&[u8], &str)] = &[
        (b"PRIVATE KEY-----", "a private key"),
        (b"BEGIN CERTIFICATE REQUEST", "a certificate request"),
    ];
    for (marker, what) in MARKERS {
        if content.windows(marker.len()).any(|w| w == *marker) {
            return Err(what);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nexus_protocol::NodeId;

    use super::*;

    fn coordinator(id: u64) -> Daemon {
        Daemon::Coordinator {
            id: NodeId::new(id).unwrap_or_else(|e| panic!("{e}")),
            address: "127.0.0.1:7001".into(),
        }
    }

    fn agent(host: &str) -> Daemon {
        Daemon::Agent {
            host: host.parse().unwrap_or_else(|e| panic!("{e:?}")),
            address: "127.0.0.1:7002".into(),
        }
    }

    #[test]
    fn every_daemon_gets_its_diagnostics_and_logs_and_only_agents_an_engine() {
        let sections = plan(&[coordinator(1), agent("h1")]);
        let paths: Vec<&str> = sections.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "versions.json",
                "cluster/status.json",
                "fleet/hosts.json",
                "fleet/limits.json",
                "fleet/workspaces.json",
                "coordinators/coordinator-1/config.toml",
                "coordinators/coordinator-1/metrics.txt",
                "coordinators/coordinator-1/certificates.json",
                "coordinators/coordinator-1/readiness.txt",
                "coordinators/coordinator-1/logs.jsonl",
                "agents/agent-h1/config.toml",
                "agents/agent-h1/metrics.txt",
                "agents/agent-h1/certificates.json",
                "agents/agent-h1/readiness.txt",
                "agents/agent-h1/engine.json",
                "agents/agent-h1/logs.jsonl",
            ]
        );
    }

    #[test]
    fn the_manifest_names_every_section_and_why_one_is_missing() {
        let sections = plan(&[agent("h1")]);
        let fates: Vec<_> = sections
            .iter()
            .map(|s| {
                let fate = if s.what.daemon().is_some() {
                    Collected::Missing("agent-h1 did not answer within 10 s".into())
                } else {
                    Collected::Bytes(10)
                };
                (s.clone(), fate)
            })
            .collect();
        let header = BundleHeader {
            created_at: "2026-12-03T10:00:00Z".into(),
            request_id: "00".repeat(16),
            since_seconds: 86_400,
            log_limit: 5_000,
        };
        let manifest = manifest(
            &header,
            &fates,
            &[("agent-h1".into(), "did not answer".into())],
        );
        let entries = manifest["sections"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), sections.len());
        assert_eq!(entries[0]["collected"], json!(true));
        assert_eq!(entries[0]["source"], json!("coordinators"));
        let logs = entries
            .iter()
            .find(|e| e["path"] == json!("agents/agent-h1/logs.jsonl"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(logs["collected"], json!(false));
        assert_eq!(logs["source"], json!("agent-h1"));
        assert!(
            logs["error"]
                .as_str()
                .unwrap_or_default()
                .contains("did not answer")
        );
        assert_eq!(manifest["unreachable"][0]["source"], json!("agent-h1"));
    }

    #[test]
    fn the_guard_refuses_key_material_and_lets_the_rest_through() {
        assert_eq!(
            guard(b"x\n-----BEGIN PRIVATE KEY-----\nabc"),
            Err("a private key")
        );
        assert_eq!(
            guard(b"-----BEGIN EC PRIVATE KEY-----"),
            Err("a private key")
        );
        assert_eq!(guard(b"key_file = \"/etc/nexus/pki/agent.key\"\n"), Ok(()));
        assert_eq!(guard(b""), Ok(()));
    }
}
