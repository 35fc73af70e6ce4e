//! The deny list a server enforces, and the live connections it lets through: a certificate the
//! list refuses fails its handshake, and a connection whose identity becomes denied is closed the
//! moment the list in force changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::ErrorCode;
use crate::identity::Identity;
use crate::join::DenyList;

/// Shared by a server's verifier and its connections; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    deny: RwLock<DenyList>,
    live: Mutex<BTreeMap<u64, Live>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Live {
    identity: Identity,
    not_before: i64,
    conn: quinn::Connection,
}

/// A connection let through, until it ends (dropping the ticket forgets it).
#[derive(Debug)]
pub(crate) struct Ticket {
    gate: Gate,
    number: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate
            .0
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.number);
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Whether a certificate of `identity` beginning at `not_before` (seconds) is shut out.
    pub fn refuses(&self, identity: &Identity, not_before: i64) -> bool {
        self.0
            .deny
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .refuses(identity, not_before)
    }

    /// Puts `deny` in force: later handshakes are checked against it, and every live connection
    /// it refuses is closed now (`AUTHENTICATION_FAILED`). Answers how many were closed.
    pub fn update(&self, deny: DenyList) -> usize {
        let mut live = self.0.live.lock().unwrap_or_else(PoisonError::into_inner);
        *self.0.deny.write().unwrap_or_else(PoisonError::into_inner) = deny;
        let deny = self.0.deny.read().unwrap_or_else(PoisonError::into_inner);
        let refused: Vec<u64> = live
            .iter()
            .filter(|(_, conn)| deny.refuses(&conn.identity, conn.not_before))
            .map(|(&number, _)| number)
            .collect();
        for number in &refused {
            if let Some(conn) = live.remove(number) {
                tracing::info!(peer = %conn.identity, "closed the connection of a denied identity");
                conn.conn.close(
                    super::close_code(ErrorCode::AuthenticationFailed),
                    format!("{}'s certificate was revoked", conn.identity).as_bytes(),
                );
            }
        }
        refused.len()
    }

    /// Lets a connection through unless its certificate is refused (checked again here, under
    /// the lock `update` takes, so a denial between the handshake and now is not missed).
    pub(crate) fn admit(
        &self,
        identity: &Identity,
        not_before: i64,
        conn: &quinn::Connection,
    ) -> Option<Ticket> {
        let mut live = self.0.live.lock().unwrap_or_else(PoisonError::into_inner);
        if self.refuses(identity, not_before) {
            return None;
        }
        let number = self.0.next.fetch_add(1, Ordering::Relaxed);
        live.insert(
            number,
            Live {
                identity: identity.clone(),
                not_before,
                conn: conn.clone(),
            },
        );
        Some(Ticket {
            gate: self.clone(),
            number,
        })
    }

    /// How many connections are let through now.
    pub fn live(&self) -> usize {
        self.0
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
