//! `nexus admin support-bundle`: everything an engineer asked to help needs, in one file, and
//! nothing secret. What a bundle holds, and the guard, are `bundle`; here the gathering: the
//! fleet's tables from the coordinators, then each daemon on one connection of its own, all at
//! once, each within its own time; a daemon that does not answer is recorded in the manifest.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::join_all;
use nexus_protocol::RequestId;
use nexus_protocol::clock;
use nexus_protocol::debug::{LogLevel, LogQuery, LogRecord};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use serde_json::{Value, json};

use crate::args::OutputFormat;
use crate::bundle::archive::Archive;
use crate::bundle::{self, BundleHeader, Collected, Section, Source};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::fleetlogs::{self, Labelled};
use crate::output;
use crate::progress::Progress;
use crate::settings::Settings;

/// How long one daemon has for everything it is asked.
const PER_DAEMON: Duration = Duration::from_secs(20);
/// How long one of the fleet's tables may take.
const TABLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The most log records taken from each daemon.
pub const LOG_RECORDS_PER_SOURCE: u32 = 5_000;

pub async fn run(
    settings: &Settings,
    format: OutputFormat,
    file: Option<PathBuf>,
    since_secs: u64,
    dry_run: bool,
) -> Result<(), CliError> {
    let request_id = RequestId::random();
    let roster = Roster::discover(settings, &[], &[], TABLE_TIMEOUT).await?;
    let sections = bundle::plan(&roster.daemons);
    if dry_run {
        print_plan(format, &sections, &roster);
        return Ok(());
    }
    let now = clock::now();
    let path = file.unwrap_or_else(|| default_name(now));
    let mut archive = Archive::create(&path, now.as_millis() / 1_000).map_err(|e| {
        CliError::local(
            ErrorCode::InvalidArgument,
            format!("cannot write {}: {e}", path.display()),
        )
        .suggest("name a new file with --file, in a directory you can write")
    })?;
    let progress = Progress::new(sections.len() as u64, "collecting");
    let since_us = fleetlogs::ago(clock::now_us(), since_secs);

    // The fleet's tables, from the coordinators.
    let mut contents: Vec<(Section, Result<Vec<u8>, String>)> = Vec::new();
    let tables = sections.iter().filter(|s| s.what.daemon().is_none());
    for section in tables {
        let content = match &section.what {
            Source::Versions => Ok(Vec::new()), // filled once every daemon has answered
            Source::ClusterStatus => Ok(pretty(&output::status_json(&roster.status))),
            other => table(settings, other).await,
        };
        progress.advance(&section.path);
        contents.push((section.clone(), content));
    }

    // Each daemon: one connection, its sections in turn.
    let per_daemon = roster.daemons.iter().map(|daemon| {
        let mine: Vec<Section> = sections
            .iter()
            .filter(|s| s.what.daemon() == Some(daemon))
            .cloned()
            .collect();
        gather(settings, daemon, mine, request_id, since_us, &progress)
    });
    let mut versions = vec![json!({"source": "cli", "software": nexus_protocol::SOFTWARE_VERSION})];
    let mut unreachable = Vec::new();
    for (who, why) in &roster.unlisted {
        unreachable.push((who.clone(), why.error.message.clone()));
    }
    for (daemon, software, gathered) in join_all(per_daemon).await {
        match &software {
            Ok(software) => versions.push(json!({"source": daemon.label(), "software": software})),
            Err(why) => unreachable.push((daemon.label(), why.clone())),
        }
        contents.extend(gathered);
    }
    progress.finish();
    if let Some((_, content)) = contents
        .iter_mut()
        .find(|(s, _)| s.what == Source::Versions)
    {
        *content = Ok(pretty(&Value::Array(versions)));
    }

    let mut fates = Vec::with_capacity(contents.len());
    for (section, content) in contents {
        let fate = match content.and_then(|bytes| {
            bundle::guard(&bytes)
                .map(|()| bytes)
                .map_err(|what| format!("left out: it looked like it held {what}"))
        }) {
            Ok(bytes) => {
                add(&mut archive, &section.path, &bytes)?;
                Collected::Bytes(bytes.len())
            }
            Err(why) => Collected::Missing(why),
        };
        fates.push((section, fate));
    }
    let header = BundleHeader {
        created_at: output::rfc3339(now),
        request_id: request_id.to_string(),
        since_seconds: since_secs,
        log_limit: LOG_RECORDS_PER_SOURCE,
    };
    let manifest = bundle::manifest(&header, &fates, &unreachable);
    add(&mut archive, "manifest.json", &pretty(&manifest))?;
    let path = archive.finish().map_err(|e| {
        CliError::local(
            ErrorCode::Internal,
            format!("cannot finish {}: {e}", path.display()),
        )
    })?;
    let missing: Vec<_> = fates
        .iter()
        .filter_map(|(s, fate)| match fate {
            Collected::Missing(why) => Some((s.path.clone(), why.clone())),
            Collected::Bytes(_) => None,
        })
        .collect();
    let summary = json!({
        "file": path.display().to_string(),
        "sections": fates.len(),
        "collected": fates.len() - missing.len(),
        "missing": missing.iter().map(|(p, why)| json!({"path": p, "error": why})).collect::<Vec<_>>(),
        "request_id": request_id.to_string(),
    });
    output::emit(format, &summary, || {
        let mut text = format!(
            "wrote {}: {} of {} sections\n",
            path.display(),
            fates.len() - missing.len(),
            fates.len()
        );
        for (section, why) in &missing {
            text.push_str(&format!("  missing {section}: {why}\n"));
        }
        text
    });
    Ok(())
}

fn add(archive: &mut Archive, name: &str, content: &[u8]) -> Result<(), CliError> {
    archive.add(name, content).map_err(|e| {
        CliError::local(ErrorCode::Internal, format!("cannot write the bundle: {e}"))
            .suggest("check the free space where the bundle is written")
    })
}

fn default_name(now: clock::Timestamp) -> PathBuf {
    let stamp = output::rfc3339(now).replace([':', '-'], "");
    let stamp: String = stamp.chars().take(15).collect();
    PathBuf::from(format!("nexus-support-{stamp}.tar.gz"))
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// One of the fleet's tables, as JSON built field by field (`output`'s JSON: no secrets).
async fn table(settings: &Settings, source: &Source) -> Result<Vec<u8>, String> {
    let request = match source {
        Source::Hosts => Request::Admin(AdminRequest::Hosts),
        Source::Limits => Request::Admin(AdminRequest::Limits),
        // The views carry no environment: a spec's values never leave the coordinators here.
        Source::Workspaces => {
            let views = crate::listing::workspaces(settings, false, TABLE_TIMEOUT)
                .await
                .map_err(|e| e.error.message.clone())?;
            let value = Value::Array(views.iter().map(output::workspace_json).collect());
            return Ok(pretty(&value));
        }
        _ => return Err("not a table".into()),
    };
    let response = settings
        .request(request, TABLE_TIMEOUT)
        .await
        .map_err(|e| e.error.message.clone())?;
    let value = match response {
        Response::Hosts(hosts) => output::hosts_json(&hosts),
        Response::Limits(limits) => output::limits_view_json(&limits),
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    Ok(pretty(&value))
}

/// Everything one daemon is asked, on one connection within [`PER_DAEMON`]: its software
/// version (or why it could not be reached) and each section's content.
async fn gather(
    settings: &Settings,
    daemon: &Daemon,
    sections: Vec<Section>,
    request_id: RequestId,
    since_us: u64,
    progress: &Progress,
) -> (
    Daemon,
    Result<String, String>,
    Vec<(Section, Result<Vec<u8>, String>)>,
) {
    let attempt = async {
        let connection = fleet::connect(settings, daemon)
            .await
            .map_err(|e| e.error.message.clone())?;
        let software = connection.server_software().to_string();
        let mut gathered = Vec::new();
        for section in sections.iter() {
            let request = section_request(daemon, &section.what, since_us);
            let content = match request {
                Some(request) => connection
                    .request_with(request_id, request, PER_DAEMON)
                    .await
                    .map_err(|e| format!("{}: {}", e.code, e.message))
                    .and_then(|response| content_of(daemon, response)),
                None => Err("not asked".into()),
            };
            progress.advance(&section.path);
            gathered.push((section.clone(), content));
        }
        connection.close();
        Ok::<_, String>((software, gathered))
    };
    match tokio::time::timeout(PER_DAEMON, attempt).await {
        Ok(Ok((software, gathered))) => (daemon.clone(), Ok(software), gathered),
        Ok(Err(why)) => {
            let missing = sections
                .into_iter()
                .map(|s| (s, Err(format!("{daemon} could not be reached: {why}"))))
                .collect();
            (daemon.clone(), Err(why), missing)
        }
        Err(_) => {
            let why = format!("{daemon} did not answer within {} s", PER_DAEMON.as_secs());
            let missing = sections
                .into_iter()
                .map(|s| (s, Err(why.clone())))
                .collect();
            (daemon.clone(), Err(why), missing)
        }
    }
}

fn section_request(daemon: &Daemon, source: &Source, since_us: u64) -> Option<Request> {
    let coordinator = !daemon.is_agent();
    match source {
        Source::Diagnostic(_, diagnostic) => Some(if coordinator {
            Request::Admin(AdminRequest::Diagnostic(*diagnostic))
        } else {
            Request::Host(HostRequest::Diagnostic(*diagnostic))
        }),
        Source::Logs(_) => {
            let query = LogQuery {
                since_us: Some(since_us),
                until_us: None,
                min_level: LogLevel::Trace,
                grep: None,
                request: None,
                workspace: None,
                limit: LOG_RECORDS_PER_SOURCE,
                follow: false,
                spans_only: false,
            };
            Some(if coordinator {
                Request::Admin(AdminRequest::DaemonLogs(query))
            } else {
                Request::Host(HostRequest::DaemonLogs(query))
            })
        }
        _ => None,
    }
}

fn content_of(daemon: &Daemon, response: Response) -> Result<Vec<u8>, String> {
    match response {
        Response::Diagnostic(text) => Ok(text.into_bytes()),
        Response::LogRecords(records) => Ok(log_lines(daemon, records)),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

/// Log records as JSON lines, oldest first, as `admin logs --output json` prints them.
fn log_lines(daemon: &Daemon, records: Vec<LogRecord>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in records {
        let line = fleetlogs::record_json(&Labelled {
            source: daemon.label(),
            record,
        });
        bytes.extend_from_slice(line.to_string().as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

fn print_plan(format: OutputFormat, sections: &[Section], roster: &Roster) {
    let json = json!({
        "sections": sections
            .iter()
            .map(|s| json!({"path": s.path, "what": s.what.describe()}))
            .collect::<Vec<_>>(),
        "unlisted": roster
            .unlisted
            .iter()
            .map(|(who, why)| json!({"source": who, "error": why.error.message}))
            .collect::<Vec<_>>(),
    });
    output::emit(format, &json, || {
        let mut text = format!(
            "a bundle would hold {} sections (and manifest.json):\n",
            sections.len()
        );
        for section in sections {
            text.push_str(&format!(
                "  {:<48} {}\n",
                section.path,
                section.what.describe()
            ));
        }
        for (who, why) in &roster.unlisted {
            text.push_str(&format!("{who} left out: {}\n", why.error.message));
        }
        text
    });
}
