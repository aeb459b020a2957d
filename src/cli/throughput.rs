//! A stream's throughput for its stderr: frames per second and the latency quantiles of
//! each interval and of the whole run, in bounded memory (log-spaced latency buckets, so a
//! stream that runs for days holds the same few kilobytes).

use std::time::{Duration, Instant};

/// Latencies from 1 µs up, each bucket 2 % wider than the last: quantiles within 2 %.
const FIRST_US: f64 = 1.0;
const GROWTH: f64 = 1.02;
/// 1 µs · 1.02^1200 ≈ 2.1 · 10^10 µs: longer latencies land in the last bucket.
const BUCKETS: usize = 1200;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    n: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
        }
    }
    fn add(&mut self, d: Duration) {
        let us = (d.as_secs_f64() * 1e6).max(FIRST_US);
        let b = ((us / FIRST_US).ln() / GROWTH.ln()) as usize;
        self.counts[b.min(BUCKETS - 1)] += 1;
        self.n += 1;
    }
    /// The q-quantile (0..=1): the geometric middle of the bucket holding it.
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        let b = self.counts.iter().position(|&c| {
            seen += c;
            seen >= rank
        })?;
        let us = FIRST_US * GROWTH.powf(b as f64 + 0.5);
        Some(Duration::from_secs_f64(us / 1e6))
    }
}

/// Frames and latencies of a stream so far.
pub struct Throughput {
    start: Instant,
    every: Option<Duration>,
    all: Histogram,
    interval: Histogram,
    interval_start: Instant,
    errors: u64,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

impl Throughput {
    /// `every`: how often [`Throughput::frame`] returns an interval's line (None: never).
    pub fn new(every: Option<Duration>) -> Self {
        let now = Instant::now();
        Throughput {
            start: now,
            every,
            all: Histogram::new(),
            interval: Histogram::new(),
            interval_start: now,
            errors: 0,
        }
    }

    /// One frame done `latency` after the model took it (`ok`: it gave detections); the
    /// line for the interval that ends with it, when one is due.
    pub fn frame(&mut self, latency: Duration, ok: bool) -> Option<String> {
        self.all.add(latency);
        self.interval.add(latency);
        self.errors += u64::from(!ok);
        let every = self.every?;
        let elapsed = self.interval_start.elapsed();
        if elapsed < every {
            return None;
        }
        let h = std::mem::replace(&mut self.interval, Histogram::new());
        self.interval_start = Instant::now();
        Some(format!(
            "stream: {} frames in {:.1} s: {:.2} frames/s, latency p50 {}, p99 {} ({} frames so far)",
            h.n,
            elapsed.as_secs_f64(),
            h.n as f64 / elapsed.as_secs_f64().max(1e-9),
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            self.all.n
        ))
    }

    /// The whole run's line.
    pub fn summary(&self) -> String {
        let t = self.start.elapsed().as_secs_f64();
        format!(
            "stream done: {} frames ({} with errors) in {:.1} s: {:.2} frames/s, latency p50 {}, p99 {}",
            self.all.n,
            self.errors,
            t,
            self.all.n as f64 / t.max(1e-9),
            ms(self.all.quantile(0.5)),
            ms(self.all.quantile(0.99))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_two_percent_in_bounded_memory() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        // 1..=1000 ms: p50 500 ms, p99 990 ms.
        for i in 1..=1000u64 {
            h.add(Duration::from_millis(i));
        }
        for (q, want) in [(0.5, 0.5), (0.99, 0.99), (1.0, 1.0), (0.001, 0.001)] {
            let got = h.quantile(q).unwrap().as_secs_f64();
            assert!((got / want - 1.0).abs() <= 0.02, "q {q}: {got} vs {want}");
        }
        // Far outside the range: clamped into the end buckets, never a panic.
        h.add(Duration::from_secs(1 << 40));
        h.add(Duration::ZERO);
        assert_eq!(h.counts.len(), BUCKETS);
        assert_eq!(h.n, 1002);
    }

    #[test]
    fn lines_count_frames_and_errors() {
        let mut t = Throughput::new(Some(Duration::ZERO));
        let line = t.frame(Duration::from_millis(40), true).unwrap();
        assert!(line.starts_with("stream: 1 frames in "), "{line}");
        assert!(
            line.contains("p50 40.") && line.contains("(1 frames so far)"),
            "{line}"
        );
        let mut quiet = Throughput::new(None);
        assert_eq!(quiet.frame(Duration::from_millis(5), false), None);
        let s = quiet.summary();
        assert!(
            s.starts_with("stream done: 1 frames (1 with errors) in "),
            "{s}"
        );
    }
}
