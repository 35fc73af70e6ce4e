//! Taking the coordinator's in-memory locks. It is not a place for anything else.
//!
//! Every `Mutex` and `RwLock` in the coordinator guards a map or a record whose every update is a
//! single insert, remove or field write, so a panic while one is held cannot leave it
//! half-updated: a poisoned lock is still consistent, and these take it anyway rather than spread
//! one panic to every later caller. A new lock that breaks this rule must not use them.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for reading, poisoned or not.
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for writing, poisoned or not.
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
