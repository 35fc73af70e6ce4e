//! The one place that reads the wall clock.
//!
//! Pure code (the state machine, the scheduler, the reconciler's plan) never calls this module:
//! it takes a [`Timestamp`] as an argument, which the caller got from here. Clippy's
//! `disallowed-methods` keeps `SystemTime::now` out of every other module.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Plain data, so it is deterministic in replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_millis(millis: u64) -> Timestamp {
        Timestamp(millis)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long ago `earlier` was, or zero if it is not earlier.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The same instant as a `time` date, for certificates and display.
    pub fn to_offset_date_time(self) -> time::OffsetDateTime {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

/// The wall clock, now.
#[allow(clippy::disallowed_methods)] // This is the clock module.
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock, now, in microseconds since the Unix epoch (log records' time).
#[allow(clippy::disallowed_methods)] // This is the clock module.
pub fn now_us() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp(1_000);
        assert_eq!(t.saturating_add(Duration::from_secs(1)), Timestamp(2_000));
        assert_eq!(
            Timestamp(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(
            t.saturating_since(Timestamp(400)),
            Duration::from_millis(600)
        );
        assert_eq!(Timestamp(400).saturating_since(t), Duration::ZERO);
    }

    #[test]
    fn converts_to_a_date() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(t.to_offset_date_time().unix_timestamp(), 1_700_000_000);
        assert_eq!(t.to_offset_date_time().millisecond(), 123);
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now() > Timestamp(1_735_689_600_000));
    }
}
