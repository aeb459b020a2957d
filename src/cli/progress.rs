//! A progress line on stderr for commands over many images (`glip detect`, `glip eval`):
//! redrawn in place on a terminal; elsewhere (a log file, CI) a line every few seconds, or
//! nothing when `quiet_unless_tty`.

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    total: usize,
    start: Instant,
    last: Instant,
    tty: bool,
    quiet: bool,
    drawn: bool,
}

/// Seconds between lines when stderr is not a terminal.
const EVERY_S: f64 = 5.0;

impl Progress {
    /// `total` items; `quiet_unless_tty`: print nothing when stderr is not a terminal.
    pub fn new(total: usize, quiet_unless_tty: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            total,
            start: Instant::now(),
            last: Instant::now(),
            tty,
            quiet: quiet_unless_tty && !tty,
            drawn: false,
        }
    }

    /// `done` of the total are done (`offset` of them before this run started: the rate
    /// counts this run's only).
    pub fn tick(&mut self, done: usize, offset: usize) {
        if self.quiet {
            return;
        }
        let last_one = done == self.total;
        if !self.tty && !last_one && self.last.elapsed().as_secs_f64() < EVERY_S {
            return;
        }
        let ran = done.saturating_sub(offset);
        let rate = ran as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let left = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
        let msg = format!(
            "{done}/{} images, {rate:.2} images/s, ETA {left:.0} s",
            self.total
        );
        if self.tty {
            super::out::warn_inline(format_args!("\r{msg}   "));
            self.drawn = true;
        } else {
            super::out::warn(msg);
        }
        self.last = Instant::now();
    }

    /// Ends a line drawn in place.
    pub fn finish(&mut self) {
        if self.drawn {
            super::out::warn("");
            self.drawn = false;
        }
    }
}
