//! The limits: the cluster's, and each host's overrides of them. What they mean to a placement
//! is the fit rules' business (`crate::fit`); here they are kept and changed.

use nexus_protocol::HostId;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::model::{Limits, LimitsPatch};

use super::{Outcome, State, reject};

impl State {
    pub fn cluster_limits(&self) -> Limits {
        self.limits
    }

    /// The limits in force on `host`: its overrides over the cluster's.
    pub fn limits_for(&self, host: &HostId) -> Limits {
        self.host_limits
            .get(host)
            .map_or(self.limits, |patch| patch.over(self.limits))
    }

    /// `host`'s own overrides of the cluster's limits.
    pub fn host_overrides(&self, host: &HostId) -> LimitsPatch {
        self.host_limits.get(host).copied().unwrap_or_default()
    }

    /// Changes the cluster's limits (`host: None`) or merges `patch` into one host's overrides.
    /// A value outside its bounds changes nothing.
    pub(super) fn set_limits(&mut self, host: Option<&HostId>, patch: &LimitsPatch) -> Outcome {
        if let Err(why) = patch.check() {
            return reject(ErrorCode::InvalidArgument, why.to_string());
        }
        let Some(host) = host else {
            self.limits = patch.over(self.limits);
            self.room = self.room_index();
            return Outcome::Applied;
        };
        if !self.hosts.contains_key(host) {
            return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
        }
        let merged = self
            .host_limits
            .get(host)
            .copied()
            .unwrap_or_default()
            .merge(*patch);
        self.host_limits.insert(host.clone(), merged);
        self.recheck_room(host);
        Outcome::Applied
    }
}
