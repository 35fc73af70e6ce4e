//! Connection settings: flags, then environment variables (both through clap), then the config
//! file. Also connecting to the first coordinator that answers. [`effective`]: the settings with
//! their origins, and the checks of a config file.

pub mod effective;
pub mod written;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, ErrorDetail, RetryChange, WireError};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::{
    Connection, Connector, Credentials, Subscription, TransportConfig, resolve,
};
use serde::{Deserialize, Serialize};

use crate::args::{ConnectionArgs, OutputFormat};
use crate::error::CliError;

/// The CLI's config file, `~/.config/nexus/config.toml`.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    #[serde(default)]
    pub coordinators: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub output: Option<OutputFormat>,
}

/// The config file's default place: `$XDG_CONFIG_HOME/nexus/config.toml`, else
/// `~/.config/nexus/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("nexus").join("config.toml"))
}

pub fn read_file(path: &Path) -> Result<Option<FileSettings>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|e| {
            CliError::local(
                ErrorCode::InvalidArgument,
                format!("invalid config file {}: {e}", path.display()),
            )
            .suggest("fix the file, or point NEXUS_CONFIG elsewhere")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::local(
            ErrorCode::InvalidArgument,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Settings complete enough to connect. (Serialized for the sync daemon, which connects on
/// the user's behalf: paths, never key material.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub coordinators: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The command's request id: every request the command sends for its work goes under it
    /// (`--request-id`, else one drawn at its start). `None` (the sync daemon): a fresh id per
    /// request.
    #[serde(skip)]
    pub request_id: Option<RequestId>,
}

/// Loads the file settings (explicit or default path) once.
/// A coordinator's address, `HOST:PORT` or `[V6]:PORT`, with a port that is not 0: checked
/// before a command connects (and in the config file's check), so that a mistyped
/// `--coordinator` (a node's number meant for `--node`, say) is refused as such rather than
/// taken as an address nothing answers at.
pub fn parse_coordinator(value: &str) -> Result<String, String> {
    let port = value
        .rsplit_once(':')
        .filter(|(host, _)| {
            !host.is_empty()
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
        })
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port != 0);
    match port {
        Some(_) => Ok(value.to_string()),
        None if value.parse::<u64>().is_ok() => Err(format!(
            "{value:?} is not HOST:PORT; to name coordinator {value} of `admin logs` or \
             `config reload`, use --node {value}"
        )),
        None => Err(format!(
            "{value:?} is not HOST:PORT (an IPv6 address in brackets), e.g. 127.0.0.1:7400"
        )),
    }
}

/// The coordinators given (`--coordinator`, else `NEXUS_COORDINATORS`), else the config
/// file's, each checked as HOST:PORT. An empty `NEXUS_COORDINATORS=` gives none. Checked here,
/// when a command is about to connect, not as the flags are parsed: a bad variable would
/// otherwise stop every command, `config show` and `config validate` too.
pub fn coordinators(args: &ConnectionArgs, file: &FileSettings) -> Result<Vec<String>, CliError> {
    let given = given_coordinators(args);
    if given.is_empty() {
        return Ok(file.coordinators.clone());
    }
    for address in &given {
        parse_coordinator(address).map_err(|problem| {
            CliError::local(ErrorCode::InvalidArgument, problem).suggest(
                "pass --coordinator HOST:PORT[,HOST:PORT...], or set NEXUS_COORDINATORS so",
            )
        })?;
    }
    Ok(given)
}

/// The coordinators given by flag or environment, without empty entries.
pub fn given_coordinators(args: &ConnectionArgs) -> Vec<String> {
    args.coordinators
        .iter()
        .filter(|address| !address.is_empty())
        .cloned()
        .collect()
}

pub fn load(args: &ConnectionArgs) -> Result<FileSettings, CliError> {
    let path = args.config.clone().or_else(default_config_path);
    Ok(match path {
        Some(path) => read_file(&path)?.unwrap_or_default(),
        None => FileSettings::default(),
    })
}

impl Settings {
    pub fn resolve(args: &ConnectionArgs, file: FileSettings) -> Result<Settings, CliError> {
        let missing = |what: &str, flag: &str, env: &str| {
            CliError::local(ErrorCode::InvalidArgument, format!("no {what} configured")).suggest(
                &format!("pass {flag}, set {env}, or run `nexus up` to configure a local fleet"),
            )
        };
        let coordinators = coordinators(args, &file)?;
        if coordinators.is_empty() {
            return Err(missing(
                "coordinator address",
                "--coordinator HOST:PORT",
                "NEXUS_COORDINATORS",
            ));
        }
        Ok(Settings {
            coordinators,
            ca: args
                .ca
                .clone()
                .or(file.ca)
                .ok_or_else(|| missing("CA certificate", "--ca FILE", "NEXUS_CA"))?,
            cert: args
                .cert
                .clone()
                .or(file.cert)
                .ok_or_else(|| missing("certificate", "--cert FILE", "NEXUS_CERT"))?,
            key: args
                .key
                .clone()
                .or(file.key)
                .ok_or_else(|| missing("private key", "--key FILE", "NEXUS_KEY"))?,
            request_id: None,
        })
    }

    /// The same settings, sending every request under `request_id`.
    pub fn with_request_id(mut self, request_id: RequestId) -> Settings {
        self.request_id = Some(request_id);
        self
    }

    /// The id of the next request: the command's, or a fresh one.
    pub fn next_request_id(&self) -> RequestId {
        self.request_id.unwrap_or_else(RequestId::random)
    }

    pub fn connector(&self) -> Result<Connector, CliError> {
        self.connector_with(TransportConfig::default())
    }

    /// A connector with its own transport settings (a long-lived connection to an agent
    /// notices a dead peer sooner).
    pub fn connector_with(&self, config: TransportConfig) -> Result<Connector, CliError> {
        let credentials = Credentials::load(&self.ca, &self.cert, &self.key).map_err(|e| {
            CliError::local(ErrorCode::AuthenticationFailed, e.to_string())
                .suggest("check --ca, --cert and --key (or NEXUS_CA, NEXUS_CERT, NEXUS_KEY)")
        })?;
        // An expired session fails here, saying so, rather than as a server's TLS alert.
        crate::session::check(
            credentials.expiries().own,
            nexus_protocol::clock::now(),
            &self.cert,
        )?;
        Connector::new(&credentials, config)
            .map_err(|e| CliError::local(ErrorCode::Internal, e.to_string()))
    }

    /// Connects to the first coordinator that answers, in the configured order.
    ///
    /// A coordinator that does not answer within [`NEXT_COORDINATOR_AFTER`] keeps trying while
    /// the next one is tried too, and the first to answer wins: a dead coordinator early in the
    /// list costs a quarter of a second, not its whole handshake timeout (5 s), on every command.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        Ok(self.connect_from(0).await?.0)
    }

    /// [`Settings::connect`], trying the coordinators in order from the one at `first` (and
    /// round to the start); also the index of the one that answered. A client whose coordinator
    /// stopped answering starts after it, rather than waiting on it again first.
    pub async fn connect_from(&self, first: usize) -> Result<(Connection, usize), CliError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let connector = self.connector()?;
        let count = self.coordinators.len();
        let mut targets = (0..count)
            .map(|step| (first + step) % count)
            .map(|index| (index, &self.coordinators[index]));
        let mut trying = FuturesUnordered::new();
        let mut last = None;
        if let Some(target) = targets.next() {
            trying.push(connect_indexed(&connector, target));
        }
        while !trying.is_empty() {
            let more = targets.len() > 0;
            // A refusal, or a quarter of a second without an answer: the next one too.
            tokio::select! {
                Some((index, result)) = trying.next() => match result {
                    Ok(connection) => {
                        // The command's notices, asked beside its first request.
                        crate::notices::ask(&connection);
                        return Ok((connection, index));
                    }
                    // A server's refusal (a certificate, a version) says more than a silent
                    // address's timeout that may arrive after it.
                    Err(error) => {
                        let silent = error.code == ErrorCode::NetworkError;
                        if !(silent && last.as_ref().is_some_and(|l: &WireError| l.code != ErrorCode::NetworkError)) {
                            last = Some(error);
                        }
                    }
                },
                () = tokio::time::sleep(NEXT_COORDINATOR_AFTER), if more => {}
            }
            if let Some(target) = targets.next() {
                trying.push(connect_indexed(&connector, target));
            }
        }
        Err(crate::session::explain(last.unwrap_or_else(|| {
            WireError::new(ErrorCode::NetworkError, "no coordinator configured")
        })))
    }

    /// Sends `request` once, on a connection of its own: [`Client::request`].
    pub async fn request(&self, request: Request, limit: Duration) -> Result<Response, CliError> {
        self.client()?.request(request, limit).await
    }

    /// A client that keeps its connection between requests (a command that polls).
    pub fn client(&self) -> Result<Client<'_>, CliError> {
        Ok(Client {
            settings: self,
            connector: self.connector()?,
            connection: None,
            first: 0,
            reached: None,
            first_attempt: None,
        })
    }

    /// Connects to one coordinator at `target` (HOST:PORT).
    pub async fn connect_to(&self, target: &str) -> Result<Connection, CliError> {
        connect_to(&self.connector()?, target)
            .await
            .map_err(crate::session::explain)
    }
}

/// The first attempt of a workspace request ([`Client::with_first_attempt`]): a write goes
/// through the replicated log and a read changes nothing, so both may be asked again of another
/// coordinator when the first is silent (paused, cut off) this long; one that answers does so
/// in milliseconds.
pub const FIRST_ATTEMPT: Duration = Duration::from_secs(3);

/// How long the CLI waits on one coordinator's handshake before it tries the next one too.
pub const NEXT_COORDINATOR_AFTER: Duration = Duration::from_millis(250);

/// The longest wait before an automatic retry; a policy asking for longer is left to the user.
const MAX_SILENT_RETRY_WAIT: Duration = Duration::from_secs(10);

/// The most time one request spends waiting between its automatic retries.
const MAX_SILENT_RETRY_TOTAL: Duration = Duration::from_secs(15);

/// How many `NOT_LEADER` answers a request follows before it gives up.
const MAX_REDIRECTS: usize = 3;

async fn connect_to(connector: &Connector, target: &str) -> Result<Connection, WireError> {
    let attempt = async {
        let (address, name) = resolve(target).await?;
        connector
            .connect(address, &name, &[IdentityKind::Coordinator])
            .await
    };
    attempt.await.map_err(|error| annotate(target, error))
}

/// [`connect_to`] the coordinator at its index in the configured order, giving the index back.
async fn connect_indexed(
    connector: &Connector,
    (index, target): (usize, &String),
) -> (usize, Result<Connection, WireError>) {
    (index, connect_to(connector, target).await)
}

fn annotate(target: &str, mut error: WireError) -> WireError {
    error.message = format!("{target}: {}", error.message);
    error
}

/// The error a request ends with, given whether an earlier attempt's outcome was unknown.
///
/// After an attempt that timed out or lost its connection, the coordinator that attempt reached
/// may have proposed it, and its entry may still commit, even seconds later (an entry of a lost
/// term that the next leader carries). Only a refusal of the state machine, which the journal
/// records under the request id, then says what became of the request: a later attempt under the
/// same id finds the first one's outcome, or refuses in its place for good. A refusal given
/// before the log is reached says nothing of the earlier attempt, so the outcome is unknown:
/// `TIMEOUT`, which a script retries under the same request id. Those are `NOT_LEADER` (no
/// leader to propose it), and the checks a coordinator reads before it proposes a change to a
/// workspace, `WORKSPACE_NOT_FOUND` and `PERMISSION_DENIED` (the fault campaign found a destroy
/// answered "not found" whose first attempt then destroyed the next workspace of that name), and
/// the admission gate's `RESOURCE_EXHAUSTED`.
fn after_unknown(error: WireError, unknown: bool) -> WireError {
    let before_the_log = matches!(
        error.code,
        ErrorCode::NotLeader
            | ErrorCode::WorkspaceNotFound
            | ErrorCode::PermissionDenied
            | ErrorCode::ResourceExhausted
    );
    if !unknown || !before_the_log {
        return error;
    }
    let mut unknown = WireError::new(
        ErrorCode::Timeout,
        format!(
            "an earlier attempt got no answer, and a later one was refused before reaching the \
             log ({}: {}): the earlier one may have taken effect, or may yet; ask again under \
             the same request id to learn its outcome",
            error.code.as_str(),
            error.message
        ),
    );
    unknown.request_id = error.request_id;
    unknown
}

/// Requests over one connection, kept between them and replaced when it fails or points at a
/// follower.
#[derive(Debug)]
pub struct Client<'a> {
    settings: &'a Settings,
    connector: Connector,
    connection: Option<Connection>,
    /// Where the next connection starts in the configured order.
    first: usize,
    /// The configured coordinator the connection reached (`None`: a leader it was sent to).
    reached: Option<usize>,
    /// A shorter limit for each request's first attempt ([`Client::with_first_attempt`]).
    first_attempt: Option<Duration>,
}

impl Client<'_> {
    /// Gives each request's first attempt at most `limit`, and the attempts after it the whole
    /// limit the request asks for: a coordinator that stopped answering (paused, cut off) costs
    /// `limit`, not the request's whole limit, before the request is asked of another one.
    ///
    /// Only for requests that are safe to ask again while the first attempt may still be at
    /// work: reads, and changes that go through the replicated log, which answers a second
    /// delivery under the same request id with the first one's outcome. Not for a long
    /// operation that a coordinator runs outside the log (a maintenance run, a backup).
    #[must_use]
    pub fn with_first_attempt(mut self, limit: Duration) -> Self {
        self.first_attempt = Some(limit);
        self
    }

    /// Sends `request` to the first coordinator that answers and follows it to the leader when
    /// it answers `NOT_LEADER` with the leader's address. Other retryable errors are retried as
    /// their code's policy says (a `TIMEOUT` once with twice the time, a leaderless `NOT_LEADER`
    /// a few times while an election runs). Every attempt carries the same request id, so a write
    /// is never applied twice. `limit` bounds each attempt.
    ///
    /// The id is the command's ([`Settings::request_id`]) when it has one: every request of a
    /// command goes under it (its one write, and the reads around it, which no journal keeps).
    pub async fn request(
        &mut self,
        request: Request,
        limit: Duration,
    ) -> Result<Response, CliError> {
        let request_id = self.settings.next_request_id();
        self.request_under(request_id, request, limit).await
    }

    /// Opens `request`'s stream on the kept connection (else on one to the first coordinator
    /// that answers) within `limit`, connection included, once: no redirect, no retry. For a
    /// caller that has another way to what the stream tells, and takes it when this fails.
    pub async fn subscribe(
        &mut self,
        request: Request,
        limit: Duration,
    ) -> Result<Subscription, CliError> {
        let request_id = self.settings.next_request_id();
        let opened = tokio::time::timeout(limit, async {
            let connection = match &self.connection {
                Some(connection) => connection.clone(),
                None => {
                    let (connection, index) = self.settings.connect_from(self.first).await?;
                    self.reached = Some(index);
                    self.connection = Some(connection.clone());
                    connection
                }
            };
            connection
                .subscribe_with(request_id, request)
                .await
                .map_err(crate::session::explain)
        })
        .await;
        opened.unwrap_or_else(|_| {
            Err(CliError::local(
                ErrorCode::Timeout,
                format!("opening a stream took over {} ms", limit.as_millis()),
            ))
        })
    }

    /// [`Client::request`] under `request_id` rather than the command's: a second write of one
    /// command, which the command's id would answer with the first one's outcome.
    pub async fn request_under(
        &mut self,
        request_id: RequestId,
        request: Request,
        limit: Duration,
    ) -> Result<Response, CliError> {
        let full = limit;
        let mut limit = self.first_attempt.map_or(full, |first| first.min(full));
        let mut redirects = 0;
        let mut retries = 0u32;
        let mut waited = Duration::ZERO;
        // Whether an attempt may have reached a coordinator without an answer: from then on,
        // no refusal of a later attempt can say the request did not happen.
        let mut unknown = false;
        loop {
            let current = match self.connection.take() {
                Some(connection) => connection,
                None => {
                    let (connection, index) = self.settings.connect_from(self.first).await?;
                    self.reached = Some(index);
                    connection
                }
            };
            // A coordinator whose process is gone (a leader SIGKILLed) is left at once, not
            // after the attempt's whole limit.
            let mut error = match current
                .request_unless_gone(request_id, request.clone(), limit)
                .await
            {
                Ok(response) => {
                    self.connection = Some(current);
                    return Ok(response);
                }
                Err(error) => {
                    unknown |= matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout);
                    error
                }
            };
            if let (
                ErrorCode::NotLeader,
                Some(ErrorDetail::NotLeader {
                    address: Some(address),
                    ..
                }),
            ) = (error.code, &error.detail)
                && redirects < MAX_REDIRECTS
            {
                redirects += 1;
                match connect_to(&self.connector, address).await {
                    Ok(leader) => {
                        self.connection = Some(leader);
                        self.reached = None;
                        continue;
                    }
                    // The leader named may have just died (a failover under way): retry as a
                    // network error, from whichever coordinator answers.
                    Err(unreachable) => error = unreachable,
                }
            }
            // An answer from the server leaves the connection good for the next request.
            let answered = !matches!(error.code, ErrorCode::NetworkError | ErrorCode::Timeout);
            retries += 1;
            // A retry the policy puts far off (RESOURCE_EXHAUSTED: in 30 s) is the user's to
            // make: the error says so, rather than the command hanging without a word.
            // Nor does a command retry in silence for long: a refusal that says "the host is
            // down" would otherwise be asked again every 5 s for ever.
            let Some(delay) = error
                .code
                .retry_policy()
                .delay_before(retries)
                .filter(|delay| *delay <= MAX_SILENT_RETRY_WAIT)
                .filter(|delay| waited + *delay <= MAX_SILENT_RETRY_TOTAL)
            else {
                if answered {
                    self.connection = Some(current);
                }
                return Err(crate::session::explain(after_unknown(error, unknown)));
            };
            if error.code.retry_change() == RetryChange::LongerTimeout {
                // A shortened first attempt is followed by the whole limit, then doubled.
                limit = if limit < full {
                    full
                } else {
                    limit.saturating_mul(2)
                };
            } else if answered {
                self.connection = Some(current);
            }
            // Else the connection failed: the next attempt connects afresh, to whichever
            // coordinator answers (the one it had may be the leader that just died), trying
            // first the one after it: a paused or cut-off coordinator still completes no
            // handshake, and each try of it costs a quarter of a second.
            if !answered && let Some(index) = self.reached.take() {
                self.first = index + 1;
            }
            waited += delay;
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> WireError {
        WireError::new(code, "refused")
    }

    #[test]
    fn a_coordinator_is_host_and_port() {
        for good in ["a:1", "10.0.0.2:7400", "[::1]:7400", "c1.example:65535"] {
            assert_eq!(parse_coordinator(good).as_deref(), Ok(good));
        }
        for bad in [
            "a",
            ":7400",
            "a:port",
            "a:70000",
            "a:0",
            "::1",
            "2001:db8::7400",
        ] {
            assert!(parse_coordinator(bad).is_err(), "{bad}");
        }
        // A node's number where `--node` was meant says so.
        let error = parse_coordinator("1").unwrap_err();
        assert!(error.contains("--node 1"), "{error}");
    }

    #[test]
    fn coordinators_given_are_checked_and_an_empty_variable_gives_the_files() {
        let given = |list: &[&str]| ConnectionArgs {
            coordinators: list.iter().map(ToString::to_string).collect(),
            ..ConnectionArgs::default()
        };
        let file = FileSettings {
            coordinators: vec!["f:1".into()],
            ..FileSettings::default()
        };
        assert_eq!(coordinators(&given(&[]), &file).unwrap(), ["f:1"]);
        // `NEXUS_COORDINATORS=` as clap gives it: one empty entry.
        assert_eq!(coordinators(&given(&[""]), &file).unwrap(), ["f:1"]);
        assert_eq!(coordinators(&given(&["a:1", ""]), &file).unwrap(), ["a:1"]);
        let refused = coordinators(&given(&["a:1", "1"]), &file).unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::InvalidArgument);
        assert!(refused.error.message.contains("--node 1"), "{refused:?}");
    }

    #[test]
    fn a_missing_leader_after_an_unanswered_attempt_is_an_unknown_outcome() {
        let after = after_unknown(error(ErrorCode::NotLeader), true);
        assert_eq!(after.code, ErrorCode::Timeout);
        assert!(after.message.contains("may have taken effect"), "{after}");
        // Without an unanswered attempt NOT_LEADER stands: nobody proposed it.
        assert_eq!(
            after_unknown(error(ErrorCode::NotLeader), false).code,
            ErrorCode::NotLeader
        );
        // Refusals read before the log was reached say nothing of the earlier attempt.
        for code in [
            ErrorCode::WorkspaceNotFound,
            ErrorCode::PermissionDenied,
            ErrorCode::ResourceExhausted,
        ] {
            let after = after_unknown(error(code), true);
            assert_eq!(after.code, ErrorCode::Timeout, "{code:?}");
            assert!(after.message.contains(code.as_str()), "{after}");
            assert_eq!(after_unknown(error(code), false).code, code);
        }
        // The state machine's refusals stand (the journal keeps them under the request id), and
        // so do unknowns.
        for code in [
            ErrorCode::WorkspaceAlreadyExists,
            ErrorCode::InvalidArgument,
            ErrorCode::Timeout,
            ErrorCode::NetworkError,
        ] {
            assert_eq!(after_unknown(error(code), true).code, code);
        }
    }
}
