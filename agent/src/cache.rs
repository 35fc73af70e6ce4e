//! What the agent keeps on disk: the last desired state it was given, and which stopped
//! containers it may start again. With it, an agent restarted while no coordinator answers
//! carries on with what it was last told instead of knowing nothing.
//!
//! One JSON file in the data dir, replaced atomically (written aside, synced, renamed, the
//! directory synced). It is written on every new desired state and every change of what runs,
//! so it is written compactly from borrowed parts (saving was a quarter of a hollow fleet's CPU
//! at 1,000 hosts, copying and pretty-printing nearly half of that; `jq . agent-state.json`
//! shows it pretty). A file that cannot be read is moved aside with a warning, never deleted,
//! and the agent starts as if it had none: it then touches nothing until a coordinator answers.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use nexus_protocol::WorkspaceName;
use nexus_protocol::message::DesiredState;
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "agent-state.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Saved {
    pub desired: Option<DesiredState>,
    pub restartable: BTreeSet<(WorkspaceName, u64)>,
    /// The workspace generations whose containers were running at the agent's last listing.
    #[serde(default)]
    pub running: BTreeSet<(WorkspaceName, u64)>,
    /// The host's boot id when `running` was listed: a host that booted since has stopped every
    /// container.
    #[serde(default)]
    pub boot_id: Option<String>,
}

/// [`Saved`], borrowed: what [`Cache::save`] writes, so that a save copies nothing.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SavedView<'a> {
    pub desired: Option<&'a DesiredState>,
    pub restartable: &'a BTreeSet<(WorkspaceName, u64)>,
    pub running: &'a BTreeSet<(WorkspaceName, u64)>,
    pub boot_id: Option<&'a str>,
}

impl Saved {
    pub fn view(&self) -> SavedView<'_> {
        SavedView {
            desired: self.desired.as_ref(),
            restartable: &self.restartable,
            running: &self.running,
            boot_id: self.boot_id.as_deref(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct OnDisk {
    format: u32,
    #[serde(flatten)]
    saved: Saved,
}

/// [`OnDisk`] as written: the same fields, borrowed.
#[derive(Serialize)]
struct OnDiskView<'a> {
    format: u32,
    #[serde(flatten)]
    saved: SavedView<'a>,
}

#[derive(Debug, Clone)]
pub struct Cache {
    path: PathBuf,
}

impl Cache {
    pub fn new(data_dir: &Path) -> Cache {
        Cache {
            path: data_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was saved, or nothing (first start, or a damaged file, which is moved aside).
    pub fn load(&self) -> Saved {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Saved::default(),
            Err(error) => {
                tracing::warn!(path = %self.path.display(), "cannot read the agent's state: {error}");
                return Saved::default();
            }
        };
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(on_disk) if on_disk.format == FORMAT => on_disk.saved,
            Ok(on_disk) => {
                self.set_aside(&format!("unknown format {}", on_disk.format));
                Saved::default()
            }
            Err(error) => {
                self.set_aside(&error.to_string());
                Saved::default()
            }
        }
    }

    fn set_aside(&self, why: &str) {
        let aside = self.path.with_extension("json.damaged");
        let moved = fs::rename(&self.path, &aside);
        tracing::warn!(
            path = %self.path.display(),
            aside = %aside.display(),
            moved = moved.is_ok(),
            "the agent's saved state is unreadable ({why}); starting without it"
        );
    }

    /// Replaces the saved state atomically.
    pub fn save(&self, saved: SavedView<'_>) -> std::io::Result<()> {
        let on_disk = OnDiskView {
            format: FORMAT,
            saved,
        };
        let bytes = serde_json::to_vec(&on_disk).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("json.new");
        {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nexus_protocol::message::{Assignment, DesiredRun};
    use nexus_protocol::model::{PortBinding, ResourceClass, WorkspaceSpec};

    use super::*;

    fn sample() -> Saved {
        Saved {
            desired: Some(DesiredState {
                version: 7,
                assignments: vec![Assignment {
                    spec: WorkspaceSpec {
                        class: ResourceClass::Large,
                        ports: nexus_fixtures::ports(&[3000]),
                        env: BTreeMap::from([("A".into(), "b".into())]),
                        command: nexus_fixtures::command(&["sleep", "1"]),
                        ..nexus_fixtures::spec("api")
                    },
                    owner: "ada".parse().unwrap(),
                    generation: 2,
                    run: DesiredRun::Stopped,
                    ports: vec![PortBinding {
                        container: 3000,
                        host: 20001,
                    }],
                }],
            }),
            restartable: BTreeSet::from([("api".parse().unwrap(), 2)]),
            running: BTreeSet::from([("api".parse().unwrap(), 2)]),
            boot_id: Some("2f1c".into()),
        }
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        assert_eq!(cache.load(), Saved::default());
        cache.save(sample().view()).unwrap();
        assert_eq!(cache.load(), sample());
        let mut newer = sample();
        newer.restartable.clear();
        cache.save(newer.view()).unwrap();
        assert_eq!(cache.load(), newer);
    }

    #[test]
    fn a_file_of_an_earlier_build_without_the_newer_fields_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        fs::write(
            cache.path(),
            br#"{"format": 1, "desired": null, "restartable": [["api", 2]]}"#,
        )
        .unwrap();
        let saved = cache.load();
        assert_eq!(saved.restartable.len(), 1);
        assert!(saved.running.is_empty() && saved.boot_id.is_none());
    }

    #[test]
    fn a_damaged_file_is_set_aside_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        fs::write(cache.path(), b"{\"format\": 1, \"desired\": {\"version\": ").unwrap();
        assert_eq!(cache.load(), Saved::default());
        assert!(!cache.path().exists());
        assert!(dir.path().join("agent-state.json.damaged").exists());
        fs::write(cache.path(), b"{\"format\": 99}").unwrap();
        assert_eq!(cache.load(), Saved::default());
    }
}
