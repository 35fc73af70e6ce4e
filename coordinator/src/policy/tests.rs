use nexus_protocol::model::ActivityKind;
use nexus_protocol::policy::PolicyPatch;

use super::*;

const H: u64 = 3_600;
const D: u64 = 86_400;

fn secs(s: u64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

/// Created at 0, running, last used at `used` (seconds).
fn subject(used: u64) -> Subject {
    Subject {
        name: "api".parse().unwrap(),
        owner: "alice".parse().unwrap(),
        created_at: secs(0),
        running: true,
        destroying: false,
        held: false,
        last_activity: Activity {
            at: secs(used),
            kind: ActivityKind::Exec,
        },
        extended_secs: 0,
        notices: Vec::new(),
    }
}

fn kinds(actions: &[Action]) -> Vec<PolicyAction> {
    actions.iter().map(Action::kind).collect()
}

fn at(subject: &Subject, policy: Policy, now: u64) -> Vec<Action> {
    decide([(subject, policy)], secs(now))
}

#[test]
fn the_decision_table() {
    let policy = Policy::default();
    let lifetime = 30 * D;
    let noticed = |times: &[u64]| {
        let mut s = subject(lifetime);
        s.running = false;
        s.notices = times
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64 + 1, secs(*t)))
            .collect();
        s
    };
    let held = Subject {
        held: true,
        ..subject(0)
    };
    let stopped = Subject {
        running: false,
        ..subject(0)
    };
    let override_short = PolicyPatch {
        inactive_stop_after_secs: Some(60),
        ..Default::default()
    }
    .over(policy);
    let no_lifetime = Policy {
        max_lifetime_secs: 0,
        ..policy
    };
    use PolicyAction::*;
    let rows: Vec<(&str, Subject, Policy, u64, Vec<PolicyAction>)> = vec![
        ("inactive", subject(0), policy, 7 * D + 5, vec![Stop]),
        ("active just in time", subject(5), policy, 7 * D + 4, vec![]),
        (
            "the clock exactly on the stop",
            subject(0),
            policy,
            7 * D,
            vec![Stop],
        ),
        (
            "a millisecond before it",
            subject(0),
            policy,
            7 * D - 1,
            vec![],
        ),
        ("stopped already", stopped, policy, 7 * D + 5, vec![]),
        ("held, idle and old", held.clone(), policy, 40 * D, vec![]),
        (
            "inactivity off",
            subject(0),
            Policy {
                inactive_stop_after_secs: 0,
                ..no_lifetime
            },
            40 * D,
            vec![],
        ),
        (
            "per-workspace override",
            subject(0),
            override_short,
            60,
            vec![Stop],
        ),
        (
            "lifetime reached, no notice yet",
            subject(lifetime),
            policy,
            lifetime,
            vec![Notice],
        ),
        (
            "first notice due on its boundary",
            subject(lifetime),
            policy,
            lifetime - D,
            vec![Notice],
        ),
        (
            "before the first notice",
            subject(lifetime),
            policy,
            lifetime - D - 1,
            vec![],
        ),
        (
            "last notice due",
            noticed(&[lifetime - D]),
            policy,
            lifetime - H,
            vec![Notice],
        ),
        (
            "last notice not yet",
            noticed(&[lifetime - D]),
            policy,
            lifetime - H - 1,
            vec![],
        ),
        (
            "destroy on the boundary",
            noticed(&[lifetime - D, lifetime - H]),
            policy,
            lifetime,
            vec![Destroy],
        ),
        (
            "destroy not before it",
            noticed(&[lifetime - D, lifetime - H]),
            policy,
            lifetime - 1,
            vec![],
        ),
        (
            "a late first notice postpones the last",
            noticed(&[lifetime + 10 * D]),
            policy,
            lifetime + 11 * D - H - 1,
            vec![],
        ),
        (
            "and the destroy",
            noticed(&[lifetime + 10 * D, lifetime + 11 * D - H]),
            policy,
            lifetime + 11 * D - 1,
            vec![],
        ),
        (
            "which comes a lead after the first",
            noticed(&[lifetime + 10 * D, lifetime + 11 * D - H]),
            policy,
            lifetime + 11 * D,
            vec![Destroy],
        ),
        (
            "lifetime turned off takes notices back",
            noticed(&[lifetime - D]),
            no_lifetime,
            lifetime,
            vec![Withdraw],
        ),
        (
            "a longer lifetime takes them back",
            noticed(&[lifetime - D]),
            Policy {
                max_lifetime_secs: 60 * D,
                ..policy
            },
            lifetime,
            vec![Withdraw],
        ),
    ];
    for (row, subject, policy, now, expected) in rows {
        assert_eq!(kinds(&at(&subject, policy, now)), expected, "{row}");
    }
}

#[test]
fn an_extension_pushes_the_deadline() {
    let s = Subject {
        extended_secs: 5 * D,
        ..subject(40 * D)
    };
    let policy = Policy::default();
    assert!(at(&s, policy, 34 * D - 1).is_empty());
    let actions = at(&s, policy, 34 * D);
    let [Action::Notice { text, .. }] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert!(text.contains("extended by 5 d"), "{text}");
}

#[test]
fn notices_and_reasons_say_what_and_when() {
    let policy = Policy::default();
    let s = subject(30 * D);
    let actions = at(&s, policy, 30 * D - D + 7);
    assert_eq!(
        actions,
        [Action::Notice {
            name: s.name.clone(),
            owner: s.owner.clone(),
            text:
                "api will be destroyed in 24 h: lifetime 30 d; `nexus workspace hold api` to keep it"
                    .into(),
            until: secs(30 * D + 7),
        }]
    );
    let idle = at(&subject(0), policy, 8 * D);
    assert_eq!(
        idle,
        [Action::Stop {
            name: s.name.clone(),
            idle_for_secs: 7 * D,
            reason: "stopped by policy: inactive for 7 d".into(),
        }]
    );
    let noticed = Subject {
        notices: vec![(4, secs(29 * D)), (9, secs(30 * D - H))],
        ..subject(30 * D)
    };
    let destroy = at(&noticed, policy, 30 * D);
    assert_eq!(
        destroy,
        [Action::Destroy {
            name: s.name.clone(),
            reason: "destroyed by policy: lifetime 30 d".into(),
        }]
    );
    assert!(destroy_due(&noticed, &policy, secs(30 * D)));
    assert!(!destroy_due(
        &Subject {
            held: true,
            ..noticed.clone()
        },
        &policy,
        secs(30 * D)
    ));
    let withdraw = at(
        &Subject {
            held: true,
            ..noticed
        },
        policy,
        30 * D,
    );
    assert_eq!(
        withdraw,
        [Action::Withdraw {
            name: s.name,
            ids: vec![4, 9],
        }]
    );
}

#[test]
fn next_names_the_earliest_action() {
    let policy = Policy::default();
    let next_of = |s: &Subject| next(s, &policy).map(|n| (n.action, n.at, n.reason));
    assert_eq!(
        next_of(&subject(0)),
        Some((PolicyAction::Stop, secs(7 * D), "inactive for 7 d".into()))
    );
    let stopped = Subject {
        running: false,
        ..subject(0)
    };
    assert_eq!(
        next_of(&stopped),
        Some((PolicyAction::Notice, secs(29 * D), "lifetime 30 d".into()))
    );
    let held = Subject {
        held: true,
        ..subject(0)
    };
    assert_eq!(next_of(&held), None);
}
