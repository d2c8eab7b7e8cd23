//! End-to-end tests: each module drives the real binaries (built by `cargo build --bins`, found
//! in the target directory next to this test executable).

/// `convtt-data`: generation, import, inspect/verify/preview/bench, exit codes, h5py interop.
mod data;
