//! Admins' notices (`nexus admin notice set|list|clear`): posted and cleared through Raft
//! (`Command::PostNotice`, `Command::ClearNotices`), listed from the state. What users see of
//! them is `WorkspaceRequest::Notices` ([`super::workspaces`]).
//!
//! A post is checked here before it is proposed ([`check_post`], pure), so that an admin hears
//! a clear refusal rather than a rejected entry: a text, at most [`Notice::TEXT_MAX`] bytes, and
//! an end in the future.

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::Response;
use nexus_protocol::model::{Notice, NoticeAudience, NoticeSource};
use nexus_protocol::transport::Peer;
use nexus_protocol::{RequestId, UserName};

use super::Service;
use crate::cluster::Consistency;
use crate::state::{Command, NOTICES_MAX};

/// The text a notice is posted with (trimmed), or why it may not be.
pub(super) fn check_post(
    text: &str,
    until: Option<Timestamp>,
    now: Timestamp,
) -> Result<String, WireError> {
    let invalid = |why: String| WireError::new(ErrorCode::InvalidArgument, why);
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("a notice needs a text".into()));
    }
    if text.len() > Notice::TEXT_MAX {
        return Err(invalid(format!(
            "a notice's text is at most {} bytes, not {}",
            Notice::TEXT_MAX,
            text.len()
        )));
    }
    if let Some(until) = until
        && until <= now
    {
        let ago = now.saturating_since(until).as_secs();
        return Err(invalid(format!(
            "a notice must end in the future, not {ago} s ago"
        )));
    }
    Ok(text.to_string())
}

impl Service {
    pub(super) async fn post_notice(
        &self,
        peer: &Peer,
        request_id: RequestId,
        text: String,
        until: Option<Timestamp>,
        user: Option<UserName>,
    ) -> Result<Response, WireError> {
        let text = check_post(&text, until, clock::now())?;
        let audience = user.map_or(NoticeAudience::Everyone, NoticeAudience::User);
        self.cluster
            .propose(
                request_id,
                peer.identity.clone(),
                Command::PostNotice {
                    text: text.clone(),
                    audience: audience.clone(),
                    source: NoticeSource::Admin,
                    until,
                },
            )
            .await?;
        // The notice as numbered at apply: the newest of this text for this audience.
        let posted = self
            .cluster
            .read(Consistency::Linearizable, move |state| {
                state
                    .notices()
                    .all()
                    .filter(|n| {
                        n.text == text && n.audience == audience && n.source == NoticeSource::Admin
                    })
                    .max_by_key(|n| n.id)
                    .cloned()
            })
            .await?;
        Ok(Response::Notices(posted.into_iter().collect()))
    }

    pub(super) async fn notices(&self, consistency: Consistency) -> Result<Response, WireError> {
        let all = self
            .cluster
            .read(consistency, |state| {
                state.notices().all().cloned().collect::<Vec<_>>()
            })
            .await?;
        Ok(Response::Notices(all))
    }

    pub(super) async fn clear_notices(
        &self,
        peer: &Peer,
        request_id: RequestId,
        ids: Option<Vec<u64>>,
    ) -> Result<Response, WireError> {
        if ids.as_ref().is_some_and(|ids| ids.len() > NOTICES_MAX) {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                format!("at most {NOTICES_MAX} ids at once"),
            ));
        }
        let kept: Vec<u64> = self
            .cluster
            .read(Consistency::Linearizable, |state| {
                state.notices().all().map(|n| n.id).collect()
            })
            .await?;
        let ids = match ids {
            None => kept,
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| !kept.contains(id)) {
                    return Err(WireError::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "no notice {unknown}, so nothing was cleared; `nexus admin notice list` shows their ids"
                        ),
                    ));
                }
                ids
            }
        };
        if !ids.is_empty() {
            self.cluster
                .propose(
                    request_id,
                    peer.identity.clone(),
                    Command::ClearNotices(ids),
                )
                .await?;
        }
        self.notices(Consistency::Linearizable).await
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::identity::Role;
    use nexus_protocol::message::{AdminRequest, Request, WorkspaceRequest};

    use super::*;
    use crate::service::testing::{ask, code, named, one_node_with_h1, ws};

    #[test]
    fn a_post_needs_a_text_within_bounds_and_an_end_to_come() {
        let now = Timestamp::from_millis(10_000);
        assert_eq!(
            check_post("  maintenance at 2:00  ", None, now).unwrap(),
            "maintenance at 2:00"
        );
        assert!(check_post("soon", Some(Timestamp::from_millis(10_001)), now).is_ok());
        for (text, until) in [
            ("", None),
            (" \n\t", None),
            ("soon", Some(10_000)),
            ("soon", Some(1)),
        ] {
            let error = check_post(text, until.map(Timestamp::from_millis), now).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{text:?} {until:?}");
        }
        let long = "x".repeat(Notice::TEXT_MAX + 1);
        assert!(check_post(&long, None, now).is_err());
        assert!(check_post(&long[1..], None, now).is_ok());
    }

    fn admin(request: AdminRequest) -> Request {
        Request::Admin(request)
    }

    fn notices(response: Result<Response, WireError>) -> Vec<Notice> {
        match response {
            Ok(Response::Notices(notices)) => notices,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn admins_post_list_and_clear_notices_and_users_see_theirs() {
        let (_dir, node, service) = one_node_with_h1().await;
        let root = named("root", Role::Admin);
        let post = |text: &str, user: Option<&str>| {
            admin(AdminRequest::PostNotice {
                text: text.into(),
                until: None,
                user: user.map(|u| u.parse().unwrap()),
            })
        };
        let everyone = notices(ask(&service, &root, post("maintenance tonight", None)).await);
        assert_eq!(everyone.len(), 1);
        assert_eq!(everyone[0].audience, NoticeAudience::Everyone);
        assert_eq!(everyone[0].source, NoticeSource::Admin);
        let bobs = notices(ask(&service, &root, post("bob: your quota", Some("bob"))).await);
        assert_eq!(
            bobs[0].audience,
            NoticeAudience::User("bob".parse().unwrap())
        );
        assert_ne!(bobs[0].id, everyone[0].id);

        // Users may not post nor list everyone's; each sees the fleet's and their own.
        let alice = named("alice", Role::User);
        assert_eq!(
            code(ask(&service, &alice, post("hi", None)).await),
            Some(ErrorCode::PermissionDenied)
        );
        let bob = named("bob", Role::User);
        let seen = |peer| {
            let service = &service;
            async move { notices(ask(service, &peer, ws(WorkspaceRequest::Notices)).await) }
        };
        assert_eq!(seen(alice.clone()).await.len(), 1);
        assert_eq!(seen(bob.clone()).await.len(), 2);
        assert_eq!(
            notices(ask(&service, &root, admin(AdminRequest::Notices)).await).len(),
            2
        );

        // Bad input is refused with a reason; an unknown id clears nothing.
        assert_eq!(
            code(ask(&service, &root, post(" ", None)).await),
            Some(ErrorCode::InvalidArgument)
        );
        let unknown = admin(AdminRequest::ClearNotices(Some(vec![everyone[0].id, 999])));
        assert_eq!(
            code(ask(&service, &root, unknown).await),
            Some(ErrorCode::InvalidArgument)
        );
        assert_eq!(seen(bob.clone()).await.len(), 2);

        let clear = admin(AdminRequest::ClearNotices(Some(vec![everyone[0].id])));
        let left = notices(ask(&service, &root, clear).await);
        assert_eq!(left, bobs);
        assert!(seen(alice).await.is_empty());
        let none = notices(ask(&service, &root, admin(AdminRequest::ClearNotices(None))).await);
        assert!(none.is_empty());
        assert!(seen(bob).await.is_empty());
        node.stop().await.unwrap();
    }
}
