//! Stage times on the device's own clock. The model marks the start and end of each stage
//! (backbone, FPN, each tower layer's parts, head, post-processing); on a GPU a mark is a
//! CUDA event recorded on the stream, so the time between two marks is what the GPU spent
//! on the stage, not how long the host took to queue its kernels — and marking never waits.
//! The times are read once the frame is done. The emulated device runs each launch before
//! returning, so there a mark is the host's clock.

use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// A point in a device's queue of work.
pub enum StageMark {
    /// The host's clock (a device whose launches finish before they return).
    Host(Instant),
    /// A CUDA event recorded on the stream.
    Event(cudarc::driver::CudaEvent),
}

impl StageMark {
    /// Time from `self` to `end` on the device (waits for `end`'s work to finish).
    pub fn until(&self, end: &StageMark) -> Result<Duration> {
        match (self, end) {
            (StageMark::Host(a), StageMark::Host(b)) => Ok(b.saturating_duration_since(*a)),
            (StageMark::Event(a), StageMark::Event(b)) => {
                let ms = a.elapsed_ms(b)?;
                Ok(Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
            }
            _ => Err(Error::Cuda("stage marks of two different clocks".into())),
        }
    }
}

/// What a device backend offers for stage times.
pub trait StageClock {
    /// A mark after the work queued so far (never waits for it).
    fn mark(&self) -> Result<StageMark>;
}
