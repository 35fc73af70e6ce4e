//! `nexus config show|validate|edit|reload`: the CLI's settings (with where each comes from),
//! checking and editing its file, and a daemon's configuration: shown (`Diagnostic::Config`,
//! redacted by the daemon's allow-list) and reloaded (`ReloadConfig`).
//!
//! A coordinator's or an agent's file is validated by the daemon's own binary
//! (`nexus-coordinator --check-config --config FILE`): the CLI does not link the daemons, and
//! the daemon's own reading is the only one that cannot disagree with it (docs/decisions.md).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_protocol::debug::{Diagnostic, ReloadReport};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, HostRequest, Request, Response};
use nexus_protocol::transport::Credentials;
use nexus_protocol::{HostId, NodeId};
use serde_json::json;

use crate::args::{ConfigCommand, ConfigKind, ConnectionArgs, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output::{self, emit};
use crate::settings::effective::{self, Origin};
use crate::settings::{self, FileSettings, Settings};

/// How long one daemon has to answer.
const LIMIT: Duration = Duration::from_secs(15);

/// What `config show` knows of how the command line was given.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// Keys set by a flag or the environment (as clap saw them).
    pub origins: BTreeMap<String, Origin>,
    pub output: Option<OutputFormat>,
}

/// The CLI's own commands: no connection needed, and a broken file is what they are for.
pub fn run_local(
    command: ConfigCommand,
    connection: &ConnectionArgs,
    given: &Given,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show { origin, .. } => show_cli(connection, given, origin, format),
        ConfigCommand::Validate { file, kind } => validate(connection, file, kind, format),
        ConfigCommand::Edit => edit(connection),
        ConfigCommand::Reload { .. } => Err(CliError::local(
            ErrorCode::Internal,
            "config reload talks to the fleet",
        )),
    }
}

/// Whether `command` talks to the fleet (a daemon's settings, a reload).
pub fn needs_fleet(command: &ConfigCommand) -> bool {
    match command {
        ConfigCommand::Show { node, host, .. } => node.is_some() || host.is_some(),
        ConfigCommand::Reload { .. } => true,
        ConfigCommand::Validate { .. } | ConfigCommand::Edit => false,
    }
}

/// Refuses a command that cannot be sent, before any connection: a reload that names no daemon.
pub fn check(command: &ConfigCommand) -> Result<(), CliError> {
    match command {
        ConfigCommand::Reload { nodes, hosts, all }
            if !all && nodes.is_empty() && hosts.is_empty() =>
        {
            Err(
                CliError::local(ErrorCode::InvalidArgument, "say which daemons to reload")
                    .suggest("pass --node N, --host H (each may repeat), or --all"),
            )
        }
        _ => Ok(()),
    }
}

/// The fleet's commands: a daemon's configuration, a reload.
pub async fn run_fleet(
    command: ConfigCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Show { node, host, .. } => show_daemon(settings, node, host, format).await,
        ConfigCommand::Reload { nodes, hosts, .. } => {
            reload(settings, &nodes, &hosts, format).await
        }
        ConfigCommand::Validate { .. } | ConfigCommand::Edit => Err(CliError::local(
            ErrorCode::Internal,
            "this config command is local",
        )),
    }
}

/// The CLI config file's path: `--config`/`NEXUS_CONFIG`, else the default place.
fn cli_path(connection: &ConnectionArgs) -> Option<PathBuf> {
    connection
        .config
        .clone()
        .or_else(settings::default_config_path)
}

fn show_cli(
    connection: &ConnectionArgs,
    given: &Given,
    origin: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    let path = cli_path(connection);
    let file = match &path {
        Some(path) => settings::read_file(path)?.unwrap_or_default(),
        None => FileSettings::default(),
    };
    let rows = effective::effective(
        connection,
        given.output,
        &given.origins,
        &file,
        path.as_deref(),
    );
    let json = json!(
        rows.iter()
            .map(|r| json!({"key": r.key, "value": r.value, "origin": r.origin.as_str()}))
            .collect::<Vec<_>>()
    );
    emit(format, &json, || {
        if origin {
            output::table(
                &["KEY", "VALUE", "ORIGIN"],
                rows.iter()
                    .map(|r| vec![r.key.to_string(), r.value.clone(), r.origin.as_str().into()])
                    .collect(),
            )
        } else {
            rows.iter()
                .map(|r| format!("{} = {}\n", r.key, r.value))
                .collect()
        }
    });
    Ok(())
}

async fn show_daemon(
    settings: &Settings,
    node: Option<NodeId>,
    host: Option<HostId>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let nodes: Vec<NodeId> = node.into_iter().collect();
    let hosts: Vec<HostId> = host.into_iter().collect();
    let roster = Roster::discover(settings, &hosts, &nodes, LIMIT).await?;
    if let Some((_, error)) = roster.unlisted.into_iter().next() {
        return Err(error);
    }
    let daemon = roster.daemons.first().ok_or_else(|| {
        CliError::local(ErrorCode::InvalidArgument, "no such daemon in the fleet")
    })?;
    let request = match daemon {
        Daemon::Coordinator { .. } => Request::Admin(AdminRequest::Diagnostic(Diagnostic::Config)),
        Daemon::Agent { .. } => Request::Host(HostRequest::Diagnostic(Diagnostic::Config)),
    };
    let text =
        match fleet::ask(settings, daemon, settings.next_request_id(), request, LIMIT).await? {
            Response::Diagnostic(text) => text,
            other => return Err(CliError::unexpected(&other)),
        };
    let json = json!({"daemon": daemon.label(), "config": text});
    emit(format, &json, || format!("# {}\n{text}", daemon.label()));
    Ok(())
}

fn validate(
    connection: &ConnectionArgs,
    file: Option<PathBuf>,
    kind: ConfigKind,
    format: OutputFormat,
) -> Result<(), CliError> {
    let path = match (file, kind) {
        (Some(path), _) => path,
        (None, ConfigKind::Cli) => cli_path(connection).ok_or_else(|| {
            CliError::local(ErrorCode::InvalidArgument, "no config file to validate")
                .suggest("name one: nexus config validate FILE")
        })?,
        (None, _) => {
            return Err(CliError::local(
                ErrorCode::InvalidArgument,
                "which file? a daemon's config file has no default place",
            )
            .suggest("name it: nexus config validate --kind coordinator FILE"));
        }
    };
    let problems = match kind {
        ConfigKind::Cli => check_cli_file(&path)?,
        ConfigKind::Coordinator => check_daemon_file("nexus-coordinator", &path)?,
        ConfigKind::Agent => check_daemon_file("nexus-agent", &path)?,
    };
    let json = json!({"file": path.display().to_string(), "valid": problems.is_empty(), "problems": problems});
    if problems.is_empty() {
        emit(format, &json, || format!("{}: valid\n", path.display()));
        return Ok(());
    }
    if format == OutputFormat::Json {
        emit(format, &json, String::new);
    }
    Err(invalid(&path, &problems))
}

fn invalid(path: &Path, problems: &[String]) -> CliError {
    CliError::local(
        ErrorCode::InvalidArgument,
        format!(
            "{} is not valid:\n  {}",
            path.display(),
            problems.join("\n  ")
        ),
    )
    .suggest("fix what each line says (FILE:LINE:COLUMN points at it)")
}

/// The CLI file's problems: syntax, keys, addresses, files, and whether the credentials load.
fn check_cli_file(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::local(
            ErrorCode::InvalidArgument,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(check_cli_text(path, &text))
}

fn check_cli_text(path: &Path, text: &str) -> Vec<String> {
    let base = path.parent().unwrap_or(Path::new("."));
    let shown = path.display().to_string();
    let (file, mut problems) = effective::check_file(&shown, text, base, Path::exists);
    if let Some(FileSettings {
        ca: Some(ca),
        cert: Some(cert),
        key: Some(key),
        ..
    }) = file
        && problems.is_empty()
        && let Err(error) = Credentials::load(&base.join(ca), &base.join(cert), &base.join(key))
    {
        problems.push(format!("{shown}: the credentials do not load: {error}"));
    }
    problems
}

/// A daemon's file, checked by the daemon's binary: beside this one, else on PATH.
fn check_daemon_file(binary: &str, path: &Path) -> Result<Vec<String>, CliError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(binary)))
        .filter(|candidate| candidate.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(binary));
    let output = std::process::Command::new(&program)
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .map_err(|e| {
            CliError::local(
                ErrorCode::InvalidArgument,
                format!("cannot run {}: {e}", program.display()),
            )
            .suggest(&format!("install {binary} beside nexus or on PATH"))
        })?;
    if output.status.success() {
        return Ok(Vec::new());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut problems: Vec<String> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.contains("would not start"))
        .map(str::to_string)
        .collect();
    if problems.is_empty() {
        problems.push(format!("{binary} refused it ({})", output.status));
    }
    Ok(problems)
}

/// `$VISUAL`, else `$EDITOR`, else `vi`, on a copy of the file; saved (atomically, by renaming
/// the copy over it) only once valid. An invalid edit is shown and may be edited again or
/// dropped; dropping it changes nothing.
fn edit(connection: &ConnectionArgs) -> Result<(), CliError> {
    let path = cli_path(connection).ok_or_else(|| {
        CliError::local(ErrorCode::InvalidArgument, "no config file to edit")
            .suggest("pass --config FILE or set NEXUS_CONFIG")
    })?;
    let local = |what: &str, e: std::io::Error| {
        CliError::local(ErrorCode::InvalidArgument, format!("{what}: {e}"))
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir)
        .map_err(|e| local(&format!("cannot make {}", dir.display()), e))?;
    let original = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(local(&format!("cannot read {}", path.display()), e)),
    };
    let name = path.file_name().map_or_else(
        || "config.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Beside the file (the rename is atomic within a directory), and ending in .toml for the
    // editor's syntax.
    let copy = dir.join(format!(".{name}.edit-{}.toml", std::process::id()));
    std::fs::write(&copy, &original).map_err(|e| local("cannot write the copy", e))?;
    let result = edit_loop(&path, &copy, &original);
    let _ = std::fs::remove_file(&copy);
    result
}

fn edit_loop(path: &Path, copy: &Path, original: &str) -> Result<(), CliError> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_string());
    let stdin = std::io::stdin();
    loop {
        // Through the shell: an editor is often a command with arguments (`code --wait`).
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("nexus-config-edit")
            .arg(copy)
            .status()
            .map_err(|e| {
                CliError::local(
                    ErrorCode::InvalidArgument,
                    format!("cannot run {editor}: {e}"),
                )
            })?;
        if !status.success() {
            return Err(CliError::local(
                ErrorCode::InvalidArgument,
                format!(
                    "{editor} failed ({status}); {} is unchanged",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(copy).map_err(|e| {
            CliError::local(
                ErrorCode::InvalidArgument,
                format!("cannot read the copy: {e}"),
            )
        })?;
        if text == original {
            eprintln!("no changes; {} is unchanged", path.display());
            return Ok(());
        }
        let problems = check_cli_text(path, &text);
        if problems.is_empty() {
            std::fs::rename(copy, path).map_err(|e| {
                CliError::local(
                    ErrorCode::InvalidArgument,
                    format!("cannot replace {}: {e}", path.display()),
                )
            })?;
            eprintln!("saved {}", path.display());
            return Ok(());
        }
        eprintln!("the edit is not valid:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
        eprint!("edit again (e) or abort (a)? [e] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
        if read == 0 || answer.trim().eq_ignore_ascii_case("a") {
            return Err(invalid(path, &problems)
                .suggest(&format!("aborted: {} is unchanged", path.display())));
        }
    }
}

async fn reload(
    settings: &Settings,
    nodes: &[NodeId],
    hosts: &[HostId],
    format: OutputFormat,
) -> Result<(), CliError> {
    let roster = Roster::discover(settings, hosts, nodes, LIMIT).await?;
    let answers = fleet::ask_each(
        settings,
        &roster.daemons,
        settings.next_request_id(),
        LIMIT,
        |daemon| {
            Some(match daemon {
                Daemon::Coordinator { .. } => Request::Admin(AdminRequest::ReloadConfig),
                Daemon::Agent { .. } => Request::Host(HostRequest::ReloadConfig),
            })
        },
    )
    .await;
    let gathered = fleet::gather(&roster, answers, |answer| match answer {
        Response::Reloaded(report) => Some(report.clone()),
        _ => None,
    });
    // A refused reload is a configuration the daemon would not take.
    let code = gathered.failure_code(ErrorCode::InvalidArgument);
    let fleet::Gathered {
        reports, failures, ..
    } = gathered;
    let json = json!({
        "reports": reports.iter().map(report_json).collect::<Vec<_>>(),
        "unreachable": failures.iter().map(|(who, why)| json!({"daemon": who, "error": why})).collect::<Vec<_>>(),
    });
    emit(format, &json, || render_reports(&reports, &failures));
    let refused = reports.iter().filter(|r| r.failed()).count();
    if refused + failures.len() > 0 {
        return Err(CliError::local(
            code,
            format!(
                "{refused} daemon(s) refused the reload and {} could not be asked",
                failures.len()
            ),
        )
        .suggest("fix what each says, then reload again; a refused reload changed nothing"));
    }
    Ok(())
}

/// An error on one line: `CODE: message`.
fn report_json(report: &ReloadReport) -> serde_json::Value {
    json!({
        "daemon": report.source,
        "applied": report.applied.iter().map(|c| json!({"key": c.key, "old": c.old, "new": c.new})).collect::<Vec<_>>(),
        "needs_restart": report.needs_restart,
        "errors": report.errors,
    })
}

/// The reports for people: one line per thing done, needed or wrong.
pub fn render_reports(reports: &[ReloadReport], failures: &[(String, String)]) -> String {
    let mut text = String::new();
    for report in reports {
        let who = &report.source;
        if report.failed() {
            for error in &report.errors {
                text.push_str(&format!("{who}: refused: {error}\n"));
            }
            text.push_str(&format!("{who}: nothing changed\n"));
            continue;
        }
        for change in &report.applied {
            text.push_str(&format!(
                "{who}: applied {}: {} -> {}\n",
                change.key, change.old, change.new
            ));
        }
        if !report.needs_restart.is_empty() {
            text.push_str(&format!(
                "{who}: needs a restart: {}\n",
                report.needs_restart.join(", ")
            ));
        }
        if report.applied.is_empty() && report.needs_restart.is_empty() {
            text.push_str(&format!("{who}: nothing changed\n"));
        }
    }
    for (who, why) in failures {
        text.push_str(&format!("{who}: not asked: {why}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use nexus_protocol::debug::ChangedSetting;

    use super::*;

    #[test]
    fn reports_say_what_was_applied_needed_or_wrong() {
        let applied = ReloadReport {
            source: "coordinator-1".into(),
            applied: vec![ChangedSetting {
                key: "log_filter".into(),
                old: "info".into(),
                new: "debug".into(),
            }],
            needs_restart: vec!["listen".into(), "peers".into()],
            errors: vec![],
        };
        let refused = ReloadReport {
            source: "agent-h".into(),
            errors: vec!["invalid config file a.toml: bad".into()],
            ..ReloadReport::default()
        };
        let quiet = ReloadReport {
            source: "coordinator-2".into(),
            ..ReloadReport::default()
        };
        expect_test::expect![[r#"
            coordinator-1: applied log_filter: info -> debug
            coordinator-1: needs a restart: listen, peers
            agent-h: refused: invalid config file a.toml: bad
            agent-h: nothing changed
            coordinator-2: nothing changed
            agent-x: not asked: NETWORK_ERROR: gone
        "#]]
        .assert_eq(&render_reports(
            &[applied, refused, quiet],
            &[("agent-x".into(), "NETWORK_ERROR: gone".into())],
        ));
    }

    #[test]
    fn the_cli_file_check_loads_the_credentials_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("me.pem"), "x").unwrap();
        std::fs::write(dir.path().join("me.key"), "x").unwrap();
        let problems = check_cli_text(
            &path,
            "ca = \"ca.pem\"\ncert = \"me.pem\"\nkey = \"me.key\"\n",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("do not load"), "{problems:?}");
    }
}
