//! The lifecycle policies as printed: a workspace's lifecycle under `inspect` (last activity,
//! hold, policy in force, next automatic action) and the fleet's policies under `admin limits`.
//! Pure: data and the current time in, text or JSON out.

use nexus_protocol::clock::Timestamp;
use nexus_protocol::message::LifecycleView;
use nexus_protocol::policy::{PoliciesView, Policy, PolicyPatch, Secs};
use serde_json::{Value, json};

use super::{ago, rfc3339, table};

fn off_or(secs: u64) -> String {
    if secs == 0 {
        "off".into()
    } else {
        Secs(secs).to_string()
    }
}

fn policy_json(policy: &Policy) -> Value {
    json!({
        "inactive_stop_after_secs": policy.inactive_stop_after_secs,
        "max_lifetime_secs": policy.max_lifetime_secs,
        "first_notice_secs": policy.first_notice_secs,
        "last_notice_secs": policy.last_notice_secs,
    })
}

fn patch_json(patch: &PolicyPatch) -> Value {
    json!({
        "inactive_stop_after_secs": patch.inactive_stop_after_secs,
        "max_lifetime_secs": patch.max_lifetime_secs,
        "first_notice_secs": patch.first_notice_secs,
        "last_notice_secs": patch.last_notice_secs,
    })
}

/// One line of a policy: `stop after 7 d idle, destroy 30 d after creation (notices 24 h and 1 h before)`.
pub fn policy_line(policy: &Policy) -> String {
    let stop = match policy.inactive_stop_after_secs {
        0 => "no stop when idle".to_string(),
        secs => format!("stop after {} idle", Secs(secs)),
    };
    let destroy = match policy.max_lifetime_secs {
        0 => "no lifetime".to_string(),
        secs => {
            let (first, last) = policy.leads_secs();
            format!(
                "destroy {} after creation (notices {} and {} before)",
                Secs(secs),
                Secs(first),
                Secs(last)
            )
        }
    };
    format!("{stop}, {destroy}")
}

/// `inspect`'s lifecycle section.
pub fn lifecycle_text(view: &LifecycleView, now: Timestamp) -> String {
    let activity = &view.last_activity;
    let mut text = format!(
        "\nlifecycle:\n  last activity: {} ({}, {})\n",
        activity.kind,
        ago(Some(activity.at), now),
        rfc3339(activity.at)
    );
    text.push_str(&format!(
        "  held:          {}\n",
        if view.held {
            "yes (no automatic action)"
        } else {
            "no"
        }
    ));
    let own = if view.policy_override.is_empty() {
        ""
    } else {
        " (its own override)"
    };
    text.push_str(&format!(
        "  policy:        {}{own}\n",
        policy_line(&view.policy)
    ));
    if view.extended_secs > 0 {
        text.push_str(&format!("  extended by:   {}\n", Secs(view.extended_secs)));
    }
    let next = match &view.next {
        Some(next) if next.at <= now => format!("{} now ({})", next.action, next.reason),
        Some(next) => format!(
            "{} at {} (in {}; {})",
            next.action,
            rfc3339(next.at),
            Secs(next.at.saturating_since(now).as_secs()),
            next.reason
        ),
        None => "none".into(),
    };
    text.push_str(&format!("  next action:   {next}\n"));
    text
}

/// `inspect --output json`'s `lifecycle`.
pub fn lifecycle_json(view: &LifecycleView) -> Value {
    json!({
        "last_activity": {
            "at": rfc3339(view.last_activity.at),
            "kind": view.last_activity.kind.as_str(),
        },
        "held": view.held,
        "policy": policy_json(&view.policy),
        "policy_override": patch_json(&view.policy_override),
        "extended_secs": view.extended_secs,
        "next": view.next.as_ref().map(|next| json!({
            "action": next.action.as_str(),
            "at": rfc3339(next.at),
            "reason": next.reason,
        })),
    })
}

/// `admin limits`' policies: the cluster's, and each override (`*`: set there).
pub fn policies_table(view: &PoliciesView) -> String {
    let row = |scope: String, policy: &Policy, patch: &PolicyPatch| {
        let mark = |value: u64, set: Option<u64>| {
            format!("{}{}", off_or(value), if set.is_some() { "*" } else { "" })
        };
        vec![
            scope,
            mark(
                policy.inactive_stop_after_secs,
                patch.inactive_stop_after_secs,
            ),
            mark(policy.max_lifetime_secs, patch.max_lifetime_secs),
            mark(policy.first_notice_secs, patch.first_notice_secs),
            mark(policy.last_notice_secs, patch.last_notice_secs),
        ]
    };
    let mut rows = vec![row(
        "cluster".into(),
        &view.cluster,
        &PolicyPatch::default(),
    )];
    for (host, patch) in &view.hosts {
        rows.push(row(
            format!("host {host}"),
            &patch.over(view.cluster),
            patch,
        ));
    }
    for (name, patch) in &view.workspaces {
        rows.push(row(
            format!("workspace {name}"),
            &patch.over(view.cluster),
            patch,
        ));
    }
    let mut text =
        String::from("\nlifecycle policies (* overridden there; a workspace's over its host's):\n");
    text.push_str(&table(
        &[
            "SCOPE",
            "INACTIVE-STOP-AFTER",
            "MAX-LIFETIME",
            "FIRST-NOTICE",
            "LAST-NOTICE",
        ],
        rows,
    ));
    text
}

pub fn policies_json(view: &PoliciesView) -> Value {
    json!({
        "cluster": policy_json(&view.cluster),
        "hosts": view.hosts.iter().map(|(host, patch)| json!({
            "host": host.to_string(),
            "overrides": patch_json(patch),
        })).collect::<Vec<_>>(),
        "workspaces": view.workspaces.iter().map(|(name, patch)| json!({
            "workspace": name.to_string(),
            "overrides": patch_json(patch),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use nexus_protocol::model::{Activity, ActivityKind};
    use nexus_protocol::policy::{NextAction, PolicyAction};

    use super::*;

    #[test]
    fn inspect_shows_the_last_activity_the_policy_and_the_next_action() {
        let now = Timestamp::from_millis(1_000_000_000);
        let view = LifecycleView {
            workspace: "api".parse().unwrap(),
            last_activity: Activity {
                at: Timestamp::from_millis(1_000_000_000 - 30_000),
                kind: ActivityKind::Exec,
            },
            held: false,
            policy: Policy::default(),
            policy_override: PolicyPatch::default(),
            extended_secs: 0,
            next: Some(NextAction {
                action: PolicyAction::Stop,
                at: Timestamp::from_millis(1_000_000_000 + 7_200_000),
                reason: "inactive for 7 d".into(),
            }),
        };
        let text = lifecycle_text(&view, now);
        assert!(text.contains("last activity: exec (30s ago"), "{text}");
        assert!(text.contains("held:          no"), "{text}");
        assert!(
            text.contains(
                "stop after 7 d idle, destroy 30 d after creation (notices 24 h and 1 h before)"
            ),
            "{text}"
        );
        assert!(text.contains("next action:   stop at "), "{text}");
        assert!(text.contains("(in 2 h; inactive for 7 d)"), "{text}");
        let json = lifecycle_json(&view);
        assert_eq!(json["next"]["action"], "stop");
        assert_eq!(json["last_activity"]["kind"], "exec");
        assert_eq!(json["held"], false);
    }

    #[test]
    fn the_policies_table_marks_overrides() {
        let view = PoliciesView {
            cluster: Policy::default(),
            hosts: vec![(
                "h1".parse().unwrap(),
                PolicyPatch {
                    max_lifetime_secs: Some(0),
                    ..PolicyPatch::default()
                },
            )],
            workspaces: Vec::new(),
        };
        let text = policies_table(&view);
        assert!(text.contains("cluster"), "{text}");
        assert!(text.contains("off*"), "{text}");
        assert!(text.contains("7 d"), "{text}");
        assert_eq!(
            policies_json(&view)["cluster"]["max_lifetime_secs"],
            2_592_000
        );
    }
}
