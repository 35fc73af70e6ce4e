//! `nexus admin logs --follow`, the pure part: which daemons a follow is reading, where the next
//! ask of each starts, and when a lost one is said. A follow looks at the roster again now and
//! then, so an agent that connects after it started is followed too, and a daemon whose stream
//! ended (it restarted, its connection broke) is asked again from its last record on. No I/O;
//! `commands::logs` asks the daemons.

use std::collections::BTreeMap;

use nexus_protocol::debug::LogRecord;

/// Every daemon a follow has tried, by label (`coordinator-2`, `agent-host-a`).
#[derive(Debug)]
pub struct Follows {
    /// Where the first ask of a daemon starts: the query's own `since`.
    since_us: u64,
    sources: BTreeMap<String, Source>,
}

#[derive(Debug, Default)]
struct Source {
    /// A stream of its records is open.
    open: bool,
    /// The time of its newest record printed, and the records printed of that microsecond: an
    /// ask again starts there (inclusive) and leaves those out, so nothing is printed twice and
    /// nothing of that microsecond is missed.
    last: Option<(u64, Vec<LogRecord>)>,
    /// Its loss was said since its stream was last open: said once, not at every look.
    said_lost: bool,
}

impl Follows {
    pub fn new(since_us: u64) -> Follows {
        Follows {
            since_us,
            sources: BTreeMap::new(),
        }
    }

    /// Of the daemons `labels` names, those to ask now: every one without an open stream.
    pub fn to_open<'a>(&self, labels: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        labels
            .into_iter()
            .filter(|label| !self.sources.get(*label).is_some_and(|source| source.open))
            .collect()
    }

    /// Where the next ask of `source` starts: at its newest record printed, else the query's.
    pub fn since_for(&self, source: &str) -> u64 {
        self.sources
            .get(source)
            .and_then(|source| source.last.as_ref())
            .map_or(self.since_us, |(at_us, _)| *at_us)
    }

    /// A stream of `source`'s records opened.
    pub fn opened(&mut self, source: &str) {
        let source = self.sources.entry(source.to_string()).or_default();
        source.open = true;
        source.said_lost = false;
    }

    /// Of `records` just come from `source`, those not printed already (an ask again starts at
    /// the newest one printed), noted as printed.
    pub fn fresh(&mut self, source: &str, mut records: Vec<LogRecord>) -> Vec<LogRecord> {
        let kept = self.sources.entry(source.to_string()).or_default();
        if let Some((at_us, printed)) = &kept.last {
            records.retain(|record| {
                record.at_us > *at_us || (record.at_us == *at_us && !printed.contains(record))
            });
        }
        for record in &records {
            match &mut kept.last {
                Some((at_us, printed)) if record.at_us == *at_us => printed.push(record.clone()),
                Some((at_us, _)) if record.at_us < *at_us => {}
                _ => kept.last = Some((record.at_us, vec![record.clone()])),
            }
        }
        records
    }

    /// `source`'s stream ended, or an ask of it failed: whether to say so (not when it was
    /// said already and the daemon has not been followed since).
    pub fn lost(&mut self, source: &str) -> bool {
        let source = self.sources.entry(source.to_string()).or_default();
        source.open = false;
        !std::mem::replace(&mut source.said_lost, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetlogs::tests::record;

    fn messages(records: &[LogRecord]) -> Vec<&str> {
        records.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn a_daemon_not_followed_is_asked_from_the_querys_time() {
        let mut follows = Follows::new(100);
        assert_eq!(
            follows.to_open(["coordinator-1", "agent-a"]),
            ["coordinator-1", "agent-a"]
        );
        follows.opened("coordinator-1");
        assert_eq!(
            follows.to_open(["coordinator-1", "agent-a", "agent-b"]),
            ["agent-a", "agent-b"],
            "an agent that came after the follow began is asked; an open stream is not"
        );
        assert_eq!(follows.since_for("agent-b"), 100);
        assert_eq!(
            follows.since_for("coordinator-1"),
            100,
            "nothing printed of it yet"
        );
    }

    #[test]
    fn a_stream_that_ended_is_asked_again_from_its_newest_record_without_repeats() {
        let mut follows = Follows::new(100);
        follows.opened("agent-a");
        let first = follows.fresh("agent-a", vec![record(150, "one"), record(200, "two")]);
        assert_eq!(messages(&first), ["one", "two"]);
        assert!(follows.lost("agent-a"));
        assert_eq!(follows.to_open(["agent-a"]), ["agent-a"]);
        assert_eq!(
            follows.since_for("agent-a"),
            200,
            "from its newest record, inclusive"
        );
        follows.opened("agent-a");
        // The ask again answers from 200 on: "two" again, and another of the same microsecond.
        let again = follows.fresh(
            "agent-a",
            vec![
                record(200, "two"),
                record(200, "two-b"),
                record(250, "three"),
            ],
        );
        assert_eq!(messages(&again), ["two-b", "three"]);
        assert_eq!(follows.since_for("agent-a"), 250);
        assert!(
            follows
                .fresh("agent-a", vec![record(250, "three")])
                .is_empty(),
            "nothing printed twice"
        );
    }

    #[test]
    fn a_records_order_within_a_batch_does_not_lose_the_newest() {
        let mut follows = Follows::new(0);
        let batch = follows.fresh("agent-a", vec![record(300, "late"), record(120, "early")]);
        assert_eq!(messages(&batch), ["late", "early"]);
        assert_eq!(follows.since_for("agent-a"), 300);
    }

    #[test]
    fn a_loss_is_said_once_until_the_daemon_is_followed_again() {
        let mut follows = Follows::new(0);
        assert!(follows.lost("agent-a"), "the first failed ask is said");
        assert!(!follows.lost("agent-a"), "the next looks' failures are not");
        follows.opened("agent-a");
        assert!(
            follows.lost("agent-a"),
            "a stream that ends after it came back is said"
        );
    }
}
