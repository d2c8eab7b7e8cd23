//! The launcher's only `unsafe`: the code that runs in a forked child before `exec`.
//!
//! `Command::pre_exec` is unsafe because the closure runs between `fork` and `exec` in a copy of
//! a multi-threaded process: only async-signal-safe operations are allowed (no allocation, no
//! locks, no logging). Everything below is a plain system call on data prepared before the fork.
#![allow(unsafe_code)]

use std::io;

use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};

/// What a worker's process gets before `exec`, prepared in the parent.
#[derive(Debug, Clone)]
pub struct PreExec {
    /// CPUs to pin to (`sched_setaffinity`), if any.
    pub cpus: Option<CpuSet>,
    /// NUMA node to prefer for memory (`set_mempolicy(MPOL_PREFERRED)`), best effort.
    pub mem_node: Option<u32>,
    /// The launcher's pid: if the child's parent is already someone else, the launcher died
    /// during the fork and the child must not run.
    pub parent: Pid,
}

/// Installs the pre-exec hook on `cmd`.
///
/// Order matters: `PR_SET_PDEATHSIG` first, then the parent check (closes the race where the
/// launcher dies between `fork` and `prctl`), then affinity and memory policy, which the
/// worker inherits through `exec`.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits. The launcher spawns
/// from tokio runtime worker threads, which live as long as the runtime, i.e. the launcher.
pub fn install(cmd: &mut tokio::process::Command, pre: PreExec) {
    let nodemask: Option<[libc::c_ulong; 16]> = pre.mem_node.filter(|&n| n < 1024).map(|n| {
        let mut m = [0 as libc::c_ulong; 16];
        let bits = libc::c_ulong::BITS;
        m[(n / bits) as usize] |= 1 << (n % bits);
        m
    });
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid,
    // sched_setaffinity, set_mempolicy) on values captured by move and prepared before the
    // fork; it allocates nothing (io::Error::from_raw_os_error does not allocate) and takes no
    // locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            if getppid() != pre.parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(cpus) = &pre.cpus {
                sched_setaffinity(Pid::from_raw(0), cpus)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            }
            if let Some(mask) = &nodemask {
                // SAFETY: `mask` is a live array of 16 words = 1024 bits, passed with its size
                // in bits; MPOL_PREFERRED only steers allocations. Failure (ENOSYS/EPERM in
                // some containers) is ignored: the policy is an optimisation.
                let _ = libc::syscall(
                    libc::SYS_set_mempolicy,
                    1 as libc::c_long, // MPOL_PREFERRED
                    mask.as_ptr(),
                    (16 * libc::c_ulong::BITS) as libc::c_ulong,
                );
            }
            Ok(())
        });
    }
}
