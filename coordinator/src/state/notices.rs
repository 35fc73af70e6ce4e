//! The fleet's notices: what the CLI shows its users on stderr (an admin's maintenance window, a
//! policy's warning before it destroys a workspace). Replicated, numbered at apply, bounded.
//!
//! Not here: who may post or read them (the service), nor how the CLI shows them.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::UserName;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::model::{Notice, NoticeAudience, NoticeSource};
use serde::{Deserialize, Serialize};

use super::{Origin, Outcome, State, reject};
use crate::policy;

/// The most notices the fleet keeps at once: expired ones go when a post would pass it; with
/// that many current, a post is refused.
pub const NOTICES_MAX: usize = 10_000;

/// The notices in force, by id, and the next id to give.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notices {
    by_id: BTreeMap<u64, Notice>,
    next_id: u64,
}

impl Notices {
    /// The notices `user` sees at `now`, oldest first.
    pub fn for_user(&self, user: &UserName, now: Timestamp) -> Vec<Notice> {
        self.by_id
            .values()
            .filter(|notice| notice.is_current(now) && notice.is_for(user))
            .cloned()
            .collect()
    }

    /// Every notice kept, oldest first (current or not).
    pub fn all(&self) -> impl Iterator<Item = &Notice> {
        self.by_id.values()
    }

    /// These notices without the policies' (an admin's and the maintenance window's stay),
    /// numbering on where they were.
    pub(super) fn without_policy_notices(mut self) -> Notices {
        self.by_id
            .retain(|_, notice| !matches!(notice.source, NoticeSource::Policy { .. }));
        self
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether [`NOTICES_MAX`] current notices are kept at `now`: a post is then refused rather
    /// than a current one dropped (a policy's destroy goes by its notices being shown).
    fn is_full(&self, now: Timestamp) -> bool {
        self.by_id.len() >= NOTICES_MAX
            && self.by_id.values().filter(|n| n.is_current(now)).count() >= NOTICES_MAX
    }

    /// Keeps a notice, numbered here; drops expired ones first when [`NOTICES_MAX`] are kept
    /// (the caller checked [`Notices::is_full`]).
    fn post(&mut self, notice: Notice) -> u64 {
        if self.by_id.len() >= NOTICES_MAX {
            let now = notice.posted_at;
            self.by_id.retain(|_, kept| kept.is_current(now));
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_id.insert(id, Notice { id, ..notice });
        id
    }
}

impl State {
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Posts a notice at `at`. Its text is bounded; an empty one is refused.
    pub(super) fn post_notice(
        &mut self,
        origin: Origin<'_>,
        text: &str,
        audience: &NoticeAudience,
        source: &NoticeSource,
        until: Option<Timestamp>,
    ) -> Outcome {
        let text = text.trim();
        if text.is_empty() {
            return reject(ErrorCode::InvalidArgument, "a notice needs a text");
        }
        if text.len() > Notice::TEXT_MAX {
            return reject(
                ErrorCode::InvalidArgument,
                format!("a notice's text is at most {} bytes", Notice::TEXT_MAX),
            );
        }
        if let NoticeSource::Policy { workspace } = source {
            // Checked again at apply, as a destroy is: a notice proposed twice (a retry after a
            // timeout, a leader change) must not count as the last one, nor one proposed before
            // a hold or a destroy be kept after it.
            let due = self.workspaces.get(workspace).is_some_and(|w| {
                policy::notice_due(&w.subject(workspace), &self.policy_for(w), origin.at)
            });
            if !due {
                return reject(
                    ErrorCode::InvalidArgument,
                    format!("no policy notice is due for {workspace}"),
                );
            }
        }
        if self.notices.is_full(origin.at) {
            return reject(
                ErrorCode::InvalidArgument,
                format!(
                    "the fleet keeps at most {NOTICES_MAX} current notices: clear some (`nexus admin notice list`)"
                ),
            );
        }
        let id = self.notices.post(Notice {
            id: 0,
            text: text.to_string(),
            audience: audience.clone(),
            source: source.clone(),
            posted_at: origin.at,
            until,
        });
        if let NoticeSource::Policy { workspace } = source {
            self.noted(origin, workspace, id, text);
        }
        Outcome::Applied
    }

    /// Clears the notices of these ids (unknown ones are skipped). A policy notice is forgotten
    /// by its workspace's lifecycle too, even one already dropped from the notices.
    pub(super) fn clear_notices(&mut self, ids: &[u64]) -> Outcome {
        for id in ids {
            self.notices.by_id.remove(id);
        }
        let cleared: BTreeSet<u64> = ids.iter().copied().collect();
        self.workspaces.update_where(
            |_, workspace| {
                let notices = &workspace.lifecycle.notices;
                notices.iter().any(|(id, _)| cleared.contains(id))
            },
            |_, workspace| {
                let notices = &mut workspace.lifecycle.notices;
                notices.retain(|(id, _)| !cleared.contains(id));
            },
        );
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(text: &str, audience: NoticeAudience, until: Option<u64>) -> Notice {
        Notice {
            id: 0,
            text: text.into(),
            audience,
            source: NoticeSource::Admin,
            posted_at: Timestamp::from_millis(1),
            until: until.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn a_user_sees_the_fleets_and_their_own_current_notices() {
        let mut notices = Notices::default();
        let alice: UserName = "alice".parse().unwrap();
        let bob: UserName = "bob".parse().unwrap();
        let a = notices.post(notice("all", NoticeAudience::Everyone, None));
        notices.post(notice("bob's", NoticeAudience::User(bob.clone()), None));
        notices.post(notice("over", NoticeAudience::Everyone, Some(5)));
        let seen = |user: &UserName, now| -> Vec<String> {
            notices
                .for_user(user, Timestamp::from_millis(now))
                .into_iter()
                .map(|n| n.text)
                .collect()
        };
        assert_eq!(seen(&alice, 4), ["all", "over"]);
        assert_eq!(seen(&alice, 5), ["all"]);
        assert_eq!(seen(&bob, 5), ["all", "bob's"]);
        assert_eq!(a, 1);
        assert_eq!(
            notices.post(notice("next", NoticeAudience::Everyone, None)),
            4
        );
    }
}
