//! Re-reading the coordinator's configuration while it runs (`nexus config reload`, SIGHUP). The
//! file is read again under the flags the process started with (they still win), all of it is
//! checked, and then every hot setting that changed is put in force at once, or, when anything is
//! wrong, none is and the old settings stay.
//!
//! Hot ([`HOT`]): `log_filter`, `host_ttl`, `credentials_key_file`, `cert_lifetime` and
//! `user_cert_lifetime` (what this node signs next lives that long), and the certificate and key
//! in `tls_dir`, read again at each reload (reported as `certificate`): new connections, served
//! or made to peers, present the new one; connections already open keep theirs. Lifecycle
//! policies (issue 23) belong here when they exist: their keys in [`HOT`], their apply beside the
//! others in [`Reloader::reload`].
//! Every other setting that changed is reported as needing a restart, and stays as it was.

use std::sync::{Arc, Mutex};

use nexus_protocol::debug::ReloadReport;
use nexus_protocol::logging::{self, LogFilter};
use nexus_protocol::settings::{self, Changes};
use nexus_protocol::transport::Credentials;
use nexus_telemetry::Common;

use crate::config::{Args, Config};
use crate::diagnostics::{self, Diagnostics};
use crate::locks::lock;

/// The host TTL in force, shared by the service's detector loop and the reloader that changes it.
pub type HostTtl = Arc<Mutex<std::time::Duration>>;

/// The settings a reload puts in force; the file keys of [`diagnostics::shown`].
pub const HOT: &[&str] = &[
    "log_filter",
    "host_ttl",
    "credentials_key_file",
    "cert_lifetime",
    "user_cert_lifetime",
];

/// What a reload reads again and what it changes.
#[derive(Debug)]
pub struct Reloader {
    args: Args,
    source: String,
    /// The configuration in force: the start's, with the hot settings of each reload since.
    in_force: Mutex<Config>,
    log_filter: LogFilter,
    credentials: Credentials,
    host_ttl: HostTtl,
    diagnostics: Option<Arc<Diagnostics>>,
    expiries: Option<Common>,
    /// The credential store's keys: its key file is read again at each reload.
    credential_keys: Option<Arc<crate::credential_keys::CredentialKeys>>,
    /// The lifetimes of the certificates this node signs.
    lifetimes: Option<crate::signing::LifetimesHandle>,
}

impl Reloader {
    /// A reloader for a coordinator started with `args` into `config`, changing the filter, the
    /// credentials and the TTL given here.
    pub fn new(
        args: Args,
        config: Config,
        log_filter: LogFilter,
        credentials: Credentials,
        host_ttl: HostTtl,
    ) -> Reloader {
        Reloader {
            args,
            source: format!("coordinator-{}", config.node_id),
            in_force: Mutex::new(config),
            log_filter,
            credentials,
            host_ttl,
            diagnostics: None,
            expiries: None,
            credential_keys: None,
            lifetimes: None,
        }
    }

    /// Also changes the lifetimes of the certificates this node signs, in `lifetimes`.
    pub fn signing_for(mut self, lifetimes: crate::signing::LifetimesHandle) -> Reloader {
        self.lifetimes = Some(lifetimes);
        self
    }

    /// Also reads the credentials key file again at each reload, into `store`.
    pub fn keeping_keys(mut self, store: Arc<crate::credential_keys::CredentialKeys>) -> Reloader {
        self.credential_keys = Some(store);
        self
    }

    /// Also shows the new settings in `diagnostics` and the new certificate's expiry in
    /// `expiries`' metric.
    pub fn showing(mut self, diagnostics: Arc<Diagnostics>, expiries: Common) -> Reloader {
        self.diagnostics = Some(diagnostics);
        self.expiries = Some(expiries);
        self
    }

    /// Reads the configuration again and applies it (all its hot changes, or nothing), logging
    /// what it did; `why` says who asked (`SIGHUP`, an admin's request).
    pub fn reload(&self, why: &str) -> ReloadReport {
        let mut in_force = lock(&self.in_force);
        let report = self.reload_into(&mut in_force);
        logging::reloaded(&report, why);
        report
    }

    fn reload_into(&self, in_force: &mut Config) -> ReloadReport {
        let mut report = ReloadReport {
            source: self.source.clone(),
            ..ReloadReport::default()
        };
        // Everything that can fail, first: nothing changes until all of it passed.
        let new = match Config::from_args(self.args.clone()) {
            Ok(new) => new,
            Err(error) => {
                report.errors.push(error.to_string());
                return report;
            }
        };
        let Changes { hot, needs_restart } = settings::diff(
            &diagnostics::shown(in_force),
            &diagnostics::shown(&new),
            HOT,
        );
        report.needs_restart = needs_restart;
        let rotation = match self.credentials.prepare_rotation(&in_force.tls_dir) {
            Ok(rotation) => rotation,
            Err(error) => {
                report.errors.push(format!("the certificate: {error}"));
                return report;
            }
        };
        // The key file, read again whether or not its path changed (a key added to it).
        let keys =
            match crate::credential_keys::CredentialKeys::read(new.credentials_key_file.as_deref())
            {
                Ok(keys) => keys,
                Err(error) => {
                    report
                        .errors
                        .push(format!("the credentials key file: {error}"));
                    return report;
                }
            };
        // Then all of it at once.
        for change in &hot {
            match change.key.as_str() {
                "log_filter" => {
                    if let Err(error) = self.log_filter.set(&new.log_filter()) {
                        report.errors.push(error);
                    }
                    in_force.log_filter = new.log_filter.clone();
                }
                "host_ttl" => {
                    *lock(&self.host_ttl) = new.host_ttl;
                    in_force.host_ttl = new.host_ttl;
                }
                "credentials_key_file" => {
                    in_force.credentials_key_file = new.credentials_key_file.clone();
                }
                "cert_lifetime" | "user_cert_lifetime" => {
                    in_force.cert_lifetime = new.cert_lifetime;
                    in_force.user_cert_lifetime = new.user_cert_lifetime;
                    if let Some(lifetimes) = &self.lifetimes {
                        *lock(lifetimes) = crate::config::lifetimes::Lifetimes {
                            node: new.cert_lifetime,
                            user: new.user_cert_lifetime,
                        };
                    }
                }
                _ => {}
            }
        }
        report.applied = hot;
        if let Some(store) = &self.credential_keys {
            let (before, after) = (
                store.ids(),
                keys.as_ref().map(|k| k.ids()).unwrap_or_default(),
            );
            if before != after {
                report.applied.push(nexus_protocol::debug::ChangedSetting {
                    key: "credentials_keys".into(),
                    old: before.join(","),
                    new: after.join(","),
                });
            }
            store.replace(keys);
        }
        if let Some(rotation) = rotation {
            match rotation.commit(&self.credentials) {
                Ok(change) => report.applied.push(change),
                Err(error) => report.errors.push(format!("the certificate: {error}")),
            }
            if let Some(expiries) = &self.expiries {
                let now = self.credentials.expiries();
                expiries.set_cert_expiries(now.own, now.ca);
            }
        }
        if let Some(diagnostics) = &self.diagnostics {
            diagnostics.set_config(in_force);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser;
    use nexus_protocol::clock;
    use nexus_protocol::pki::{DEFAULT_CA_VALIDITY, PkiDir, SubjectName, Validity};
    use nexus_protocol::{Identity, NodeId};

    use super::*;

    /// A reloader for node 1 started with `--config FILE` holding `text`, its PKI in `dir`.
    fn reloader(dir: &Path, text: &str) -> (Reloader, std::path::PathBuf, HostTtl) {
        let pki = PkiDir::new(dir.join("pki"));
        pki.init(clock::now(), DEFAULT_CA_VALIDITY, false).unwrap();
        issue(&pki);
        let file = dir.join("coordinator.toml");
        std::fs::write(&file, text).unwrap();
        let args = Args::try_parse_from([
            "nexus-coordinator",
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7400",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--tls-dir",
            dir.join("pki").to_str().unwrap(),
            "--tick-ms",
            "50",
            "--config",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let config = Config::from_args(args.clone()).unwrap();
        let credentials = Credentials::from_pki_dir(
            &dir.join("pki"),
            &Identity::Coordinator(NodeId::new(1).unwrap()),
        )
        .unwrap();
        let ttl: HostTtl = Arc::new(Mutex::new(config.host_ttl));
        let filter = LogFilter::detached(&config.log_filter());
        let reloader = Reloader::new(args, config, filter, credentials, ttl.clone());
        (reloader, file, ttl)
    }

    fn issue(pki: &PkiDir) {
        let validity = Validity::starting(clock::now(), Duration::from_secs(3600));
        let identity = Identity::Coordinator(NodeId::new(1).unwrap());
        pki.issue(
            &identity,
            &[SubjectName::Dns("localhost".into())],
            validity,
            true,
        )
        .unwrap();
    }

    fn applied(report: &ReloadReport) -> Vec<String> {
        report
            .applied
            .iter()
            .map(|c| format!("{}: {} -> {}", c.key, c.old, c.new))
            .collect()
    }

    #[test]
    fn hot_changes_apply_together_and_the_rest_waits_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, file, ttl) =
            reloader(dir.path(), "log_filter = \"info\"\nhost_ttl = 14.0\n");
        // Nothing changed.
        let report = reloader.reload("a test");
        assert_eq!(
            report,
            ReloadReport {
                source: "coordinator-1".into(),
                ..ReloadReport::default()
            }
        );
        // Two hot changes, one cold one, and a flag (--tick-ms) that still wins over the file.
        std::fs::write(
            &file,
            "log_filter = \"debug\"\nhost_ttl = 3.0\nsnapshot_every = 5\ntick_ms = 10\n",
        )
        .unwrap();
        let report = reloader.reload("a test");
        assert_eq!(
            applied(&report),
            ["host_ttl: 14.0 -> 3.0", "log_filter: info -> debug"]
        );
        assert_eq!(report.needs_restart, ["snapshot_every"]);
        assert!(report.errors.is_empty());
        assert_eq!(*lock(&ttl), Duration::from_secs(3));
        assert_eq!(reloader.log_filter.current(), "debug");
        // The cold change is said again until a restart; the hot ones are in force.
        let report = reloader.reload("a test");
        assert!(report.applied.is_empty());
        assert_eq!(report.needs_restart, ["snapshot_every"]);
    }

    #[test]
    fn certificate_lifetimes_are_hot() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, file, _) = reloader(dir.path(), "cert_lifetime = \"90d\"\n");
        let lifetimes: crate::signing::LifetimesHandle =
            Arc::new(Mutex::new(crate::config::lifetimes::Lifetimes::default()));
        let reloader = reloader.signing_for(lifetimes.clone());
        std::fs::write(
            &file,
            "cert_lifetime = \"20s\"\nuser_cert_lifetime = \"1h\"\n",
        )
        .unwrap();
        let report = reloader.reload("a test");
        assert_eq!(
            applied(&report),
            ["cert_lifetime: 90d -> 20s", "user_cert_lifetime: 12h -> 1h"]
        );
        assert!(report.needs_restart.is_empty());
        let now = *lock(&lifetimes);
        assert_eq!(now.node, Duration::from_secs(20));
        assert_eq!(now.user, Duration::from_secs(3600));
        std::fs::write(&file, "cert_lifetime = \"1s\"\n").unwrap();
        let report = reloader.reload("a test");
        assert!(report.errors[0].contains("--cert-lifetime"), "{report:?}");
        assert_eq!(lock(&lifetimes).node, Duration::from_secs(20));
    }

    #[test]
    fn a_bad_file_changes_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, file, ttl) = reloader(dir.path(), "log_filter = \"info\"\n");
        for (text, error) in [
            (
                "log_filter = \"debug\"\nhost_ttl = 0.0\n",
                "--host-ttl must be between",
            ),
            (
                "log_filter = \"debug\"\nunknown = 1\n",
                "unknown field `unknown`",
            ),
            ("log_filter = \"nexus=loud\"\n", "invalid log filter"),
            ("log_filter = [\n", "TOML parse error at line"),
        ] {
            std::fs::write(&file, text).unwrap();
            let report = reloader.reload("a test");
            assert!(report.applied.is_empty(), "{text}: {report:?}");
            assert!(
                report.errors.iter().any(|e| e.contains(error)),
                "{text}: {report:?}"
            );
            assert_eq!(reloader.log_filter.current(), "info");
            assert_eq!(*lock(&ttl), crate::detector::DEFAULT_HOST_TTL);
        }
        // A certificate that no longer loads: refused too, before anything is applied.
        std::fs::write(&file, "log_filter = \"debug\"\n").unwrap();
        std::fs::write(dir.path().join("pki").join("coordinator-1.key"), "garbage").unwrap();
        let report = reloader.reload("a test");
        assert!(
            report.errors[0].starts_with("the certificate:"),
            "{report:?}"
        );
        assert_eq!(reloader.log_filter.current(), "info");
        // Mended and reissued: the filter and the certificate go in together.
        issue(&PkiDir::new(dir.path().join("pki")));
        let report = reloader.reload("a test");
        let keys: Vec<&str> = report.applied.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["log_filter", "certificate"], "{report:?}");
    }

    #[test]
    fn the_key_file_is_read_again_at_each_reload_and_a_bad_one_changes_nothing() {
        use std::os::unix::fs::PermissionsExt;

        use crate::credential_keys::CredentialKeys;

        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("credentials.key");
        let first = nexus_protocol::seal::write_new_key(&key_file).unwrap();
        let (reloader, file, _) = reloader(
            dir.path(),
            &format!(
                "credentials_key_file = {:?}\n",
                key_file.display().to_string()
            ),
        );
        let keys = Arc::new(CredentialKeys::new(None));
        let reloader = reloader.keeping_keys(keys.clone());
        // Read at the first reload (the start's own read is lib.rs'), then again after a key is
        // added, though the setting did not change.
        let report = reloader.reload("a test");
        assert_eq!(applied(&report), [format!("credentials_keys:  -> {first}")]);
        let second = nexus_protocol::seal::append_key(&key_file).unwrap();
        let report = reloader.reload("a test");
        assert_eq!(
            applied(&report),
            [format!("credentials_keys: {first} -> {first},{second}")]
        );
        assert_eq!(keys.ids(), [first.clone(), second.clone()]);
        // A file others may read is refused, and the keys in force stay.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let report = reloader.reload("a test");
        assert!(
            report.errors.iter().any(|e| e.contains("chmod 600")),
            "{report:?}"
        );
        assert_eq!(keys.ids(), [first, second]);
        // Without the setting, no keys: every credential operation says so.
        std::fs::write(&file, "").unwrap();
        let report = reloader.reload("a test");
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(keys.ids().is_empty());
        assert_eq!(
            keys.current().unwrap_err().code,
            nexus_protocol::ErrorCode::CredentialsKeyMissing
        );
    }
}
