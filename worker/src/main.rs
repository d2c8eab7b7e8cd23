use clap::Parser;

fn main() {
    // Before any other thread exists and before the first HDF5 call.
    convtt_worker::data::init_hdf5_env();
    convtt_common::telemetry::init();
    // Register libtorch's CUDA backend before any tch call (see torch_runtime).
    if let Err(e) = convtt_worker::torch_runtime::load_cuda_backend() {
        tracing::debug!("libtorch CUDA backend not loaded, CPU only: {e}");
    }
    let cli = convtt_worker::cli::Cli::parse();
    if let Err(e) = convtt_worker::run(cli) {
        let code = e.exit_code();
        // `{:#}` prints the whole cause chain on one line.
        tracing::error!("{:#}", anyhow::Error::from(e));
        std::process::exit(code);
    }
}
