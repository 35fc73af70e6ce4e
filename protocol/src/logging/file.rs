//! A log on disk: its files ([`LogFiles`]: the one written now and the older ones, numbered),
//! the writer that rotates them by size under a total cap ([`RotatingFile`]), and the thread that
//! owns the writer so that logging never waits on the disk ([`Sink`]).
//!
//! The file written now is `DIR/NAME` (`coordinator-1.jsonl`, `daemon.log`); when it would pass
//! its size it is renamed `DIR/NAME.NNNNNN`, numbered in order, and a new one begins (a name that
//! ends in digits is never another log's current file, so logs may share a directory);
//! the oldest numbered files are deleted while all of them would pass the total. A reader that
//! holds the file open keeps reading it after the rename and then moves to the new one (the way
//! `tail -F` does), so nothing is renamed twice and nothing is lost to a follower.
//!
//! I/O errors never panic and never reach the code that logs: a line that cannot be written is
//! counted ([`Sink::dropped`]) and the file is opened again at most once a second.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The files of one log in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFiles {
    dir: PathBuf,
    name: String,
}

impl LogFiles {
    /// The log whose current file is `dir/name` (`daemon.log`).
    pub fn new(dir: impl Into<PathBuf>, name: &str) -> LogFiles {
        LogFiles {
            dir: dir.into(),
            name: name.to_string(),
        }
    }

    /// A daemon's structured log: `dir/SOURCE.jsonl`, so that daemons may share a directory.
    pub fn for_source(dir: impl Into<PathBuf>, source: &str) -> LogFiles {
        LogFiles::new(dir, &format!("{source}.jsonl"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file written now.
    pub fn current(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The `number`th file set aside.
    pub fn rotated(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{}.{number:06}", self.name))
    }

    /// The files set aside, oldest first, with their numbers. A directory that cannot be read
    /// has none.
    pub fn list_rotated(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let number = self.number_of(name.to_str()?)?;
                Some((number, entry.path()))
            })
            .collect();
        files.sort();
        files
    }

    /// `NAME.NNNNNN` → `NNNNNN`.
    fn number_of(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(self.name.as_str())?.strip_prefix('.')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// How big a log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A file is set aside before a line would take it past this.
    pub max_file_bytes: u64,
    /// The files set aside and the current one, at most.
    pub max_total_bytes: u64,
}

impl Rotation {
    /// The default total: 64 MiB, in files of 8 MiB.
    pub const DEFAULT_TOTAL_BYTES: u64 = 64 << 20;
    /// The least total a daemon may be configured with.
    pub const MIN_TOTAL_BYTES: u64 = 1 << 20;

    /// Files of an eighth of `total`, at most 8 MiB each.
    pub fn for_total(total: u64) -> Rotation {
        Rotation {
            max_file_bytes: (total / 8).clamp(1, 8 << 20),
            max_total_bytes: total,
        }
    }
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation::for_total(Rotation::DEFAULT_TOTAL_BYTES)
    }
}

/// The current file of a log, appended to and rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    files: LogFiles,
    rotation: Rotation,
    file: Option<BufWriter<File>>,
    size: u64,
    /// When opening failed last: it is tried again a second later, not at every line.
    failed_at: Option<Instant>,
    /// Lines not written because of an I/O error.
    pub failures: u64,
}

/// How long after a failed open the writer tries again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

impl RotatingFile {
    /// Opens (appends to) the log's current file, making its directory if needed, and deletes
    /// the oldest files beyond the cap. Never fails: a file that cannot be opened is tried again
    /// at a later line.
    pub fn open(files: LogFiles, rotation: Rotation) -> RotatingFile {
        let mut writer = RotatingFile {
            files,
            rotation,
            file: None,
            size: 0,
            failed_at: None,
            failures: 0,
        };
        writer.reopen();
        writer.prune();
        writer
    }

    /// Appends one line (with its newline). Counts it as failed on an I/O error.
    pub fn write_line(&mut self, line: &[u8]) {
        if self.file.is_none() && self.failed_at.is_none_or(|at| at.elapsed() >= REOPEN_AFTER) {
            self.reopen();
        }
        let length = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.file.is_some()
            && self.size > 0
            && self.size.saturating_add(length) > self.rotation.max_file_bytes
        {
            self.rotate();
        }
        let Some(file) = &mut self.file else {
            self.failures += 1;
            return;
        };
        match file.write_all(line) {
            Ok(()) => self.size = self.size.saturating_add(length),
            Err(_) => {
                self.failures += 1;
                self.file = None;
                self.failed_at = Some(Instant::now());
            }
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if let Some(file) = &mut self.file
            && file.flush().is_err()
        {
            self.failures += 1;
            self.file = None;
            self.failed_at = Some(Instant::now());
        }
    }

    fn reopen(&mut self) {
        let path = self.files.current();
        // Readable by the daemon's user and group (adm, for journald's readers), not by all.
        let opened = std::fs::create_dir_all(self.files.dir()).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
        });
        match opened.and_then(|file| Ok((file.metadata()?.len(), file))) {
            Ok((size, file)) => {
                self.size = size;
                self.file = Some(BufWriter::with_capacity(64 << 10, file));
                self.failed_at = None;
            }
            Err(_) => {
                self.file = None;
                self.failed_at = Some(Instant::now());
            }
        }
    }

    /// Sets the current file aside under the next number and begins a new one.
    fn rotate(&mut self) {
        self.flush();
        self.file = None;
        let next = self
            .files
            .list_rotated()
            .last()
            .map_or(1, |(number, _)| number + 1);
        if std::fs::rename(self.files.current(), self.files.rotated(next)).is_err() {
            self.failures += 1;
        }
        self.prune();
        self.reopen();
    }

    /// Deletes the oldest files set aside while they and a full current file would pass the
    /// total.
    fn prune(&mut self) {
        let room = self
            .rotation
            .max_total_bytes
            .saturating_sub(self.rotation.max_file_bytes);
        let mut rotated: Vec<(PathBuf, u64)> = self
            .files
            .list_rotated()
            .into_iter()
            .map(|(_, path)| {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                (path, size)
            })
            .collect();
        let mut total: u64 = rotated.iter().map(|(_, size)| size).sum();
        rotated.reverse();
        while total > room {
            let Some((oldest, size)) = rotated.pop() else {
                break;
            };
            if std::fs::remove_file(&oldest).is_err() {
                self.failures += 1;
            }
            total -= size;
        }
    }
}

/// What the writing thread is sent.
enum Message {
    Line(Vec<u8>),
    /// Write out everything sent before, then say so.
    Flush(SyncSender<()>),
}

/// Hands lines to the thread that writes them: never waits. A line that finds the queue full
/// (the disk far behind) is dropped and counted; the thread writes a note of how many.
#[derive(Debug, Clone)]
pub struct Sink {
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(line) => write!(f, "Line({} bytes)", line.len()),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Lines waiting for the disk, at most. The queue's slots are allocated when it is made (about
/// 40 bytes each), so it is no bigger than a burst needs.
const QUEUE_LINES: usize = 4_096;

/// Makes the note written in place of lines that were dropped.
pub type DroppedNote = Box<dyn Fn(u64) -> Vec<u8> + Send>;

impl Sink {
    /// Starts the thread that writes to `file`; `note` makes the line that says how many lines
    /// were dropped (in the log's own format).
    pub fn spawn(file: RotatingFile, note: DroppedNote) -> (Sink, SinkGuard) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("nexus-log-writer".into())
            .spawn({
                let dropped = dropped.clone();
                move || write_lines(file, &receiver, &dropped, &note)
            })
            .ok();
        let sink = Sink { sender, dropped };
        let guard = SinkGuard {
            sink: sink.clone(),
            thread,
        };
        (sink, guard)
    }

    /// Queues a line (with its newline).
    pub fn send(&self, line: Vec<u8>) {
        match self.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the queue was full, not yet noted in the file.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until every line sent before is written and flushed.
    pub fn flush(&self, limit: Duration) {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = finished.recv_timeout(limit);
        }
    }
}

/// Flushes the log when dropped (at the end of `main`), waiting at most two seconds.
#[derive(Debug)]
pub struct SinkGuard {
    sink: Sink,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.sink.flush(Duration::from_secs(2));
        }
    }
}

fn write_lines(
    mut file: RotatingFile,
    receiver: &Receiver<Message>,
    dropped: &AtomicU64,
    note: &DroppedNote,
) {
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        // Whatever waits is written before one flush: a burst costs one write to the disk.
        while let Some(message) = next {
            match message {
                Message::Line(line) => file.write_line(&line),
                Message::Flush(done) => {
                    file.flush();
                    let _ = done.send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            file.write_line(&note(lost));
        }
        file.flush();
    }
}

/// A writer for `tracing_subscriber::fmt` that queues each event's text on a [`Sink`] (the
/// formatter writes one event per writer).
#[derive(Debug)]
pub struct SinkWriter {
    sink: Sink,
    buffer: Vec<u8>,
}

impl Write for SinkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.sink.send(std::mem::take(&mut self.buffer));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter {
            sink: self.clone(),
            buffer: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(files: &LogFiles) -> Vec<(u64, u64)> {
        files
            .list_rotated()
            .into_iter()
            .map(|(number, path)| (number, std::fs::metadata(path).unwrap().len()))
            .collect()
    }

    #[test]
    fn names_of_a_log_and_its_rotated_files() {
        let files = LogFiles::for_source("/var/log/nexus", "agent-host-a");
        assert_eq!(
            files.current(),
            Path::new("/var/log/nexus/agent-host-a.jsonl")
        );
        assert_eq!(
            files.rotated(7),
            Path::new("/var/log/nexus/agent-host-a.jsonl.000007")
        );
        assert_eq!(files.number_of("agent-host-a.jsonl.000007"), Some(7));
        assert_eq!(
            files.number_of("agent-host-a.jsonl.12345678"),
            Some(12_345_678)
        );
        for other in [
            "agent-host-a.jsonl",
            "agent-host-a.jsonl.",
            "agent-host-a.jsonl.x1",
            "agent-host-a.jsonl.1.tmp",
            "agent-host-ab.jsonl.000001",
            "coordinator-1.jsonl.000001",
            // Host `host-a.000001`'s current file is not host `host-a`'s.
            "agent-host-a.000001.jsonl",
        ] {
            assert_eq!(files.number_of(other), None, "{other}");
        }
        let daemon = LogFiles::new("/d", "daemon.log");
        assert_eq!(daemon.rotated(1), Path::new("/d/daemon.log.000001"));
    }

    #[test]
    fn a_full_file_is_set_aside_and_the_oldest_deleted_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path().join("logs"), "x.jsonl");
        let rotation = Rotation {
            max_file_bytes: 100,
            max_total_bytes: 350,
        };
        let mut file = RotatingFile::open(files.clone(), rotation);
        let line = [b'a'; 39]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // Two 40-byte lines fit a file, a third starts the next: ten lines make five files.
        for _ in 0..10 {
            file.write_line(&line);
        }
        file.flush();
        assert_eq!(file.failures, 0);
        // Files 1..=4 were set aside; under a total of 350, at most 250 bytes of them stay.
        assert_eq!(sizes(&files), vec![(2, 80), (3, 80), (4, 80)]);
        assert_eq!(std::fs::metadata(files.current()).unwrap().len(), 80);
        // Not for every user of the machine to read.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(files.current()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o007, 0, "{mode:o}");
        // A writer started again appends, and numbers on from the newest.
        drop(file);
        let mut file = RotatingFile::open(files.clone(), rotation);
        file.write_line(&line);
        file.flush();
        assert_eq!(sizes(&files), vec![(3, 80), (4, 80), (5, 80)]);
        assert_eq!(std::fs::metadata(files.current()).unwrap().len(), 40);
    }

    #[test]
    fn a_lowered_cap_prunes_at_open_and_a_line_larger_than_a_file_still_goes() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path(), "x.log");
        for number in 1..=5 {
            std::fs::write(files.rotated(number), [b'x'; 100]).unwrap();
        }
        let mut file = RotatingFile::open(
            files.clone(),
            Rotation {
                max_file_bytes: 100,
                max_total_bytes: 300,
            },
        );
        assert_eq!(sizes(&files), vec![(4, 100), (5, 100)]);
        file.write_line(&[b'y'; 500]);
        file.flush();
        assert_eq!(std::fs::metadata(files.current()).unwrap().len(), 500);
    }

    #[test]
    fn an_unwritable_directory_counts_failures_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be.
        let blocker = dir.path().join("logs");
        std::fs::write(&blocker, b"").unwrap();
        let mut file = RotatingFile::open(LogFiles::new(&blocker, "x.log"), Rotation::default());
        file.write_line(b"one\n");
        file.write_line(b"two\n");
        file.flush();
        assert_eq!(file.failures, 2);
    }

    #[test]
    fn the_sink_writes_every_line_and_flushes_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(dir.path(), "x.log");
        let (sink, guard) = Sink::spawn(
            RotatingFile::open(files.clone(), Rotation::default()),
            Box::new(|n| format!("dropped {n}\n").into_bytes()),
        );
        for i in 0..1000 {
            sink.send(format!("line {i}\n").into_bytes());
        }
        drop(guard);
        let text = std::fs::read_to_string(files.current()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
        let noted: u64 = text
            .lines()
            .filter_map(|l| l.strip_prefix("dropped ")?.parse::<u64>().ok())
            .sum();
        // The queue holds more than a thousand lines: none is dropped.
        assert_eq!(lines.len(), 1000);
        assert_eq!(noted, 0);
        assert_eq!(lines[999], "line 999");
    }
}
