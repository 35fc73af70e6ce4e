//! `nexus admin notice set|list|clear`: the notices every command shows its users on stderr.
//! How a user's command shows them is [`crate::notices`].

use std::time::Duration;

use nexus_protocol::clock::{self, Timestamp};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::model::Notice;

use crate::args::{NoticeCommand, OutputFormat};
use crate::error::CliError;
use crate::output;
use crate::output::notices::{notices_json, notices_table};
use crate::settings::Settings;

/// How long a post or a clear may take (a Raft write).
const TIMEOUT: Duration = Duration::from_secs(15);

const SET_USAGE: &str =
    "nexus admin notice set 'TEXT' [--until 2h | --until 2026-12-24T08:00:00Z] [--user U]";

pub async fn run(
    command: NoticeCommand,
    settings: &Settings,
    format: OutputFormat,
) -> Result<(), CliError> {
    let request = match command {
        NoticeCommand::Set { text, until, user } => {
            let now = clock::now();
            let until = until
                .map(|until| parse_until(&until, now))
                .transpose()
                .map_err(|why| {
                    CliError::local(ErrorCode::InvalidArgument, why).suggest(SET_USAGE)
                })?;
            check_text(&text).map_err(|why| {
                CliError::local(ErrorCode::InvalidArgument, why).suggest(SET_USAGE)
            })?;
            AdminRequest::PostNotice { text, until, user }
        }
        NoticeCommand::List => AdminRequest::Notices,
        NoticeCommand::Clear { ids, all } => AdminRequest::ClearNotices((!all).then_some(ids)),
    };
    let notices = match settings.request(Request::Admin(request), TIMEOUT).await? {
        Response::Notices(notices) => notices,
        other => return Err(CliError::unexpected(&other)),
    };
    print(format, &notices);
    Ok(())
}

fn print(format: OutputFormat, notices: &[Notice]) {
    let now = clock::now();
    output::emit(format, &notices_json(notices, now), || {
        notices_table(notices, now)
    });
}

/// A notice's text as a post needs it: not blank, at most [`Notice::TEXT_MAX`] bytes.
fn check_text(text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a notice needs a text".into());
    }
    if text.len() > Notice::TEXT_MAX {
        return Err(format!(
            "a notice's text is at most {} bytes, not {}",
            Notice::TEXT_MAX,
            text.len()
        ));
    }
    Ok(())
}

/// `--until`: a time (RFC 3339) or a duration from `now` (`90m`, `2h`, `7d`), in the future.
pub fn parse_until(value: &str, now: Timestamp) -> Result<Timestamp, String> {
    let at = match crate::fleetlogs::parse_time(value) {
        Ok(micros) => Timestamp::from_millis(micros / 1_000),
        Err(_)
            if value.trim().starts_with(|c: char| c.is_ascii_digit()) && !value.contains('-') =>
        {
            let seconds =
                crate::args::parse_age(value).map_err(|why| format!("--until {value:?}: {why}"))?;
            now.saturating_add(Duration::from_secs(seconds))
        }
        Err(why) => return Err(format!("--until: {why}")),
    };
    if at <= now {
        return Err(format!(
            "--until {value:?} is not in the future: a notice must end after it is posted"
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_a_time_or_a_duration_to_come() {
        let now = Timestamp::from_millis(1_764_748_800_000); // 2025-12-03T08:00:00Z
        assert_eq!(
            parse_until("2h", now),
            Ok(Timestamp::from_millis(1_764_748_800_000 + 7_200_000))
        );
        assert_eq!(
            parse_until("2025-12-24T08:00:00Z", now),
            Ok(Timestamp::from_millis(1_766_563_200_000))
        );
        for bad in [
            "0",
            "0s",
            "2025-12-01T08:00:00Z",
            "soon",
            "2 fortnights",
            "",
        ] {
            assert!(parse_until(bad, now).is_err(), "{bad:?}");
        }
        assert!(
            parse_until("2025-12-01T08:00:00Z", now)
                .unwrap_err()
                .contains("not in the future")
        );
    }

    #[test]
    fn a_text_is_needed_and_bounded() {
        assert!(check_text("maintenance at 02:00").is_ok());
        assert!(check_text("  \n").is_err());
        assert!(check_text(&"x".repeat(Notice::TEXT_MAX)).is_ok());
        assert!(check_text(&"x".repeat(Notice::TEXT_MAX + 1)).is_err());
    }
}
