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

/// Makes libtorch's intra-op parallelism single-threaded for the calling thread only.
///
/// Helper threads that run small tensor ops (the loader's batch conversion) would otherwise
/// start OpenMP teams of their own; once libgomp manages more threads than there are CPUs it
/// stops spinning at barriers, and every parallel region of the training thread then sleeps and
/// wakes through futexes (measured on 2 cores: ~5,000 context switches a second and the tiny
/// config's step ~1.4× slower). `tch::set_num_threads(1)` cannot do this: ATen stores the count
/// process-wide and every thread adopts it at its first parallel op, the training thread
/// included. So ATen's per-thread initialisation runs first (with the process-wide count), then
/// libgomp's per-thread `omp_set_num_threads(1)`; without OpenMP this does nothing.
pub fn torch_single_thread_here() {
    let _ = tch::get_num_threads();
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up; when
    // present it is libgomp's `void omp_set_num_threads(int)`, called with a valid count, and
    // it only sets the calling thread's OpenMP thread-count variable.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"omp_set_num_threads".as_ptr());
        if !sym.is_null() {
            let set: extern "C" fn(libc::c_int) = std::mem::transmute(sym);
            set(1);
        }
    }
}

/// Bytes available to this user on the file system holding `path` (`statvfs`), if known.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0, so statvfs initialised `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail * st.f_frsize)
}
