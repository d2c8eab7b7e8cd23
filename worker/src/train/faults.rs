//! The training loop's end of fault injection (`CONVTT_FAULT`, parsed by
//! [`convtt_core::fault`]): at each injection point the faults aimed at this rank, attempt,
//! phase and step act — a kill, an exit, a hang, a slow step, a diverged parameter.

use convtt_core::fault::{self, Action, Fault, Phase};
use tch::Tensor;

use super::optim::FlatParams;
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// The faults of this worker (empty unless `CONVTT_FAULT` is set).
pub struct Faults(Vec<Fault>);

impl Faults {
    /// Reads `CONVTT_FAULT`; a malformed value is a usage error (exit 2) naming it.
    pub fn from_env(rt: &Runtime) -> Result<Faults> {
        let faults = fault::from_env().map_err(Error::Usage)?;
        if rt.rank() == 0 && !faults.is_empty() {
            for f in &faults {
                tracing::warn!("fault injection armed: {f}");
            }
        }
        Ok(Faults(faults))
    }

    /// The injection point `phase` with `step` steps done.
    pub fn hit(&self, rt: &Runtime, phase: Phase, step: u64, flat: &mut FlatParams) {
        let (rank, attempt) = (rt.rank() as u32, rt.attempt());
        for f in self
            .0
            .iter()
            .filter(|f| f.fires(rank, attempt, phase, step))
        {
            if !matches!(f.action, Action::Slow(_)) {
                tracing::warn!(rank, step, "injected fault: {f}");
            }
            match f.action {
                Action::Kill => kill_self(),
                Action::Exit(code) => std::process::exit(code),
                Action::Hang => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                Action::Slow(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
                Action::Diverge => tch::no_grad(|| {
                    // The lowest mantissa bit of the first parameter: invisible to the loss,
                    // visible to a checksum.
                    let first = flat.params.get(0).double_value(&[]) as f32;
                    let flipped = f32::from_bits(first.to_bits() ^ 1);
                    flat.params
                        .get(0)
                        .copy_(&Tensor::from(flipped).to_device(flat.params.device()));
                }),
            }
        }
    }
}

/// SIGKILL to this process (what `kill -9` does from outside).
pub(crate) fn kill_self() -> ! {
    // SAFETY: raise(3) has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}
