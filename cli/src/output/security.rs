//! Fleet security as admins see it: a token just made (its secret shown this once), the token
//! list (never a secret), and every identity's certificate with its expiry. Pure: data and the
//! time in, text out.

use nexus_protocol::clock::Timestamp;
use nexus_protocol::identity::Identity;
use nexus_protocol::join::{CertView, CreatedToken, TokenRole, TokenView, renew_at};
use nexus_protocol::model::Labels;
use serde_json::{Value, json};

use super::time_of;
use super::{rfc3339, table};

/// `agent`, `user` or `admin`.
fn role_kind(role: &TokenRole) -> &'static str {
    match role {
        TokenRole::Agent => "agent",
        TokenRole::User { role, .. } => role.as_str(),
    }
}

fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn uses_text(view: &TokenView) -> String {
    match view.uses_left {
        Some(left) => format!("{} used, {left} left", view.used),
        None => format!("{} used, unlimited", view.used),
    }
}

/// `token create`'s JSON: exactly `{"id", "token", "role", "expires_at", "uses_left"}` (`role`:
/// agent, user or admin; `uses_left`: null when unlimited).
pub fn created_token_json(created: &CreatedToken) -> Value {
    json!({
        "id": created.view.id.as_str(),
        "token": created.token.expose(),
        "role": role_kind(&created.view.role),
        "expires_at": rfc3339(created.view.expires_at),
        "uses_left": created.view.uses_left,
    })
}

/// `token create`'s text: the token alone on its first line (for `| head -1`), then what it is,
/// and for an agent token the command that uses it on a new host, at `coordinator`.
pub fn created_token_text(created: &CreatedToken, coordinator: &str) -> String {
    let view = &created.view;
    let mut text = format!("{}\n", created.token.expose());
    text.push_str(&format!("  id       {}\n", view.id));
    text.push_str(&format!("  role     {}\n", view.role));
    text.push_str(&format!("  expires  {}\n", rfc3339(view.expires_at)));
    let uses = view
        .uses_left
        .map_or("unlimited".to_string(), |left| left.to_string());
    text.push_str(&format!("  uses     {uses}\n"));
    if !view.labels.is_empty() {
        text.push_str(&format!("  labels   {}\n", labels_text(&view.labels)));
    }
    match &view.role {
        TokenRole::Agent => text.push_str(&format!(
            "Shown this once. On the new host, put the token in a file (mode 0600) and run:\n  nexus-agent --join-token-file FILE --coordinator {coordinator} --data-dir DIR\n"
        )),
        TokenRole::User { .. } => text.push_str(&format!(
            "Shown this once. The user puts it in a file and runs:\n  nexus login --coordinator {coordinator} --token-file FILE\n"
        )),
    }
    text
}

/// `token list`: `[{"id", "role", "name", "status", "labels", "created_at", "created_by",
/// "expires_at", "uses_left", "used", "revoked_at"}]`. Never a secret (a view holds none).
pub fn tokens_json(tokens: &[TokenView], now: Timestamp) -> Value {
    Value::Array(
        tokens
            .iter()
            .map(|view| {
                json!({
                    "id": view.id.as_str(),
                    "role": role_kind(&view.role),
                    "name": match &view.role {
                        TokenRole::Agent => None,
                        TokenRole::User { name, .. } => Some(name.as_str()),
                    },
                    "status": view.status(now),
                    "labels": view.labels,
                    "created_at": rfc3339(view.created_at),
                    "created_by": view.created_by,
                    "expires_at": rfc3339(view.expires_at),
                    "uses_left": view.uses_left,
                    "used": view.used,
                    "revoked_at": view.revoked_at.map(rfc3339),
                })
            })
            .collect(),
    )
}

pub fn tokens_table(tokens: &[TokenView], now: Timestamp) -> String {
    if tokens.is_empty() {
        return "No join tokens. Make one with `nexus admin token create`.\n".into();
    }
    let rows = tokens
        .iter()
        .map(|view| {
            vec![
                view.id.to_string(),
                view.role.to_string(),
                view.status(now).to_string(),
                uses_text(view),
                rfc3339(view.expires_at),
                view.created_by.clone(),
                labels_text(&view.labels),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ROLE",
            "STATUS",
            "USES",
            "EXPIRES",
            "CREATED-BY",
            "LABELS",
        ],
        rows,
    )
}

/// A certificate's state at `now_secs`: `denied`, `expired`, `renew due` (two thirds into its
/// life) or `ok`.
pub fn cert_status(view: &CertView, now_secs: i64) -> &'static str {
    if view.denied_at.is_some() {
        "denied"
    } else if now_secs >= view.cert.not_after {
        "expired"
    } else if now_secs >= renew_at(view.cert.not_before, view.cert.not_after) {
        "renew due"
    } else {
        "ok"
    }
}

/// `in 89d`, `in 5h`, `in 12m`, `in 30s`; `3h ago` once past.
pub fn expires_in(not_after: i64, now_secs: i64) -> String {
    let left = not_after - now_secs;
    let span = |secs: i64| match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if left > 0 {
        format!("in {}", span(left))
    } else {
        format!("{} ago", span(-left))
    }
}

fn identity_kind(identity: &Identity) -> &'static str {
    match identity {
        Identity::Coordinator(_) => "coordinator",
        Identity::Agent(_) => "agent",
        Identity::User { role, .. } => role.as_str(),
    }
}

fn identity_name(identity: &Identity) -> String {
    match identity {
        Identity::Coordinator(id) => id.to_string(),
        Identity::Agent(host) => host.to_string(),
        Identity::User { name, .. } => name.to_string(),
    }
}

/// Soonest to expire first, so what needs attention leads.
pub fn sorted_certs(certs: &[CertView]) -> Vec<&CertView> {
    let mut sorted: Vec<&CertView> = certs.iter().collect();
    sorted.sort_by(|a, b| {
        a.cert
            .not_after
            .cmp(&b.cert.not_after)
            .then_with(|| a.identity.cmp(&b.identity))
    });
    sorted
}

/// `admin certs`: `[{"identity", "kind", "name", "source", "fingerprint", "not_before",
/// "not_after", "expires_in_secs", "status", "denied_at"}]`, soonest to expire first.
pub fn certs_json(certs: &[CertView], now_secs: i64) -> Value {
    Value::Array(
        sorted_certs(certs)
            .into_iter()
            .map(|view| {
                json!({
                    "identity": view.identity.to_string(),
                    "kind": identity_kind(&view.identity),
                    "name": identity_name(&view.identity),
                    "source": view.cert.source.to_string(),
                    "fingerprint": view.cert.fingerprint,
                    "not_before": time_of(view.cert.not_before),
                    "not_after": time_of(view.cert.not_after),
                    "expires_in_secs": view.cert.not_after - now_secs,
                    "status": cert_status(view, now_secs),
                    "denied_at": view.denied_at.map(rfc3339),
                })
            })
            .collect(),
    )
}

pub fn certs_table(certs: &[CertView], now_secs: i64) -> String {
    if certs.is_empty() {
        return "No certificates known yet.\n".into();
    }
    let rows = sorted_certs(certs)
        .into_iter()
        .map(|view| {
            vec![
                view.identity.to_string(),
                view.cert.source.to_string(),
                time_of(view.cert.not_after),
                expires_in(view.cert.not_after, now_secs),
                cert_status(view, now_secs).to_string(),
            ]
        })
        .collect();
    table(
        &["IDENTITY", "SOURCE", "NOT-AFTER", "EXPIRES-IN", "STATUS"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::credentials::Secret;
    use nexus_protocol::identity::Role;
    use nexus_protocol::join::{CertRecord, CertSource, TokenId};
    use nexus_protocol::{HostId, NodeId, UserName};

    use super::*;

    const NOW_SECS: i64 = 1_790_000_000;
    const NOW: Timestamp = Timestamp(1_790_000_000_000);
    const SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

    fn id(n: u8) -> TokenId {
        format!("{:016x}", u64::from(n)).parse().unwrap()
    }

    fn view(n: u8, role: TokenRole, uses_left: Option<u32>) -> TokenView {
        TokenView {
            id: id(n),
            role,
            labels: Labels::new(),
            created_at: Timestamp(NOW.0 - 3_600_000),
            created_by: "admin alice".into(),
            expires_at: Timestamp(NOW.0 + 86_400_000),
            uses_left,
            used: 0,
            revoked_at: None,
        }
    }

    fn user(name: &str) -> TokenRole {
        TokenRole::User {
            name: UserName::new(name).unwrap(),
            role: Role::User,
        }
    }

    fn created(role: TokenRole, uses_left: Option<u32>) -> CreatedToken {
        let mut view = view(1, role, uses_left);
        view.labels.insert("zone".into(), "a".into());
        CreatedToken {
            view,
            token: Secret::new(format!("NXJT1-{}-{}-{SECRET}", "ab".repeat(32), id(1))),
        }
    }

    #[test]
    fn a_created_token_prints_once_with_how_to_use_it() {
        let agent = created(TokenRole::Agent, Some(1));
        expect![[r#"
            NXJT1-abababababababababababababababababababababababababababababababab-0000000000000001-5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7
              id       0000000000000001
              role     agent
              expires  2026-09-22T14:13:20Z
              uses     1
              labels   zone=a
            Shown this once. On the new host, put the token in a file (mode 0600) and run:
              nexus-agent --join-token-file FILE --coordinator 10.0.0.1:7400 --data-dir DIR
        "#]]
        .assert_eq(&created_token_text(&agent, "10.0.0.1:7400"));
        expect![[r#"{"expires_at":"2026-09-22T14:13:20Z","id":"0000000000000001","role":"agent","token":"NXJT1-abababababababababababababababababababababababababababababababab-0000000000000001-5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7","uses_left":1}"#]]
        .assert_eq(&created_token_json(&agent).to_string());
        let mut alice = created(user("alice"), None);
        alice.view.labels.clear();
        let json = created_token_json(&alice);
        assert_eq!(json["role"], "user");
        assert_eq!(json["uses_left"], Value::Null);
        assert!(created_token_text(&alice, "h:1").contains("nexus login --coordinator h:1"));
    }

    #[test]
    fn the_token_list_shows_status_and_uses_and_never_a_secret() {
        let mut used_up = view(2, TokenRole::Agent, Some(0));
        used_up.used = 1;
        used_up.labels.insert("zone".into(), "b".into());
        let mut revoked = view(3, user("bob"), None);
        revoked.revoked_at = Some(NOW);
        let mut expired = view(4, TokenRole::Agent, None);
        expired.expires_at = Timestamp(NOW.0 - 1000);
        let tokens = vec![
            view(1, TokenRole::Agent, Some(3)),
            used_up,
            revoked,
            expired,
        ];
        expect![[r#"
            ID                ROLE      STATUS   USES               EXPIRES               CREATED-BY   LABELS
            0000000000000001  agent     usable   0 used, 3 left     2026-09-22T14:13:20Z  admin alice  -
            0000000000000002  agent     used up  1 used, 0 left     2026-09-22T14:13:20Z  admin alice  zone=b
            0000000000000003  user bob  revoked  0 used, unlimited  2026-09-22T14:13:20Z  admin alice  -
            0000000000000004  agent     expired  0 used, unlimited  2026-09-21T14:13:19Z  admin alice  -
        "#]]
        .assert_eq(&tokens_table(&tokens, NOW));
        let json = tokens_json(&tokens, NOW);
        expect![[r#"{"created_at":"2026-09-21T13:13:20Z","created_by":"admin alice","expires_at":"2026-09-22T14:13:20Z","id":"0000000000000003","labels":{},"name":"bob","revoked_at":"2026-09-21T14:13:20Z","role":"user","status":"revoked","used":0,"uses_left":null}"#]]
        .assert_eq(&json[2].to_string());
        let secret = created(TokenRole::Agent, None);
        for text in [json.to_string(), tokens_table(&tokens, NOW)] {
            assert!(!text.contains(SECRET) && !text.contains("NXJT1"), "{text}");
        }
        assert!(
            !tokens_json(&[secret.view], NOW)
                .to_string()
                .contains(SECRET)
        );
        assert!(tokens_table(&[], NOW).contains("token create"));
    }

    fn cert(identity: Identity, not_before: i64, not_after: i64, source: CertSource) -> CertView {
        CertView {
            identity,
            cert: CertRecord {
                fingerprint: "cd".repeat(32),
                not_before,
                not_after,
                recorded_at: NOW,
                source,
            },
            denied_at: None,
        }
    }

    #[test]
    fn certificates_say_when_they_expire_and_what_needs_doing() {
        let day = 86_400;
        let h1 = Identity::Agent(HostId::new("h1").unwrap());
        let mut denied = cert(
            Identity::Agent(HostId::new("h2").unwrap()),
            NOW_SECS - day,
            NOW_SECS + 89 * day,
            CertSource::Token(id(7)),
        );
        denied.denied_at = Some(NOW);
        let certs = vec![
            cert(
                Identity::Coordinator(NodeId::new(1).unwrap()),
                NOW_SECS - day,
                NOW_SECS + 89 * day,
                CertSource::Coordinator(NodeId::new(1).unwrap()),
            ),
            cert(
                h1,
                NOW_SECS - 61 * day,
                NOW_SECS + 29 * day,
                CertSource::Renewal,
            ),
            cert(
                Identity::User {
                    name: UserName::new("bob").unwrap(),
                    role: Role::User,
                },
                NOW_SECS - 13 * 3600,
                NOW_SECS - 3600,
                CertSource::Token(id(8)),
            ),
            denied,
        ];
        expect![[r#"
            IDENTITY       SOURCE                  NOT-AFTER             EXPIRES-IN  STATUS
            user bob       token 0000000000000008  2026-09-21T13:13:20Z  60m ago     expired
            agent h1       renewal                 2026-10-20T14:13:20Z  in 29d      renew due
            coordinator 1  coordinator 1           2026-12-19T14:13:20Z  in 89d      ok
            agent h2       token 0000000000000007  2026-12-19T14:13:20Z  in 89d      denied
        "#]]
        .assert_eq(&certs_table(&certs, NOW_SECS));
        expect![[r#"{"denied_at":null,"expires_in_secs":-3600,"fingerprint":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","identity":"user bob","kind":"user","name":"bob","not_after":"2026-09-21T13:13:20Z","not_before":"2026-09-21T01:13:20Z","source":"token 0000000000000008","status":"expired"}"#]]
        .assert_eq(&certs_json(&certs, NOW_SECS)[0].to_string());
        assert_eq!(expires_in(NOW_SECS + 30, NOW_SECS), "in 30s");
        assert_eq!(expires_in(NOW_SECS + 3 * 3600, NOW_SECS), "in 3h");
        assert!(certs_table(&[], NOW_SECS).contains("No certificates"));
    }
}
