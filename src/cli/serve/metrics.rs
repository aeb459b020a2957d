//! `GET /metrics`: Prometheus text exposition (version 0.0.4) of the service's counters:
//! requests by route and status, a latency histogram by route, the queue's depth and
//! capacity, requests in flight, errors by kind, and the host block cache (src/block_cache.rs):
//! what it holds is freed memory kept for reuse, part of the resident set but no leak.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_S.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicI64,
    batches: AtomicU64,
    batched_images: AtomicU64,
    /// Each worker's prompt cache, as it last reported it.
    prompt_caches: Mutex<BTreeMap<usize, glip_rt::api::PromptCacheStats>>,
}

impl Metrics {
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// One request of `route` answered with `status` after `seconds`.
    pub fn finished(&self, route: &str, status: u16, seconds: f64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            for (c, b) in h.counts.iter_mut().zip(BUCKETS_S) {
                if seconds <= b {
                    *c += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    /// One forward of `images` requests (more than one: micro-batched).
    pub fn batch(&self, images: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_images
            .fetch_add(images as u64, Ordering::Relaxed);
    }

    /// Worker `worker`'s prompt cache now.
    pub fn prompt_cache(&self, worker: usize, stats: glip_rt::api::PromptCacheStats) {
        if let Ok(mut c) = self.prompt_caches.lock() {
            c.insert(worker, stats);
        }
    }

    /// One error of `kind` (e.g. "bad_image", "queue_full", "timeout").
    pub fn error(&self, kind: &'static str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind).or_default() += 1;
        }
    }

    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let mut s = String::new();
        head(
            &mut s,
            "glip_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(
                    s,
                    "glip_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let name = "glip_request_duration_seconds";
        head(
            &mut s,
            name,
            "histogram",
            "Time from request to answer, by route.",
        );
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (c, b) in h.counts.iter().zip(BUCKETS_S) {
                    let _ = writeln!(s, "{name}_bucket{{route=\"{route}\",le=\"{b}\"}} {c}");
                }
                let _ = writeln!(
                    s,
                    "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(s, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(s, "{name}_count{{route=\"{route}\"}} {}", h.count);
            }
        }
        head(
            &mut s,
            "glip_errors_total",
            "counter",
            "Requests refused or failed, by kind.",
        );
        if let Ok(e) = self.errors.lock() {
            for (kind, n) in e.iter() {
                let _ = writeln!(s, "glip_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        let (mut hits, mut misses, mut entries) = (0, 0, 0);
        if let Ok(c) = self.prompt_caches.lock() {
            for st in c.values() {
                (hits, misses, entries) =
                    (hits + st.hits, misses + st.misses, entries + st.entries);
            }
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let bc = crate::block_cache_stats();
        let scalars: [(&str, &str, &str, String); 12] = [
            (
                "glip_queue_depth",
                "gauge",
                "Detection jobs waiting for a worker.",
                queue_depth.to_string(),
            ),
            (
                "glip_queue_capacity",
                "gauge",
                "Jobs the queue holds before answering 503.",
                queue_capacity.to_string(),
            ),
            (
                "glip_forwards_total",
                "counter",
                "Model forwards (one per batch).",
                load(&self.batches).to_string(),
            ),
            (
                "glip_forward_images_total",
                "counter",
                "Requests run by those forwards.",
                load(&self.batched_images).to_string(),
            ),
            (
                "glip_prompt_cache_hits_total",
                "counter",
                "Prompt chunks whose text features came from a worker's cache.",
                hits.to_string(),
            ),
            (
                "glip_prompt_cache_misses_total",
                "counter",
                "Prompt chunks encoded by BERT.",
                misses.to_string(),
            ),
            (
                "glip_prompt_cache_entries",
                "gauge",
                "Prompt chunks cached, all workers.",
                entries.to_string(),
            ),
            (
                "glip_requests_in_flight",
                "gauge",
                "Requests being answered.",
                self.in_flight.load(Ordering::Relaxed).to_string(),
            ),
            (
                "glip_host_block_cache_bytes",
                "gauge",
                "Freed large blocks kept for reuse by the host block cache.",
                bc.held.to_string(),
            ),
            (
                "glip_host_block_cache_capacity_bytes",
                "gauge",
                "Bytes the host block cache may keep (GLIP_BLOCK_CACHE_MIB).",
                bc.cap.to_string(),
            ),
            (
                "glip_host_block_cache_hits_total",
                "counter",
                "Large allocations served from a kept block.",
                bc.hits.to_string(),
            ),
            (
                "glip_host_block_cache_misses_total",
                "counter",
                "Large allocations the system served.",
                bc.misses.to_string(),
            ),
        ];
        for (name, kind, help, value) in scalars {
            head(&mut s, name, kind, help);
            let _ = writeln!(s, "{name} {value}");
        }
        s
    }
}

/// A metric's `# HELP` and `# TYPE` lines.
fn head(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}
