//! `nexus admin worktree verify [--host H] [--repair]`: the leader asks every host (or the one
//! named) to check the worktrees of its repository workspaces, and to mend them with `--repair`;
//! the answer is a row per worktree. The command fails while anything stays broken or a host could
//! not be asked, and says what to do next.

use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::git::{WorktreeCheck, WorktreeProblem, WorktreeReport};
use nexus_protocol::message::{AdminRequest, Request, Response};
use serde_json::{Value, json};

use crate::args::{OutputFormat, WorktreeCommand};
use crate::error::CliError;
use crate::output::{self, emit};
use crate::settings::Settings;

/// How long the whole verification may take: the leader gives each host 300 s, all at once.
const LIMIT: Duration = Duration::from_secs(330);

pub async fn run(
    command: WorktreeCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        WorktreeCommand::Verify { host, repair } => {
            let request = Request::Admin(AdminRequest::VerifyWorktrees { host, repair });
            match settings.request(request, LIMIT).await? {
                Response::Worktrees(reports) => {
                    emit(format, &reports_json(&reports, repair), || render(&reports));
                    verdict(&reports, repair)
                }
                other => Err(CliError::unexpected(&other)),
            }
        }
    }
}

/// How one worktree stands, in a word: `ok`, `repaired`, `broken`, or `stray` (the host keeps a
/// worktree of a workspace it no longer holds: reported, left alone).
pub fn status(check: &WorktreeCheck) -> &'static str {
    if !check.remaining.is_empty() {
        "broken"
    } else if check.problems.contains(&WorktreeProblem::NotAssigned) {
        "stray"
    } else if !check.problems.is_empty() && !check.repairs.is_empty() {
        "repaired"
    } else {
        "ok"
    }
}

fn problems(list: &[WorktreeProblem]) -> Vec<&str> {
    list.iter().map(WorktreeProblem::as_str).collect()
}

/// `{"repair", "hosts": [{"host", "error": {"code", "message"} | null, "checks": [{"workspace",
/// "url", "branch", "status", "problems", "repairs", "moved_aside", "remaining"}], "kept":
/// [{"workspace", "url", "branch", "unique_commits", "at"}]}], "broken", "unreachable"}`.
pub fn reports_json(reports: &[WorktreeReport], repair: bool) -> Value {
    let (broken, unreachable) = counts(reports);
    json!({
        "repair": repair,
        "hosts": reports.iter().map(|report| json!({
            "host": report.host.to_string(),
            "error": report.error.as_ref().map(|e| json!({"code": e.code.as_str(), "message": e.message})),
            "checks": report.checks.iter().map(|check| json!({
                "workspace": check.workspace.to_string(),
                "url": check.url,
                "branch": check.branch,
                "status": status(check),
                "problems": problems(&check.problems),
                "repairs": check.repairs,
                "moved_aside": check.moved_aside,
                "remaining": problems(&check.remaining),
            })).collect::<Vec<_>>(),
            "kept": report.kept.iter().map(|kept| json!({
                "workspace": kept.workspace.to_string(),
                "url": kept.url,
                "branch": kept.branch,
                "unique_commits": kept.unique_commits,
                "at": output::rfc3339(kept.at),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "broken": broken,
        "unreachable": unreachable,
    })
}

/// (worktrees still broken, hosts not asked).
fn counts(reports: &[WorktreeReport]) -> (usize, usize) {
    let broken = reports
        .iter()
        .flat_map(|r| &r.checks)
        .filter(|c| !c.healthy())
        .count();
    let unreachable = reports.iter().filter(|r| r.error.is_some()).count();
    (broken, unreachable)
}

/// A row per worktree (and per host not asked), then the branches destroys kept.
pub fn render(reports: &[WorktreeReport]) -> String {
    let mut rows = Vec::new();
    let mut kept = String::new();
    for report in reports {
        let host = report.host.to_string();
        if let Some(error) = &report.error {
            rows.push(vec![
                host.clone(),
                "-".into(),
                "-".into(),
                "not asked".into(),
                format!("{}: {}", error.code, error.message),
                String::new(),
                String::new(),
            ]);
        }
        for check in &report.checks {
            let mut found = problems(&check.problems).join(", ");
            if !check.remaining.is_empty() && check.remaining != check.problems {
                found.push_str(&format!(
                    " (still: {})",
                    problems(&check.remaining).join(", ")
                ));
            }
            rows.push(vec![
                host.clone(),
                check.workspace.to_string(),
                check.branch.clone(),
                status(check).into(),
                if found.is_empty() { "-".into() } else { found },
                if check.repairs.is_empty() {
                    "-".into()
                } else {
                    check.repairs.join("; ")
                },
                check.moved_aside.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        for branch in &report.kept {
            kept.push_str(&format!(
                "{host}: kept branch {} of {} ({} commit(s) found nowhere else; workspace {})\n",
                branch.branch, branch.url, branch.unique_commits, branch.workspace
            ));
        }
    }
    let mut text = if rows.is_empty() {
        "no host holds a workspace with a repository\n".to_string()
    } else {
        output::table(
            &[
                "HOST",
                "WORKSPACE",
                "BRANCH",
                "STATUS",
                "PROBLEMS",
                "REPAIRS",
                "MOVED ASIDE",
            ],
            rows,
        )
    };
    text.push_str(&kept);
    text
}

/// The exit: an error, with what to do next, while anything stays broken or a host was not asked.
pub fn verdict(reports: &[WorktreeReport], repair: bool) -> Result<(), CliError> {
    let (broken, unreachable) = counts(reports);
    if broken == 0 && unreachable == 0 {
        return Ok(());
    }
    let mut said = Vec::new();
    if broken > 0 {
        said.push(format!("{broken} worktree(s) broken"));
    }
    if unreachable > 0 {
        said.push(format!("{unreachable} host(s) not asked"));
    }
    let next = if broken > 0 && !repair {
        "run `nexus admin worktree verify --repair` to mend what can be mended (no file a user changed is deleted)"
    } else if broken > 0 {
        "what stays broken needs a hand: a missing mirror or base commit comes back when the workspace is made again (`nexus workspace destroy`, then `create --repo`); a workspace never made is made when its host reconciles it; files moved aside are at the paths shown"
    } else {
        "check the host (`nexus admin hosts`) and verify it again with `--host H`"
    };
    let code = if broken > 0 {
        ErrorCode::GitFailed
    } else {
        ErrorCode::BackendUnavailable
    };
    Err(CliError::local(code, said.join(" and ")).suggest(next))
}

#[cfg(test)]
mod tests {
    use nexus_protocol::error::WireError;

    use super::*;

    fn check(
        problems: &[WorktreeProblem],
        repairs: &[&str],
        remaining: &[WorktreeProblem],
    ) -> WorktreeCheck {
        WorktreeCheck {
            workspace: "api".parse().unwrap(),
            url: "https://git.example.com/app.git".into(),
            branch: "nexus/api".into(),
            problems: problems.to_vec(),
            repairs: repairs.iter().map(ToString::to_string).collect(),
            moved_aside: None,
            remaining: remaining.to_vec(),
        }
    }

    fn report(checks: Vec<WorktreeCheck>, error: Option<WireError>) -> WorktreeReport {
        WorktreeReport {
            host: "h1".parse().unwrap(),
            checks,
            kept: Vec::new(),
            error,
        }
    }

    #[test]
    fn each_worktree_has_a_status_and_the_exit_follows_what_stays_broken() {
        use WorktreeProblem as P;
        let ok = check(&[], &[], &[]);
        let repaired = check(&[P::Locked], &["unlocked"], &[]);
        let broken = check(&[P::Missing, P::Prunable], &[], &[P::Missing, P::Prunable]);
        let stray = check(&[P::NotAssigned], &[], &[]);
        assert_eq!(status(&ok), "ok");
        assert_eq!(status(&repaired), "repaired");
        assert_eq!(status(&broken), "broken");
        assert_eq!(status(&stray), "stray");

        assert!(
            verdict(
                &[report(vec![ok.clone(), repaired.clone(), stray], None)],
                true
            )
            .is_ok()
        );
        let failed = verdict(&[report(vec![ok.clone(), broken.clone()], None)], false).unwrap_err();
        assert_eq!(failed.error.code, ErrorCode::GitFailed);
        assert!(failed.suggestion.unwrap().contains("--repair"));
        let down = verdict(
            &[report(
                Vec::new(),
                Some(WireError::new(ErrorCode::Timeout, "no answer")),
            )],
            false,
        )
        .unwrap_err();
        assert_eq!(down.error.code, ErrorCode::BackendUnavailable);

        let json = reports_json(&[report(vec![repaired, broken], None)], true);
        assert_eq!(json["broken"], 1);
        assert_eq!(json["hosts"][0]["checks"][0]["status"], "repaired");
        assert_eq!(json["hosts"][0]["checks"][1]["remaining"][0], "missing");
        let text = render(&[report(
            vec![ok],
            Some(WireError::new(ErrorCode::Timeout, "late")),
        )]);
        assert!(text.contains("not asked"), "{text}");
        assert!(text.contains("nexus/api"), "{text}");
    }
}
