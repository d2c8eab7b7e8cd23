//! The supervisor with real child processes (small `/bin/sh` scripts).

use std::path::{Path, PathBuf};

use super::*;
use crate::plan::{plan_slots, SlotInputs, Timing};
use crate::restart::Policy;
use crate::topology::{own_cpu_mask, Topology};

struct Run {
    dir: PathBuf,
}

impl Run {
    fn new(tag: &str) -> Run {
        let dir = std::env::temp_dir().join(format!("convtt-sup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Run { dir }
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn plan(run: &Run, workers: usize, script: &str, max_restarts: u32) -> Plan {
    let mask = own_cpu_mask().unwrap();
    let topo = Topology::default();
    // More workers than CPUs on a small machine: give every worker the whole mask.
    let slots = if mask.len() >= workers {
        plan_slots(&SlotInputs {
            topo: &topo,
            mask: &mask,
            gpus: 0,
            cpu_workers: workers,
            cuda_visible: None,
            slurm_gpus: None,
            node_rank: 0,
        })
        .unwrap()
        .0
    } else {
        (0..workers as u32)
            .map(|i| crate::plan::Slot {
                local_rank: i,
                rank: i,
                device: convtt_core::WorkerDevice::Cpu,
                gpu: None,
                cpus: mask.clone(),
                mem_node: None,
            })
            .collect()
    };
    Plan {
        node_rank: 0,
        num_nodes: 1,
        host: "test".into(),
        tag: "test".into(),
        slots,
        mask,
        run_dir: run.dir.clone(),
        socket: run.dir.join("agent.sock"),
        worker: "/bin/sh".into(),
        worker_args: vec!["-c".into(), script.into(), "worker".into()],
        resume: None,
        extra_env: vec![("RUN".into(), run.dir.display().to_string())],
        env_remove: vec![],
        timing: Timing {
            grace: Duration::from_millis(300),
            heartbeat_timeout: Duration::from_secs(60),
            startup_timeout: None,
            collective_timeout: Duration::from_secs(60),
            preempt_deadline: Duration::from_secs(20),
            peer_recovery: false,
            straggler_ratio: 0.0,
            policy: Policy {
                max_restarts,
                base_delay: Duration::from_millis(10),
            },
        },
        notes: vec![],
        echo: false,
        tensorboard: false,
    }
}

fn go(plan: &Plan, shutdown: Shutdown) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(60),
            run(plan, &Cluster::Single, shutdown, Arc::new(Console::quiet())),
        )
        .await
        .expect("the supervisor finishes")
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    r
}

fn never() -> Shutdown {
    let (trigger, s) = Shutdown::manual();
    std::mem::forget(trigger);
    s
}

/// Pids of live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    crate::child::group_members(&[Pid::from_raw(pgid)])
        .into_iter()
        .map(Pid::as_raw)
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn wait_for(path: &Path) {
    for _ in 0..2000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn all_workers_exiting_0_finish_the_run() {
    let run = Run::new("ok");
    let p = plan(
        &run,
        2,
        "echo out-$CONVTT_RANK; echo err-$CONVTT_RANK >&2; exit 0",
        0,
    );
    go(&p, never()).unwrap();
    let log = run.read("logs/0-1.log");
    assert!(
        log.contains("attempt 0") && log.contains("out-1") && log.contains("err-1"),
        "{log}"
    );
}

#[test]
fn a_retryable_failure_restarts_every_worker_with_a_fresh_attempt() {
    let run = Run::new("retry");
    // Attempt 0: rank 1 fails with 3 while rank 0 would run forever (it is torn down).
    let script = r#"echo "$CONVTT_RANK $CONVTT_ATTEMPT $*" >> "$RUN/starts"
        if [ "$CONVTT_ATTEMPT" = 0 ]; then
            if [ "$CONVTT_RANK" = 1 ]; then
                # Fail only once rank 0 has recorded its start (it is torn down right after).
                while ! grep -q "^0 0" "$RUN/starts"; do sleep 0.01; done
                echo "peer lost" >&2; exit 3
            fi
            exec sleep 1000
        fi
        exit 0"#;
    let p = plan(&run, 2, script, 2);
    go(&p, never()).unwrap();
    let mut starts: Vec<String> = run
        .read("starts")
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect();
    starts.sort();
    assert_eq!(
        starts,
        ["0 0", "0 1 --resume auto", "1 0", "1 1 --resume auto"]
    );
}

#[test]
fn a_config_error_is_never_retried_and_quotes_stderr() {
    let run = Run::new("fatal");
    let script = r#"echo "$CONVTT_ATTEMPT" >> "$RUN/starts-$CONVTT_RANK"
        if [ "$CONVTT_RANK" = 0 ]; then
            for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo "line $i" >&2; done
            echo "model.order: must be at least 1" >&2
            exit 2
        fi
        exec sleep 1000"#;
    let e = go(&plan(&run, 2, script, 5), never()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let text = e.to_string();
    assert!(
        text.contains("rank 0") && text.contains("exit code 2"),
        "{text}"
    );
    assert!(text.contains("model.order: must be at least 1"), "{text}");
    assert!(
        text.contains("line 25") && !text.contains("line 5\n"),
        "ring buffer keeps the tail: {text}"
    );
    assert_eq!(run.read("starts-0"), "0\n");
}

#[test]
fn the_budget_is_spent_then_the_panic_code_is_returned() {
    let run = Run::new("budget");
    let script =
        r#"echo x >> "$RUN/starts-$CONVTT_RANK"; echo "thread 'main' panicked" >&2; exit 101"#;
    let e = go(&plan(&run, 1, script, 2), never()).unwrap_err();
    assert_eq!(e.exit_code(), 101);
    assert!(
        e.to_string().contains("restart budget spent (2 of 2"),
        "{e}"
    );
    assert_eq!(run.read("starts-0").lines().count(), 3);
}

#[test]
fn teardown_kills_a_term_ignoring_worker_and_its_helpers() {
    let run = Run::new("kill");
    let script = r#"
        if [ "$CONVTT_RANK" = 0 ]; then
            trap '' TERM
            sleep 1000 &
            echo $! > "$RUN/helper"
            echo $$ > "$RUN/leader"
            while true; do sleep 0.05; done
        fi
        while [ ! -s "$RUN/helper" ]; do sleep 0.01; done
        exit 3"#;
    let e = go(&plan(&run, 2, script, 0), never()).unwrap_err();
    assert_eq!(e.exit_code(), 3);
    let helper: i32 = run.read("helper").trim().parse().unwrap();
    let leader: i32 = run.read("leader").trim().parse().unwrap();
    assert!(!alive(helper), "the TERM-ignoring helper {helper} survived");
    assert!(
        group_members(leader).is_empty(),
        "survivors: {:?}",
        group_members(leader)
    );
}

#[test]
fn a_helper_left_behind_by_a_finished_worker_is_killed() {
    let run = Run::new("orphan");
    let script = r#"sleep 1000 & echo $! > "$RUN/helper"; exit 0"#;
    go(&plan(&run, 1, script, 0), never()).unwrap();
    let helper: i32 = run.read("helper").trim().parse().unwrap();
    assert!(!alive(helper));
}

#[test]
fn preemption_signals_workers_and_exits_4() {
    let run = Run::new("preempt");
    // Not connected to the agent, so the workers get the SIGUSR1 fallback.
    let script = r#"trap 'echo checkpoint-$CONVTT_RANK >> "$RUN/ckpt"; exit 4' USR1
        touch "$RUN/up-$CONVTT_RANK"
        while true; do sleep 0.02; done"#;
    let p = plan(&run, 2, script, 3);
    let (trigger, shutdown) = Shutdown::manual();
    let dir = run.dir.clone();
    let waiter = std::thread::spawn(move || {
        wait_for(&dir.join("up-0"));
        wait_for(&dir.join("up-1"));
        trigger.raise(Stop::Preempt);
        trigger
    });
    let e = go(&p, shutdown).unwrap_err();
    let _trigger = waiter.join().unwrap();
    assert_eq!(e.exit_code(), 4, "{e}");
    let mut ck: Vec<String> = run.read("ckpt").lines().map(str::to_owned).collect();
    ck.sort();
    assert_eq!(ck, ["checkpoint-0", "checkpoint-1"]);
}

#[test]
fn a_worker_missing_the_preempt_deadline_is_killed_and_the_run_still_exits_4() {
    let run = Run::new("deadline");
    let script = r#"trap '' USR1 TERM; touch "$RUN/up"; while true; do sleep 0.02; done"#;
    let mut p = plan(&run, 1, script, 3);
    p.timing.preempt_deadline = Duration::from_millis(200);
    let (trigger, shutdown) = Shutdown::manual();
    let dir = run.dir.clone();
    let waiter = std::thread::spawn(move || {
        wait_for(&dir.join("up"));
        trigger.raise(Stop::Preempt);
        trigger
    });
    let e = go(&p, shutdown).unwrap_err();
    let _trigger = waiter.join().unwrap();
    assert_eq!(e.exit_code(), 4, "{e}");
}

#[test]
fn a_worker_that_never_connects_hits_the_startup_timeout() {
    let run = Run::new("startup");
    let mut p = plan(&run, 1, "exec sleep 1000", 0);
    p.timing.startup_timeout = Some(Duration::from_millis(200));
    let e = go(&p, never()).unwrap_err();
    assert_eq!(e.exit_code(), 3);
    assert!(
        e.to_string()
            .contains("rank 0 did not connect to the agent socket"),
        "{e}"
    );
}

#[test]
fn workers_run_pinned_to_their_planned_cpus_without_slurm_step_ids() {
    let run = Run::new("pin");
    let script = r#"grep Cpus_allowed_list /proc/self/status > "$RUN/cpus-$CONVTT_RANK"
        echo "step=${SLURM_STEP_ID:-none} cpus=$CONVTT_CPUS" > "$RUN/env-$CONVTT_RANK""#;
    let mut p = plan(&run, 2, script, 0);
    p.env_remove = vec!["SLURM_STEP_ID".into()];
    go(&p, never()).unwrap();
    for s in &p.slots {
        let got = run.read(&format!("cpus-{}", s.rank));
        assert_eq!(
            got.split_whitespace().last(),
            Some(s.cpus.to_string().as_str()),
            "rank {}",
            s.rank
        );
        assert_eq!(
            run.read(&format!("env-{}", s.rank)).trim(),
            format!("step=none cpus={}", s.cpus)
        );
    }
}

#[test]
fn workers_die_with_the_thread_that_spawned_them() {
    // PR_SET_PDEATHSIG: spawn from a thread with its own runtime, leak the Child so no drop
    // kills it, and let the thread end. The kernel must SIGKILL the worker.
    let run = Run::new("pdeath");
    let spec = crate::child::ChildSpec {
        rank: 0,
        label: "[r0]".into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "exec sleep 1000".into()],
        env: vec![],
        env_remove: vec![],
        cpus: None,
        mem_node: None,
        log: run.dir.join("pdeath.log"),
        header: "pdeath".into(),
    };
    let pid = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pid = rt.block_on(async {
            let child = Child::spawn(&spec, Arc::new(Console::quiet())).unwrap();
            let pid = child.pid().as_raw();
            std::mem::forget(child);
            pid
        });
        std::mem::forget(rt);
        pid
    })
    .join()
    .unwrap();
    for _ in 0..500 {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("worker {pid} outlived the thread that spawned it");
}

#[test]
fn a_signal_raised_before_the_attempt_still_preempts_it() {
    let run = Run::new("early");
    let script = r#"trap 'exit 4' USR1; while true; do sleep 0.02; done"#;
    let (trigger, shutdown) = Shutdown::manual();
    trigger.raise(Stop::Preempt);
    let e = go(&plan(&run, 1, script, 3), shutdown).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
}
