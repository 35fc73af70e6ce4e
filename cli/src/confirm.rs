//! Asking before a change that cannot be taken back: on a terminal, a `[y/N]` question on stderr;
//! without one, a refusal unless `--yes` was given, so a script never hangs on a prompt.

use std::io::{BufRead, IsTerminal, Write};

use nexus_protocol::error::ErrorCode;

use crate::error::CliError;

/// What to ask, and what to say when it cannot be asked or is declined.
#[derive(Debug, Clone, Copy)]
pub struct Confirmation<'a> {
    /// The question, ending in `[y/N] `.
    pub question: &'a str,
    /// Why it must be confirmed, said when there is no terminal to ask on.
    pub why: &'a str,
    /// The suggestion then (how to go ahead without being asked).
    pub suggestion: &'a str,
    /// The error when the answer is not yes.
    pub declined: &'a str,
}

/// Goes ahead with `yes`; else asks on a terminal, or refuses without one.
pub fn confirm(confirmation: Confirmation<'_>, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(CliError::local(
            ErrorCode::InvalidArgument,
            format!("{}, and there is no terminal to ask on", confirmation.why),
        )
        .suggest(confirmation.suggestion));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{}", confirmation.question);
    let _ = stderr.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        return Ok(());
    }
    Err(CliError::local(
        ErrorCode::InvalidArgument,
        confirmation.declined,
    ))
}
