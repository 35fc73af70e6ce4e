//! Progress for the CLI's long commands (`admin workspace repair --all` first): a bar on stderr
//! while a person watches, nothing at all when stderr is a file or a pipe, so scripts and logs
//! see only the result. The one home of `indicatif`; a command counts what it has done and says
//! what it is at, and never draws itself.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a shown bar redraws on its own (its elapsed time moves while nothing finishes).
const TICK: Duration = Duration::from_millis(200);

/// A count towards a known total, drawn as a bar only on a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` steps, labelled `label` (`repairing`), on stderr if it is a terminal.
    pub fn new(total: u64, label: &str) -> Progress {
        Progress::drawn(total, label, std::io::stderr().is_terminal())
    }

    /// A count that is never drawn.
    pub fn hidden(total: u64) -> Progress {
        Progress::drawn(total, "", false)
    }

    fn drawn(total: u64, label: &str, shown: bool) -> Progress {
        let target = if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        // The template is fixed and valid; were it not, the default bar would do.
        let style =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({elapsed}) {wide_msg}")
                .map(|style| style.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        if shown {
            bar.enable_steady_tick(TICK);
        }
        Progress { bar }
    }

    /// Whether a bar is drawn.
    pub fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Says what is under way, beside the bar.
    pub fn say(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    /// One more step done; `message` says which.
    pub fn advance(&self, message: &str) {
        self.bar.set_message(message.to_string());
        self.bar.inc(1);
    }

    /// How many steps are done.
    pub fn done(&self) -> u64 {
        self.bar.position()
    }

    /// Takes the bar off the terminal, before the result is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error's way out must not leave a half-drawn bar under its message.
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_progress_still_counts() {
        let progress = Progress::hidden(3);
        assert!(!progress.is_shown());
        progress.say("a");
        progress.advance("a");
        progress.advance("b");
        assert_eq!(progress.done(), 2);
        progress.finish();
    }

    #[test]
    fn nothing_is_drawn_when_stderr_is_not_a_terminal() {
        // Under the test runner stderr is captured, not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(!Progress::new(1, "repairing").is_shown());
        }
    }
}
