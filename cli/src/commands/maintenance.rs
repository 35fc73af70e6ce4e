//! `nexus admin maintenance run|schedule|status`: host maintenance now, on the daemons named (as
//! `config reload` reaches them: coordinators from `admin status`, agents from the leader's
//! endpoints, each asked directly), and the weekly window the leader follows.

use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::maintenance::{
    MaintenanceReport, MaintenanceRequest, MaintenanceSchedule, MaintenanceStatus,
};
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use serde_json::{Value, json};

use crate::args::{MaintenanceCommand, MaintenanceRunArgs, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output::{self, emit};
use crate::settings::Settings;

/// How long finding the daemons, and a schedule's read or change, may take.
const LIMIT: Duration = Duration::from_secs(15);
/// How long one daemon's run may take (an engine removing many images, a large store).
const RUN_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(
    command: MaintenanceCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        MaintenanceCommand::Run(args) => run_now(settings, args, format).await,
        MaintenanceCommand::Schedule { at, off } => {
            let change = match (at, off) {
                (Some(at), _) => Some(MaintenanceSchedule { at: Some(at) }),
                (None, true) => Some(MaintenanceSchedule { at: None }),
                (None, false) => None,
            };
            status(settings, change, format).await
        }
        MaintenanceCommand::Status => status(settings, None, format).await,
    }
}

/// What `args` asks each daemon: none of the three flags means all three.
pub fn asked(args: &MaintenanceRunArgs) -> MaintenanceRequest {
    let none = !args.prune_images && !args.prune_volumes && !args.compact;
    MaintenanceRequest {
        prune_images: none || args.prune_images,
        prune_volumes: none || args.prune_volumes,
        compact: none || args.compact,
        dry_run: args.dry_run,
    }
}

/// The request for `daemon`, if it has anything to do: coordinators compact, agents prune.
pub fn request_for(daemon: &Daemon, asked: MaintenanceRequest) -> Option<Request> {
    match daemon {
        Daemon::Coordinator { .. } => asked
            .compact
            .then_some(Request::Admin(AdminRequest::Maintain(asked))),
        Daemon::Agent { .. } => (asked.prune_images || asked.prune_volumes)
            .then_some(Request::Host(HostRequest::Maintain(asked))),
    }
}

async fn run_now(
    settings: &Settings,
    args: MaintenanceRunArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    if !args.all && args.hosts.is_empty() && args.nodes.is_empty() {
        return Err(
            CliError::local(ErrorCode::InvalidArgument, "say which daemons to maintain")
                .suggest("pass --host H or --node N (each may repeat), or --all"),
        );
    }
    let asked = asked(&args);
    let roster = Roster::discover(settings, &args.hosts, &args.nodes, LIMIT).await?;
    if !roster.daemons.is_empty()
        && roster
            .daemons
            .iter()
            .all(|daemon| request_for(daemon, asked).is_none())
    {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            "none of the daemons named does what was asked",
        )
        .suggest(
            "agents prune (--prune-images, --prune-volumes), coordinators compact (--compact)",
        ));
    }
    let answers = fleet::ask_each(
        settings,
        &roster.daemons,
        settings.next_request_id(),
        RUN_LIMIT,
        |daemon| request_for(daemon, asked),
    )
    .await;
    let gathered = fleet::gather(&roster, answers, |answer| match answer {
        Response::Maintained(report) => Some(report.clone()),
        _ => None,
    });
    // A daemon's failed part is its engine's or its store's: the backend's.
    let code = gathered.failure_code(ErrorCode::BackendUnavailable);
    let fleet::Gathered {
        reports, failures, ..
    } = gathered;
    let json = json!({
        "dry_run": asked.dry_run,
        "reports": reports.iter().map(report_json).collect::<Vec<_>>(),
        "bytes": reports.iter().map(MaintenanceReport::bytes).sum::<u64>(),
        "unreachable": failures.iter().map(|(who, why)| json!({"daemon": who, "error": why})).collect::<Vec<_>>(),
    });
    emit(format, &json, || render_reports(&reports, &failures));
    let failed = reports.iter().filter(|r| r.failed()).count();
    if failed + failures.len() > 0 {
        return Err(CliError::local(
            code,
            format!(
                "{failed} daemon(s) could not do all of it and {} could not be asked",
                failures.len()
            ),
        )
        .suggest("see what each says; what was removed stays removed, and a run may be repeated"));
    }
    Ok(())
}

async fn status(
    settings: &Settings,
    change: Option<MaintenanceSchedule>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = Request::Admin(AdminRequest::MaintenanceSchedule(change));
    match settings.request(request, LIMIT).await? {
        Response::Maintenance(status) => {
            let now = clock::now();
            emit(format, &status_json(&status), || status_text(&status, now));
            Ok(())
        }
        other => Err(CliError::unexpected(&other)),
    }
}

/// An error on one line: `CODE: message`.
/// One daemon's report: `{"daemon", "dry_run", "removed": [{"kind", "name", "bytes"}], "bytes",
/// "kept", "errors"}`.
pub fn report_json(report: &MaintenanceReport) -> Value {
    json!({
        "daemon": report.source,
        "dry_run": report.dry_run,
        "removed": report.removed.iter().map(|r| json!({"kind": r.kind.as_str(), "name": r.name, "bytes": r.bytes})).collect::<Vec<_>>(),
        "bytes": report.bytes(),
        "unlisted": report.unlisted,
        "kept": report.kept,
        "errors": report.errors,
        "at": output::rfc3339(report.at),
    })
}

/// The reports for people: a line per thing removed, a total per daemon, its errors.
pub fn render_reports(reports: &[MaintenanceReport], failures: &[(String, String)]) -> String {
    let mut text = String::new();
    for report in reports {
        let who = &report.source;
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for removed in &report.removed {
            text.push_str(&format!(
                "{who}: {verb} {} {} ({})\n",
                removed.kind.as_str(),
                removed.name,
                output::bytes(removed.bytes)
            ));
        }
        if report.unlisted > 0 {
            text.push_str(&format!(
                "{who}: {verb} {} more ({})\n",
                report.unlisted,
                output::bytes(report.unlisted_bytes)
            ));
        }
        for error in &report.errors {
            text.push_str(&format!("{who}: failed: {error}\n"));
        }
        let reclaimed = if report.dry_run {
            "would reclaim"
        } else {
            "reclaimed"
        };
        text.push_str(&format!(
            "{who}: {reclaimed} {}, kept {} in use\n",
            output::bytes(report.bytes()),
            report.kept
        ));
    }
    for (who, why) in failures {
        text.push_str(&format!("{who}: not asked: {why}\n"));
    }
    text
}

fn window(schedule: &MaintenanceSchedule) -> String {
    schedule
        .at
        .map_or_else(|| "off".to_string(), |at| format!("{at} UTC"))
}

/// `{"schedule": "sun 02:00" | null, "next", "last": {"at", "daemons": [{"daemon", "bytes" |
/// "error"}]}}`.
pub fn status_json(status: &MaintenanceStatus) -> Value {
    json!({
        "schedule": status.schedule.at.map(|at| at.to_string()),
        "next": status.next.map(output::rfc3339),
        "last": status.last.as_ref().map(|last| json!({
            "at": output::rfc3339(last.at),
            "daemons": last.daemons.iter().map(|(who, result)| match result {
                Ok(bytes) => json!({"daemon": who, "bytes": bytes}),
                Err(error) => json!({"daemon": who, "error": error}),
            }).collect::<Vec<_>>(),
        })),
    })
}

pub fn status_text(status: &MaintenanceStatus, now: Timestamp) -> String {
    let mut text = format!("schedule: {}\n", window(&status.schedule));
    if let Some(next) = status.next {
        text.push_str(&format!("next run: {}\n", output::rfc3339(next)));
    }
    match &status.last {
        None => text.push_str("last run: never\n"),
        Some(last) => {
            text.push_str(&format!(
                "last run: {} ({})\n",
                output::rfc3339(last.at),
                output::ago(Some(last.at), now)
            ));
            let rows = last
                .daemons
                .iter()
                .map(|(who, result)| match result {
                    Ok(bytes) => vec![who.clone(), output::bytes(*bytes), String::new()],
                    Err(error) => vec![who.clone(), "-".into(), error.clone()],
                })
                .collect();
            text.push_str(&output::table(&["DAEMON", "RECLAIMED", "ERROR"], rows));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use nexus_protocol::maintenance::{MaintenanceSummary, Reclaimed, ReclaimedKind, WeeklyTime};

    use super::*;

    fn args(flags: &[&str]) -> MaintenanceRunArgs {
        MaintenanceRunArgs {
            hosts: Vec::new(),
            nodes: Vec::new(),
            all: true,
            prune_images: flags.contains(&"images"),
            prune_volumes: flags.contains(&"volumes"),
            compact: flags.contains(&"compact"),
            dry_run: flags.contains(&"dry"),
        }
    }

    #[test]
    fn no_flag_asks_for_everything_and_each_daemon_gets_its_part() {
        assert_eq!(asked(&args(&[])), MaintenanceRequest::ALL);
        let compact_only = asked(&args(&["compact", "dry"]));
        assert!(compact_only.dry_run && !compact_only.prune_images);
        let coordinator = Daemon::Coordinator {
            id: nexus_protocol::NodeId::new(1).unwrap_or_else(|e| panic!("{e}")),
            address: "127.0.0.1:1".into(),
        };
        let agent = Daemon::Agent {
            host: "h1".parse().unwrap_or_else(|e| panic!("{e:?}")),
            address: "127.0.0.1:2".into(),
        };
        assert!(request_for(&coordinator, compact_only).is_some());
        assert!(request_for(&agent, compact_only).is_none());
        let images_only = asked(&args(&["images"]));
        assert!(request_for(&coordinator, images_only).is_none());
        assert!(request_for(&agent, images_only).is_some());
    }

    #[test]
    fn reports_say_what_went_and_what_it_gave_back() {
        let report = MaintenanceReport {
            source: "agent-h1".into(),
            dry_run: true,
            removed: vec![Reclaimed {
                kind: ReclaimedKind::Image,
                name: "sha256:ab".into(),
                bytes: 2048,
            }],
            kept: 3,
            errors: vec!["image sha256:cd is in use".into()],
            at: Timestamp::from_millis(0),
            unlisted: 0,
            unlisted_bytes: 0,
        };
        expect_test::expect![[r#"
            agent-h1: would remove image sha256:ab (2.0 KiB)
            agent-h1: failed: image sha256:cd is in use
            agent-h1: would reclaim 2.0 KiB, kept 3 in use
            coordinator-2: not asked: TIMEOUT: no answer
        "#]]
        .assert_eq(&render_reports(
            std::slice::from_ref(&report),
            &[("coordinator-2".into(), "TIMEOUT: no answer".into())],
        ));
        let json = report_json(&report);
        assert_eq!(json["bytes"], 2048);
        assert_eq!(json["removed"][0]["kind"], "image");
    }

    #[test]
    fn the_status_shows_the_window_and_the_last_run() {
        let status = MaintenanceStatus {
            schedule: MaintenanceSchedule {
                at: Some(WeeklyTime::DEFAULT),
            },
            next: Some(Timestamp::from_millis(1_796_522_400_000)),
            last: Some(MaintenanceSummary {
                at: Timestamp::from_millis(1_795_917_600_000),
                daemons: vec![
                    ("coordinator-1".into(), Ok(1 << 20)),
                    ("agent-h1".into(), Err("NETWORK_ERROR: gone".into())),
                ],
            }),
        };
        let text = status_text(&status, Timestamp::from_millis(1_795_917_660_000));
        assert!(
            text.starts_with("schedule: sun 02:00 UTC\nnext run: 2026-12-06T02:00:00Z\n"),
            "{text}"
        );
        assert!(
            text.contains("last run: 2026-11-29T02:00:00Z (60s ago)"),
            "{text}"
        );
        assert!(text.contains("1.0 MiB"), "{text}");
        assert!(text.contains("NETWORK_ERROR: gone"), "{text}");
        let json = status_json(&status);
        assert_eq!(json["schedule"], "sun 02:00");
        assert_eq!(json["last"]["daemons"][1]["error"], "NETWORK_ERROR: gone");
        let default = status_json(&MaintenanceStatus::default());
        assert_eq!(default["schedule"], "sun 02:00");
        let off = status_json(&MaintenanceStatus {
            schedule: MaintenanceSchedule { at: None },
            ..MaintenanceStatus::default()
        });
        assert_eq!(off["schedule"], Value::Null);
        assert_eq!(
            status_text(
                &MaintenanceStatus {
                    schedule: MaintenanceSchedule { at: None },
                    ..MaintenanceStatus::default()
                },
                Timestamp::EPOCH
            ),
            "schedule: off\nlast run: never\n"
        );
    }
}
