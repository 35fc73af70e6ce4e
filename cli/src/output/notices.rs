//! Notices as admins list them (`nexus admin notice list`) and as every command shows a user
//! theirs on stderr. Pure: notices and the time in, text out.

use nexus_protocol::clock::Timestamp;
use nexus_protocol::model::{Notice, NoticeAudience, NoticeSource};
use serde_json::{Value, json};

use super::{rfc3339, table};

fn audience(notice: &Notice) -> String {
    match &notice.audience {
        NoticeAudience::Everyone => "everyone".into(),
        NoticeAudience::User(user) => format!("user {user}"),
    }
}

fn source(notice: &Notice) -> String {
    match &notice.source {
        NoticeSource::Admin => "admin".into(),
        NoticeSource::Policy { workspace } => format!("policy ({workspace})"),
        NoticeSource::Maintenance => "maintenance".into(),
        NoticeSource::KeptBranch { workspace, host } => {
            format!("kept branch ({workspace} on {host})")
        }
    }
}

/// `[{"id", "text", "user" (null: everyone), "source", "workspace", "posted_at", "until",
/// "current"}]`.
pub fn notices_json(notices: &[Notice], now: Timestamp) -> Value {
    Value::Array(
        notices
            .iter()
            .map(|notice| {
                let (source, workspace) = match &notice.source {
                    NoticeSource::Admin => ("admin", None),
                    NoticeSource::Policy { workspace } => ("policy", Some(workspace.to_string())),
                    NoticeSource::Maintenance => ("maintenance", None),
                    NoticeSource::KeptBranch { workspace, .. } => {
                        ("kept-branch", Some(workspace.to_string()))
                    }
                };
                json!({
                    "id": notice.id,
                    "text": notice.text,
                    "user": match &notice.audience {
                        NoticeAudience::Everyone => None,
                        NoticeAudience::User(user) => Some(user.to_string()),
                    },
                    "source": source,
                    "workspace": workspace,
                    "posted_at": rfc3339(notice.posted_at),
                    "until": notice.until.map(rfc3339),
                    "current": notice.is_current(now),
                })
            })
            .collect(),
    )
}

pub fn notices_table(notices: &[Notice], now: Timestamp) -> String {
    if notices.is_empty() {
        return "no notices\n".into();
    }
    table(
        &["ID", "AUDIENCE", "SOURCE", "POSTED", "UNTIL", "TEXT"],
        notices
            .iter()
            .map(|notice| {
                let until = match notice.until {
                    None => "cleared".into(),
                    Some(until) if !notice.is_current(now) => format!("{} (over)", rfc3339(until)),
                    Some(until) => rfc3339(until),
                };
                vec![
                    notice.id.to_string(),
                    audience(notice),
                    source(notice),
                    rfc3339(notice.posted_at),
                    until,
                    one_line(&notice.text, 60),
                ]
            })
            .collect(),
    )
}

/// What a user's command prints on stderr for their current notices: one line each, `notice:`
/// first, control characters (a terminal's escapes) shown as spaces. Empty without notices.
pub fn banner(notices: &[Notice]) -> String {
    notices
        .iter()
        .map(|notice| format!("notice: {}\n", one_line(&notice.text, usize::MAX)))
        .collect()
}

/// `text` on one line, without control characters, cut at `most` characters with `…`.
fn one_line(text: &str, most: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() > most {
        let mut cut: String = clean.chars().take(most.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn notice(id: u64, text: &str, audience: NoticeAudience, until: Option<u64>) -> Notice {
        Notice {
            id,
            text: text.into(),
            audience,
            source: NoticeSource::Admin,
            posted_at: Timestamp::from_millis(1_764_748_800_000),
            until: until.map(Timestamp::from_millis),
        }
    }

    fn examples() -> Vec<Notice> {
        vec![
            notice(
                1,
                "maintenance Sunday 02:00",
                NoticeAudience::Everyone,
                None,
            ),
            Notice {
                source: NoticeSource::Policy {
                    workspace: "api".parse().unwrap(),
                },
                ..notice(
                    2,
                    "api will be destroyed in 24 h",
                    NoticeAudience::User("ada".parse().unwrap()),
                    Some(1_764_835_200_000),
                )
            },
            notice(3, "over", NoticeAudience::Everyone, Some(1_764_748_800_001)),
        ]
    }

    #[test]
    fn admins_list_every_notice() {
        let now = Timestamp::from_millis(1_764_748_900_000);
        expect![[r#"
            ID  AUDIENCE  SOURCE        POSTED                UNTIL                            TEXT
            1   everyone  admin         2025-12-03T08:00:00Z  cleared                          maintenance Sunday 02:00
            2   user ada  policy (api)  2025-12-03T08:00:00Z  2025-12-04T08:00:00Z             api will be destroyed in 24 h
            3   everyone  admin         2025-12-03T08:00:00Z  2025-12-03T08:00:00.001Z (over)  over
        "#]]
        .assert_eq(&notices_table(&examples(), now));
        expect![[r#"[{"current":true,"id":1,"posted_at":"2025-12-03T08:00:00Z","source":"admin","text":"maintenance Sunday 02:00","until":null,"user":null,"workspace":null},{"current":true,"id":2,"posted_at":"2025-12-03T08:00:00Z","source":"policy","text":"api will be destroyed in 24 h","until":"2025-12-04T08:00:00Z","user":"ada","workspace":"api"},{"current":false,"id":3,"posted_at":"2025-12-03T08:00:00Z","source":"admin","text":"over","until":"2025-12-03T08:00:00.001Z","user":null,"workspace":null}]"#]]
        .assert_eq(&notices_json(&examples(), now).to_string());
        assert_eq!(notices_table(&[], now), "no notices\n");
    }

    #[test]
    fn a_user_sees_one_clean_line_per_notice() {
        let notices = vec![
            notice(
                1,
                "maintenance\nSunday \x1b[31m02:00",
                NoticeAudience::Everyone,
                None,
            ),
            notice(2, "second", NoticeAudience::Everyone, None),
        ];
        expect![[r#"
            notice: maintenance Sunday [31m02:00
            notice: second
        "#]]
        .assert_eq(&banner(&notices));
        assert_eq!(banner(&[]), "");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
