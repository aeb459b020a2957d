//! The `glip` command line: one module per subcommand.

pub mod bench;
pub mod convert;
pub mod detect;
pub mod doctor;
pub mod stream;
pub mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "glip",
    version,
    about = "GLIP phrase-grounding detector: CUDA kernels + CPU reference"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build facts, CUDA driver and devices, and a GPU-vs-CPU check of every kernel family.
    Doctor(doctor::Args),
    /// Frames on stdin (raw RGB24 or length-prefixed images), one JSON line per frame out.
    Stream(stream::Args),
    /// End-to-end speed with GLIP-T-shaped random weights, per stage.
    Bench(bench::Args),
    /// Detect the phrases of a prompt in images (boxes in original-image pixels).
    Detect(detect::Args),
    /// Convert a PyTorch GLIP checkpoint (.pth) to safetensors, without Python.
    Convert(convert::Args),
    /// Tokenize a prompt as GLIP does: ids, tokens, and the tokens of each phrase (JSON).
    Tokenize(tokenize::Args),
}

pub fn run(cli: Cli) -> crate_result::Result {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Stream(a) => stream::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Tokenize(a) => tokenize::run(a),
    }
}

/// What a subcommand returns: the process exit code, or an error printed by main.
pub mod crate_result {
    pub type Result = std::result::Result<std::process::ExitCode, glip_rt::Error>;
}
