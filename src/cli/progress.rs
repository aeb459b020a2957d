//! Progress on stderr for commands over many images (`glip detect`, `glip eval`): a bar
//! (indicatif) with images/s and ETA on a terminal; elsewhere (a log file, CI) a line every
//! few seconds, or nothing when `quiet_unless_tty`. While a bar is drawn, other stderr lines
//! ([`super::out::warn`]) are printed above it.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar being drawn, if any: `out::warn` prints through it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `print` with the bar (if one is drawn) cleared, then redraws it.
pub fn above_bar(print: impl FnOnce()) {
    let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

pub struct Progress {
    total: usize,
    start: Instant,
    last: Instant,
    bar: Option<ProgressBar>,
    quiet: bool,
}

/// Seconds between lines when stderr is not a terminal.
const EVERY_S: f64 = 5.0;

impl Progress {
    /// `total` items; `quiet_unless_tty`: print nothing when stderr is not a terminal.
    pub fn new(total: usize, quiet_unless_tty: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images, {msg} images/s, ETA {eta}",
            );
            if let Ok(style) = style {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            if let Ok(mut active) = ACTIVE.lock() {
                *active = Some(bar.clone());
            }
            bar
        });
        Progress {
            total,
            start: Instant::now(),
            last: Instant::now(),
            bar,
            quiet: quiet_unless_tty && !tty,
        }
    }

    /// `done` of the total are done (`offset` of them before this run started: the rate
    /// counts this run's only).
    pub fn tick(&mut self, done: usize, offset: usize) {
        if self.quiet {
            return;
        }
        let ran = done.saturating_sub(offset);
        let rate = ran as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{rate:.2}"));
            bar.set_position(done as u64);
            return;
        }
        let last_one = done == self.total;
        if !last_one && self.last.elapsed().as_secs_f64() < EVERY_S {
            return;
        }
        let left = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
        super::out::warn(format!(
            "{done}/{} images, {rate:.2} images/s, ETA {left:.0} s",
            self.total
        ));
        self.last = Instant::now();
    }

    /// Ends the bar, leaving its last state on the terminal.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
            bar.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
