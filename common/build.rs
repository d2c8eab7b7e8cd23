//! Embeds libtorch's directory as an rpath in this crate's test and bench binaries, so they run
//! without LD_LIBRARY_PATH. With the `gpu-tests` feature the test binary also links
//! `libtorch_cuda.so` for real: `--as-needed` would drop it (no symbol of it is used directly)
//! and libtorch would then see no CUDA device (research/spike.md §1, "Fix A" — fine for a test
//! binary that only runs where CUDA is).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| lib.into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    if std::env::var_os("CARGO_FEATURE_GPU_TESTS").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
