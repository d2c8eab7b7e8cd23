//! `convtt-data`: builds, checks and inspects datasets (see `convtt_worker::data::tool`).
//! Exit codes: 0 done, 2 usage, 5 data error (ARCHITECTURE §3).
use clap::Parser;

fn main() {
    // Before any other thread exists and before the first HDF5 call.
    convtt_worker::data::init_hdf5_env();
    convtt_common::telemetry::init();
    let cli = convtt_worker::data::tool::DataCli::parse();
    if let Err(e) = convtt_worker::data::tool::run(cli) {
        let code = e.exit_code();
        tracing::error!("{:#}", anyhow::Error::from(e));
        std::process::exit(code);
    }
}
