//! Makes `convtt-worker` run from any directory with no environment set (and, with the
//! `gpu-tests` feature, links libtorch's CUDA backend into the test binary for real, as
//! common/build.rs explains):
//! - an rpath to libtorch's `lib/` (torch-sys links libtorch but adds no rpath to binaries);
//! - where the PyPI `nvidia-nccl` wheel sits beside torch, a `libnccl.so` link to its
//!   `libnccl.so.2` in OUT_DIR plus an rpath to it, because cudarc's loader looks for
//!   `libnccl.so` and never for `.so.2` (research/spike.md §4).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB unset; binaries get no libtorch rpath");
        return;
    };
    let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-env=CONVTT_TORCH_LIB_DIR={}", lib.display());
    if std::env::var_os("CARGO_FEATURE_GPU_TESTS").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("nccl");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/nccl");
    let link = out.join("libnccl.so");
    let _ = std::fs::remove_file(&link);
    let wheel_nccl = lib.join("../../nvidia/nccl/lib/libnccl.so.2");
    match std::fs::canonicalize(&wheel_nccl) {
        Ok(target) => {
            std::os::unix::fs::symlink(&target, &link).expect("symlink libnccl.so");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", out.display());
        }
        Err(_) => println!(
            "cargo:warning=no NCCL wheel beside libtorch ({}); NCCL is found only through \
             the system library path",
            wheel_nccl.display()
        ),
    }
}
