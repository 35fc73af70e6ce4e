//! Credential checks through the agent's endpoint: only a coordinator (which opened the secret)
//! may have the agent try one; the hollow runtime has no engine and says so; git's check waits
//! for the git worktrees branch. The secret is in no answer.

use std::sync::Arc;

use nexus_agent::endpoint::Endpoint;
use nexus_agent::runtime::hollow::{HollowConfig, HollowRuntime};
use nexus_protocol::credentials::{CredentialKind, CredentialProbe, CredentialSpec, Secret};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{HostRequest, Request, Response};
use nexus_protocol::transport::{Handler, Peer, Reply};
use nexus_protocol::{HostId, NodeId, RequestId};
use tokio::sync::watch;

fn peer(identity: Identity) -> Peer {
    Peer {
        identity,
        address: "127.0.0.1:1".parse().unwrap(),
        software: "test".into(),
    }
}

fn probe(kind: CredentialKind, scope: &str) -> HostRequest {
    HostRequest::CheckCredential(CredentialProbe {
        spec: CredentialSpec {
            name: "cred".into(),
            kind,
            scope: scope.into(),
            username: "bot".into(),
        },
        secret: Secret::new("planted-check-secret".into()),
        target: scope.into(),
    })
}

#[tokio::test]
async fn only_a_coordinator_may_have_the_agent_try_a_credential() {
    let host = HostId::new("check-host").unwrap();
    let runtime = Arc::new(HollowRuntime::new(host.clone(), HollowConfig::default()));
    let (_, desired) = watch::channel(None);
    let endpoint = Endpoint::new(Identity::Agent(host.clone()), runtime, desired);
    let ask = |who: Peer, request: HostRequest| {
        let endpoint = &endpoint;
        async move {
            match endpoint
                .handle(&who, RequestId::from_u128(1), Request::Host(request))
                .await
            {
                Reply::Once(answer) => answer,
                Reply::Stream(_) => panic!("a stream"),
            }
        }
    };
    for who in [
        Identity::User {
            name: "root".parse().unwrap(),
            role: Role::Admin,
        },
        Identity::User {
            name: "ada".parse().unwrap(),
            role: Role::User,
        },
        Identity::Agent(HostId::new("other").unwrap()),
    ] {
        let refused = ask(peer(who.clone()), probe(CredentialKind::Registry, "r:5000")).await;
        assert_eq!(
            refused.unwrap_err().code,
            ErrorCode::PermissionDenied,
            "{who}"
        );
    }
    let coordinator = || peer(Identity::Coordinator(NodeId::new(1).unwrap()));
    for (kind, scope, code, says) in [
        (
            CredentialKind::Registry,
            "r:5000",
            ErrorCode::Unsupported,
            "no container engine",
        ),
        (
            // A real `git ls-remote`, of a port nothing listens on.
            CredentialKind::Git,
            "http://127.0.0.1:9/team/app.git",
            ErrorCode::GitFailed,
            "git ls-remote failed",
        ),
    ] {
        let answer = ask(coordinator(), probe(kind, scope)).await.unwrap();
        let Response::CredentialChecked(report) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(report.host, host);
        assert_eq!(report.name, "cred");
        let error = report.error.clone().unwrap();
        assert_eq!(error.code, code);
        assert!(error.message.contains(says), "{error:?}");
        assert!(!format!("{report:?}").contains("planted-check-secret"));
    }
}
