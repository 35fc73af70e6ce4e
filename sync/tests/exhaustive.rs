//! Every combination of create, modify, delete and type change on either side, against every
//! ancestor, for each mode: the session settles where the mode's rules (written out again here,
//! on whole values, apart from the implementation's walk) say it must, records exactly the
//! conflicts they predict, and never overwrites a change in a safe mode.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Session, file, path};
use nexus_sync::{Entry, Mode, Side, Tree, resolve};

/// What one path holds, with what lies beneath it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Absent,
    FileX,
    FileY,
    FileZ,
    /// A directory holding `c` with content x.
    DirX,
    /// The same directory with `c` modified.
    DirY,
    Link,
}

use Value::*;

const ANCESTORS: [Value; 4] = [Absent, FileX, DirX, Link];
const SIDES: [Value; 7] = [Absent, FileX, FileY, FileZ, DirX, DirY, Link];

fn tree(value: Value) -> Tree {
    let f = || path("f");
    let entries: Vec<_> = match value {
        Absent => vec![],
        FileX => vec![(f(), file(1))],
        FileY => vec![(f(), file(2))],
        FileZ => vec![(f(), file(3))],
        DirX => vec![(f(), Entry::Dir), (path("f/c"), file(1))],
        DirY => vec![(f(), Entry::Dir), (path("f/c"), file(2))],
        Link => vec![(
            f(),
            Entry::Symlink {
                target: "elsewhere".into(),
            },
        )],
    };
    // Every tree also holds an untouched neighbour, which must stay as it is.
    let mut tree: Tree = entries.into_iter().collect();
    tree.insert(path("g"), file(9));
    tree
}

fn is_dir(value: Value) -> bool {
    matches!(value, DirX | DirY)
}

/// The content of `f/c` in a directory value.
fn child(value: Value) -> Option<u8> {
    match value {
        DirX => Some(1),
        DirY => Some(2),
        _ => None,
    }
}

fn dir_with(child: u8) -> Value {
    if child == 1 { DirX } else { DirY }
}

/// Where a session must settle: (alpha, beta, conflicting paths).
fn expected(mode: Mode, o: Value, a: Value, b: Value) -> (Value, Value, Vec<&'static str>) {
    if a == b {
        return (a, a, vec![]);
    }
    match mode {
        Mode::OneWayReplica => (a, a, vec![]),
        Mode::TwoWaySafe | Mode::TwoWayResolved => {
            if a == o {
                return (b, b, vec![]);
            }
            if b == o {
                return (a, a, vec![]);
            }
            if is_dir(a) && is_dir(b) {
                // Both changed what the directory holds: the same rules, one level down.
                let (co, ca, cb) = (child(o), child(a), child(b));
                return if ca == co {
                    (b, b, vec![])
                } else if cb == co || mode == Mode::TwoWayResolved {
                    (a, a, vec![])
                } else {
                    (a, b, vec!["f/c"])
                };
            }
            if mode == Mode::TwoWayResolved {
                (a, a, vec![])
            } else if a == Absent {
                (b, b, vec![])
            } else if b == Absent {
                (a, a, vec![])
            } else {
                (a, b, vec!["f"])
            }
        }
        Mode::OneWaySafe => {
            if is_dir(a) && is_dir(b) {
                let (co, ca, cb) = (child(o), child(a), child(b));
                return if cb == co {
                    (a, dir_with(ca.unwrap()), vec![])
                } else {
                    (a, b, vec!["f/c"])
                };
            }
            if b == Absent || b == o {
                (a, a, vec![])
            } else if a == Absent && o == Absent {
                // Beta's own new content: left alone.
                (a, b, vec![])
            } else {
                (a, b, vec!["f"])
            }
        }
    }
}

#[test]
fn every_combination_settles_where_the_mode_says() {
    let mut cases = 0;
    for mode in Mode::ALL {
        for o in ANCESTORS {
            for a in SIDES {
                for b in SIDES {
                    let mut session = Session::new(tree(o), tree(a), tree(b), mode);
                    session.settle(4);
                    let (want_a, want_b, want_conflicts) = expected(mode, o, a, b);
                    let case = format!("{mode}: ancestor {o:?}, alpha {a:?}, beta {b:?}");
                    assert_eq!(session.alpha, tree(want_a), "alpha after {case}");
                    assert_eq!(session.beta, tree(want_b), "beta after {case}");
                    let conflicts: Vec<String> = session
                        .conflicts
                        .iter()
                        .map(|c| c.path.to_string())
                        .collect();
                    assert_eq!(conflicts, want_conflicts, "conflicts after {case}");
                    // Settled means agreed: with no conflict and the same content on both
                    // sides, the ancestor is that content.
                    if want_conflicts.is_empty() && want_a == want_b {
                        assert_eq!(session.ancestor, session.alpha, "ancestor after {case}");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 4 * 4 * 7 * 7);
}

#[test]
fn an_edit_made_while_a_change_travels_is_never_overwritten() {
    // Alpha changed f; while that change is on its way, beta's user edits f too. The change
    // finds beta no longer as planned and is dropped; the next cycle sees the conflict.
    let mut session = Session::new(tree(FileX), tree(FileY), tree(FileX), Mode::TwoWaySafe);
    let applied = session.cycle(|_, beta| {
        beta.insert(path("f"), file(3));
    });
    assert_eq!(applied, 0);
    assert_eq!(session.beta.get(&path("f")), Some(&file(3)));
    session.settle(3);
    assert_eq!(session.conflicts.len(), 1);
    assert_eq!(session.alpha.get(&path("f")), Some(&file(2)));
    assert_eq!(session.beta.get(&path("f")), Some(&file(3)));
}

#[test]
fn modes_parse_by_their_names() {
    for mode in Mode::ALL {
        assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
    }
    assert!("two-way".parse::<Mode>().is_err());
}

#[test]
fn every_conflict_resolves_to_the_side_kept() {
    let mut resolved = 0;
    for mode in [Mode::TwoWaySafe, Mode::OneWaySafe] {
        for o in ANCESTORS {
            for a in SIDES {
                for b in SIDES {
                    for keep in [Side::Alpha, Side::Beta] {
                        let mut session = Session::new(tree(o), tree(a), tree(b), mode);
                        session.settle(4);
                        let Some(conflict) = session.conflicts.first().cloned() else {
                            continue;
                        };
                        let case = format!("{mode}: {o:?}/{a:?}/{b:?}, keep {keep:?}");
                        let result = resolve(
                            &mut session.ancestor,
                            &session.alpha,
                            &session.beta,
                            mode,
                            &conflict.path,
                            keep,
                        );
                        if mode == Mode::OneWaySafe && keep == Side::Beta {
                            assert!(result.is_err(), "{case}");
                            continue;
                        }
                        result.unwrap();
                        session.settle(4);
                        assert!(session.conflicts.is_empty(), "{case}");
                        let kept = if keep == Side::Alpha { a } else { b };
                        assert_eq!(session.alpha, tree(kept), "alpha after {case}");
                        assert_eq!(session.beta, tree(kept), "beta after {case}");
                        resolved += 1;
                    }
                }
            }
        }
    }
    assert!(resolved > 20, "{resolved}");
}
