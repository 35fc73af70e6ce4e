//! Reading a daemon's log back: which records a [`LogQuery`] selects ([`Matcher`], pure), the
//! newest of them from the log's files ([`backlog`]), and the lines written after ([`Follower`]).
//!
//! Everything is bounded: a pattern's length and compiled size, the records in one answer
//! ([`MAX_RECORDS`], [`MAX_ANSWER_BYTES`]), a line's length ([`MAX_LINE_BYTES`]: a longer one is
//! skipped without being held in memory). A line that is not a record (a torn write, another
//! program's text) is skipped and counted.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::time::UNIX_EPOCH;

use regex::{Regex, RegexBuilder};

use super::file::LogFiles;
use super::record::{self, MAX_LINE_BYTES};
use crate::debug::{LogQuery, LogRecord};
use crate::error::{ErrorCode, WireError};

/// The most records one answer (or one batch of a followed log) holds, whatever the query asks.
pub const MAX_RECORDS: usize = 10_000;
/// The most text one answer holds, about: under the 16 MiB frame with room to spare.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The longest `grep` pattern.
pub const MAX_GREP_BYTES: usize = 1_024;
/// The most memory a compiled pattern may take.
const GREP_SIZE_LIMIT: usize = 1 << 20;

/// Why a query cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    #[error(
        "the pattern is {0} bytes long; at most {MAX_GREP_BYTES}: grep for a shorter, distinctive part"
    )]
    GrepTooLong(usize),
    #[error(
        "the pattern is not a regular expression Nexus can run ({0}); escape special characters with \\ (e.g. `a\\.b`), or simplify it"
    )]
    Grep(String),
}

impl BadQuery {
    pub fn to_wire(&self) -> WireError {
        WireError::new(ErrorCode::InvalidArgument, self.to_string())
    }
}

/// Checks a query as a daemon would, so that a client can refuse it before sending it.
pub fn check(query: &LogQuery) -> Result<(), BadQuery> {
    Matcher::new(query).map(drop)
}

/// A query, ready to test records against.
#[derive(Debug, Clone)]
pub struct Matcher {
    query: LogQuery,
    grep: Option<Regex>,
}

impl Matcher {
    pub fn new(query: &LogQuery) -> Result<Matcher, BadQuery> {
        let grep = match &query.grep {
            None => None,
            Some(pattern) if pattern.len() > MAX_GREP_BYTES => {
                return Err(BadQuery::GrepTooLong(pattern.len()));
            }
            Some(pattern) => Some(
                RegexBuilder::new(pattern)
                    .size_limit(GREP_SIZE_LIMIT)
                    .dfa_size_limit(GREP_SIZE_LIMIT)
                    .build()
                    .map_err(|error| BadQuery::Grep(one_line(&error.to_string())))?,
            ),
        };
        Ok(Matcher {
            query: query.clone(),
            grep,
        })
    }

    /// How many records an answer holds at most: the query's limit, capped.
    pub fn limit(&self) -> usize {
        usize::try_from(self.query.limit)
            .unwrap_or(usize::MAX)
            .min(MAX_RECORDS)
    }

    /// Whether a record written no earlier than `at_us` could match (a file last written
    /// before `since` holds none).
    pub fn may_match_until(&self, last_written_us: u64) -> bool {
        self.query
            .since_us
            .is_none_or(|since| last_written_us >= since)
    }

    pub fn matches(&self, record: &LogRecord) -> bool {
        let query = &self.query;
        query.since_us.is_none_or(|since| record.at_us >= since)
            && query.until_us.is_none_or(|until| record.at_us < until)
            && record.level >= query.min_level
            && query.request.is_none_or(|id| record.request_id == Some(id))
            && query
                .workspace
                .as_ref()
                .is_none_or(|name| record.workspace.as_ref() == Some(name))
            && (!query.spans_only || record.span.is_some())
            && self.grep.as_ref().is_none_or(|grep| {
                grep.is_match(&record.message)
                    || grep.is_match(&record.target)
                    || record
                        .fields
                        .iter()
                        .any(|(name, value)| grep.is_match(value) || grep.is_match(name))
                    || record.span.as_ref().is_some_and(|span| {
                        grep.is_match(&span.name)
                            || span.outcome.as_deref().is_some_and(|o| grep.is_match(o))
                    })
            })
    }
}

/// A regex error's text on one line (its own shows the pattern with a caret underneath).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The newest matches, kept as they are offered (oldest first), within the count and size caps.
#[derive(Debug)]
pub struct Newest {
    limit: usize,
    records: VecDeque<LogRecord>,
    bytes: usize,
}

impl Newest {
    pub fn new(limit: usize) -> Newest {
        Newest {
            limit: limit.min(MAX_RECORDS),
            records: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Keeps `record`, dropping the oldest kept to stay within the caps.
    pub fn offer(&mut self, record: LogRecord) {
        if self.limit == 0 {
            return;
        }
        self.bytes += size_of(&record);
        self.records.push_back(record);
        while self.records.len() > self.limit
            || (self.bytes > MAX_ANSWER_BYTES && self.records.len() > 1)
        {
            if let Some(oldest) = self.records.pop_front() {
                self.bytes -= size_of(&oldest);
            }
        }
    }

    pub fn into_vec(self) -> Vec<LogRecord> {
        self.records.into()
    }
}

/// About how many bytes a record takes on the wire.
fn size_of(record: &LogRecord) -> usize {
    64 + record.target.len()
        + record.source.len()
        + record.message.len()
        + record
            .fields
            .iter()
            .map(|(name, value)| name.len() + value.len() + 16)
            .sum::<usize>()
        + record.span.as_ref().map_or(0, |span| {
            span.name.len() + span.outcome.as_ref().map_or(0, String::len)
        })
}

/// One line read from a log file.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(String),
    /// Too long, or not UTF-8: skipped.
    Skipped,
}

/// Reads a log file line by line, never holding more than [`MAX_LINE_BYTES`] of one line, and
/// keeping a line not yet ended for the next read (the writer may be in the middle of it).
#[derive(Debug)]
pub struct LineReader {
    reader: BufReader<File>,
    /// The file's identity, to tell when the log's current file was set aside.
    inode: u64,
    partial: Vec<u8>,
    /// The line being read is too long: skip to its end.
    overlong: bool,
}

impl LineReader {
    pub fn open(path: &std::path::Path) -> io::Result<LineReader> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(LineReader {
            reader: BufReader::with_capacity(64 << 10, file),
            inode,
            partial: Vec::new(),
            overlong: false,
        })
    }

    /// The next whole line, or `None` at the end of what is written so far.
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, ended) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            if !self.overlong {
                if self.partial.len() + chunk.len() > MAX_LINE_BYTES {
                    self.overlong = true;
                    self.partial.clear();
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(ended);
            self.reader.consume(used);
            if ended {
                let line = std::mem::take(&mut self.partial);
                let overlong = std::mem::replace(&mut self.overlong, false);
                return Ok(Some(if overlong {
                    Line::Skipped
                } else {
                    String::from_utf8(line).map_or(Line::Skipped, Line::Text)
                }));
            }
        }
    }

    /// Offers every record written so far that `matcher` selects; answers how many lines were
    /// skipped.
    fn read_into(&mut self, matcher: &Matcher, mut keep: impl FnMut(LogRecord)) -> io::Result<u64> {
        let mut skipped = 0;
        while let Some(line) = self.next_line()? {
            match line {
                Line::Text(text) => match record::from_line(&text) {
                    Some(record) if matcher.matches(&record) => keep(record),
                    Some(_) => {}
                    None => skipped += 1,
                },
                Line::Skipped => skipped += 1,
            }
        }
        Ok(skipped)
    }
}

/// What a query finds in a log's files now.
#[derive(Debug)]
pub struct Backlog {
    /// The newest matches, oldest first.
    pub records: Vec<LogRecord>,
    /// Lines that were not records.
    pub skipped: u64,
    /// The current file, read to its end: where a follower goes on from.
    pub reader: Option<LineReader>,
}

/// The newest records of the log that `matcher` selects, reading the files oldest first and
/// skipping those last written before the query's `since`.
pub fn backlog(files: &LogFiles, matcher: &Matcher) -> io::Result<Backlog> {
    let mut newest = Newest::new(matcher.limit());
    let mut skipped = 0;
    for (_, path) in files.list_rotated() {
        let last_written_us = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
            });
        if !matcher.may_match_until(last_written_us) {
            continue;
        }
        // A file deleted since it was listed (rotated away) is simply gone.
        let Ok(mut reader) = LineReader::open(&path) else {
            continue;
        };
        skipped += reader.read_into(matcher, |record| newest.offer(record))?;
        // What a rotated file holds after its last newline was torn.
        skipped += u64::from(!reader.partial.is_empty() || reader.overlong);
    }
    let reader = match LineReader::open(&files.current()) {
        Ok(mut reader) => {
            skipped += reader.read_into(matcher, |record| newest.offer(record))?;
            Some(reader)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    Ok(Backlog {
        records: newest.into_vec(),
        skipped,
        reader,
    })
}

/// Reads what is written to a log after its backlog, across rotations.
#[derive(Debug)]
pub struct Follower {
    files: LogFiles,
    matcher: Matcher,
    reader: Option<LineReader>,
    /// Lines that were not records, so far.
    pub skipped: u64,
}

impl Follower {
    /// Goes on from where `backlog` stopped (or from the start of the current file, when there
    /// was none yet).
    pub fn new(files: LogFiles, matcher: Matcher, reader: Option<LineReader>) -> Follower {
        Follower {
            files,
            matcher,
            reader,
            skipped: 0,
        }
    }

    /// The matching records written since the last call, at most [`MAX_RECORDS`] (the rest
    /// come at the next call). When the current file was set aside, what was left of it is
    /// read before the new one.
    pub fn poll(&mut self) -> io::Result<Vec<LogRecord>> {
        let mut found = Vec::new();
        loop {
            if let Some(reader) = &mut self.reader {
                while found.len() < MAX_RECORDS {
                    let Some(line) = reader.next_line()? else {
                        break;
                    };
                    match line {
                        Line::Text(text) => match record::from_line(&text) {
                            Some(record) if self.matcher.matches(&record) => found.push(record),
                            Some(_) => {}
                            None => self.skipped += 1,
                        },
                        Line::Skipped => self.skipped += 1,
                    }
                }
                if found.len() >= MAX_RECORDS {
                    return Ok(found);
                }
            }
            // At the end of our file: is it still the log's current one?
            let current = match std::fs::metadata(self.files.current()) {
                Ok(metadata) => metadata.ino(),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
                Err(error) => return Err(error),
            };
            if self.reader.as_ref().is_some_and(|r| r.inode == current) {
                return Ok(found);
            }
            // Set aside (or never opened): read the remainder once more — the writer finished it
            // before the rename — then the new file from its start.
            if let Some(reader) = &mut self.reader {
                let matcher = &self.matcher;
                self.skipped += reader.read_into(matcher, |record| found.push(record))?;
            }
            self.reader = match LineReader::open(&self.files.current()) {
                Ok(reader) => Some(reader),
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
                Err(error) => return Err(error),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::debug::{LogLevel, SpanRecord};
    use crate::id::{RequestId, WorkspaceName};

    fn query() -> LogQuery {
        LogQuery {
            since_us: None,
            until_us: None,
            min_level: LogLevel::Trace,
            grep: None,
            request: None,
            workspace: None,
            limit: 100,
            follow: false,
            spans_only: false,
        }
    }

    fn record(at_us: u64, level: LogLevel, message: &str) -> LogRecord {
        LogRecord {
            at_us,
            level,
            target: "nexus_agent::reconcile".into(),
            source: "agent-a".into(),
            request_id: None,
            workspace: None,
            message: message.into(),
            fields: vec![],
            span: None,
        }
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn lines(records: &[LogRecord]) -> String {
        records.iter().map(record::to_line).collect()
    }

    fn messages(records: &[LogRecord]) -> Vec<&str> {
        records.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn each_condition_of_a_query_selects() {
        let id = RequestId::from_u128(7);
        let api = WorkspaceName::new("api").unwrap();
        let mut base = record(1_000, LogLevel::Warn, "pull failed: no such image");
        base.fields = vec![("code".into(), "IMAGE_NOT_FOUND".into())];
        base.request_id = Some(id);
        base.workspace = Some(api.clone());
        let check = |change: &dyn Fn(&mut LogQuery), expected: bool| {
            let mut q = query();
            change(&mut q);
            assert_eq!(Matcher::new(&q).unwrap().matches(&base), expected, "{q:?}");
        };
        check(&|_| {}, true);
        check(&|q| q.since_us = Some(1_000), true);
        check(&|q| q.since_us = Some(1_001), false);
        check(&|q| q.until_us = Some(1_001), true);
        check(&|q| q.until_us = Some(1_000), false);
        check(&|q| q.min_level = LogLevel::Warn, true);
        check(&|q| q.min_level = LogLevel::Error, false);
        check(&|q| q.request = Some(id), true);
        check(&|q| q.request = Some(RequestId::from_u128(8)), false);
        check(&|q| q.workspace = Some(api.clone()), true);
        check(&|q| q.workspace = WorkspaceName::new("web").ok(), false);
        check(&|q| q.spans_only = true, false);
        check(&|q| q.grep = Some("no such (image|tag)".into()), true);
        check(&|q| q.grep = Some("IMAGE_NOT".into()), true);
        check(&|q| q.grep = Some("reconcile$".into()), true);
        check(&|q| q.grep = Some("(?i)PULL FAILED".into()), true);
        check(&|q| q.grep = Some("^pulled".into()), false);
        let mut hop = base.clone();
        hop.span = Some(SpanRecord {
            name: "agent.pull".into(),
            duration_us: 5,
            outcome: Some("ok".into()),
        });
        let mut q = query();
        q.spans_only = true;
        q.grep = Some("agent\\.pull".into());
        assert!(Matcher::new(&q).unwrap().matches(&hop));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_suggestion() {
        let mut q = query();
        q.grep = Some("(unclosed".into());
        let error = Matcher::new(&q).unwrap_err();
        assert!(matches!(error, BadQuery::Grep(_)), "{error}");
        let wire = error.to_wire();
        assert_eq!(wire.code, ErrorCode::InvalidArgument);
        assert!(
            wire.message.contains("escape special characters"),
            "{}",
            wire.message
        );
        assert!(!wire.message.contains('\n'), "{}", wire.message);
        q.grep = Some("x".repeat(MAX_GREP_BYTES + 1));
        assert_eq!(check(&q), Err(BadQuery::GrepTooLong(MAX_GREP_BYTES + 1)));
        // Small to write, huge to compile.
        q.grep = Some("\\w{1000}\\w{1000}\\w{1000}".into());
        assert!(matches!(check(&q), Err(BadQuery::Grep(_))));
        q.grep = Some("fine".into());
        assert_eq!(check(&q), Ok(()));
    }

    #[test]
    fn the_newest_matches_come_oldest_first_within_the_caps() {
        let mut newest = Newest::new(3);
        for at in 1..=10 {
            newest.offer(record(at, LogLevel::Info, &at.to_string()));
        }
        assert_eq!(messages(&newest.into_vec()), vec!["8", "9", "10"]);
        let mut none = Newest::new(0);
        none.offer(record(1, LogLevel::Info, "x"));
        assert!(none.into_vec().is_empty());
        assert_eq!(Newest::new(usize::MAX).limit, MAX_RECORDS);
        // Big records: the size cap keeps fewer than the count allows, but at least one.
        let mut big = Newest::new(100);
        for at in 0..20 {
            big.offer(record(at, LogLevel::Info, &"x".repeat(1 << 20)));
        }
        let kept = big.into_vec();
        assert!(kept.len() < 10 && !kept.is_empty(), "{}", kept.len());
        assert_eq!(kept.last().unwrap().at_us, 19);
    }

    #[test]
    fn a_backlog_reads_every_file_in_order_and_skips_what_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::for_source(dir.path(), "agent-a");
        let all: Vec<LogRecord> = (1..=9)
            .map(|at| {
                let level = if at % 3 == 0 {
                    LogLevel::Error
                } else {
                    LogLevel::Info
                };
                record(at, level, &format!("m{at}"))
            })
            .collect();
        append(&files.rotated(4), &lines(&all[..3]));
        append(&files.rotated(5), &lines(&all[3..6]));
        append(&files.rotated(5), "garbage\n{\"torn\":");
        append(&files.current(), &lines(&all[6..]));
        append(
            &files.current(),
            &format!("{}\n", "x".repeat(MAX_LINE_BYTES * 2)),
        );
        // Another log in the same directory is not read.
        append(&dir.path().join("coordinator-1.jsonl"), &lines(&all));
        let mut q = query();
        let found = backlog(&files, &Matcher::new(&q).unwrap()).unwrap();
        assert_eq!(
            messages(&found.records),
            vec!["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
        );
        assert_eq!(found.skipped, 3);
        q.min_level = LogLevel::Error;
        q.limit = 2;
        let found = backlog(&files, &Matcher::new(&q).unwrap()).unwrap();
        assert_eq!(messages(&found.records), vec!["m6", "m9"]);
        // No log yet: nothing, and no error.
        let empty = LogFiles::for_source(dir.path(), "agent-b");
        let found = backlog(&empty, &Matcher::new(&query()).unwrap()).unwrap();
        assert!(found.records.is_empty() && found.reader.is_none());
    }

    #[test]
    fn a_follower_reads_new_lines_across_a_rotation_and_waits_for_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::for_source(dir.path(), "agent-a");
        append(
            &files.current(),
            &lines(&[record(1, LogLevel::Info, "old")]),
        );
        let matcher = Matcher::new(&query()).unwrap();
        let found = backlog(&files, &matcher).unwrap();
        assert_eq!(messages(&found.records), vec!["old"]);
        let mut follower = Follower::new(files.clone(), matcher, found.reader);
        assert!(follower.poll().unwrap().is_empty());
        // Half a line is not read until it ends.
        let line = record::to_line(&record(2, LogLevel::Info, "two"));
        let (head, tail) = line.split_at(10);
        append(&files.current(), head);
        assert!(follower.poll().unwrap().is_empty());
        append(&files.current(), tail);
        assert_eq!(messages(&follower.poll().unwrap()), vec!["two"]);
        // The writer finishes its file, sets it aside and begins another.
        append(
            &files.current(),
            &lines(&[record(3, LogLevel::Info, "three")]),
        );
        std::fs::rename(files.current(), files.rotated(1)).unwrap();
        append(
            &files.current(),
            &lines(&[record(4, LogLevel::Info, "four")]),
        );
        assert_eq!(messages(&follower.poll().unwrap()), vec!["three", "four"]);
        append(
            &files.current(),
            &lines(&[record(5, LogLevel::Info, "five")]),
        );
        assert_eq!(messages(&follower.poll().unwrap()), vec!["five"]);
        assert_eq!(follower.skipped, 0);
    }

    #[test]
    fn a_follower_without_a_file_waits_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::for_source(dir.path(), "agent-a");
        let mut follower = Follower::new(files.clone(), Matcher::new(&query()).unwrap(), None);
        assert!(follower.poll().unwrap().is_empty());
        append(
            &files.current(),
            &lines(&[record(1, LogLevel::Info, "first")]),
        );
        assert_eq!(messages(&follower.poll().unwrap()), vec!["first"]);
    }
}
