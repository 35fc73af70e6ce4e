//! The encrypted credential store on real processes: three `nexus-coordinator`s sharing a key
//! file, a Docker `nexus-agent` on the shared engine, and a Docker registry on loopback (Debian's
//! `docker-registry`) that wants a password (bcrypt htpasswd) over TLS with a certificate from a
//! test CA. An image pushed there is pulled for a workspace with the stored credential, refused
//! with a wrong one; `credentials check` passes and fails; `rotate` makes the next pull use the
//! new secret; `rotate-key` with a second key re-seals every record. The planted password never
//! appears in any coordinator's data directory (RocksDB files, logs and backups included), a
//! backup file, a support bundle, the `list` output or the agent's data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nexus_protocol::identity::Role;
use nexus_tests::cluster::TestCluster;
use nexus_tests::docker::{HostCleanup, TEST_IMAGE};
use nexus_tests::eventually;
use nexus_tests::pki::{self, TestPki};
use nexus_tests::process::{AgentProcess, Process, cli_command, free_tcp_port};
use serde_json::Value;

const PUSHER: (&str, &str) = ("pusher", "push-only-password");

struct Fleet {
    pki: TestPki,
    cluster: TestCluster,
    agent: AgentProcess,
}

impl Fleet {
    fn command(&self, user: &str, role: Role) -> Command {
        let identity = pki::user(user, role);
        let home = self.pki.scratch(&format!("home-{user}"));
        let mut command = cli_command(&self.pki, &identity, &home, &self.cluster.live_addresses());
        command.args(["-o", "json"]);
        command
    }

    fn run(&self, user: &str, role: Role, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.command(user, role);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn logs(&self) -> String {
        format!(
            "{}\n--- agent\n{}",
            self.cluster.logs(),
            self.agent.process.log()
        )
    }

    fn admin(&self, args: &[&str]) -> Value {
        self.admin_with(args, None)
    }

    fn admin_with(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.run("root", Role::Admin, args, stdin);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The error's code and suggestion; fails the test if the command succeeded.
    fn refused(
        &self,
        user: &str,
        role: Role,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (String, String) {
        let out = self.run(user, role, args, stdin);
        assert!(!out.status.success(), "nexus {args:?} succeeded");
        let error: Value = serde_json::from_slice(&out.stderr)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (
            error["error"]["code"].as_str().unwrap().to_string(),
            error["error"]["suggestion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A test CA and a certificate for 127.0.0.1 it signed: (certificate, key).
fn registry_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name).display().to_string();
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=nexus-test-registry-ca",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
        ],
    );
    sh(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &path("registry.key"),
            "-out",
            &path("registry.csr"),
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &path("registry.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &path("san.ext"),
            "-out",
            &path("registry.pem"),
        ],
    );
    (dir.join("registry.pem"), dir.join("registry.key"))
}

/// Debian's `docker-registry` on 127.0.0.1:`port`, over TLS, wanting a password of `users`.
fn start_registry(dir: &Path, port: u16, users: &[(&str, &str)]) -> Process {
    let htpasswd = dir.join("htpasswd");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut args = vec!["-B", "-b", "-i"];
        if i == 0 {
            args.push("-c");
        }
        let mut child = Command::new("htpasswd")
            .args(&args)
            .arg(&htpasswd)
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("htpasswd (apache2-utils; deploy/dev/prepare.sh installs it)");
        // -i: the password from stdin, never argv.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "htpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (cert, key) = registry_certificate(dir);
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: nexus-test\n    path: {}\n",
            dir.join("storage").display(),
            cert.display(),
            key.display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    Process::spawn_program(
        Path::new("/usr/bin/docker-registry"),
        &["serve".into(), config.display().to_string()],
        dir.join("registry.log"),
    )
}

/// `docker` with its own client config in `dir` (a push's login lands there, not in $HOME).
fn docker(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Every file under `dir` that holds `needle`, as bytes (every file, for an empty one).
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if metadata.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && (needle.is_empty() || contains(&bytes, needle))
        {
            found.push(path);
        }
    }
    found
}

/// The CLI as an admin with no coordinator (a local command).
fn local(pki: &TestPki, args: &[&str]) -> Output {
    let identity = pki::user("root", Role::Admin);
    let home = pki.scratch("home-local");
    cli_command(pki, &identity, &home, &[])
        .args(["-o", "json"])
        .args(args)
        .output()
        .unwrap()
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn registry_credentials_are_stored_sealed_used_rotated_and_never_leak() {
    let planted = format!(
        "planted-{:032x}",
        nexus_protocol::RequestId::random().as_u128()
    );
    let wrong = "not-the-password";
    let pki = TestPki::new();
    let keys = pki.scratch("keys");
    let key_file = keys.join("credentials.key");

    // The key file, made by the CLI (locally, 0600); it refuses to overwrite it.
    let made = local(
        &pki,
        &[
            "admin",
            "credentials",
            "new-key",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let first_key: Value = serde_json::from_slice(&made.stdout).unwrap();
    let first_key = first_key["key_id"].as_str().unwrap().to_string();
    let again = local(
        &pki,
        &[
            "admin",
            "credentials",
            "new-key",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(!again.status.success());

    let registry_dir = pki.scratch("registry");
    let port = free_tcp_port();
    let server = format!("127.0.0.1:{port}");
    let _registry = start_registry(&registry_dir, port, &[PUSHER, ("bot", &planted)]);
    let image = format!("{server}/nexus-test/cred-busybox:1");

    let cluster = TestCluster::start(
        &pki,
        3,
        &[
            "--host-ttl",
            "2",
            "--credentials-key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let host = format!("cred-{}", std::process::id());
    let _cleanup = HostCleanup(host.clone());
    let agent = AgentProcess::start(
        &pki,
        &host,
        &cluster.live_addresses(),
        &["--runtime", "docker", "--port-range", "29900-29909"],
    );
    let fleet = Fleet {
        pki,
        cluster,
        agent,
    };
    fleet.admin(&["admin", "maintenance", "schedule", "--off"]);
    eventually("the agent registered", Duration::from_secs(30), || async {
        let hosts = fleet.admin(&["admin", "hosts"]);
        hosts
            .as_array()?
            .iter()
            .any(|h| h["status"] == "ready")
            .then_some(())
    })
    .await;

    // An image in the registry (pushed as another user), absent from the engine.
    let docker_dir = registry_dir.join("docker-client");
    std::fs::create_dir_all(&docker_dir).unwrap();
    eventually("the registry answers", Duration::from_secs(30), || async {
        let out = docker(
            &docker_dir,
            &["login", &server, "-u", PUSHER.0, "--password-stdin"],
            Some(PUSHER.1),
        );
        out.status.success().then_some(())
    })
    .await;
    for args in [
        vec!["tag", TEST_IMAGE, image.as_str()],
        vec!["push", image.as_str()],
        vec!["rmi", image.as_str()],
    ] {
        let out = docker(&docker_dir, &args, None);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    docker(&docker_dir, &["logout", &server], None);

    // Only admins may store a credential; the password comes from stdin only.
    let set = [
        "admin",
        "credentials",
        "set",
        "registry",
        "reg",
        "--server",
        &server,
        "--username",
        "bot",
        "--password-stdin",
    ];
    let (code, _) = fleet.refused("ada", Role::User, &set, Some(wrong));
    assert_eq!(code, "PERMISSION_DENIED");
    fleet.admin_with(&set, Some(&format!("{wrong}\n")));

    // A check of the wrong password fails, with the code's suggestion; a pull with it fails.
    // (Until the leader knows where the new agent serves, it cannot ask it.)
    let (code, suggestion) = eventually(
        "the agent tries the credential",
        Duration::from_secs(30),
        || async {
            let (code, suggestion) = fleet.refused(
                "root",
                Role::Admin,
                &["admin", "credentials", "check", "reg"],
                None,
            );
            (code != "BACKEND_UNAVAILABLE").then_some((code, suggestion))
        },
    )
    .await;
    assert_eq!(code, "PERMISSION_DENIED", "{}", fleet.logs());
    assert!(
        suggestion.contains("credentials rotate reg"),
        "{suggestion}"
    );
    let create = |name: &str| {
        fleet.run(
            "ada",
            Role::User,
            &[
                "workspace",
                "create",
                name,
                "--image",
                &image,
                "--class",
                "small",
                "--",
                "sleep",
                "1000000",
            ],
            None,
        )
    };
    let refused = create("pull-wrong");
    assert!(
        !refused.status.success(),
        "a pull with the wrong password worked: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let why = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        why.contains("unauthorized") || why.contains("authentication"),
        "the pull failed for another reason: {why}"
    );

    // Rotated to the right one: the check passes and the next pull uses it.
    fleet.admin_with(
        &["admin", "credentials", "rotate", "reg", "--password-stdin"],
        Some(&planted),
    );
    let checked = fleet.admin(&["admin", "credentials", "check", "reg", "--host", &host]);
    assert_eq!(checked["ok"], true, "{checked}");
    let created = create("pull-right");
    assert!(
        created.status.success(),
        "the pull with the stored credential failed: {}\n{}",
        String::from_utf8_lossy(&created.stderr),
        fleet.logs()
    );
    let listed = fleet.admin(&["admin", "credentials", "list"]);
    assert_eq!(listed[0]["name"], "reg", "{listed}");
    assert_eq!(listed[0]["key_id"], first_key.as_str(), "{listed}");
    assert_eq!(listed[0]["last_used_by"], host.as_str(), "{listed}");

    // A second key, given to every coordinator (SIGHUP), then every record re-sealed under it.
    let added = local(
        &fleet.pki,
        &[
            "admin",
            "credentials",
            "new-key",
            "--out",
            key_file.to_str().unwrap(),
            "--add",
        ],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let second_key: Value = serde_json::from_slice(&added.stdout).unwrap();
    let second_key = second_key["key_id"].as_str().unwrap().to_string();
    fleet.admin_with(
        &[
            "admin",
            "credentials",
            "set",
            "git",
            "team-git",
            "--url-prefix",
            "https://git.example.com/team/",
            "--username",
            "bot",
            "--password-stdin",
        ],
        Some(&format!("{planted}-git")),
    );
    // Only the leader reloads first: the rotation is refused, naming a coordinator that lacks
    // the new key (after a re-seal it could open nothing).
    let leader = fleet
        .cluster
        .leader(&fleet.pki, Duration::from_secs(20))
        .await
        .leader
        .unwrap();
    let hangup = |id: Option<nexus_protocol::NodeId>| {
        for process in fleet.cluster.running.iter().flatten() {
            if id.is_none_or(|id| id == process.node_id) {
                sh("kill", &["-HUP", &process.process.pid().to_string()]);
            }
        }
    };
    hangup(Some(leader));
    let refusal = eventually(
        "the leader holds the new key",
        Duration::from_secs(30),
        || async {
            let out = fleet.run(
                "root",
                Role::Admin,
                &["admin", "credentials", "rotate-key"],
                None,
            );
            let error: Value = serde_json::from_slice(&out.stderr).ok()?;
            let message = error["error"]["message"].as_str()?.to_string();
            (!out.status.success() && message.contains(&second_key))
                .then(|| (error["error"]["code"].clone(), message))
        },
    )
    .await;
    assert_eq!(refusal.0, "CREDENTIALS_KEY_MISSING", "{refusal:?}");
    assert!(
        refusal.1.contains("coordinator") && !refusal.1.contains(&format!("coordinator {leader} ")),
        "{refusal:?}"
    );
    let listed = fleet.admin(&["admin", "credentials", "list"]);
    for record in listed.as_array().unwrap() {
        assert_eq!(record["key_id"], first_key.as_str(), "{listed}");
    }
    // Every coordinator reloads: the rotation goes through.
    hangup(None);
    let rotated = eventually(
        "every coordinator holds the new key",
        Duration::from_secs(30),
        || async {
            let out = fleet.run(
                "root",
                Role::Admin,
                &["admin", "credentials", "rotate-key"],
                None,
            );
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
                .filter(|rotated| rotated["key_id"] == second_key.as_str())
        },
    )
    .await;
    assert_eq!(rotated["key_id"], second_key.as_str(), "{rotated}");
    assert_eq!(rotated["reencrypted"], 2, "{rotated}");
    let listed = fleet.admin(&["admin", "credentials", "list"]);
    for record in listed.as_array().unwrap() {
        assert_eq!(record["key_id"], second_key.as_str(), "{listed}");
    }
    // Still usable after the rotation.
    let checked = fleet.admin(&["admin", "credentials", "check", "reg"]);
    assert_eq!(checked["ok"], true, "{checked}");

    // The leader counted its grants and checks.
    let leader_http = fleet
        .cluster
        .running
        .iter()
        .flatten()
        .find(|c| c.node_id == leader)
        .and_then(|c| c.http)
        .unwrap();
    let (status, metrics) = nexus_tests::http::get(leader_http, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"nexus_credential_operations_total{kind="registry",op="grant",outcome="ok"}"#,
        r#"nexus_credential_operations_total{kind="registry",op="check",outcome="failed"}"#,
        r#"nexus_credential_operations_total{kind="all",op="rotate_key",outcome="ok"}"#,
    ] {
        let counted = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok());
        assert!(counted.is_some_and(|n| n >= 1.0), "{series} in\n{metrics}");
    }

    // The planted password is nowhere at rest.
    let backup = fleet.admin(&["admin", "backup", "create"]);
    let bundle = fleet.pki.scratch("bundle").join("fleet.tar.gz");
    fleet.admin(&[
        "admin",
        "support-bundle",
        "--file",
        bundle.to_str().unwrap(),
    ]);
    let files = nexus_cli::bundle::archive::read(&bundle).unwrap();
    assert!(!files.is_empty());
    let listed_text = fleet.run("root", Role::Admin, &["admin", "credentials", "list"], None);
    let needle = planted.as_bytes();
    for (name, bytes) in &files {
        assert!(
            !contains(bytes, needle),
            "the support bundle's {name} holds the password"
        );
    }
    assert!(!contains(&listed_text.stdout, needle));
    assert!(!contains(&listed_text.stderr, needle));
    let mut backup_files = 0;
    for member in &fleet.cluster.members {
        let found = holding(&member.data_dir, needle);
        assert!(
            found.is_empty(),
            "coordinator {} holds the password in {found:?}",
            member.id
        );
        backup_files += holding(&member.data_dir, b"").len();
    }
    assert!(backup_files > 0);
    let backup_id = backup["id"].as_str().unwrap_or_default();
    assert!(!backup_id.is_empty(), "{backup}");
    let backup_found = fleet
        .cluster
        .members
        .iter()
        .flat_map(|m| holding(&m.data_dir.join("backups"), b""))
        .filter(|p| p.display().to_string().contains(backup_id))
        .count();
    assert!(backup_found > 0, "no backup file {backup_id}");
    let found = holding(&fleet.agent.data_dir, needle);
    assert!(
        found.is_empty(),
        "the agent's data directory holds it in {found:?}"
    );
    // The search finds what is there (a control), and the key file holds keys, not passwords.
    let control = fleet.pki.scratch("control");
    std::fs::write(control.join("planted"), format!("x{planted}y")).unwrap();
    assert_eq!(holding(&control, needle).len(), 1);
    assert!(holding(&keys, needle).is_empty());
    assert!(!fleet.logs().contains(&planted));

    let _ = docker(&docker_dir, &["rmi", "-f", &image], None);
}

/// Git credentials on real processes: three coordinators sharing a key file, a hollow agent
/// (its git is real: a mirror and worktrees on disk), and git's `http-backend` on loopback wanting
/// a password. Without a stored credential a create fails GIT_AUTH_FAILED with its suggestion;
/// with the right one the worktree is made; `credentials check` tries it for real; with the
/// server's password changed the next create fails, and after `credentials rotate` and a repair
/// it is made. The password is on no disk of the agent's.
#[tokio::test]
async fn git_credentials_open_private_repositories_and_rotate() {
    use nexus_fixtures::githttp::GitServer;

    let planted = format!(
        "planted-{:032x}",
        nexus_protocol::RequestId::random().as_u128()
    );
    let rotated = format!("{planted}-rotated");
    let server = GitServer::start();
    let url = server.repo("app");
    server.require("bot", &planted);
    let prefix = url.trim_end_matches("app.git").to_string();

    let pki = TestPki::new();
    let key_file = pki.scratch("keys").join("credentials.key");
    let made = local(
        &pki,
        &[
            "admin",
            "credentials",
            "new-key",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cluster = TestCluster::start(
        &pki,
        3,
        &[
            "--host-ttl",
            "2",
            "--credentials-key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await;
    cluster.leader(&pki, Duration::from_secs(20)).await;
    let host = format!("gitcred-{}", std::process::id());
    let agent = AgentProcess::start(&pki, &host, &cluster.live_addresses(), &[]);
    let fleet = Fleet {
        pki,
        cluster,
        agent,
    };
    eventually("the agent registered", Duration::from_secs(30), || async {
        let hosts = fleet.admin(&["admin", "hosts"]);
        hosts
            .as_array()?
            .iter()
            .any(|h| h["status"] == "ready")
            .then_some(())
    })
    .await;
    let create = |name: &str| {
        fleet.admin(&[
            "workspace",
            "create",
            name,
            "--image",
            "img",
            "--repo",
            &url,
            "--no-wait",
        ])
    };
    let failure = |name: &'static str| {
        let fleet = &fleet;
        async move {
            eventually(
                &format!("{name}'s checkout refused"),
                Duration::from_secs(30),
                || async {
                    let view = fleet.admin(&["workspace", "inspect", name]);
                    let error = view["last_error"].clone();
                    (error["code"] == "GIT_AUTH_FAILED").then_some(error)
                },
            )
            .await
        }
    };
    let running = |name: &'static str| {
        let fleet = &fleet;
        async move {
            eventually(
                &format!("{name}'s worktree made"),
                Duration::from_secs(30),
                || async {
                    let view = fleet.admin(&["workspace", "inspect", name]);
                    (view["state"] == "running" && view["worktree"]["branch"].is_string())
                        .then_some(view)
                },
            )
            .await
        }
    };

    // No credential stored: refused, and the suggestion says what to run.
    create("first");
    let error = failure("first").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("none is stored"),
        "{error}"
    );
    assert!(
        error["suggestion"]
            .as_str()
            .unwrap()
            .contains("nexus admin credentials check"),
        "{error}"
    );

    // The right one: the next create checks the repository out with it.
    fleet.admin_with(
        &[
            "admin",
            "credentials",
            "set",
            "git",
            "team",
            "--url-prefix",
            &prefix,
            "--username",
            "bot",
            "--password-stdin",
        ],
        Some(&format!("{planted}\n")),
    );
    create("second");
    let view = running("second").await;
    assert_eq!(view["worktree"]["branch"], "nexus/second", "{view}");
    let checked = fleet.admin(&["admin", "credentials", "check", "team", "--repo", &url]);
    assert!(checked["error"].is_null(), "{checked}");

    // The server's password changes: refused until the store has it, then a repair makes it.
    server.require("bot", &rotated);
    create("third");
    let error = failure("third").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("stored credential was refused"),
        "{error}"
    );
    let (code, _) = fleet.refused(
        "root",
        Role::Admin,
        &["admin", "credentials", "check", "team", "--repo", &url],
        None,
    );
    assert_eq!(code, "GIT_AUTH_FAILED");
    fleet.admin_with(
        &["admin", "credentials", "rotate", "team", "--password-stdin"],
        Some(&format!("{rotated}\n")),
    );
    fleet.admin(&["workspace", "repair", "third"]);
    running("third").await;
    let listed = fleet.admin(&["admin", "credentials", "list"]);
    assert!(!listed.to_string().contains(&planted), "{listed}");

    // Neither password is on the agent's disk, nor in any daemon's log.
    for needle in [&planted, &rotated] {
        let found = holding(&fleet.agent.data_dir, needle.as_bytes());
        assert!(found.is_empty(), "{needle} found in {found:?}");
        assert!(!fleet.logs().contains(needle.as_str()));
    }
}
