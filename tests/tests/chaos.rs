//! Short fault campaigns of fixed seeds, on every change (`docs/reliability.md`): real
//! coordinators in network namespaces, hollow hosts and a Docker agent on a private engine,
//! clients through the CLI's library, faults from the nemesis's plan; then the history judged for
//! linearizability and the fleet's invariants. A failure prints the seed, the violation and the
//! history around it; `nexus-chaos --seed N` replays the plan for longer.

// It prints each campaign's summary.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use nexus_tests::chaos::nemesis::Kind;
use nexus_tests::chaos::runner::{self, Campaign, CampaignOptions};

/// Long enough for several faults of each phase (a fault is held 2–7 s, then 3–6 s of quiet).
const SHORT: Duration = Duration::from_secs(25);

async fn campaign(seed: u64, kinds: &[Kind], coordinators: usize, docker: bool) -> Campaign {
    let mut options = CampaignOptions::new(seed, SHORT);
    options.kinds = kinds.to_vec();
    options.coordinators = coordinators;
    options.docker = docker;
    let campaign = runner::run(options).await.expect("the campaign runs");
    println!("{}", campaign.summary);
    assert!(
        campaign.clean(),
        "seed {seed}: {} violation(s); replay with `nexus-chaos --seed {seed}`:\n{}",
        campaign.violations.len(),
        campaign.violations.join("\n\n")
    );
    let acknowledged: usize = campaign.summary.operations.values().map(|o| o.ok).sum();
    // A campaign in which nothing happened proves nothing.
    assert!(acknowledged > 10, "{}", campaign.summary);
    let faults: usize = campaign.summary.faults.values().map(|f| f.injected).sum();
    assert!(faults > 0, "{}", campaign.summary);
    campaign
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_faults_lose_and_double_nothing() {
    campaign(11, &Kind::NETWORK, 3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_and_disks_fail_and_nothing_is_lost_or_doubled() {
    campaign(3, &Kind::PROCESSES, 3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_fault_mixed_over_five_coordinators() {
    campaign(5, &Kind::ALL, 5, true).await;
}
