//! CUDA graphs for the training step (`train.cuda_graphs`, issue 17): the forward pass, the
//! loss and the backward pass of a fixed-shape step are captured once into a CUDA graph and
//! replayed every step after, so the thousands of small kernels of a recurrent rollout are
//! launched by one call instead of one CPU round trip each. The all-reduce, clipping and Adam
//! stay outside the graph.
//!
//! tch 0.24 binds neither `at::cuda::CUDAGraph` nor the current-stream API, so the capture goes
//! through `libconvtt_cuda_graph.so` (worker/cuda_graph/shim.cpp, built by build.rs where the
//! CUDA headers are), loaded with `dlopen` only when the switch is on: the worker binary never
//! links the CUDA libraries itself.
//!
//! The procedure is PyTorch's whole-network capture (`torch.cuda.graph`): a few eager steps on
//! a side stream first (cuDNN's autotuning and lazily created handles happen there), then the
//! capture on that stream, with the batch and the scheduled-sampling mask copied into static
//! device tensors before every replay. Everything that decides the captured work on the host —
//! the number of leading steps the wavefront may batch (from the mask), the loss scale — is
//! part of the graph's key; a new key is warmed up and captured anew.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use tch::Tensor;

use crate::error::{Error, Result};

type StreamBegin = unsafe extern "C" fn(c_int, *mut c_char, usize) -> c_int;
type ErrOnly = unsafe extern "C" fn(*mut c_char, usize) -> c_int;
type New = unsafe extern "C" fn(*mut c_char, usize) -> *mut c_void;
type OnGraph = unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> c_int;
type Free = unsafe extern "C" fn(*mut c_void);

/// The shim's functions.
struct Shim {
    stream_begin: StreamBegin,
    stream_end: ErrOnly,
    new: New,
    capture_begin: OnGraph,
    capture_end: OnGraph,
    replay: OnGraph,
    free: Free,
}

/// Where the shim is looked for: `$CONVTT_CUDA_GRAPH_LIB`, `../lib/` beside the executable (the
/// GPU kit), then the path build.rs compiled it to.
fn candidates() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("CONVTT_CUDA_GRAPH_LIB") {
        out.push(p.into());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("../lib/libconvtt_cuda_graph.so"));
            out.push(dir.join("libconvtt_cuda_graph.so"));
        }
    }
    if let Some(p) = option_env!("CONVTT_CUDA_GRAPH_SHIM") {
        out.push(p.into());
    }
    out
}

fn load() -> std::result::Result<Shim, String> {
    let tried = candidates();
    let Some(path) = tried.iter().find(|p| p.is_file()) else {
        return Err(format!(
            "libconvtt_cuda_graph.so not found (looked at {}); it is built with the worker where \
             libtorch's and CUDA's headers are (the pip wheels are enough), or set \
             CONVTT_CUDA_GRAPH_LIB; or set train.cuda_graphs = false",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a NUL-terminated path; the handle is never closed (the functions
    // live as long as the process).
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!("dlopen {}: {why}", path.display()));
    }
    let sym = |name: &str| -> std::result::Result<*mut c_void, String> {
        let n = CString::new(name).expect("a symbol name has no NUL");
        // SAFETY: a valid handle and a NUL-terminated name.
        let p = unsafe { libc::dlsym(handle, n.as_ptr()) };
        if p.is_null() {
            Err(format!("{}: no symbol {name}", path.display()))
        } else {
            Ok(p)
        }
    };
    /// SAFETY: `T` must be the `extern "C"` function pointer type of the symbol.
    unsafe fn as_fn<T: Copy>(p: *mut c_void) -> T {
        debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: the caller names the symbol's own signature; sizes are equal.
        unsafe { std::mem::transmute_copy(&p) }
    }
    // SAFETY: the symbols are the shim's extern "C" functions with exactly these signatures
    // (worker/cuda_graph/shim.cpp).
    unsafe {
        Ok(Shim {
            stream_begin: as_fn(sym("convtt_graph_stream_begin")?),
            stream_end: as_fn(sym("convtt_graph_stream_end")?),
            new: as_fn(sym("convtt_graph_new")?),
            capture_begin: as_fn(sym("convtt_graph_capture_begin")?),
            capture_end: as_fn(sym("convtt_graph_capture_end")?),
            replay: as_fn(sym("convtt_graph_replay")?),
            free: as_fn(sym("convtt_graph_free")?),
        })
    }
}

fn shim() -> Result<&'static Shim> {
    static SHIM: OnceLock<std::result::Result<Shim, String>> = OnceLock::new();
    SHIM.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::Unavailable(format!("train.cuda_graphs: {e}")))
}

/// Calls a shim function with an error buffer; its message becomes the error.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = vec![0 as c_char; 1024];
    if f(buf.as_mut_ptr(), buf.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim NUL-terminates what it writes into the buffer.
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    Err(Error::Internal(format!("CUDA graph {what}: {msg}")))
}

/// Runs `f` with a side stream of CUDA device `k` current (synchronised and restored after).
pub fn on_side_stream<T>(k: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let s = shim()?;
    // SAFETY: the shim's functions take a device index and an error buffer.
    call("side stream", |e, n| unsafe {
        (s.stream_begin)(k as c_int, e, n)
    })?;
    let r = f();
    // SAFETY: as above.
    let end = call("side stream end", |e, n| unsafe { (s.stream_end)(e, n) });
    let r = r?;
    end?;
    Ok(r)
}

/// One captured graph; freed on drop.
struct Graph {
    ptr: *mut c_void,
}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Ok(s) = shim() {
            // SAFETY: `ptr` came from convtt_graph_new and is freed once.
            unsafe { (s.free)(self.ptr) }
        }
    }
}

/// What decides a step's captured work on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphKey {
    /// Leading rollout steps whose inputs are all ground truth (the wavefront's reach).
    pub known: usize,
    /// The loss scale's bits (fp16), 0 otherwise.
    pub scale_bits: u64,
}

/// The static tensors of one captured step: inputs copied in before each replay, the loss
/// left by it (the gradients are in the parameters' `.grad`).
pub struct Captured {
    graph: Graph,
    /// `[B, T, C, H, W]` on the device.
    pub clips: Tensor,
    /// `[B, F − 1]` on the device (scheduled sampling), when the step has one.
    pub mask: Option<Tensor>,
    /// The scaled loss the replay computes.
    pub loss: Tensor,
}

/// The step graphs of one training run, by key, with their warm-up counts.
#[derive(Default)]
pub struct StepGraphs {
    graphs: HashMap<GraphKey, Captured>,
    warm: HashMap<GraphKey, u32>,
}

thread_local! {
    /// The training thread's step graphs (one training loop per worker process).
    pub static STEP_GRAPHS: std::cell::RefCell<StepGraphs> =
        std::cell::RefCell::new(StepGraphs::default());
}

/// Eager steps on the side stream before a key is captured.
pub const WARMUP_STEPS: u32 = 2;

impl StepGraphs {
    /// The captured step of `key`, if any.
    pub fn get(&self, key: &GraphKey) -> Option<&Captured> {
        self.graphs.get(key)
    }

    /// Counts a warm-up step of `key`; true once it has had [`WARMUP_STEPS`].
    pub fn warmed(&mut self, key: GraphKey) -> bool {
        let n = self.warm.entry(key).or_insert(0);
        *n += 1;
        *n > WARMUP_STEPS
    }

    /// Captures `body` (which must read `clips`/`mask` and return the loss) on device `k` as
    /// the graph of `key`, then replays it once so this step's results exist.
    pub fn capture(
        &mut self,
        k: usize,
        key: GraphKey,
        clips: Tensor,
        mask: Option<Tensor>,
        body: impl FnOnce(&Tensor, Option<&Tensor>) -> Result<Tensor>,
    ) -> Result<&Captured> {
        let s = shim()?;
        let mut graph = None;
        let loss = on_side_stream(k, || {
            // SAFETY: the shim allocates a graph or reports why not.
            let mut err = vec![0 as c_char; 1024];
            let ptr = unsafe { (s.new)(err.as_mut_ptr(), err.len()) };
            if ptr.is_null() {
                // SAFETY: NUL-terminated by the shim.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
                return Err(Error::Internal(format!("CUDA graph: {msg}")));
            }
            let g = Graph { ptr };
            // SAFETY: a live graph pointer.
            call("capture", |e, n| unsafe { (s.capture_begin)(g.ptr, e, n) })?;
            let loss = body(&clips, mask.as_ref());
            // SAFETY: as above; the capture ends even when the body failed.
            let end = call("capture end", |e, n| unsafe {
                (s.capture_end)(g.ptr, e, n)
            });
            let loss = loss?;
            end?;
            // SAFETY: as above.
            call("replay", |e, n| unsafe { (s.replay)(g.ptr, e, n) })?;
            graph = Some(g);
            Ok(loss)
        })?;
        let captured = Captured {
            graph: graph.expect("set when the capture succeeded"),
            clips,
            mask,
            loss,
        };
        self.graphs.insert(key, captured);
        Ok(self.graphs.get(&key).expect("just inserted"))
    }

    /// Copies this step's inputs into the static tensors of `key` and replays its graph on a
    /// side stream of device `k`; returns the loss it computed.
    pub fn replay(
        &self,
        k: usize,
        key: &GraphKey,
        clips: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.graphs.get(key).expect("replay of a captured key");
        let s = shim()?;
        on_side_stream(k, || {
            tch::no_grad(|| {
                c.clips.shallow_clone().copy_(clips);
                if let (Some(dst), Some(src)) = (&c.mask, mask) {
                    dst.shallow_clone().copy_(src);
                }
            });
            // SAFETY: a live graph pointer.
            call("replay", |e, n| unsafe { (s.replay)(c.graph.ptr, e, n) })
        })?;
        Ok(c.loss.shallow_clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine where the shim was built (CUDA headers present), it loads; either way the
    /// answer names what it looked for.
    #[test]
    fn the_shim_loads_or_says_where_it_looked() {
        match shim().map(|_| ()).map_err(|e| e.to_string()) {
            Ok(()) => assert!(
                option_env!("CONVTT_CUDA_GRAPH_SHIM").is_some()
                    || std::env::var_os("CONVTT_CUDA_GRAPH_LIB").is_some()
            ),
            Err(e) => assert!(e.contains("libconvtt_cuda_graph.so"), "{e}"),
        }
    }
}
