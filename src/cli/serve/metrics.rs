//! `GET /metrics`: Prometheus text exposition (version 0.0.4) of the service's counters:
//! requests by route and status, a latency histogram by route, the queue's depth and
//! capacity, requests in flight, and errors by kind.

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
        let _ = writeln!(
            s,
            "# HELP glip_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(s, "# TYPE glip_requests_total counter");
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(
                    s,
                    "glip_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP glip_request_duration_seconds Time from request to answer, by route."
        );
        let _ = writeln!(s, "# TYPE glip_request_duration_seconds histogram");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (c, b) in h.counts.iter().zip(BUCKETS_S) {
                    let _ = writeln!(
                        s,
                        "glip_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    s,
                    "glip_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    s,
                    "glip_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    s,
                    "glip_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP glip_errors_total Requests refused or failed, by kind."
        );
        let _ = writeln!(s, "# TYPE glip_errors_total counter");
        if let Ok(e) = self.errors.lock() {
            for (kind, n) in e.iter() {
                let _ = writeln!(s, "glip_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP glip_queue_depth Detection jobs waiting for a worker."
        );
        let _ = writeln!(s, "# TYPE glip_queue_depth gauge");
        let _ = writeln!(s, "glip_queue_depth {queue_depth}");
        let _ = writeln!(
            s,
            "# HELP glip_queue_capacity Jobs the queue holds before answering 503."
        );
        let _ = writeln!(s, "# TYPE glip_queue_capacity gauge");
        let _ = writeln!(s, "glip_queue_capacity {queue_capacity}");
        let _ = writeln!(
            s,
            "# HELP glip_forwards_total Model forwards (one per batch)."
        );
        let _ = writeln!(s, "# TYPE glip_forwards_total counter");
        let _ = writeln!(
            s,
            "glip_forwards_total {}",
            self.batches.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP glip_forward_images_total Requests run by those forwards."
        );
        let _ = writeln!(s, "# TYPE glip_forward_images_total counter");
        let _ = writeln!(
            s,
            "glip_forward_images_total {}",
            self.batched_images.load(Ordering::Relaxed)
        );
        let (mut hits, mut misses, mut entries) = (0, 0, 0);
        if let Ok(c) = self.prompt_caches.lock() {
            for st in c.values() {
                (hits, misses, entries) =
                    (hits + st.hits, misses + st.misses, entries + st.entries);
            }
        }
        let _ = writeln!(s, "# HELP glip_prompt_cache_hits_total Prompt chunks whose text features came from a worker's cache.");
        let _ = writeln!(s, "# TYPE glip_prompt_cache_hits_total counter");
        let _ = writeln!(s, "glip_prompt_cache_hits_total {hits}");
        let _ = writeln!(
            s,
            "# HELP glip_prompt_cache_misses_total Prompt chunks encoded by BERT."
        );
        let _ = writeln!(s, "# TYPE glip_prompt_cache_misses_total counter");
        let _ = writeln!(s, "glip_prompt_cache_misses_total {misses}");
        let _ = writeln!(
            s,
            "# HELP glip_prompt_cache_entries Prompt chunks cached, all workers."
        );
        let _ = writeln!(s, "# TYPE glip_prompt_cache_entries gauge");
        let _ = writeln!(s, "glip_prompt_cache_entries {entries}");
        let _ = writeln!(s, "# HELP glip_requests_in_flight Requests being answered.");
        let _ = writeln!(s, "# TYPE glip_requests_in_flight gauge");
        let _ = writeln!(
            s,
            "glip_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        s
    }
}
