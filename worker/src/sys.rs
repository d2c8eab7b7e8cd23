//! The worker's thin layer over libc for what no safe wrapper offers.

use std::ffi::{CStr, CString};
use std::path::Path;

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`, keeping the library loaded for the process lifetime.
pub fn dlopen_global(path: &Path) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call. Loading libtorch_cuda
    // runs its static initialisers, which register the CUDA dispatch keys; that is the purpose.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local message or null; we copy it at once.
        let msg = unsafe { libc::dlerror() };
        let msg = if msg.is_null() {
            "unknown dlopen error".to_owned()
        } else {
            // SAFETY: non-null dlerror results are NUL-terminated C strings.
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(msg);
    }
    Ok(())
}

/// Whether the CUDA driver library (`libcuda.so`) can be loaded. cudarc panics on its first
/// driver call when it cannot, so every driver use is gated on this.
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries `dlopen` on candidate names and closes what it opened; no driver call.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether an NCCL library can be loaded (cudarc looks for `libnccl.so`; build.rs links the
/// wheel's `libnccl.so.2` under that name onto the rpath).
pub fn nccl_present() -> bool {
    // SAFETY: as above, a load probe with no NCCL call.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}
