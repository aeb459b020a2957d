//! The `glip` binary.

#[macro_use]
mod cli;

use clap::Parser;

use std::process::ExitCode;

fn main() -> ExitCode {
    // GLIP_LOG, else RUST_LOG, as the filter (e.g. `debug`, `glip_rt=trace`).
    let var = if std::env::var_os("GLIP_LOG").is_some() {
        "GLIP_LOG"
    } else {
        "RUST_LOG"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env(var))
        .with_writer(std::io::stderr)
        .init();
    // clap's own exit path drops a failed write of --help to stdout; route it through the
    // stdout policy instead.
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => return cli::out::clap_exit(e),
    };
    match cli::run(args) {
        Ok(code) => code,
        // The reader of our results left: nothing more can be delivered, and that is theirs
        // to decide, not a failure (`glip … | head`).
        Err(glip_rt::Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
