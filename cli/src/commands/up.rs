//! `nexus up` and `nexus down`: a one-host fleet on this machine — a one-node coordinator and an
//! agent as child processes, the PKI in a local state dir, and the CLI configured to use them.
//! The agent is enrolled the way a real host is: `up` makes a one-use agent token as the admin,
//! and the agent makes its own key and gets its certificate with it; no agent key is made here.
//!
//! Layout of the state dir (default `~/.local/state/nexus`): `pki/` (the CA, the coordinator's
//! and the admin's certificates), `coordinator/`, `agent/` (the agent's data dir, where it keeps
//! its enrolled key and certificate), `logs/`, `cli.toml` (the CLI settings for this fleet),
//! `agent-join-token` (0600, until the agent has registered) and, while detached, `pids.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_protocol::clock;
use nexus_protocol::credentials::Secret;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::join::{TokenRole, TokenSpec};
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::pki::{
    DEFAULT_CA_VALIDITY, DEFAULT_CERT_VALIDITY, PkiDir, SubjectName, Validity,
};
use nexus_protocol::{HostId, NodeId, UserName};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pki::pki_error;
use crate::args::{OutputFormat, StateArgs, UpArgs};
use crate::error::CliError;
use crate::output;
use crate::settings::written::write_settings;
use crate::settings::{FileSettings, Settings, default_config_path};

#[derive(Debug, Serialize, Deserialize)]
struct Pids {
    coordinator: u32,
    agent: u32,
}

fn local(message: impl Into<String>) -> CliError {
    CliError::local(ErrorCode::InvalidArgument, message)
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> CliError {
    CliError::local(
        ErrorCode::Internal,
        format!("cannot {what} {}: {error}", path.display()),
    )
}

pub fn state_dir(args: &StateArgs) -> Result<PathBuf, CliError> {
    if let Some(dir) = &args.state_dir {
        return Ok(dir.clone());
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".local").join("state"))
        })
        .ok_or_else(|| {
            local("cannot tell where to keep state: HOME is not set")
                .suggest("pass --state-dir DIR")
        })?;
    Ok(base.join("nexus"))
}

/// Names the host id and admin user after this machine and this user, where they are valid ids,
/// else `local` and `admin`.
fn local_names() -> Result<(HostId, UserName), CliError> {
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = HostId::new(hostname.trim()).or_else(|_| HostId::new("local"));
    let user = UserName::new(std::env::var("USER").unwrap_or_default().to_lowercase())
        .or_else(|_| UserName::new("admin"));
    Ok((
        host.map_err(|e| local(e.to_string()))?,
        user.map_err(|e| local(e.to_string()))?,
    ))
}

/// A sibling binary of this `nexus` (they are built and installed together).
fn sibling(name: &str) -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| local(format!("cannot find this program's path: {e}")))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(local(format!(
            "{} is missing next to {}",
            path.display(),
            exe.display()
        ))
        .suggest("build all binaries with `cargo build --bins` (or run ./deploy/dev/up.sh)"))
    }
}

/// How the user should type this program: `nexus` when that finds this very binary on PATH, else
/// its full path (as after `cargo build`, before any install).
fn command_name() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|path| path.canonicalize().ok());
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nexus").canonicalize().ok() == exe)
    });
    match exe {
        Some(exe) if !on_path => exe.display().to_string(),
        _ => "nexus".to_string(),
    }
}

fn alive(pid: u32, name: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| name.starts_with(comm.trim()))
}

fn docker_answers() -> bool {
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
}

/// Makes whatever PKI files are missing.
fn ensure_pki(pki: &PkiDir, coordinator: &Identity, admin: &Identity) -> Result<(), CliError> {
    let now = clock::now();
    if !pki.ca_key().exists() {
        pki.init(now, DEFAULT_CA_VALIDITY, false)
            .map_err(pki_error)?;
    }
    let loopback = [
        SubjectName::Ip([127, 0, 0, 1].into()),
        SubjectName::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
        SubjectName::Dns("localhost".into()),
    ];
    for (identity, names) in [(coordinator, &loopback[..]), (admin, &[][..])] {
        if !pki.key(identity).exists() {
            pki.issue(
                identity,
                names,
                Validity::starting(now, DEFAULT_CERT_VALIDITY),
                false,
            )
            .map_err(pki_error)?;
        }
    }
    Ok(())
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> Result<Child, CliError> {
    let file = fs::File::create(log).map_err(|e| io_error("create", log, e))?;
    let err = file.try_clone().map_err(|e| io_error("open", log, e))?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    // Its own process group: a detached fleet outlives this terminal's hangup and Ctrl-C.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn().map_err(|e| io_error("start", binary, e))
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

pub async fn up(args: UpArgs, format: OutputFormat) -> Result<(), CliError> {
    let state = state_dir(&args.state)?;
    let pids_path = state.join("pids.json");
    let address = format!("127.0.0.1:{}", args.port);
    // The agent serves logs and exec on the next port, on loopback like the coordinator.
    let agent_listen = format!("127.0.0.1:{}", args.port.saturating_add(1));
    // Their monitoring HTTP (/metrics, /livez, /readyz) 80 ports above: the daemons' own
    // defaults, 7480 and 7481, with the default port.
    let coordinator_http = format!("127.0.0.1:{}", args.port.saturating_add(80));
    let agent_http = format!("127.0.0.1:{}", args.port.saturating_add(81));
    let (host_id, user) = local_names()?;
    let settings = Settings {
        coordinators: vec![address.clone()],
        ca: state.join("pki/ca.pem"),
        cert: state.join(format!("pki/user-{user}.pem")),
        key: state.join(format!("pki/user-{user}.key")),
        request_id: None,
    };
    if let Some(pids) = read_pids(&pids_path)?
        && alive(pids.coordinator, "nexus-coordinator")
        && alive(pids.agent, "nexus-agent")
    {
        output::emit(
            format,
            &json!({ "already_up": true, "state_dir": state }),
            || {
                format!(
                    "Nexus is already up (state in {}). Stop it with `nexus down`.\n",
                    state.display()
                )
            },
        );
        return Ok(());
    }

    let coordinator_bin = sibling("nexus-coordinator")?;
    let agent_bin = sibling("nexus-agent")?;
    for dir in ["pki", "coordinator", "agent", "logs"] {
        fs::create_dir_all(state.join(dir)).map_err(|e| io_error("create", &state.join(dir), e))?;
    }
    let pki = PkiDir::new(state.join("pki"));
    let node_id = NodeId::new(1).map_err(|e| local(e.to_string()))?;
    let coordinator = Identity::Coordinator(node_id);
    let admin = Identity::User {
        name: user.clone(),
        role: Role::Admin,
    };
    ensure_pki(&pki, &coordinator, &admin)?;
    // The credential store's key, beside the PKI (never in the coordinator's data directory,
    // whose backups it must stay apart from).
    let credentials_key = state.join("pki/credentials.key");
    if !credentials_key.exists() {
        nexus_protocol::seal::write_new_key(&credentials_key).map_err(|e| local(e.0))?;
    }

    let runtime = if docker_answers() { "docker" } else { "hollow" };
    let tls_dir = pki.path().display().to_string();
    let coordinator_log = state.join("logs/coordinator.log");
    let agent_log = state.join("logs/agent.log");
    let mut coordinator_child = spawn(
        &coordinator_bin,
        &[
            "--node-id".into(),
            "1".into(),
            "--listen".into(),
            address.clone(),
            "--data-dir".into(),
            state.join("coordinator").display().to_string(),
            "--tls-dir".into(),
            tls_dir,
            "--http-listen".into(),
            coordinator_http.clone(),
            "--credentials-key-file".into(),
            credentials_key.display().to_string(),
        ],
        &coordinator_log,
    )?;
    // The agent joins as a new host does: with a one-use token, made as the admin once the
    // coordinator answers, handed over in a file (never on its command line).
    let token_file = state.join(AGENT_TOKEN_FILE);
    let token = agent_token(
        &settings,
        Duration::from_secs(args.wait),
        &mut coordinator_child,
        &coordinator_log,
    )
    .await;
    let written = token.and_then(|token| write_private(&token_file, token.expose()));
    if let Err(error) = written {
        let _ = coordinator_child.kill();
        let _ = coordinator_child.wait();
        return Err(error);
    }
    let mut agent_child = spawn(
        &agent_bin,
        &[
            "--host-id".into(),
            host_id.to_string(),
            "--coordinator".into(),
            address.clone(),
            "--data-dir".into(),
            state.join("agent").display().to_string(),
            "--join-token-file".into(),
            token_file.display().to_string(),
            "--runtime".into(),
            runtime.into(),
            "--listen".into(),
            agent_listen,
            "--http-listen".into(),
            agent_http.clone(),
        ],
        &agent_log,
    )?;

    let ready = wait_until_registered(
        &settings,
        &host_id,
        Duration::from_secs(args.wait),
        &mut [
            (&mut coordinator_child, coordinator_log.as_path()),
            (&mut agent_child, agent_log.as_path()),
        ],
    )
    .await;
    // Spent or not, the token has done its work: no secret is left lying about.
    let _ = fs::remove_file(&token_file);
    if let Err(error) = ready {
        let _ = coordinator_child.kill();
        let _ = agent_child.kill();
        let _ = coordinator_child.wait();
        let _ = agent_child.wait();
        return Err(error);
    }

    let config_note = write_cli_config(&state, &settings)?;
    let summary = json!({
        "coordinator": address,
        "metrics": [format!("http://{coordinator_http}/metrics"), format!("http://{agent_http}/metrics")],
        "host_id": host_id.as_str(),
        "runtime": runtime,
        "user": user.as_str(),
        "state_dir": state,
        "config": config_note.0,
        "detached": args.detach,
    });
    output::emit(format, &summary, || {
        let mut text = format!(
            "Nexus is up on this host.\n  coordinator  {coordinator} at {address} (log: {})\n  agent        {host_id}, enrolled with a join token and registered, runtime {runtime} (log: {})\n  you          admin {user}; CLI settings in {}\n",
            coordinator_log.display(),
            agent_log.display(),
            config_note.0.display(),
        );
        text.push_str(&format!(
            "  metrics      http://{coordinator_http}/metrics and http://{agent_http}/metrics (also /livez, /readyz)\n"
        ));
        if runtime == "hollow" {
            text.push_str("  note         no Docker engine answers at /var/run/docker.sock, so the agent simulates containers (hollow runtime)\n");
        }
        if let Some(hint) = &config_note.1 {
            text.push_str(&format!("  note         {hint}\n"));
        }
        let nexus = command_name();
        text.push_str(&format!(
            "Next:\n  {nexus} ping           # who answers, and as whom you speak\n  {nexus} admin hosts    # the fleet's hosts\n"
        ));
        if args.detach {
            text.push_str(&format!("  {nexus} down           # stop the fleet\n"));
        } else {
            text.push_str("Press Ctrl-C to stop the fleet.\n");
        }
        text
    });

    if args.detach {
        let pids = Pids {
            coordinator: coordinator_child.id(),
            agent: agent_child.id(),
        };
        let text = serde_json::to_string(&pids).map_err(|e| local(e.to_string()))?;
        fs::write(&pids_path, text).map_err(|e| io_error("write", &pids_path, e))?;
        return Ok(());
    }
    // Foreground: stop both when asked, or when either dies.
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if matches!(coordinator_child.try_wait(), Ok(Some(_)))
                || matches!(agent_child.try_wait(), Ok(Some(_)))
            {
                break;
            }
        }
    };
    tokio::select! {
        () = nexus_protocol::transport::shutdown_signal() => {}
        () = watch => {
            output::print("A fleet process exited; stopping the other (see the logs in the state dir).\n");
        }
    }
    stop(&[coordinator_child.id(), agent_child.id()]).await;
    let _ = coordinator_child.wait();
    let _ = agent_child.wait();
    Ok(())
}

/// The file in the state dir that hands the agent its join token.
const AGENT_TOKEN_FILE: &str = "agent-join-token";

/// How long `up`'s agent token lives: enough to start the agent, short enough to be useless
/// soon if it is left behind.
const AGENT_TOKEN_TTL_SECS: u64 = 15 * 60;

/// A one-use agent token, made as the admin as soon as the coordinator takes it (it starts
/// without a leader). Fails at once on a refusal, and when the coordinator exits.
async fn agent_token(
    settings: &Settings,
    limit: Duration,
    coordinator: &mut Child,
    log: &Path,
) -> Result<Secret, CliError> {
    let spec = TokenSpec {
        role: TokenRole::Agent,
        ttl_secs: AGENT_TOKEN_TTL_SECS,
        uses: Some(1),
        labels: Default::default(),
    };
    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < limit {
        if let Ok(Some(status)) = coordinator.try_wait() {
            return Err(exited(status, log));
        }
        let request = Request::Admin(AdminRequest::CreateToken(spec.clone()));
        match settings.request(request, Duration::from_secs(5)).await {
            Ok(Response::TokenCreated(created)) => return Ok(created.token),
            Ok(other) => return Err(CliError::unexpected(&other)),
            Err(error)
                if matches!(
                    error.error.code,
                    ErrorCode::NetworkError | ErrorCode::Timeout | ErrorCode::NotLeader
                ) =>
            {
                last_error = Some(error);
            }
            Err(error) => {
                let message = format!(
                    "the coordinator refused to make a join token for this host's agent: {}",
                    error.error.message
                );
                return Err(CliError {
                    error: Box::new(nexus_protocol::WireError {
                        message,
                        ..*error.error
                    }),
                    suggestion: error.suggestion,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = last_error.map_or("it did not answer".to_string(), |e| e.error.message);
    Err(CliError::local(
        ErrorCode::Timeout,
        format!("the coordinator did not make the agent's join token within {limit:?}: {why}"),
    )
    .suggest(&format!("read {}", log.display())))
}

fn exited(status: std::process::ExitStatus, log: &Path) -> CliError {
    CliError::local(
        ErrorCode::Internal,
        format!(
            "a fleet process exited ({status}) while starting; its log ends:\n{}",
            tail(log)
        ),
    )
    .suggest(&format!("read {}", log.display()))
}

/// Writes a secret file readable by this user only (replacing an earlier one of ours).
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("replace", path, e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("create", path, e))?;
    writeln!(file, "{text}").map_err(|e| io_error("write", path, e))
}

async fn wait_until_registered(
    settings: &Settings,
    host_id: &HostId,
    limit: Duration,
    children: &mut [(&mut Child, &Path)],
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < limit {
        for (child, log) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(exited(status, log));
            }
        }
        match registered(settings, host_id).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = last_error.map_or("the agent has not registered".to_string(), |e| {
        e.error.message
    });
    Err(CliError::local(
        ErrorCode::Timeout,
        format!("the fleet did not come up within {limit:?}: {why}"),
    )
    .suggest("read the logs in the state dir's logs/ folder"))
}

async fn registered(settings: &Settings, host_id: &HostId) -> Result<bool, CliError> {
    let connection = settings.connect().await?;
    match connection
        .request(Request::Admin(AdminRequest::Hosts))
        .await?
    {
        // Heard by this coordinator, started by this `up`: a host registered by an earlier
        // run is in the state already, but its heartbeats went with that run's coordinator.
        Response::Hosts(hosts) => Ok(hosts
            .iter()
            .any(|host| &host.info.host_id == host_id && host.last_heartbeat.is_some())),
        other => Err(CliError::unexpected(&other)),
    }
}

/// Writes the fleet's CLI settings to `state/cli.toml`, and to the user's config file too when
/// there is none yet or a nexus command wrote it (`settings::written`). Returns the file the CLI
/// will read, and a hint when the user's own file was left alone.
fn write_cli_config(
    state: &Path,
    settings: &Settings,
) -> Result<(PathBuf, Option<String>), CliError> {
    let file = FileSettings {
        coordinators: settings.coordinators.clone(),
        ca: Some(settings.ca.clone()),
        cert: Some(settings.cert.clone()),
        key: Some(settings.key.clone()),
        output: None,
    };
    let config = default_config_path();
    let written = write_settings(&state.join("cli.toml"), config.as_deref(), &file, "fleet")?;
    Ok((written.file, written.hint))
}

fn read_pids(path: &Path) -> Result<Option<Pids>, CliError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(serde_json::from_str(&text).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

/// SIGTERM, then up to 10 s for a graceful exit, then SIGKILL.
async fn stop(pids: &[u32]) {
    let signal = |name: &str, pid: u32| {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    };
    for &pid in pids {
        signal("TERM", pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists() && !zombie(*pid))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &pid in pids {
        if Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
            signal("KILL", pid);
        }
    }
}

/// An exited child not yet reaped still has a /proc entry, in state Z.
fn zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

pub async fn down(args: StateArgs, format: OutputFormat) -> Result<(), CliError> {
    let state = state_dir(&args)?;
    let path = state.join("pids.json");
    let Some(pids) = read_pids(&path)? else {
        output::emit(format, &json!({ "stopped": false }), || {
            "Nothing to stop: no detached fleet found.\n".into()
        });
        return Ok(());
    };
    let running: Vec<u32> = [
        (pids.coordinator, "nexus-coordinator"),
        (pids.agent, "nexus-agent"),
    ]
    .into_iter()
    .filter(|(pid, name)| alive(*pid, name))
    .map(|(pid, _)| pid)
    .collect();
    stop(&running).await;
    fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
    output::emit(
        format,
        &json!({ "stopped": true, "processes": running.len() }),
        || {
            format!(
                "Stopped the fleet ({} processes). Its state stays in {}.\n",
                running.len(),
                state.display()
            )
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_token_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AGENT_TOKEN_FILE);
        fs::write(&path, "an older, longer token left behind\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "NXJT1-new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "NXJT1-new\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn fallback_names_are_valid() {
        let (host, user) = local_names().unwrap();
        assert!(!host.as_str().is_empty() && !user.as_str().is_empty());
    }
}
