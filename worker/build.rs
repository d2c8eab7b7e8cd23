//! Makes `convtt-worker` run from any directory with no environment set (and, with the
//! `gpu-tests` feature, links libtorch's CUDA backend into the test binary for real, as
//! common/build.rs explains):
//! - an rpath to libtorch's `lib/` (torch-sys links libtorch but adds no rpath to binaries);
//! - where the PyPI `nvidia-nccl` wheel sits beside torch, a `libnccl.so` link to its
//!   `libnccl.so.2` in OUT_DIR plus an rpath to it, because cudarc's loader looks for
//!   `libnccl.so` and never for `.so.2` (research/spike.md §4);
//! - where libtorch's and CUDA's headers are present, `libconvtt_cuda_graph.so` in OUT_DIR
//!   (`cuda_graph/shim.cpp`, a C ABI over `at::cuda::CUDAGraph`, which tch does not bind), whose
//!   path the worker gets as `CONVTT_CUDA_GRAPH_SHIM`. The worker dlopens it only for
//!   `train.cuda_graphs`, so the binary itself never links the CUDA libraries. Skipped with a
//!   warning when something is missing or `CONVTT_NO_CUDA_GRAPH_SHIM` is set.
use std::path::{Path, PathBuf};
use std::process::Command;

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

    cuda_graph_shim(&lib);

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

/// Builds `OUT_DIR/libconvtt_cuda_graph.so` from `cuda_graph/shim.cpp` against libtorch in `lib`
/// (its `../include`) and the CUDA headers of the pip wheels beside it (or `$CUDA_HOME`).
fn cuda_graph_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=cuda_graph/shim.cpp");
    println!("cargo:rerun-if-env-changed=CONVTT_NO_CUDA_GRAPH_SHIM");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CONVTT_NO_CUDA_GRAPH_SHIM").is_some() {
        return;
    }
    let skip = |why: &str| {
        println!("cargo:warning=no CUDA-graph shim (train.cuda_graphs unavailable): {why}");
    };
    let site = lib.join("../..");
    let torch_include = lib.join("../include");
    let cuda_home = std::env::var_os("CUDA_HOME").map(PathBuf::from);
    let (cuda_include, cudart_dir) = match &cuda_home {
        Some(h) => (h.join("include"), h.join("lib64")),
        None => (
            site.join("nvidia/cu13/include"),
            site.join("nvidia/cu13/lib"),
        ),
    };
    if !torch_include.join("ATen/cuda/CUDAGraph.h").is_file() {
        return skip("libtorch has no ATen/cuda/CUDAGraph.h");
    }
    if !cuda_include.join("cuda_runtime_api.h").is_file() {
        return skip(&format!("no CUDA headers in {}", cuda_include.display()));
    }
    let Some(cudart) = ["libcudart.so.13", "libcudart.so"]
        .iter()
        .find(|n| cudart_dir.join(n).exists())
    else {
        return skip(&format!("no libcudart in {}", cudart_dir.display()));
    };
    let mut includes = vec![
        torch_include.clone(),
        torch_include.join("torch/csrc/api/include"),
        cuda_include.clone(),
    ];
    // The runtime wheel lacks the compiler's crt/ headers that cuda_runtime.h includes;
    // Triton's bundled CUDA headers carry them.
    if !cuda_include.join("crt/host_config.h").is_file() {
        let triton = site.join("triton/backends/nvidia/include");
        if !triton.join("crt/host_config.h").is_file() {
            return skip("no crt/host_config.h (CUDA compiler headers)");
        }
        includes.push(triton);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("libconvtt_cuda_graph.so");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cmd = Command::new(&cxx);
    cmd.args(["-shared", "-fPIC", "-std=c++17", "-O2", "-w"]);
    for i in &includes {
        cmd.arg(format!("-I{}", i.display()));
    }
    cmd.arg("cuda_graph/shim.cpp")
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-L{}", cudart_dir.display()))
        .args(["-ltorch_cuda", "-lc10_cuda", "-ltorch_cpu", "-lc10"])
        .arg(format!("-l:{cudart}"))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", cudart_dir.display()))
        .arg("-Wl,--no-undefined")
        .arg("-o")
        .arg(&out);
    match cmd.output() {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-env=CONVTT_CUDA_GRAPH_SHIM={}", out.display());
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
            skip(&format!("{cxx} failed: {first}"));
        }
        Err(e) => skip(&format!("cannot run {cxx}: {e}")),
    }
}
