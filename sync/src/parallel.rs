//! Disk work on a few threads: each item handed to the next free thread, the results in the
//! items' order. For a scan's reading and hashing of files, and an apply's writing of new ones:
//! on one thread, an initial sync's side read or wrote on one core while the other stood idle.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most threads one call works on.
pub const MAX_THREADS: usize = 4;

/// How many threads `count` items of `bytes` in all are worth: one for a few small ones (a
/// thread costs tens of microseconds to start), else as many as there are cores, at most
/// [`MAX_THREADS`].
pub fn threads_for(count: usize, bytes: u64) -> usize {
    if count < 2 || (count < 64 && bytes < (1 << 20)) {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(count)
}

/// `work` done on each of `items`, on up to `threads` threads, this one among them, answered in
/// the items' order. A thread that cannot be had leaves its share to the others; a panic in one
/// is this call's.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    name: &str,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 {
        // A scan of one path, a change of one file: no scope, no sort.
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let share = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                return done;
            };
            done.push((index, work(item)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn_scoped(scope, share)
                    .ok()
            })
            .collect();
        let mut done = share();
        for helper in helpers {
            done.extend(
                helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        done
    });
    done.sort_unstable_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_items_order_whatever_thread_did_them() {
        let items: Vec<u64> = (0..1_000).collect();
        for threads in [1, 2, 4] {
            let squares = map(&items, threads, "test", |n| {
                // Uneven work, so that threads finish out of order.
                if n % 7 == 0 {
                    std::thread::yield_now();
                }
                n * n
            });
            assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        }
        assert!(map(&[] as &[u64], 4, "test", |n| *n).is_empty());
    }

    #[test]
    fn a_few_small_items_stay_on_one_thread() {
        assert_eq!(threads_for(0, 0), 1);
        assert_eq!(threads_for(1, 1 << 30), 1);
        assert_eq!(threads_for(63, (1 << 20) - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(threads_for(64, 0), cores.min(MAX_THREADS));
        assert_eq!(threads_for(2, 1 << 20), cores.min(2));
    }
}
