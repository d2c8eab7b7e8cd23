//! Where libtorch lives at run time, and registering its CUDA backend.
//!
//! The linker's `--as-needed` drops `libtorch_cuda.so` from the binary (no symbol of it is used
//! directly), so CUDA would never register. [`load_cuda_backend`] dlopens it before the first tch
//! call; on a machine without the CUDA libraries the error is kept and the worker runs on CPU
//! (research/spike.md §1, "Fix B").

use std::path::PathBuf;
use std::sync::OnceLock;

/// Outcome of loading `libtorch_cuda.so`, computed once per process.
static CUDA_BACKEND: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The directory holding the `libtorch_cpu.so` this process loaded (from `/proc/self/maps`),
/// else the one the binary was built against.
pub fn lib_dir() -> PathBuf {
    loaded_lib_dir().unwrap_or_else(|| PathBuf::from(env!("CONVTT_TORCH_LIB_DIR")))
}

fn loaded_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

/// The libtorch version, read from the install beside the library (`version.py` of a PyTorch
/// wheel or `build-version` of a libtorch archive).
pub fn version() -> Option<String> {
    let root = lib_dir().parent()?.to_path_buf();
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("__version__ = "))?;
        return Some(v.trim().trim_matches(['\'', '"']).to_owned());
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Loads libtorch's CUDA backend once; returns its path or why it could not be loaded.
pub fn load_cuda_backend() -> &'static Result<PathBuf, String> {
    CUDA_BACKEND.get_or_init(|| {
        let path = lib_dir().join("libtorch_cuda.so");
        if !path.exists() {
            return Err(format!(
                "{} does not exist (a CPU-only libtorch)",
                path.display()
            ));
        }
        crate::sys::dlopen_global(&path).map(|()| path)
    })
}
