//! Host maintenance's vocabulary and its pure decisions: what a run is asked to do
//! ([`MaintenanceRequest`]), what it answers ([`MaintenanceReport`]), the weekly window
//! ([`MaintenanceSchedule`], parsed from `sun 02:00`) and when the next run and its notice are
//! due ([`next_window`], [`due`]). No clock is read here: the caller passes `now`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// What a maintenance run does. With none of the three set, the CLI asks for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    /// Agents: remove dangling images that no container and no workspace's spec uses.
    pub prune_images: bool,
    /// Agents: remove volumes that no container uses.
    pub prune_volumes: bool,
    /// Coordinators: compact the state store.
    pub compact: bool,
    /// Say what would be removed, and remove nothing.
    pub dry_run: bool,
}

impl MaintenanceRequest {
    /// Everything, for real (the schedule's run).
    pub const ALL: MaintenanceRequest = MaintenanceRequest {
        prune_images: true,
        prune_volumes: true,
        compact: true,
        dry_run: false,
    };
}

/// What one thing removed (or compacted) was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReclaimedKind {
    Image,
    Volume,
    /// A coordinator's store, compacted.
    Store,
}

impl ReclaimedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimedKind::Image => "image",
            ReclaimedKind::Volume => "volume",
            ReclaimedKind::Store => "store",
        }
    }
}

/// One thing a run removed or compacted (or would, in a dry run), and the bytes it gave back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reclaimed {
    pub kind: ReclaimedKind,
    /// An image's id, a volume's name, a store's path.
    pub name: String,
    pub bytes: u64,
}

/// What one daemon's maintenance run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    /// Who ran it, as log records name daemons (`agent-HOST`, `coordinator-N`).
    pub source: String,
    pub dry_run: bool,
    pub removed: Vec<Reclaimed>,
    /// Images and volumes left because something uses them (or a spec names them).
    pub kept: u32,
    /// What could not be done (an engine's refusal); the rest of the run went on.
    pub errors: Vec<String>,
    /// When the run ended.
    pub at: Timestamp,
    /// Removals past [`MaintenanceReport::MAX_LISTED`], not listed: how many, and their bytes.
    pub unlisted: u32,
    pub unlisted_bytes: u64,
}

impl Default for MaintenanceReport {
    fn default() -> MaintenanceReport {
        MaintenanceReport {
            source: String::new(),
            dry_run: false,
            removed: Vec::new(),
            kept: 0,
            errors: Vec::new(),
            at: Timestamp::EPOCH,
            unlisted: 0,
            unlisted_bytes: 0,
        }
    }
}

impl MaintenanceReport {
    /// The most removals a report lists (`unlisted` counts the rest), and errors it keeps.
    pub const MAX_LISTED: usize = 1_000;
    pub const MAX_ERRORS: usize = 100;

    /// The bytes given back in all, listed or not.
    pub fn bytes(&self) -> u64 {
        self.removed
            .iter()
            .map(|r| r.bytes)
            .sum::<u64>()
            .saturating_add(self.unlisted_bytes)
    }

    /// The same report within what an answer carries: removals past [`Self::MAX_LISTED`]
    /// counted in `unlisted`, errors past [`Self::MAX_ERRORS`] summed up in one.
    pub fn bounded(mut self) -> MaintenanceReport {
        if self.removed.len() > Self::MAX_LISTED {
            let rest = self.removed.split_off(Self::MAX_LISTED);
            self.unlisted = self
                .unlisted
                .saturating_add(u32::try_from(rest.len()).unwrap_or(u32::MAX));
            self.unlisted_bytes = rest
                .iter()
                .fold(self.unlisted_bytes, |sum, r| sum.saturating_add(r.bytes));
        }
        if self.errors.len() > Self::MAX_ERRORS {
            let more = self.errors.len() - (Self::MAX_ERRORS - 1);
            self.errors.truncate(Self::MAX_ERRORS - 1);
            self.errors.push(format!("and {more} more errors"));
        }
        self
    }

    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// The last scheduled run, as the replicated state keeps it (`maintenance status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceSummary {
    pub at: Timestamp,
    /// Per daemon: bytes reclaimed, or the error that kept it from answering.
    pub daemons: Vec<(String, Result<u64, String>)>,
}

/// The schedule and the last scheduled run: `nexus admin maintenance schedule|status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    pub schedule: MaintenanceSchedule,
    /// The next window's start, from the answering coordinator's clock.
    pub next: Option<Timestamp>,
    pub last: Option<MaintenanceSummary>,
}

/// A day of the week, Monday first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// Days since Monday.
    fn index(self) -> u64 {
        self as u64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }
}

/// The weekly window's start, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyTime {
    pub day: Weekday,
    pub hour: u8,
    pub minute: u8,
}

impl WeeklyTime {
    /// The design's window: Sunday 02:00 UTC.
    pub const DEFAULT: WeeklyTime = WeeklyTime {
        day: Weekday::Sun,
        hour: 2,
        minute: 0,
    };

    /// The weekly time `at` falls on (to the minute): a window that starts then.
    pub fn of(at: Timestamp) -> WeeklyTime {
        let since = (at.as_millis() / 1000).saturating_sub(FIRST_MONDAY) % WEEK;
        let day = Weekday::ALL[usize::try_from(since / DAY).unwrap_or(0).min(6)];
        let in_day = since % DAY;
        WeeklyTime {
            day,
            hour: u8::try_from(in_day / 3600).unwrap_or(0),
            minute: u8::try_from(in_day % 3600 / 60).unwrap_or(0),
        }
    }

    /// Seconds from Monday 00:00 UTC.
    fn offset_secs(self) -> u64 {
        self.day.index() * DAY + u64::from(self.hour) * 3600 + u64::from(self.minute) * 60
    }
}

impl fmt::Display for WeeklyTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}",
            self.day.as_str(),
            self.hour,
            self.minute
        )
    }
}

/// Why a weekly time did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: give a day and a UTC time, like \"sun 02:00\"")]
pub struct BadWeeklyTime(String);

impl FromStr for WeeklyTime {
    type Err = BadWeeklyTime;

    /// `DAY HH:MM`: a day's first three letters or its whole English name, any case; 24-hour
    /// UTC time.
    fn from_str(text: &str) -> Result<WeeklyTime, BadWeeklyTime> {
        let bad = |why: &str| BadWeeklyTime(format!("{why} in {text:?}"));
        let mut words = text.split_whitespace();
        let (Some(day), Some(time), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("not a day and a time"));
        };
        let day = day.to_ascii_lowercase();
        let day = Weekday::ALL
            .into_iter()
            .find(|d| {
                let short = d.as_str();
                day == short || (day.len() > 3 && FULL[d.index() as usize] == day)
            })
            .ok_or_else(|| bad("no such day"))?;
        let (hour, minute) = time.split_once(':').ok_or_else(|| bad("no HH:MM"))?;
        let number = |digits: &str, max: u8| {
            (digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u8>().ok())
                .flatten()
                .filter(|n| *n <= max)
        };
        let hour = number(hour, 23).ok_or_else(|| bad("the hour is not 00 to 23"))?;
        let minute = number(minute, 59).ok_or_else(|| bad("the minute is not 00 to 59"))?;
        Ok(WeeklyTime { day, hour, minute })
    }
}

const FULL: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;
/// 1970-01-01 was a Thursday: Monday 1970-01-05 00:00 UTC, in seconds.
const FIRST_MONDAY: u64 = 4 * DAY;

/// When the leader runs maintenance by itself. Replicated, so every leader keeps the same
/// schedule and an admin changes it live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceSchedule {
    /// The weekly window's start; `None`: no scheduled runs.
    pub at: Option<WeeklyTime>,
}

impl Default for MaintenanceSchedule {
    fn default() -> MaintenanceSchedule {
        MaintenanceSchedule {
            at: Some(WeeklyTime::DEFAULT),
        }
    }
}

/// How long a window lasts: a run is started in it (a leader elected late in the window still
/// runs it), and its notice is shown until it ends.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// How long before a window its notice is shown.
pub const NOTICE_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// The next window of `schedule` that has not ended at `now`: its start (which may be at or
/// before `now`, if `now` is inside it). `None` when the schedule is off.
pub fn next_window(schedule: &MaintenanceSchedule, now: Timestamp) -> Option<Timestamp> {
    let at = schedule.at?;
    let now_secs = now.as_millis() / 1000;
    let since = now_secs.saturating_sub(FIRST_MONDAY);
    let week_start = FIRST_MONDAY + since - since % WEEK;
    // This week's window, last week's (still open at the start of a week) or next week's.
    let start = (week_start + at.offset_secs()).saturating_sub(WEEK);
    let window = WINDOW.as_secs();
    let start = (0..3)
        .map(|weeks| start + weeks * WEEK)
        .find(|start| now_secs < start + window)?;
    Some(Timestamp::from_millis(start * 1000))
}

/// What the leader should do now about the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing until `next` (or ever: `None`, the schedule is off).
    Wait { next: Option<Timestamp> },
    /// The window starting at `window` is open and has not run: run now.
    Run { window: Timestamp },
}

/// Whether the window open at `now` should run: it has started, it has not ended, and no run
/// was recorded since it started (`last_run`).
pub fn due(schedule: &MaintenanceSchedule, last_run: Option<Timestamp>, now: Timestamp) -> Due {
    let Some(window) = next_window(schedule, now) else {
        return Due::Wait { next: None };
    };
    let ran = last_run.is_some_and(|last| last >= window);
    if window <= now && !ran {
        return Due::Run { window };
    }
    let next = if window <= now {
        next_window(schedule, window.saturating_add(WINDOW))
    } else {
        Some(window)
    };
    Due::Wait { next }
}

/// The notice of the window starting at `window`: shown from [`NOTICE_AHEAD`] before it until
/// it ends. `None` when it is not time yet (`now` before the notice's start).
pub fn notice_due(window: Timestamp, now: Timestamp) -> Option<(String, Timestamp)> {
    let from = Timestamp::from_millis(
        window
            .as_millis()
            .saturating_sub(NOTICE_AHEAD.as_millis() as u64),
    );
    let until = window.saturating_add(WINDOW);
    (from <= now && now < until).then(|| {
        let start = window.to_offset_date_time();
        (
            format!(
                "host maintenance on {} {:02}:{:02} UTC (for up to {} min): unused images and volumes are pruned and the coordinators' stores compacted",
                start.date(),
                start.hour(),
                start.minute(),
                WINDOW.as_secs() / 60
            ),
            until,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06 was a Sunday; its 00:00 UTC in seconds.
    const SUNDAY: u64 = 1_796_515_200;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn sun(hour: u8, minute: u8) -> MaintenanceSchedule {
        MaintenanceSchedule {
            at: Some(WeeklyTime {
                day: Weekday::Sun,
                hour,
                minute,
            }),
        }
    }

    #[test]
    fn the_constant_sunday_is_a_sunday() {
        let date = t(SUNDAY).to_offset_date_time();
        assert_eq!(date.weekday(), time::Weekday::Sunday);
        assert_eq!((date.hour(), date.minute()), (0, 0));
    }

    #[test]
    fn a_time_falls_on_its_weekly_time() {
        assert_eq!(
            WeeklyTime::of(t(SUNDAY + 2 * 3600 + 59)),
            WeeklyTime::DEFAULT
        );
        assert_eq!(
            WeeklyTime::of(t(SUNDAY + DAY + 3600 + 120)).to_string(),
            "mon 01:02"
        );
        assert_eq!(WeeklyTime::of(t(SUNDAY - 60)).to_string(), "sat 23:59");
    }

    #[test]
    fn weekly_times_parse() {
        let ok = |text: &str| text.parse::<WeeklyTime>().map(|w| w.to_string());
        assert_eq!(ok("sun 02:00"), Ok("sun 02:00".into()));
        assert_eq!(ok("Sunday 02:00"), Ok("sun 02:00".into()));
        assert_eq!(ok("  MON   23:59 "), Ok("mon 23:59".into()));
        assert_eq!(ok("wed 00:00"), Ok("wed 00:00".into()));
        for bad in [
            "",
            "sun",
            "02:00",
            "sun 2:00",
            "sun 24:00",
            "sun 02:60",
            "sun 02:00 utc",
            "sund 02:00",
            "su 02:00",
            "sun 0200",
            "sun -1:00",
            "sun +1:00",
            "sun 02:0x",
        ] {
            assert!(bad.parse::<WeeklyTime>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_next_window_is_the_first_that_has_not_ended() {
        let at = |hour, minute| sun(hour, minute);
        let window = SUNDAY + 2 * 3600;
        let cases: &[(&str, MaintenanceSchedule, u64, Option<u64>)] = &[
            ("a day before", at(2, 0), window - DAY, Some(window)),
            ("a second before", at(2, 0), window - 1, Some(window)),
            ("exactly at the start", at(2, 0), window, Some(window)),
            ("inside the window", at(2, 0), window + 1800, Some(window)),
            (
                "at the window's end",
                at(2, 0),
                window + 3600,
                Some(window + WEEK),
            ),
            ("a day after", at(2, 0), window + DAY, Some(window + WEEK)),
            (
                "monday's window from sunday",
                MaintenanceSchedule {
                    at: Some(WeeklyTime {
                        day: Weekday::Mon,
                        hour: 0,
                        minute: 30,
                    }),
                },
                SUNDAY + 3600,
                Some(SUNDAY + DAY + 1800),
            ),
            (
                "sunday 23:30's window open past midnight",
                at(23, 30),
                SUNDAY + DAY + 600,
                Some(SUNDAY + 23 * 3600 + 1800),
            ),
            ("off", MaintenanceSchedule { at: None }, window, None),
        ];
        for (name, schedule, now, expected) in cases {
            assert_eq!(next_window(schedule, t(*now)), expected.map(t), "{name}");
        }
    }

    #[test]
    fn a_window_runs_once_while_it_is_open() {
        let schedule = sun(2, 0);
        let window = SUNDAY + 2 * 3600;
        let cases: &[(&str, Option<u64>, u64, Due)] = &[
            (
                "before",
                None,
                window - 1,
                Due::Wait {
                    next: Some(t(window)),
                },
            ),
            (
                "at the start, never run",
                None,
                window,
                Due::Run { window: t(window) },
            ),
            (
                "in it, last run a week ago",
                Some(window - WEEK),
                window + 60,
                Due::Run { window: t(window) },
            ),
            (
                "in it, already run",
                Some(window + 5),
                window + 60,
                Due::Wait {
                    next: Some(t(window + WEEK)),
                },
            ),
            (
                "after it ended, never run: next week",
                None,
                window + 3600,
                Due::Wait {
                    next: Some(t(window + WEEK)),
                },
            ),
        ];
        for (name, last, now, expected) in cases {
            assert_eq!(due(&schedule, last.map(t), t(*now)), *expected, "{name}");
        }
        assert_eq!(
            due(&MaintenanceSchedule { at: None }, None, t(window)),
            Due::Wait { next: None }
        );
    }

    #[test]
    fn the_notice_shows_from_a_day_before_until_the_window_ends() {
        let window = t(SUNDAY + 2 * 3600);
        let at = |secs: i64| t((SUNDAY + 2 * 3600).saturating_add_signed(secs));
        assert_eq!(notice_due(window, at(-(DAY as i64) - 1)), None);
        let Some((text, until)) = notice_due(window, at(-(DAY as i64))) else {
            panic!("no notice a day before");
        };
        assert_eq!(until, at(3600));
        assert!(text.contains("2026-12-06 02:00 UTC"), "{text}");
        assert!(notice_due(window, at(3599)).is_some());
        assert_eq!(notice_due(window, at(3600)), None);
    }

    #[test]
    fn a_report_adds_its_bytes() {
        let report = MaintenanceReport {
            removed: vec![
                Reclaimed {
                    kind: ReclaimedKind::Image,
                    name: "sha256:1".into(),
                    bytes: 10,
                },
                Reclaimed {
                    kind: ReclaimedKind::Volume,
                    name: "v".into(),
                    bytes: 5,
                },
            ],
            ..MaintenanceReport::default()
        };
        assert_eq!(report.bytes(), 15);
        assert!(!report.failed());
    }

    #[test]
    fn a_long_report_is_cut_and_keeps_its_total() {
        let report = MaintenanceReport {
            removed: (0..MaintenanceReport::MAX_LISTED + 10)
                .map(|n| Reclaimed {
                    kind: ReclaimedKind::Volume,
                    name: format!("v{n}"),
                    bytes: 2,
                })
                .collect(),
            errors: vec!["busy".into(); 150],
            ..MaintenanceReport::default()
        };
        let total = report.bytes();
        let cut = report.bounded();
        assert_eq!(cut.removed.len(), MaintenanceReport::MAX_LISTED);
        assert_eq!(cut.unlisted, 10);
        assert_eq!(cut.bytes(), total);
        assert_eq!(cut.errors.len(), MaintenanceReport::MAX_ERRORS);
        assert_eq!(
            cut.errors.last().map(String::as_str),
            Some("and 51 more errors")
        );
    }
}
