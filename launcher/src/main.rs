use clap::Parser;

fn main() {
    convtt_core::telemetry::init();
    let cli = convtt_launch::cli::Cli::parse();
    if let Err(e) = convtt_launch::run(cli) {
        let code = e.exit_code();
        // `{:#}` prints the whole cause chain on one line.
        tracing::error!("{:#}", anyhow::Error::from(e));
        std::process::exit(code);
    }
}
