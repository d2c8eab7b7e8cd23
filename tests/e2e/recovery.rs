//! Peer recovery with the real binaries: a worker killed mid-run is replaced from its peer's
//! memory (no step lost, final parameters bitwise equal to an uninterrupted run); when peer
//! recovery cannot be done (every worker dead, the replacement's state disagrees with the
//! group's) the group falls back to the checkpoint restart.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// The records of `kind` in `<run>/metrics.jsonl`.
fn records(run_dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// The final checkpoint's weights exported to safetensors (parameters only, exact bytes).
fn final_weights(run_dir: &Path, overrides: &[String]) -> Vec<u8> {
    let out_file = run_dir.join("final.safetensors");
    let out = run(Command::new(bin("convtt-worker"))
        .arg("export")
        .arg("--config")
        .arg(repo().join("configs/tiny-cpu.toml"))
        .args(set_args(overrides))
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--out")
        .arg(&out_file));
    assert_eq!(out.status.code(), Some(0), "export: {}", texts(&out).1);
    std::fs::read(out_file).unwrap()
}

fn overrides(steps: u64) -> Vec<String> {
    let mut ov = tiny_overrides(steps);
    ov.push("checkpoint.every_steps=4".into());
    ov
}

/// kill -9 (injected: the worker SIGKILLs itself before step 6) of rank 1 of 2: the launcher
/// replaces it, rank 0 donates its state, both redo step 6 and finish — every step trained
/// once, the same losses and bitwise the same final parameters as without the kill.
#[test]
fn a_killed_worker_is_replaced_from_its_peers_memory_and_no_step_is_lost() {
    let dir = TempDir::new("peer");
    let ov = overrides(8);
    let reference = dir.path().join("reference");
    let out = run(&mut launch_tiny(&reference, &ov, None));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "reference: {stderr}");
    assert!(
        !stderr.contains("straggler"),
        "a normal run flags none: {stderr}"
    );

    let recovered = dir.path().join("recovered");
    let out = run(&mut launch_tiny(
        &recovered,
        &ov,
        Some("kill:rank=1:step=5"),
    ));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("replacing it from its peers' memory as attempt 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("recovered from its peers' memory") && stderr.contains("no step lost"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("resuming from the newest valid checkpoint"),
        "no checkpoint restart: {stderr}"
    );

    let rec = records(&recovered, "recovery");
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["rank"], 1);
    assert_eq!(rec[0]["step"], 5);
    assert_eq!(rec[0]["mode"], "peer");
    assert!(
        rec[0]["cause"].as_str().unwrap().contains("signal 9"),
        "{rec:?}"
    );

    // Every step trained and logged exactly once, with the uninterrupted run's losses.
    let steps: Vec<u64> = records(&recovered, "train")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert_eq!(train_losses(&recovered), train_losses(&reference));
    assert!(
        final_weights(&recovered, &ov) == final_weights(&reference, &ov),
        "the final parameters differ from the uninterrupted run's"
    );
}

/// Both workers die at the same step: nobody is left to donate, so the group restarts from
/// the newest checkpoint (and still ends with the reference's losses).
#[test]
fn when_every_worker_dies_the_checkpoint_restart_takes_over() {
    let dir = TempDir::new("peer-all");
    let ov = overrides(8);
    let run_dir = dir.path().join("run");
    let out = run(&mut launch_tiny(&run_dir, &ov, Some("exit:step=5:code=3")));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("resuming from the newest valid checkpoint"),
        "{stderr}"
    );
    let steps: Vec<u64> = train_losses(&run_dir).into_keys().collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

/// The replacement's state is made to differ by one bit right after it installed its peer's
/// (injected): its checksum no longer matches the group's, so the group does not go on with
/// it but restarts from the checkpoint, and the message names the disagreement.
#[test]
fn a_replacement_whose_state_disagrees_falls_back_to_the_checkpoint() {
    let dir = TempDir::new("peer-diverge");
    let ov = overrides(8);
    let run_dir = dir.path().join("run");
    let fault = "kill:rank=1:step=5,diverge:rank=1:step=5:attempt=1:phase=recovery";
    let out = run(&mut launch_tiny(&run_dir, &ov, Some(fault)));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("after installing the donated state it stands at step 5 checksum"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resuming from the newest valid checkpoint"),
        "{stderr}"
    );
    assert!(records(&run_dir, "recovery").is_empty());
    let steps: Vec<u64> = train_losses(&run_dir).into_keys().collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

/// Rank 1's training thread hangs in data loading after step 3 (injected; its heartbeat thread
/// keeps beating): progress, not liveness, gives it away. The launcher writes a post-mortem
/// naming the rank, the phase and the step, with every worker's stacks, before it tears the
/// group down; the restart (where the fault no longer fires) finishes the run.
#[test]
fn a_hang_is_caught_by_progress_and_the_post_mortem_names_rank_phase_and_step() {
    let dir = TempDir::new("hang");
    let mut ov = overrides(8);
    ov.extend([
        "launch.heartbeat_secs=0.5".to_owned(),
        "launch.heartbeat_timeout_secs=6".to_owned(),
        "launch.grace_secs=2".to_owned(),
    ]);
    let run_dir = dir.path().join("run");
    let out = run(&mut launch_tiny(
        &run_dir,
        &ov,
        Some("hang:rank=1:step=3:phase=data"),
    ));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let verdict = "rank 1 stuck in data loading at step 3 for";
    assert!(stderr.contains(verdict), "{stderr}");
    assert!(
        stderr.contains("rank 0 waiting in all_reduce #"),
        "{stderr}"
    );
    assert!(stderr.contains("postmortem-a0.txt"), "{stderr}");
    let txt = std::fs::read_to_string(run_dir.join("postmortem-a0.txt")).unwrap();
    assert!(txt.contains(&format!("verdict: {verdict}")), "{txt}");
    for rank in [0, 1] {
        assert!(txt.contains(&format!("==== rank {rank} (pid")), "{txt}");
    }
    // eu-stack and /proc list "TID n", gdb "Thread n".
    assert!(
        txt.contains("TID") || txt.contains("Thread "),
        "stacks: {txt}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("postmortem-a0.json")).unwrap())
            .unwrap();
    let ranks = json["ranks"].as_array().unwrap();
    assert_eq!(ranks[1]["phase"], "data loading");
    assert_eq!(ranks[1]["step"], 3);
    assert_eq!(ranks[0]["phase"], "all-reduce");
    let steps: Vec<u64> = train_losses(&run_dir).into_keys().collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

/// Rank 1 made slow (injected: 1.5 s more compute per step) is flagged as a straggler — the
/// warning names rank, host, CPUs and ratio, and a `straggler` record is written — while rank 0
/// is not; the run itself is unaffected.
#[test]
fn a_slow_rank_is_flagged_as_a_straggler() {
    let dir = TempDir::new("slow");
    let mut ov = overrides(8);
    ov.push("launch.heartbeat_secs=0.5".into());
    let run_dir = dir.path().join("run");
    let out = run(&mut launch_tiny(&run_dir, &ov, Some("slow:rank=1:ms=1500")));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("straggler: rank 1 on "), "{stderr}");
    assert!(!stderr.contains("straggler: rank 0"), "{stderr}");
    let rec = records(&run_dir, "straggler");
    assert!(!rec.is_empty(), "a straggler record");
    assert!(rec.iter().all(|r| r["rank"] == 1), "{rec:?}");
    assert!(rec[0]["ratio"].as_f64().unwrap() > 1.3, "{rec:?}");
    assert!(
        rec[0]["cpus"].as_str().is_some_and(|c| !c.is_empty()),
        "{rec:?}"
    );
    // The launcher's own TensorBoard file has it as text.
    let tb = crate::tensorboard::tensorboard_reads(&run_dir.join("tb"));
    let text = tb["tensors"]["events/straggler/r1"][0][1]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("rank 1 on ") && text.contains("straggler"),
        "{tb}"
    );
}

/// Two MPI "nodes" of two workers each (`mpirun -n 2`); rank 3 (on node 1) kills itself
/// before step 4. Node 1 replaces it from rank 2's memory while node 0's workers stand by in
/// the same attempt; the nodes agree on the state and resume together: every step once, and
/// bitwise the uninterrupted run's final parameters.
#[test]
fn a_worker_lost_on_one_mpi_node_is_replaced_there_while_the_other_node_waits() {
    mpi_peer_recovery("mpipeer", "kill:rank=3:step=3", &[3]);
}

/// The same, but rank 3 dies right after sending its step-4 gradient, so its node's part of
/// the all-reduce may be complete when the loss is announced. (This does not force the rarer
/// interleaving where the sum across nodes has already run when the loss reaches the hub —
/// docs/launch.md §12 — it exercises the death between send and reply.) The group goes on
/// from step 3 when that all-reduce was dropped, from step 4 when it completed with the dead
/// rank's gradient; either way every step is trained once.
#[test]
fn a_worker_lost_after_sending_its_gradient_over_mpi_costs_no_step_either() {
    mpi_peer_recovery(
        "mpipeer-sent",
        "kill:rank=3:step=3:phase=allreduce",
        &[3, 4],
    );
}

/// `fault` kills rank 3 of an `mpirun -n 2` × 2-worker run; the recovery record's step is one
/// of `steps`.
fn mpi_peer_recovery(tag: &str, fault: &str, steps: &[u64]) {
    let dir = TempDir::new(tag);
    let ov = overrides(6);
    let reference = dir.path().join("reference");
    let out = run(crate::train::mpirun_launch(&reference, &ov).env_remove("CONVTT_FAULT"));
    assert_eq!(out.status.code(), Some(0), "reference: {}", texts(&out).1);
    let recovered = dir.path().join("recovered");
    let out = run(crate::train::mpirun_launch(&recovered, &ov).env("CONVTT_FAULT", fault));
    let stderr = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("rank 3 (pid") && stderr.contains("replacing it from its peers' memory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node 1 replaces rank 3 from its peers' memory"),
        "node 0 followed: {stderr}"
    );
    assert_eq!(
        stderr.matches("recovered from its peers' memory").count(),
        2,
        "both nodes resumed: {stderr}"
    );
    assert!(
        !stderr.contains("resuming from the newest valid checkpoint"),
        "{stderr}"
    );
    let rec = records(&recovered, "recovery");
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["rank"].as_u64(), Some(3), "{rec:?}");
    assert!(steps.contains(&rec[0]["step"].as_u64().unwrap()), "{rec:?}");
    let steps: Vec<u64> = records(&recovered, "train")
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=6).collect::<Vec<_>>());
    assert_eq!(train_losses(&recovered), train_losses(&reference));
    assert!(
        final_weights(&recovered, &ov) == final_weights(&reference, &ov),
        "the final parameters differ from the uninterrupted run's"
    );
}
