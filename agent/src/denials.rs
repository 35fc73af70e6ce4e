//! The fleet's deny list at this agent: users' logs, exec and sync come straight to the agent's
//! endpoint, so it refuses denied identities like the coordinators do. The agent subscribes to
//! the list on its session with the leader (`AgentRequest::WatchDenyList`, subscribed afresh on
//! every new session, so after a reconnect or a change of leader), and puts each list pushed in
//! force in the endpoint's [`Gate`], which also closes live connections of newly denied
//! identities.
//!
//! Between sessions the last list stays in force, and it is kept in the data dir
//! (`deny-list.json`), so a restarted agent refuses the identities it refused before it reaches
//! the leader again. A coordinator that does not publish the list (an older version) is asked
//! again only on the next session.
//! Not here: checking a handshake against the list (`transport::Gate`).

use std::path::{Path, PathBuf};

use nexus_protocol::identity::Identity;
use nexus_protocol::join::DenyList;
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::transport::Gate;

use crate::asker::{Asker, Subscription, follow_sessions};
use crate::metrics::Metrics;

/// Where the last list is kept, in the data dir.
const FILE: &str = "deny-list.json";

/// The list kept by the last run (empty if none, or unreadable: logged).
pub fn load(data_dir: &Path) -> DenyList {
    let path = data_dir.join(FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return DenyList::default();
    };
    let mut list = DenyList::default();
    match serde_json::from_slice::<Vec<(String, i64)>>(&bytes) {
        Ok(entries) => {
            for (uri, cutoff) in entries {
                match Identity::from_uri(&uri) {
                    Ok(identity) => list.deny(identity, cutoff),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "a kept denial is unreadable: {e}")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(path = %path.display(), "the kept deny list is unreadable: {e}"),
    }
    list
}

/// Keeps `list` for the next run (written whole through a temporary file).
fn save(data_dir: &Path, list: &DenyList) -> std::io::Result<()> {
    let entries: Vec<(String, i64)> = list
        .iter()
        .map(|(identity, cutoff)| (identity.uri(), cutoff))
        .collect();
    let path = data_dir.join(FILE);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let text = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Keeps `gate` up to date with the leader's deny list until `shutdown` completes, keeping each
/// list in `data_dir`.
pub async fn follow(
    asker: Asker,
    gate: Gate,
    metrics: Metrics,
    data_dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let list = DenyListWatch {
        gate,
        metrics,
        data_dir,
    };
    follow_sessions(&asker, shutdown, &list).await;
}

/// The deny list's subscription, and where each list goes.
struct DenyListWatch {
    gate: Gate,
    metrics: Metrics,
    data_dir: PathBuf,
}

impl Subscription for DenyListWatch {
    const WHAT: &'static str = "the deny list";

    fn request(&self) -> Request {
        Request::Agent(AgentRequest::WatchDenyList)
    }

    /// Puts a list pushed in force (and keeps it for the next start).
    async fn take(&self, response: Response) -> Result<(), Response> {
        let Response::DenyList(list) = response else {
            return Err(response);
        };
        let denied = list.len();
        if let Err(e) = save(&self.data_dir, &list) {
            tracing::warn!(
                "cannot keep the deny list in {}: {e}",
                self.data_dir.display()
            );
        }
        let closed = self.gate.update(list);
        self.metrics
            .denied_identities
            .set(f64::from(u32::try_from(denied).unwrap_or(u32::MAX)));
        tracing::info!(denied, closed, "the deny list in force changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;

    use super::*;

    #[test]
    fn the_list_kept_is_the_list_read_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty(), "nothing kept yet");
        let mut list = DenyList::default();
        list.deny(Identity::Agent("gone".parse().unwrap()), 100);
        list.deny(
            Identity::User {
                name: "mallory".parse().unwrap(),
                role: Role::Admin,
            },
            200,
        );
        save(dir.path(), &list).unwrap();
        assert_eq!(load(dir.path()), list);
        // A damaged file is no reason not to start: it reads as empty.
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
