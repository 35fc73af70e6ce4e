//! Applying fleet security's commands: every refusal of an enrolment (and that it changes
//! nothing), uses counted once, a host's takeover refused while its certificate is valid, a host
//! removed (with or without its workspaces) and re-admitted after its denial, a user revoked,
//! and a restore that never undoes a denial.

use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{CertRecord, CertSource, TokenId, TokenRole, TokenSpec};
use nexus_protocol::model::{Labels, PortRange};

use super::*;

/// A state and a clock in seconds: each command is applied at the time given.
struct Log {
    state: State,
    next: u128,
}

impl Log {
    fn new() -> Log {
        Log {
            state: State::default(),
            next: 0,
        }
    }

    fn at(&mut self, secs: u64, command: Command) -> Option<ErrorCode> {
        self.next += 1;
        let proposal = Proposal {
            request_id: RequestId::from_u128(self.next),
            at: Timestamp::from_millis(secs * 1000),
            proposer: admin(),
            command,
        };
        super::tests::apply_checked(&mut self.state, &proposal)
    }

    fn token(&self, id: &TokenId) -> nexus_protocol::join::TokenView {
        self.state.security().token(id).unwrap().view.clone()
    }
}

fn admin() -> Identity {
    Identity::User {
        name: "root".parse().unwrap(),
        role: Role::Admin,
    }
}

fn id(n: u8) -> TokenId {
    format!("{n:016x}").parse().unwrap()
}

fn hash(n: u8) -> String {
    format!("{n:064x}")
}

fn agent(host: &str) -> Identity {
    Identity::Agent(host.parse().unwrap())
}

fn user(name: &str, role: Role) -> Identity {
    Identity::User {
        name: name.parse().unwrap(),
        role,
    }
}

/// Token `n` (secret hash `hash(n)`) for `role`, living `ttl` seconds, allowing `uses`.
fn create(n: u8, role: TokenRole, ttl: u64, uses: Option<u32>) -> Command {
    Command::CreateToken {
        id: id(n),
        spec: TokenSpec {
            role,
            ttl_secs: ttl,
            uses,
            labels: Labels::new(),
        },
        secret_hash: hash(n),
        created_by: "root".into(),
    }
}

fn cert(not_before: i64, not_after: i64, token: u8) -> CertRecord {
    CertRecord {
        fingerprint: format!("{not_before:064x}"),
        not_before,
        not_after,
        recorded_at: Timestamp::from_millis(0),
        source: CertSource::Token(id(token)),
    }
}

fn enrol(token: u8, secret: u8, identity: Identity, cert: CertRecord) -> Command {
    Command::Enrol {
        token_id: id(token),
        secret_hash: hash(secret),
        identity,
        cert,
    }
}

fn register(host: &str) -> Command {
    Command::RegisterHost(HostInfo {
        port_range: PortRange::new(20_000, 20_100).unwrap(),
        ..nexus_fixtures::host(host)
    })
}

#[test]
fn an_enrolment_is_refused_with_the_tokens_own_code_and_changes_nothing() {
    let mut log = Log::new();
    assert_eq!(log.at(100, create(1, TokenRole::Agent, 50, Some(2))), None);
    let valid = || cert(100, 1_000, 1);
    // Unknown, and mistyped.
    assert_eq!(
        log.at(101, enrol(9, 9, agent("h1"), valid())),
        Some(ErrorCode::TokenInvalid)
    );
    assert_eq!(
        log.at(101, enrol(1, 2, agent("h1"), valid())),
        Some(ErrorCode::TokenInvalid)
    );
    // For someone else than its role.
    assert_eq!(
        log.at(101, enrol(1, 1, user("bob", Role::User), valid())),
        Some(ErrorCode::PermissionDenied)
    );
    let untouched = log.token(&id(1));
    assert_eq!((untouched.used, untouched.uses_left), (0, Some(2)));
    assert!(log.state.security().certificates().is_empty());
    // Two uses, counted once each; the third is refused.
    assert_eq!(log.at(102, enrol(1, 1, agent("h1"), valid())), None);
    assert_eq!(log.at(103, enrol(1, 1, agent("h2"), valid())), None);
    let used = log.token(&id(1));
    assert_eq!((used.used, used.uses_left), (2, Some(0)));
    assert_eq!(used.status(Timestamp::from_millis(103_000)), "used up");
    assert_eq!(
        log.at(104, enrol(1, 1, agent("h3"), valid())),
        Some(ErrorCode::TokenUsedUp)
    );
    let known: Vec<Identity> = log
        .state
        .security()
        .certificates()
        .into_iter()
        .map(|view| view.identity)
        .collect();
    assert_eq!(known, [agent("h1"), agent("h2")]);
    // Expiry is at `created + ttl`, exactly.
    assert_eq!(log.at(200, create(2, TokenRole::Agent, 50, None)), None);
    assert_eq!(log.at(249, enrol(2, 2, agent("h4"), valid())), None);
    assert_eq!(
        log.at(250, enrol(2, 2, agent("h5"), valid())),
        Some(ErrorCode::TokenExpired)
    );
    // Revoked: refused from then on, however many uses it had left.
    assert_eq!(log.at(300, create(3, TokenRole::Agent, 500, None)), None);
    assert_eq!(log.at(301, Command::RevokeToken { id: id(3) }), None);
    assert_eq!(
        log.at(302, enrol(3, 3, agent("h6"), valid())),
        Some(ErrorCode::TokenRevoked)
    );
    assert_eq!(
        log.at(302, Command::RevokeToken { id: id(7) }),
        Some(ErrorCode::InvalidArgument)
    );
}

#[test]
fn a_user_token_enrols_its_named_user_in_its_role_only() {
    let mut log = Log::new();
    let role = TokenRole::User {
        name: "bob".parse().unwrap(),
        role: Role::User,
    };
    assert_eq!(log.at(0, create(1, role, 100, Some(5))), None);
    for wrong in [
        user("bob", Role::Admin),
        user("eve", Role::User),
        agent("h1"),
    ] {
        assert_eq!(
            log.at(1, enrol(1, 1, wrong, cert(0, 50, 1))),
            Some(ErrorCode::PermissionDenied)
        );
    }
    assert_eq!(
        log.at(1, enrol(1, 1, user("bob", Role::User), cert(0, 50, 1))),
        None
    );
    assert_eq!(log.token(&id(1)).used, 1);
}

#[test]
fn a_host_in_the_fleet_is_taken_over_only_once_its_certificate_expired() {
    let mut log = Log::new();
    assert_eq!(log.at(0, create(1, TokenRole::Agent, 10_000, None)), None);
    assert_eq!(log.at(0, enrol(1, 1, agent("h1"), cert(0, 100, 1))), None);
    assert_eq!(log.at(1, register("h1")), None);
    // Another enrolment under h1 while its certificate is valid: a takeover, refused.
    assert_eq!(
        log.at(50, enrol(1, 1, agent("h1"), cert(50, 150, 1))),
        Some(ErrorCode::PermissionDenied)
    );
    // Once it expired (the host was off), the host re-enrols with a token.
    assert_eq!(
        log.at(100, enrol(1, 1, agent("h1"), cert(100, 200, 1))),
        None
    );
    let known = log.state.security().certificate(&agent("h1")).unwrap();
    assert_eq!(known.not_before, 100);
}

#[test]
fn removing_a_host_is_refused_while_it_holds_workspaces_unless_forced() {
    let mut log = Log::new();
    assert_eq!(
        log.at(
            0,
            Command::RemoveHost {
                host: "h1".parse().unwrap(),
                force: false,
                by: "root".into()
            }
        ),
        Some(ErrorCode::InvalidArgument),
        "an unknown host"
    );
    assert_eq!(log.at(0, register("h1")), None);
    assert_eq!(log.at(0, register("h2")), None);
    let create = Command::CreateWorkspace {
        spec: WorkspaceSpec {
            image: "img".into(),
            ports: nexus_fixtures::ports(&[8080]),
            ..nexus_fixtures::spec("api")
        },
        owner: "alice".parse().unwrap(),
        host: "h1".parse().unwrap(),
        ports: vec![PortBinding {
            container: 8080,
            host: 20_001,
        }],
    };
    assert_eq!(log.at(1, create), None);
    let remove = |force| Command::RemoveHost {
        host: "h1".parse().unwrap(),
        force,
        by: "root".into(),
    };
    let before = log.state.clone();
    assert_eq!(log.at(2, remove(false)), Some(ErrorCode::InvalidArgument));
    assert_eq!(log.state.hosts(), before.hosts());
    assert_eq!(log.state.workspaces().len(), 1);
    assert!(log.state.security().deny_list().is_empty());
    let version = log.state.desired_version(&"h1".parse().unwrap());
    // Forced: the host goes with its workspace, its ports and events; its agent is denied.
    assert_eq!(log.at(3, remove(true)), None);
    assert!(
        !log.state
            .hosts()
            .contains_key(&"h1".parse::<HostId>().unwrap())
    );
    assert!(log.state.workspaces().is_empty());
    assert!(log.state.ports().is_empty());
    assert_eq!(log.state.host_ids().len(), 1);
    assert!(log.state.desired_version(&"h1".parse().unwrap()) > version);
    let deny = log.state.security().deny_list();
    assert!(deny.refuses(&agent("h1"), 3));
    assert!(!deny.refuses(&agent("h1"), 4));
    assert!(!deny.refuses(&agent("h2"), 0));
    let denial = log.state.security().denial(&agent("h1")).unwrap();
    assert!(denial.reason.contains("--force"), "{}", denial.reason);
    // A host without workspaces goes without --force.
    assert_eq!(
        log.at(
            4,
            Command::RemoveHost {
                host: "h2".parse().unwrap(),
                force: false,
                by: "root".into()
            }
        ),
        None
    );
    assert!(log.state.hosts().is_empty());
}

#[test]
fn a_removed_host_is_readmitted_with_a_certificate_that_begins_after_its_denial() {
    let mut log = Log::new();
    assert_eq!(log.at(0, create(1, TokenRole::Agent, 10_000, None)), None);
    assert_eq!(log.at(0, enrol(1, 1, agent("h1"), cert(1, 1_000, 1))), None);
    assert_eq!(log.at(1, register("h1")), None);
    let remove = Command::RemoveHost {
        host: "h1".parse().unwrap(),
        force: false,
        by: "root".into(),
    };
    assert_eq!(log.at(10, remove), None);
    let view = &log.state.security().certificates()[0];
    assert!(view.denied_at.is_some(), "its old certificate shows denied");
    // What a coordinator signs for it now begins after the cutoff, so it is let in.
    let deny = log.state.security().deny_list().clone();
    let begins = nexus_protocol::join::not_before_for(&deny, &agent("h1"), 12);
    assert_eq!(begins, 11);
    // Not with the token it had before its removal (unlimited, and still usable): only with one
    // an admin made since.
    assert_eq!(
        log.at(12, enrol(1, 1, agent("h1"), cert(begins, 1_000, 1))),
        Some(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        log.at(12, create(2, TokenRole::Agent, 10_000, Some(1))),
        None
    );
    // A certificate that begins before the denial is refused even with a new token (a signer
    // whose replica lagged the denial).
    assert_eq!(
        log.at(12, enrol(2, 2, agent("h1"), cert(5, 1_000, 2))),
        Some(ErrorCode::AuthenticationFailed)
    );
    assert_eq!(
        log.at(12, enrol(2, 2, agent("h1"), cert(begins, 1_000, 2))),
        None
    );
    assert!(!deny.refuses(&agent("h1"), begins));
    assert!(deny.refuses(&agent("h1"), 1));
    let view = &log.state.security().certificates()[0];
    assert_eq!(view.denied_at, None, "the new certificate is not denied");
    assert_eq!(log.at(13, register("h1")), None);
}

#[test]
fn a_host_with_a_certificate_made_by_hand_is_not_taken_over_by_a_token() {
    let mut log = Log::new();
    assert_eq!(log.at(0, create(1, TokenRole::Agent, 10_000, None)), None);
    // h1 joined with `nexus pki` files: the cluster never recorded its certificate.
    assert_eq!(log.at(0, register("h1")), None);
    assert_eq!(
        log.at(1, enrol(1, 1, agent("h1"), cert(1, 100, 1))),
        Some(ErrorCode::PermissionDenied)
    );
    // Enrolled but not yet registered: its recorded, valid certificate guards the id too.
    assert_eq!(log.at(2, enrol(1, 1, agent("h2"), cert(2, 100, 1))), None);
    assert_eq!(
        log.at(3, enrol(1, 1, agent("h2"), cert(3, 100, 1))),
        Some(ErrorCode::PermissionDenied)
    );
}

#[test]
fn a_denied_identity_is_not_renewed_and_its_newest_certificate_is_caught() {
    let mut log = Log::new();
    assert_eq!(log.at(0, create(1, TokenRole::Agent, 10_000, None)), None);
    assert_eq!(log.at(0, enrol(1, 1, agent("h1"), cert(0, 1_000, 1))), None);
    assert_eq!(log.at(1, register("h1")), None);
    // A renewal signed by a coordinator whose clock runs ahead: it begins at 40.
    let renewal = |not_before| Command::RecordCertificate {
        identity: agent("h1"),
        cert: CertRecord {
            source: CertSource::Renewal,
            ..cert(not_before, 1_000, 1)
        },
    };
    assert_eq!(log.at(5, renewal(40)), None);
    // Removed at 10 by this clock: the cutoff still covers the certificate that began at 40.
    let remove = Command::RemoveHost {
        host: "h1".parse().unwrap(),
        force: false,
        by: "root".into(),
    };
    assert_eq!(log.at(10, remove), None);
    assert!(log.state.security().deny_list().refuses(&agent("h1"), 40));
    // And a renewal signed by a replica that had not seen the removal is refused.
    assert_eq!(
        log.at(11, renewal(30)),
        Some(ErrorCode::AuthenticationFailed)
    );
}

#[test]
fn a_revoked_user_is_denied_in_every_role() {
    let mut log = Log::new();
    let role = TokenRole::User {
        name: "bob".parse().unwrap(),
        role: Role::Admin,
    };
    assert_eq!(log.at(0, create(1, role, 100, None)), None);
    assert_eq!(
        log.at(1, enrol(1, 1, user("bob", Role::Admin), cert(0, 50, 1))),
        None
    );
    let revoke = Command::RevokeUser {
        name: "bob".parse().unwrap(),
        by: "root".into(),
    };
    assert_eq!(log.at(20, revoke), None);
    let deny = log.state.security().deny_list();
    assert!(deny.refuses(&user("bob", Role::Admin), 0));
    assert!(deny.refuses(&user("bob", Role::User), 20));
    assert!(!deny.refuses(&user("bob", Role::User), 21));
    assert!(!deny.refuses(&user("alice", Role::User), 0));
    let views = log.state.security().certificates();
    assert_eq!(views[0].identity, user("bob", Role::Admin));
    assert_eq!(views[0].denied_at, Some(Timestamp::from_millis(20_000)));
    assert_eq!(
        log.state
            .security()
            .denial(&user("bob", Role::Admin))
            .unwrap()
            .by,
        "root"
    );
}

#[test]
fn a_restore_keeps_the_running_clusters_denials_and_the_backups() {
    // The backup knows of a denial of h2; since it was taken, h1 was removed.
    let mut backup = Log::new();
    assert_eq!(backup.at(0, register("h2")), None);
    let remove = |host: &str| Command::RemoveHost {
        host: host.parse().unwrap(),
        force: false,
        by: "root".into(),
    };
    assert_eq!(backup.at(5, remove("h2")), None);
    let mut running = backup.state.clone();
    let mut log = Log {
        state: std::mem::take(&mut running),
        next: 100,
    };
    assert_eq!(log.at(0, register("h1")), None);
    assert_eq!(log.at(50, remove("h1")), None);
    let merged = Security::merged_for_restore(
        log.state.security().clone(),
        backup.state.security().clone(),
    );
    assert!(merged.deny_list().refuses(&agent("h1"), 50));
    assert!(merged.deny_list().refuses(&agent("h2"), 5));
    // And a backup taken before any denial undoes none.
    let merged = Security::merged_for_restore(log.state.security().clone(), Security::default());
    assert!(merged.deny_list().refuses(&agent("h1"), 50));
    assert!(merged.denial(&agent("h2")).is_some());
}
