//! Multi-validator scenarios named by fault model (Malachite's `n3f1.rs`),
//! each run over many seeds of the simulator. `SEED=<s>` reproduces one
//! seed; `SIM_SEEDS=<k>` changes the count.

use super::sim::{run_seeds, seeds_from_env, Behaviour, FaultModel, SeedSummary};

/// Seeds per model in the normal test run.
const SEEDS: u64 = 1000;

fn run(model: FaultModel) -> SeedSummary {
    let seeds = seeds_from_env(SEEDS);
    match run_seeds(&model, &seeds) {
        Ok(s) => {
            eprintln!(
                "{}: {} seeds, 0 safety violations, liveness after GST worst {} ms (seed {}), mean {} ms, evidence {}, rejected {}, fetched {}, min heights {}",
                model.name,
                s.seeds,
                s.worst_liveness_ms.0,
                s.worst_liveness_ms.1,
                s.mean_liveness_ms,
                s.evidence,
                s.rejected,
                s.fetched,
                s.min_heights
            );
            s
        }
        Err(f) => panic!("{f}"),
    }
}

pub(crate) fn lossy() -> FaultModel {
    FaultModel {
        drop_permille: 200,
        dup_permille: 100,
        delay_ms: (1, 80),
        ..FaultModel::base("n4_lossy_network", 4, 1)
    }
}

pub(crate) fn partition() -> FaultModel {
    FaultModel {
        partitions: true,
        drop_permille: 30,
        ..FaultModel::base("n4_partition_heals", 4, 1)
    }
}

pub(crate) fn restart() -> FaultModel {
    FaultModel {
        crashes: true,
        drop_permille: 30,
        ..FaultModel::base("n4_restart_mid_round", 4, 1)
    }
}

pub(crate) fn equivocates() -> FaultModel {
    FaultModel {
        byzantine: vec![(1, Behaviour::EquivocatingProposer)],
        drop_permille: 20,
        ..FaultModel::base("n4f1_proposer_equivocates", 4, 1)
    }
}

pub(crate) fn double_voter() -> FaultModel {
    FaultModel {
        byzantine: vec![(2, Behaviour::DoubleVoter)],
        drop_permille: 20,
        ..FaultModel::base("n4f1_double_voter_evidence", 4, 1)
    }
}

pub(crate) fn silent() -> FaultModel {
    FaultModel {
        byzantine: vec![(0, Behaviour::Silent), (4, Behaviour::Silent)],
        drop_permille: 50,
        ..FaultModel::base("n7f2_silent_validators", 7, 2)
    }
}

pub(crate) fn twins() -> FaultModel {
    FaultModel {
        byzantine: vec![(3, Behaviour::Twin)],
        drop_permille: 50,
        partitions: true,
        ..FaultModel::base("n4_twins", 4, 1)
    }
}

pub(crate) fn garbage() -> FaultModel {
    FaultModel {
        byzantine: vec![(1, Behaviour::Garbage)],
        drop_permille: 50,
        ..FaultModel::base("n4f1_garbage", 4, 1)
    }
}

pub(crate) fn everything() -> FaultModel {
    FaultModel {
        byzantine: vec![(2, Behaviour::DoubleVoter)],
        drop_permille: 150,
        dup_permille: 100,
        delay_ms: (1, 60),
        partitions: true,
        crashes: true,
        ..FaultModel::base("n4f1_everything", 4, 1)
    }
}

pub(crate) fn idle() -> FaultModel {
    FaultModel {
        gst_ms: (50, 150),
        workload_starts_ms: 2_000,
        ..FaultModel::base("n4_idle_chain_waits", 4, 1)
    }
}

/// With `empty_blocks` off and empty mempools nobody times out, votes or
/// changes round; once transactions arrive, heights are decided.
#[test]
fn n4_idle_chain_waits() {
    let model = idle();
    let s = run(model.clone());
    assert_eq!(s.votes_while_idle, 0, "an idle chain stays silent");
    assert!(s.worst_liveness_ms.0 >= model.workload_starts_ms - model.gst_ms.1);
}

pub(crate) fn solo() -> FaultModel {
    FaultModel {
        crashes: true,
        ..FaultModel::base("n1_solo_commits_immediately", 1, 0)
    }
}

/// One validator, same code path: every built block is decided at once
/// (no network wait), across crashes and restarts from its WAL.
#[test]
fn n1_solo_commits_immediately() {
    let s = run(solo());
    // Three heights, each one mempool report (1 ms) after the last.
    assert!(s.worst_liveness_ms.0 <= 3, "{s:?}");
}

#[test]
fn n4_lossy_network() {
    run(lossy());
}

#[test]
fn n4_partition_heals() {
    run(partition());
}

#[test]
fn n4_restart_mid_round() {
    let s = run(restart());
    assert!(
        s.fetched > 0,
        "restarted validators catch up by fetching blocks"
    );
}

#[test]
fn n4f1_proposer_equivocates() {
    let s = run(equivocates());
    assert!(s.evidence > 0, "conflicting proposals are reported");
}

#[test]
fn n4f1_double_voter_evidence() {
    let s = run(double_voter());
    assert!(s.evidence > 0, "conflicting votes are reported");
}

#[test]
fn n7f2_silent_validators() {
    run(silent());
}

#[test]
fn n4_twins() {
    run(twins());
}

#[test]
fn n4f1_garbage() {
    let s = run(garbage());
    assert!(s.rejected > 0, "garbage is rejected and counted");
}

#[test]
fn n4f1_everything() {
    run(everything());
}

/// `SIM_SEEDS=100000 cargo test -p federact-ledger --release soak -- --ignored --nocapture`
#[test]
#[ignore = "soak: 100,000 seeds per model"]
fn soak_all_models() {
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let base: u64 = std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seeds: Vec<u64> = (base..base + count).collect();
    for model in [
        solo(),
        idle(),
        lossy(),
        partition(),
        restart(),
        equivocates(),
        double_voter(),
        silent(),
        twins(),
        garbage(),
        everything(),
    ] {
        match run_seeds(&model, &seeds) {
            Ok(s) => eprintln!(
                "soak {}: {} seeds, 0 safety violations, worst liveness after GST {} ms (seed {}), mean {} ms",
                model.name, s.seeds, s.worst_liveness_ms.0, s.worst_liveness_ms.1, s.mean_liveness_ms
            ),
            Err(f) => panic!("{f}"),
        }
    }
}
