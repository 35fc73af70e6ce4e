//! What a daemon tells its service manager (systemd's `sd_notify` protocol, `Type=notify`):
//! `READY=1` once it serves, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when it
//! shuts down, `STATUS=` lines, and `WATCHDOG=1` pings while its liveness checks pass, so that a
//! stalled daemon is restarted by `WatchdogSec=` rather than left running.
//!
//! The protocol: one datagram of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace); `WATCHDOG_USEC` (and `WATCHDOG_PID`, when set,
//! naming this process) gives the watchdog's timeout. Without `NOTIFY_SOCKET` (not started by
//! systemd, or by a unit of another type) every call does nothing. Hand-written on the standard
//! library's datagram socket: the protocol is a few lines, and the crates that wrap it add a
//! dependency for no more.
//!
//! [`watchdog_interval`] and [`message`] are pure; [`Notifier`] sends.

use std::future::Future;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use crate::health::Check;

/// Where the service manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    /// In Linux's abstract namespace: `@name` in `NOTIFY_SOCKET`.
    Abstract(Vec<u8>),
}

/// Tells the service manager about this process; does nothing without one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// The service manager named by `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Notifier {
        Notifier::for_socket(std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from))
    }

    /// One that notifies nobody.
    pub fn none() -> Notifier {
        Notifier { target: None }
    }

    fn for_socket(socket: Option<PathBuf>) -> Notifier {
        let target = socket.and_then(|path| {
            let bytes = path.as_os_str().as_encoded_bytes();
            match bytes.split_first() {
                None => None,
                Some((b'@', name)) => Some(Target::Abstract(name.to_vec())),
                Some(_) => Some(Target::Path(path)),
            }
        });
        Notifier { target }
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// The daemon serves: `READY=1`, with `status`.
    pub fn ready(&self, status: &str) {
        self.send(&message(&[("READY", "1"), ("STATUS", status)]));
    }

    /// A reload begins (`RELOADING=1`); [`Notifier::ready`] says it ended.
    pub fn reloading(&self) {
        self.send(&message(&[("RELOADING", "1")]));
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) {
        self.send(&message(&[("STOPPING", "1"), ("STATUS", "stopping")]));
    }

    /// A line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&message(&[("STATUS", status)]));
    }

    fn send(&self, datagram: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound().and_then(|socket| match target {
            Target::Path(path) => socket.send_to(datagram.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(datagram.as_bytes(), &address)
            }
        });
        if let Err(error) = sent {
            // systemd may be restarting itself; the next message will tell it again.
            tracing::debug!("cannot notify the service manager: {error}");
        }
    }

    /// Pings the watchdog every `interval` while `live` passes, until dropped. A failed check
    /// withholds the ping (and says why in the status), so that a daemon whose loops stall is
    /// restarted when `WatchdogSec=` runs out; a check that passes again resumes the pings.
    pub async fn watchdog<F, Fut>(self, interval: Duration, live: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Vec<Check>>,
    {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            let checks = match tokio::time::timeout(interval, live()).await {
                Ok(checks) => checks,
                Err(_) => vec![Check::failed(
                    "watchdog",
                    format!("the liveness checks took over {interval:?}"),
                )],
            };
            let failed: Vec<String> = checks
                .iter()
                .filter_map(|c| c.failure.as_ref().map(|why| format!("{}: {why}", c.name)))
                .collect();
            if failed.is_empty() {
                if failing {
                    tracing::info!("the liveness checks pass again; the watchdog is fed");
                }
                failing = false;
                self.send(&message(&[("WATCHDOG", "1")]));
            } else {
                if !failing {
                    tracing::warn!(
                        "the watchdog is not fed while a liveness check fails: {}",
                        failed.join("; ")
                    );
                }
                failing = true;
                self.status(&format!("not live: {}", failed.join("; ")));
            }
        }
    }
}

/// How often to ping the watchdog: half its timeout (`WATCHDOG_USEC`), when it watches this
/// process (`WATCHDOG_PID` unset or `pid`). `None`: no watchdog, or values that are not numbers.
pub fn watchdog_interval(
    usec: Option<&str>,
    watched_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(watched) = watched_pid
        && watched.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// [`watchdog_interval`] from this process's environment.
pub fn watchdog_interval_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// One datagram of `KEY=VALUE` lines. A value is kept to one line: a newline would start a
/// variable of its own.
pub fn message(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            let value: String = value
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                .collect();
            format!("{key}={value}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout_and_only_for_its_process() {
        assert_eq!(
            watchdog_interval(Some("10000000"), None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn a_message_is_one_line_per_variable() {
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "serving\non 1.2.3.4")]),
            "READY=1\nSTATUS=serving on 1.2.3.4\n"
        );
    }

    #[test]
    fn the_socket_is_a_path_or_an_abstract_name_and_nothing_without_one() {
        assert_eq!(
            Notifier::for_socket(Some("/run/systemd/notify".into())).target,
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Notifier::for_socket(Some("@/org/freedesktop/systemd1/notify".into())).target,
            Some(Target::Abstract(
                b"/org/freedesktop/systemd1/notify".to_vec()
            ))
        );
        assert!(!Notifier::for_socket(Some("".into())).active());
        assert!(!Notifier::for_socket(None).active());
    }

    #[tokio::test]
    async fn notifications_reach_the_socket_and_the_watchdog_waits_for_liveness() {
        let dir = std::env::temp_dir().join(format!("nexus-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::for_socket(Some(path.clone()));
        let read = || {
            let mut buffer = [0u8; 512];
            let n = listener.recv(&mut buffer).unwrap();
            String::from_utf8_lossy(&buffer[..n]).to_string()
        };
        notifier.ready("serving");
        assert_eq!(read(), "READY=1\nSTATUS=serving\n");
        notifier.reloading();
        assert_eq!(read(), "RELOADING=1\n");
        notifier.stopping();
        assert_eq!(read(), "STOPPING=1\nSTATUS=stopping\n");

        // Failing, then passing: a status that says why, then pings.
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let watchdog = tokio::spawn(notifier.clone().watchdog(Duration::from_millis(20), {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        vec![Check::failed("raft", "the driver stalled")]
                    } else {
                        vec![Check::ok("raft")]
                    }
                }
            }
        }));
        let listener = tokio::task::spawn_blocking(move || {
            let mut buffer = [0u8; 512];
            let mut seen = Vec::new();
            for _ in 0..3 {
                let n = listener.recv(&mut buffer).unwrap();
                seen.push(String::from_utf8_lossy(&buffer[..n]).to_string());
            }
            seen
        });
        let seen = listener.await.unwrap();
        watchdog.abort();
        assert_eq!(
            seen,
            [
                "STATUS=not live: raft: the driver stalled\n",
                "WATCHDOG=1\n",
                "WATCHDOG=1\n"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
