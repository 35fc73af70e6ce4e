//! Running `git` for the agent.
//!
//! - A credential reaches git only through its environment (`http.extraHeader` by
//!   `GIT_CONFIG_COUNT`), never argv, a file or a log; git never prompts (no terminal, no
//!   askpass, `ssh` in batch mode), and neither the system's nor the user's git configuration
//!   applies (their credential helpers included).
//! - Messages are read in the C locale, so that [`classify`] (pure) can tell an authentication
//!   failure (GIT_AUTH_FAILED: retrying will not help) from any other (GIT_FAILED).
//! - Every run has a deadline; a run past it is killed.
//! - Containers write the mirror (their commits' objects and refs): nothing in it may make the
//!   agent, which runs as root, execute a program. Hooks and fsmonitor are off by configuration
//!   of the command's own scope, which outranks the repository's; the mirror's `config`, `hooks`
//!   and `objects/info` are mounted read-only in containers (`runtime::docker`); and git in a
//!   worktree runs with its git and common directories named ([`git_worktree`]), never found
//!   through the `.git` file or `commondir` a container could point elsewhere.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use nexus_protocol::credentials::GrantedCredential;
use nexus_protocol::error::{ErrorCode, WireError};

/// The deadline of a fetch or clone.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// The deadline of a local operation (status, worktree add, rev-list).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of git's stderr an error message quotes.
const MESSAGE_MAX: usize = 600;

/// Runs `git args...` in `dir` (or the current directory), with `auth` in its environment when
/// given. Returns its stdout (lossy UTF-8), or the failure classified.
pub async fn git<I, S>(
    dir: Option<&Path>,
    args: I,
    auth: Option<&GrantedCredential>,
    timeout: Duration,
) -> Result<String, WireError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(dir, args, auth, timeout, &[]).await
}

/// Runs `git args...` in the worktree `files`, whose git directory is `admin` (the mirror's
/// `worktrees/<workspace>`) and common directory `mirror`: named to git, not read from files a
/// container can write.
pub async fn git_worktree<I, S>(
    files: &Path,
    admin: &Path,
    mirror: &Path,
    args: I,
    timeout: Duration,
) -> Result<String, WireError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let env = [
        ("GIT_DIR", admin.as_os_str()),
        ("GIT_COMMON_DIR", mirror.as_os_str()),
        ("GIT_WORK_TREE", files.as_os_str()),
    ];
    run(Some(files), args, None, timeout, &env).await
}

async fn run<I, S>(
    dir: Option<&Path>,
    args: I,
    auth: Option<&GrantedCredential>,
    timeout: Duration,
    env: &[(&str, &OsStr)],
) -> Result<String, WireError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let what = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut command = tokio::process::Command::new("git");
    command
        .args(&args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    // Nothing a container wrote into the mirror runs: no hooks, no fsmonitor.
    let mut config: Vec<(&str, String)> = vec![
        ("safe.directory", "*".into()),
        ("core.hooksPath", "/dev/null".into()),
        ("core.fsmonitor", "false".into()),
    ];
    if let Some(auth) = auth {
        config.push(("http.extraHeader", authorization(auth)));
    }
    command.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (index, (key, value)) in config.iter().enumerate() {
        command.env(format!("GIT_CONFIG_KEY_{index}"), key);
        command.env(format!("GIT_CONFIG_VALUE_{index}"), value);
    }
    let child = command.spawn().map_err(|error| {
        WireError::new(
            ErrorCode::GitFailed,
            format!("cannot run git on this host (is it installed?): {error}"),
        )
    })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Err(WireError::new(
                ErrorCode::GitFailed,
                format!("git {what} failed to run: {error}"),
            ));
        }
        Err(_) => {
            return Err(WireError::new(
                ErrorCode::GitFailed,
                format!("git {what} did not finish within {} s", timeout.as_secs()),
            ));
        }
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(classify(
        &what,
        &String::from_utf8_lossy(&output.stderr),
        auth.is_some(),
    ))
}

/// The deadline of a credential check: within the coordinator's minute for the whole check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(45);

/// `git ls-remote` of `url` with `auth`: whether the remote takes the credential.
pub async fn ls_remote(url: &str, auth: Option<&GrantedCredential>) -> Result<(), WireError> {
    nexus_protocol::git::check_url(url)
        .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
    git(None, ["ls-remote", "--heads", url], auth, CHECK_TIMEOUT)
        .await
        .map(|_| ())
}

/// The HTTP header that carries a credential: basic authentication.
fn authorization(auth: &GrantedCredential) -> String {
    let pair = format!("{}:{}", auth.username, auth.secret.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
    format!("Authorization: Basic {encoded}")
}

/// What a failed git run means, from its stderr: GIT_AUTH_FAILED when the remote refused or
/// wanted credentials (`with_credential` says whether one was given, for the message), else
/// GIT_FAILED with git's last words.
pub fn classify(what: &str, stderr: &str, with_credential: bool) -> WireError {
    const AUTH: [&str; 9] = [
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "returned error: 401",
        "returned error: 403",
        "http basic: access denied",
        "permission denied (publickey",
        "invalid username or password",
    ];
    let lower = stderr.to_ascii_lowercase();
    let words = last_words(stderr);
    if AUTH.iter().any(|needle| lower.contains(needle)) {
        let given = if with_credential {
            "the stored credential was refused"
        } else {
            "the remote wants credentials and none is stored for this URL"
        };
        return WireError::new(
            ErrorCode::GitAuthFailed,
            format!("git {what}: {given}: {words}"),
        );
    }
    WireError::new(ErrorCode::GitFailed, format!("git {what} failed: {words}"))
}

/// The last non-empty lines of git's stderr, at most [`MESSAGE_MAX`] bytes.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let mut text = lines[lines.len().saturating_sub(3)..].join("; ");
    if text.len() > MESSAGE_MAX {
        let mut cut = MESSAGE_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "no message".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::credentials::Secret;

    use super::*;

    #[test]
    fn refusals_are_authentication_failures_and_the_rest_are_git_failures() {
        let cases = [
            (
                "fatal: Authentication failed for 'http://h/r.git/'",
                true,
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: could not read Username for 'http://h': terminal prompts disabled",
                false,
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: unable to access 'http://h/r.git/': The requested URL returned error: 403",
                true,
                ErrorCode::GitAuthFailed,
            ),
            (
                "git@h: Permission denied (publickey).",
                false,
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: unable to access 'http://h/': Failed to connect to h port 80",
                false,
                ErrorCode::GitFailed,
            ),
            (
                "fatal: invalid reference: nope",
                false,
                ErrorCode::GitFailed,
            ),
            (
                "fatal: unable to access 'http://h/r.git/': The requested URL returned error: 404",
                false,
                ErrorCode::GitFailed,
            ),
            ("", false, ErrorCode::GitFailed),
        ];
        for (stderr, given, code) in cases {
            let error = classify("fetch", stderr, given);
            assert_eq!(error.code, code, "{stderr}");
            assert!(error.message.starts_with("git fetch"), "{}", error.message);
        }
        let refused = classify("fetch", "fatal: Authentication failed", true);
        assert!(refused.message.contains("stored credential was refused"));
        let wanted = classify("fetch", "fatal: Authentication failed", false);
        assert!(wanted.message.contains("none is stored"));
    }

    #[test]
    fn messages_quote_the_last_lines_and_stay_bounded() {
        let long = format!("first\n\nsecond\nthird\n{}\n", "é".repeat(1000));
        let words = last_words(&long);
        assert!(!words.contains("first"));
        assert!(words.len() <= MESSAGE_MAX + '…'.len_utf8());
        assert_eq!(last_words("  \n"), "no message");
    }

    #[test]
    fn the_credential_travels_as_a_basic_authorization_header() {
        let auth = GrantedCredential {
            name: "ci".into(),
            username: "bot".into(),
            secret: Secret::new("pw".into()),
        };
        assert_eq!(authorization(&auth), "Authorization: Basic Ym90OnB3");
    }

    #[tokio::test]
    async fn a_local_repository_runs_and_a_bad_ref_is_a_git_failure() {
        let dir = tempfile::tempdir().unwrap();
        git(
            Some(dir.path()),
            ["init", "--quiet", "--bare", "m.git"],
            None,
            LOCAL_TIMEOUT,
        )
        .await
        .unwrap();
        let error = git(
            Some(&dir.path().join("m.git")),
            ["rev-parse", "--verify", "--quiet", "nope^{commit}"],
            None,
            LOCAL_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::GitFailed);
        let url = format!("file://{}", dir.path().join("m.git").display());
        ls_remote(&url, None).await.unwrap();
        let error = ls_remote("file:///nonexistent/x.git", None)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::GitFailed);
    }
}
