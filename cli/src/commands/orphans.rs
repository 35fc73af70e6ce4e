//! `nexus admin workspace orphans [--host H]... [--remove CONTAINER --host H]`: the containers
//! agents run for workspaces the coordinators do not name (after a restore from an older backup),
//! asked of every agent at once; and removing one on an admin's word, on the one host named.

use std::time::Duration;

use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{HostRequest, OrphanView, Request, Response};
use serde_json::{Value, json};

use crate::args::{OrphansArgs, OutputFormat};
use crate::error::CliError;
use crate::fleet::{self, Daemon, Roster};
use crate::output;
use crate::settings::Settings;

/// How long each agent may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a removal may take (the engine stops the container first).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(
    settings: &Settings,
    args: OrphansArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let OrphansArgs { hosts, remove } = args;
    let roster = Roster::discover(settings, &hosts, &[], ASK_TIMEOUT).await?;
    let agents: Vec<Daemon> = roster
        .daemons
        .into_iter()
        .filter(Daemon::is_agent)
        .collect();
    let mut unreachable: Vec<(String, String)> = roster
        .unlisted
        .into_iter()
        .map(|(who, error)| (who, error.error.message.clone()))
        .collect();
    if let Some(container) = remove {
        let [agent] = agents.as_slice() else {
            return Err(CliError::local(
                ErrorCode::InvalidArgument,
                "--remove takes exactly one --host: the host whose agent runs the container",
            )
            .suggest("list the orphans and their hosts with `nexus admin workspace orphans`"));
        };
        return remove_one(settings, agent, container, format).await;
    }
    let answers = fleet::ask_each(
        settings,
        &agents,
        settings.next_request_id(),
        ASK_TIMEOUT,
        |_| Some(Request::Host(HostRequest::Orphans)),
    )
    .await;
    let mut orphans = Vec::new();
    for (daemon, answer) in answers {
        match answer {
            Ok(Response::Orphans(found)) => orphans.extend(found),
            Ok(other) => unreachable.push((
                daemon.label(),
                CliError::unexpected(&other).error.message.clone(),
            )),
            Err(error) => unreachable.push((daemon.label(), error.error.message.clone())),
        }
    }
    orphans.sort_by(|a, b| (&a.host, &a.container).cmp(&(&b.host, &b.container)));
    output::emit(format, &orphans_json(&orphans, &unreachable), || {
        orphans_text(&orphans, &unreachable)
    });
    Ok(())
}

async fn remove_one(
    settings: &Settings,
    agent: &Daemon,
    container: String,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = Request::Host(HostRequest::RemoveOrphan {
        container: container.clone(),
    });
    let answer = fleet::ask(
        settings,
        agent,
        settings.next_request_id(),
        request,
        REMOVE_TIMEOUT,
    )
    .await?;
    if answer != Response::Ack {
        return Err(CliError::unexpected(&answer));
    }
    let host = match agent {
        Daemon::Agent { host, .. } => host.to_string(),
        Daemon::Coordinator { .. } => agent.label(),
    };
    let json = json!({"removed": container, "host": host});
    output::emit(format, &json, || {
        format!("removed orphan container {container} on host {host} (its files stay)\n")
    });
    Ok(())
}

/// `{"orphans": [...], "unreachable": [{"daemon", "error"}]}`.
pub fn orphans_json(orphans: &[OrphanView], unreachable: &[(String, String)]) -> Value {
    json!({
        "orphans": orphans
            .iter()
            .map(|o| json!({
                "host": o.host.as_str(),
                "container": o.container,
                "workspace": o.workspace,
                "image": o.image,
                "state": o.state,
            }))
            .collect::<Vec<_>>(),
        "unreachable": unreachable
            .iter()
            .map(|(daemon, error)| json!({"daemon": daemon, "error": error}))
            .collect::<Vec<_>>(),
    })
}

pub fn orphans_text(orphans: &[OrphanView], unreachable: &[(String, String)]) -> String {
    let mut text = if orphans.is_empty() {
        "no orphan containers\n".to_string()
    } else {
        let rows = orphans
            .iter()
            .map(|o| {
                vec![
                    o.host.to_string(),
                    o.container.clone(),
                    o.workspace.clone(),
                    o.image.clone(),
                    o.state.clone(),
                ]
            })
            .collect();
        let mut table = output::table(&["HOST", "CONTAINER", "WORKSPACE", "IMAGE", "STATE"], rows);
        table.push_str(
            "left running: remove one with `nexus admin workspace orphans --remove CONTAINER --host HOST`\n",
        );
        table
    };
    for (daemon, error) in unreachable {
        text.push_str(&format!("{daemon}: not asked: {error}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn orphan(host: &str, workspace: &str) -> OrphanView {
        OrphanView {
            host: host.parse().unwrap_or_else(|e| panic!("{e:?}")),
            container: format!("nexus.{host}.{workspace}.g1"),
            workspace: workspace.into(),
            image: "dev:latest".into(),
            state: "running".into(),
        }
    }

    #[test]
    fn orphans_print_as_a_table_with_the_way_to_remove_one() {
        let orphans = [orphan("h1", "late"), orphan("h2", "later")];
        let unreachable = [("agent-h3".to_string(), "timed out".to_string())];
        expect![[r#"
            HOST  CONTAINER          WORKSPACE  IMAGE       STATE
            h1    nexus.h1.late.g1   late       dev:latest  running
            h2    nexus.h2.later.g1  later      dev:latest  running
            left running: remove one with `nexus admin workspace orphans --remove CONTAINER --host HOST`
            agent-h3: not asked: timed out
        "#]]
        .assert_eq(&orphans_text(&orphans, &unreachable));
        expect![[r#"
            no orphan containers
        "#]]
        .assert_eq(&orphans_text(&[], &[]));
        let json = orphans_json(&orphans[..1], &unreachable);
        assert_eq!(json["orphans"][0]["container"], "nexus.h1.late.g1");
        assert_eq!(json["unreachable"][0]["daemon"], "agent-h3");
    }
}
