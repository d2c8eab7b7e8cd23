//! A stand-in for `convtt-worker train` that exercises the whole launcher ↔ worker contract
//! without libtorch: reads the environment with `WorkerEnv::from_env`, connects with
//! `AgentClient`, relays an NCCL-style id, runs a few "steps" of heartbeat + all-reduce-mean
//! (checking the result), broadcasts, and honours preemption (exit 4).
//!
//! ```text
//! cargo build -p convtt-launch --examples
//! convtt-launch --cpu-workers 2 -c configs/tiny-cpu.toml --worker target/debug/examples/fake_worker
//! OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -n 2 --oversubscribe \
//!     target/debug/convtt-launch --cpu-workers 2 -c configs/tiny-cpu.toml --worker target/debug/examples/fake_worker
//! ```
//! `FAKE_STEPS` (default 5) sets the number of steps, `FAKE_STEP_MS` (default 50) their length;
//! `FAKE_FAIL_RANK=r` makes rank r exit with `FAKE_FAIL_CODE` (default 3) at step 2 of
//! attempt 0.

use std::time::Duration;

use convtt_core::{exit, AgentClient, Progress, WorkerEnv};

fn main() {
    std::process::exit(match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fake_worker: {e}");
            exit::PEER
        }
    })
}

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    let Some(env) = WorkerEnv::from_env()? else {
        eprintln!("fake_worker: no launcher environment; nothing to do");
        return Ok(exit::CONFIG);
    };
    let mut agent = AgentClient::from_env(&env, Duration::from_secs(120))?;
    eprintln!(
        "rank {}/{} local {} node {}/{} attempt {} device {} cpus {}",
        env.rank,
        env.world_size,
        env.local_rank,
        env.node_rank,
        env.num_nodes,
        env.attempt,
        env.device,
        env.cpus
    );
    let id = if env.rank == 0 {
        let id: Vec<u8> = (0..128).map(|i| (i as u32 + env.attempt) as u8).collect();
        agent.send_nccl_id(&id)?;
        id
    } else {
        agent.recv_nccl_id()?
    };
    assert_eq!(id[1], (1 + env.attempt) as u8, "NCCL id relayed intact");

    let steps = var("FAKE_STEPS", 5);
    let world = env.world_size as f32;
    for step in 1..=steps {
        if agent.preempt_requested() {
            eprintln!(
                "rank {}: preempted at step {step}: checkpoint, exit 4",
                env.rank
            );
            agent.goodbye(exit::PREEMPTED, "preempted")?;
            return Ok(exit::PREEMPTED);
        }
        std::thread::sleep(Duration::from_millis(var("FAKE_STEP_MS", 50)));
        if step == 2 && env.attempt == 0 && var("FAKE_FAIL_RANK", u64::MAX) == u64::from(env.rank) {
            eprintln!("rank {}: failing on purpose", env.rank);
            return Ok(var("FAKE_FAIL_CODE", 3) as i32);
        }
        let mut grad = vec![env.rank as f32 + 1.0; 1000];
        agent.all_reduce_mean(&mut grad)?;
        let want = (world + 1.0) / 2.0; // mean of 1..=world
        if grad.iter().any(|g| (*g - want).abs() > 1e-5) {
            return Err(format!("all_reduce_mean gave {} instead of {want}", grad[0]).into());
        }
        agent.heartbeat(&Progress {
            step,
            total_steps: steps,
            epoch: 0,
            loss: 1.0 / step as f32,
            samples_per_sec: 100.0,
        })?;
    }
    let mut token = if env.rank == 0 {
        *b"from-rank-0"
    } else {
        [0u8; 11]
    };
    agent.broadcast(&mut token)?;
    agent.barrier()?;
    println!(
        "rank {}: {} steps ok, broadcast {:?}",
        env.rank,
        steps,
        String::from_utf8_lossy(&token)
    );
    agent.goodbye(exit::OK, "finished")?;
    Ok(exit::OK)
}
