//! Work that can wait: a snapshot's encoding and writing, a backup's. Run on a thread of its own
//! behind every other thread of the machine (SCHED_BATCH at nice 19), since heartbeats, votes and
//! requests cannot wait. Three replicas encoding snapshots at once at the usual priority left a
//! leader's workers too little of two cores to answer 20,000 agents' heartbeats in time (C1M,
//! 2026-12-05, night), and so did the leader's scheduled backup of a 271 MB state, encoded,
//! written and verified on tokio's blocking threads (C1M, 2026-12-05, late night: 745 hosts
//! marked down 14 s after it).
//!
//! The one home of `thread_priority`.

/// Puts the calling thread behind every other of the machine. A thread that cannot be lowered
/// runs as it is, with a warning.
pub fn lowest_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, batch)
    {
        tracing::warn!("a background thread runs at the usual priority: {error:?}");
    }
}

/// Runs `work` on a new thread named `name` at the lowest priority and answers its result; an
/// error if the thread could not start or stopped without an answer (it panicked). The thread
/// is its own, not one of tokio's blocking pool: a pool thread lowered could not be raised again
/// by an unprivileged process, and would run the pool's next work behind everything.
pub async fn run<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (send, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lowest_priority();
            // The caller may be gone (its request ended): nobody to tell.
            let _ = send.send(work());
        })
        .map_err(|error| format!("cannot start a thread for {name}: {error}"))?;
    answer
        .await
        .map_err(|_| format!("the thread for {name} stopped without an answer"))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn work_runs_on_a_thread_of_its_own_at_the_lowest_priority() {
        let (name, nice) = super::run("background-test", || {
            let name = std::thread::current().name().map(str::to_string);
            // The nice value as the kernel keeps it for this thread (field 19 of its stat).
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i64 = after_comm.split(' ').nth(16).unwrap().parse().unwrap();
            (name, nice)
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("background-test"));
        assert_eq!(nice, 19);
        let lost = super::run("background-panics", || -> u8 { panic!("on purpose") }).await;
        assert!(lost.unwrap_err().contains("without an answer"));
    }
}
