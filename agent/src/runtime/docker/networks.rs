//! Workspace networks: made on demand (named after host and workspace), or taken from a few made
//! ahead (ready networks), since `docker network create` is about a third of a create's time on
//! the engine. A ready network carries the label [`LABEL_READY`] and a name of its own; a
//! container on one names it in its label [`LABEL_NETWORK`], which is how the admin's listing
//! names its workspace and how the agent knows which ready networks are in use. One that no
//! container uses any more (its workspace destroyed) is ready again, or removed if enough are;
//! an agent that stops cleanly removes the free ones.
//!
//! Which ready networks are free is decided by [`settle`], pure; the rest is the engine's I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
use nexus_protocol::HostId;
use nexus_protocol::hash::fnv1a_32;

use super::convert::{classify, describe, status_of};
use super::pool::{self, NetworkPool};
use crate::runtime::{ErrorKind, LABEL_HOST, RuntimeError};

/// On a ready network: the host it was made for.
pub(super) const LABEL_READY: &str = "nexus.ready";
/// On a container: the network it was made on, when that is a ready network.
pub(super) const LABEL_NETWORK: &str = "nexus.network";

/// What to do with a host's ready networks, from what the engine has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Settled {
    /// Free to take, in the order they are taken (the last first).
    pub free: Vec<String>,
    /// More free than wanted: to remove.
    pub remove: Vec<String>,
    /// How many to make.
    pub make: usize,
}

/// Decides which of the ready networks `made` are free: those no container is on (`in_use`),
/// none is being made on (`lent`), and none was made on while the engine was listed
/// (`returned`: its container may be missing from the listing). Up to `target` are kept; the
/// rest go.
pub(super) fn settle(
    made: &[String],
    in_use: &BTreeSet<String>,
    lent: &BTreeMap<String, usize>,
    returned: &BTreeSet<String>,
    target: usize,
) -> Settled {
    let mut free: Vec<String> = made
        .iter()
        .filter(|name| {
            !in_use.contains(*name) && !lent.contains_key(*name) && !returned.contains(*name)
        })
        .cloned()
        .collect();
    free.sort();
    free.dedup();
    let remove = free.split_off(free.len().min(target));
    let make = target - free.len();
    Settled { free, remove, make }
}

/// Makes network `name` with `labels`: a /24 of `pool` (when there is one) that no network of
/// the engine and no kernel route has. `Ok` too when it exists already (an earlier attempt).
pub(super) async fn make(
    docker: &Docker,
    pool: Option<NetworkPool>,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    let request = |ipam: Option<Ipam>| NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        labels: Some(labels.clone()),
        ipam,
        ..Default::default()
    };
    let Some(pool) = pool else {
        return match docker.create_network(request(None)).await {
            Ok(_) => Ok(()),
            // Made by an earlier attempt whose answer was lost.
            Err(error) if status_of(&error) == Some(409) => Ok(()),
            Err(error) => Err(classify(&error, &format!("cannot create network {name}"))),
        };
    };
    // A /24 of the pool, starting from one the name picks so that networks rarely probe the
    // same subnets, skipping those any network of the engine already has, and those the kernel
    // already routes: a bridge left by an engine that was killed keeps its route, and a new
    // network on its subnet would get traffic that goes nowhere.
    let taken = subnets_in_use(docker).await?;
    let routes = pool::routes(
        &tokio::fs::read_to_string("/proc/net/route")
            .await
            .unwrap_or_default(),
    );
    let count = pool.subnets();
    let start = fnv1a_32(name.as_bytes()) % count;
    for step in 0..count {
        let subnet = pool.subnet((start + step) % count);
        if taken.contains(&subnet.to_string())
            || routes
                .iter()
                .any(|(destination, prefix)| subnet.is_routed_by(*destination, *prefix))
        {
            continue;
        }
        let ipam = Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.gateway().to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        match docker.create_network(request(Some(ipam))).await {
            Ok(_) => return Ok(()),
            Err(error) if status_of(&error) == Some(409) => return Ok(()),
            // Taken meanwhile, or by an interface outside Docker: try the next.
            Err(error) if describe(&error).to_ascii_lowercase().contains("overlap") => {}
            Err(error) => {
                return Err(classify(&error, &format!("cannot create network {name}")));
            }
        }
    }
    Err(RuntimeError::new(
        ErrorKind::Failed,
        format!(
            "no free /24 is left in the network pool {pool} for network {name}: widen --network-pool"
        ),
    ))
}

/// The subnets of every network the engine has.
async fn subnets_in_use(
    docker: &Docker,
) -> Result<std::collections::HashSet<String>, RuntimeError> {
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| classify(&e, "cannot list networks"))?;
    Ok(networks
        .into_iter()
        .filter_map(|n| n.ipam?.config)
        .flatten()
        .filter_map(|c| c.subnet)
        .collect())
}

/// The networks that `host`'s containers were made on, by [`LABEL_NETWORK`], with the
/// workspace of each.
pub(super) async fn in_use(
    docker: &Docker,
    host: &HostId,
) -> Result<BTreeMap<String, String>, RuntimeError> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_HOST}={host}"), LABEL_NETWORK.to_string()],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| classify(&e, "cannot list containers"))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels?;
            let network = labels.get(LABEL_NETWORK)?.clone();
            let workspace = labels
                .get(crate::runtime::LABEL_WORKSPACE)
                .cloned()
                .unwrap_or_default();
            Some((network, workspace))
        })
        .collect())
}

/// The ready networks made for `host`, free or not.
async fn made(docker: &Docker, host: &HostId) -> Result<Vec<String>, RuntimeError> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_READY}={host}")])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let networks = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| classify(&e, "cannot list networks"))?;
    Ok(networks.into_iter().filter_map(|n| n.name).collect())
}

/// A host's ready networks: how many it keeps, which are free, which are lent to a container
/// being made. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub(super) struct Ready {
    docker: Docker,
    host: HostId,
    pool: Option<NetworkPool>,
    target: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    free: Vec<String>,
    /// Networks handed to a container being made, with how many such makings are under way.
    lent: BTreeMap<String, usize>,
    /// Networks whose lending ended since the settling under way began to list the engine.
    returned: BTreeSet<String>,
    /// Whether a settling runs; `again` asks it for one more round.
    settling: bool,
    again: bool,
    /// One was taken since the last settling: make another once its container has started.
    wanted: bool,
    /// The agent stops: nothing more is made.
    closed: bool,
}

impl Ready {
    pub(super) fn new(
        docker: Docker,
        host: HostId,
        pool: Option<NetworkPool>,
        target: usize,
    ) -> Ready {
        Ready {
            docker,
            host,
            pool,
            target,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lends a free ready network to a container about to be made, if one is free; give it back
    /// with [`Ready::returned`] once the container is made or failed. Another is made at the
    /// next [`Ready::settle_if_wanted`].
    pub(super) fn take(&self) -> Option<String> {
        let mut state = self.state();
        let name = state.free.pop()?;
        *state.lent.entry(name.clone()).or_default() += 1;
        state.wanted = true;
        Some(name)
    }

    /// Settles (see [`Ready::settle_soon`]) if a network was taken since the last settling: called
    /// once a container has started, so that making the next network does not hold up the
    /// engine while it makes and starts the container that took one.
    pub(super) fn settle_if_wanted(&self) {
        if self.state().wanted {
            self.settle_soon();
        }
    }

    /// Ends a lending of `name`: its container is made (it is in use), or failed (it is free
    /// again, which a settling finds: one is asked for).
    pub(super) fn returned(&self, name: &str, made: bool) {
        {
            let mut state = self.state();
            if let Some(count) = state.lent.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    state.lent.remove(name);
                }
            }
            state.returned.insert(name.to_string());
        }
        if !made {
            self.settle_soon();
        }
    }

    /// Whether any are kept: with none, a create never asks for a settling.
    pub(super) fn keeps_any(&self) -> bool {
        self.target > 0
    }

    /// Brings the free ready networks to the target in the background: counts what the engine
    /// has, frees those no container is on, removes the extra, makes the missing.
    pub(super) fn settle_soon(&self) {
        {
            let mut state = self.state();
            if state.closed {
                return;
            }
            if state.settling {
                state.again = true;
                return;
            }
            state.settling = true;
        }
        let ready = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = ready.settle_once().await {
                    tracing::warn!("ready workspace networks not settled: {error}");
                }
                let mut state = ready.state();
                if !state.again {
                    state.settling = false;
                    return;
                }
                state.again = false;
            }
        });
    }

    async fn settle_once(&self) -> Result<(), RuntimeError> {
        let settled = self.settle_to(self.target).await?;
        self.make_missing(settled.make).await
    }

    /// Removes every free ready network (the agent stops: none is kept), once a settling under
    /// way has ended (at most `patience`), and makes none after.
    pub(super) async fn remove_free(
        &self,
        patience: std::time::Duration,
    ) -> Result<(), RuntimeError> {
        self.state().closed = true;
        let started = std::time::Instant::now();
        while self.state().settling && started.elapsed() < patience {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.settle_to(0).await.map(|_| ())
    }

    /// Counts what the engine has against `target` free, and removes the extra.
    async fn settle_to(&self, target: usize) -> Result<Settled, RuntimeError> {
        self.state().returned.clear();
        let made = made(&self.docker, &self.host).await?;
        let in_use: BTreeSet<String> = in_use(&self.docker, &self.host)
            .await?
            .into_keys()
            .collect();
        let settled = {
            let mut state = self.state();
            state.wanted = false;
            let settled = settle(&made, &in_use, &state.lent, &state.returned, target);
            state.free = settled.free.clone();
            settled
        };
        for name in &settled.remove {
            // One that cannot go (a container of someone else's attached by hand) must not keep
            // the others from being made.
            if let Err(error) = self.docker.remove_network(name).await
                && status_of(&error) != Some(404)
            {
                tracing::warn!(network = %name, "a spare ready network stays: {}", describe(&error));
            }
        }
        Ok(settled)
    }

    /// Makes `count` ready networks, free.
    async fn make_missing(&self, count: usize) -> Result<(), RuntimeError> {
        for _ in 0..count {
            if self.state().closed {
                break;
            }
            let name = format!(
                "nexus-ready.{}.{:08x}",
                self.host,
                nexus_protocol::id::random_u64() as u32
            );
            let labels = HashMap::from([
                (LABEL_HOST.to_string(), self.host.to_string()),
                (LABEL_READY.to_string(), self.host.to_string()),
            ]);
            make(&self.docker, self.pool, &name, labels).await?;
            self.state().free.push(name);
        }
        Ok(())
    }
}

/// A ready network lent to a container being made, returned when dropped.
#[derive(Debug)]
pub(super) struct Lending<'a> {
    ready: &'a Ready,
    name: String,
    made: bool,
}

impl<'a> Lending<'a> {
    pub(super) fn new(ready: &'a Ready, name: &str) -> Lending<'a> {
        Lending {
            ready,
            name: name.to_string(),
            made: false,
        }
    }
}

impl Lending<'_> {
    /// The container was made on it.
    pub(super) fn made(mut self) {
        self.made = true;
    }
}

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        self.ready.returned(&self.name, self.made);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn settling_keeps_the_free_up_to_the_target_and_never_one_in_use_lent_or_just_returned() {
        let set =
            |list: &[&str]| -> BTreeSet<String> { list.iter().map(ToString::to_string).collect() };
        let lent = |list: &[&str]| -> BTreeMap<String, usize> {
            list.iter().map(|n| (n.to_string(), 1)).collect()
        };
        // (made, in use, lent, returned while listing, target) → (free, remove, make)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            usize,
        );
        type Outcome<'a> = (&'a [&'a str], &'a [&'a str], usize);
        let cases: &[(Case, Outcome)] = &[
            ((&[], &[], &[], &[], 2), (&[], &[], 2)),
            ((&["a"], &[], &[], &[], 2), (&["a"], &[], 1)),
            ((&["a", "b"], &[], &[], &[], 2), (&["a", "b"], &[], 0)),
            (
                (&["a", "b", "c"], &[], &[], &[], 2),
                (&["a", "b"], &["c"], 0),
            ),
            (
                (&["a", "b", "c"], &["a"], &[], &[], 2),
                (&["b", "c"], &[], 0),
            ),
            ((&["a", "b", "c"], &["a"], &["b"], &[], 2), (&["c"], &[], 1)),
            // Made on while the engine was listed: its container may be missing from the list.
            (
                (&["a", "b", "c"], &[], &[], &["c"], 2),
                (&["a", "b"], &[], 0),
            ),
            ((&["a", "b"], &[], &[], &["a"], 2), (&["b"], &[], 1)),
            ((&["a", "b"], &["a", "b"], &[], &[], 2), (&[], &[], 2)),
            ((&["a", "b"], &[], &[], &[], 0), (&[], &["a", "b"], 0)),
            // A container on a network not made ahead (its workspace's own) changes nothing.
            ((&["a"], &["nexus.h.w"], &[], &[], 1), (&["a"], &[], 0)),
        ];
        for ((made, in_use, lending, returned, target), (free, remove, make)) in cases {
            let settled = settle(
                &names(made),
                &set(in_use),
                &lent(lending),
                &set(returned),
                *target,
            );
            assert_eq!(
                settled,
                Settled {
                    free: names(free),
                    remove: names(remove),
                    make: *make
                },
                "made {made:?} in use {in_use:?} lent {lending:?} returned {returned:?} \
                 target {target}"
            );
        }
    }

    #[test]
    fn a_network_taken_is_lent_until_returned_and_never_taken_twice() {
        // No engine is asked: the client only wants its socket's path to exist.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        let docker =
            Docker::connect_with_unix(socket.to_str().unwrap(), 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let ready = Ready::new(docker, HostId::new("h1").unwrap(), None, 2);
        ready.state().free = names(&["a", "b"]);
        assert_eq!(ready.take().as_deref(), Some("b"));
        assert_eq!(ready.take().as_deref(), Some("a"));
        assert_eq!(ready.take(), None);
        assert!(ready.state().wanted, "another to be made");
        Lending::new(&ready, "b").made();
        let state = ready.state();
        assert_eq!(state.lent.get("a"), Some(&1));
        assert!(!state.lent.contains_key("b"));
        assert!(state.returned.contains("b"));
    }
}
