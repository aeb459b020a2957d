//! The one stdout policy of every `glip` command.
//!
//! `println!` panics when stdout fails, and Rust's exit-time flush drops errors silently, so
//! every command writes its results through [`Out`] instead:
//! - each line is flushed at once, so a failure shows up at the line that caused it and a
//!   command stops computing as soon as nobody can receive its results;
//! - a reader that went away (EPIPE, `glip … | head`) is [`Error::StdoutClosed`]: `main`
//!   ends quietly with exit 0, since nothing more can be delivered;
//! - any other failure (a full disk, `> /dev/full`) is an error naming stdout: exit 1.
//!
//! Diagnostics go to stderr through [`warn`], which never panics (a closed stderr must not
//! turn a warning into a crash).

use glip_rt::Error;
use std::io::{StdoutLock, Write};

/// Maps a failed write or flush of stdout to the policy above.
pub fn stdout_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::StdoutClosed
    } else {
        Error::io("stdout", e)
    }
}

/// Line-oriented stdout for results (or stderr, for a command whose stdout carries JSON).
pub struct Out {
    inner: Box<dyn Write>,
}

impl Out {
    pub fn new() -> Self {
        let lock: StdoutLock<'static> = std::io::stdout().lock();
        Out {
            inner: Box::new(lock),
        }
    }
    /// The same lines on stderr.
    pub fn stderr() -> Self {
        Out {
            inner: Box::new(std::io::stderr().lock()),
        }
    }

    /// Writes `text` and a newline, and flushes.
    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<(), Error> {
        writeln!(self.inner, "{text}")
            .and_then(|_| self.inner.flush())
            .map_err(stdout_error)
    }
}

/// `writeln!` to an [`Out`] with `?`: `outln!(out, "x = {x}")`.
macro_rules! outln {
    ($out:expr) => {
        $out.line("")?
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))?
    };
}

/// Ends the process for a command line clap did not run: `--help` / `--version` text goes to
/// stdout under the policy above (exit 0, or 1 if it cannot be written), usage errors to
/// stderr with clap's exit code (2).
pub fn clap_exit(e: clap::Error) -> std::process::ExitCode {
    if !e.use_stderr() {
        let text = e.render().to_string();
        let mut out = Out::new();
        let r = out
            .inner
            .write_all(text.as_bytes())
            .and_then(|_| out.inner.flush())
            .map_err(stdout_error);
        return match r {
            Ok(()) | Err(Error::StdoutClosed) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                warn(format_args!("error: {err}"));
                std::process::ExitCode::FAILURE
            }
        };
    }
    let _ = e.print();
    std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// A line on stderr; a failing stderr is ignored (there is nowhere left to report it).
pub fn warn(text: impl std::fmt::Display) {
    super::progress::above_bar(|| {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    });
}

/// `eprintln!` that never panics: `say!("warning: {x}")`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::warn(format_args!($($arg)*))
    };
}
