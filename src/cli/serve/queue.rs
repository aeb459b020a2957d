//! The bounded request queue and the detection workers behind `glip serve`.
//!
//! Each worker thread owns one [`Detector`] (its own prompt cache). A request waits in one
//! queue of fixed capacity: a full queue refuses it at once (the HTTP layer answers 503).
//! A worker takes the oldest job and, with `batch` > 1, up to `batch - 1` more queued jobs
//! with the same prompt, and runs them as one batch (micro-batching). A job whose client
//! has gone (its reply channel closed) is dropped without running.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use glip_rt::api::Detection;
use glip_rt::preprocess::RgbImage8;
use glip_rt::tokenizer::Prompt;
use glip_rt::Detector;
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// What a worker answers: the detections, or the error that stopped them.
pub type Reply = Result<Vec<Detection>, glip_rt::Error>;

pub struct Job {
    pub prompt: Arc<Prompt>,
    pub image: RgbImage8,
    pub reply: oneshot::Sender<Reply>,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    batch: usize,
}

/// Why a job was not queued.
pub enum Refused {
    Full,
    Closed,
}

impl Queue {
    pub fn new(capacity: usize, batch: usize) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            batch: batch.max(1),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs waiting (not those being run).
    pub fn depth(&self) -> usize {
        self.state.lock().map(|s| s.jobs.len()).unwrap_or(0)
    }

    pub fn push(&self, job: Job) -> Result<(), Refused> {
        let mut s = self.state.lock().map_err(|_| Refused::Closed)?;
        if s.closed {
            return Err(Refused::Closed);
        }
        if s.jobs.len() >= self.capacity {
            return Err(Refused::Full);
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// No more jobs are taken; workers finish what is queued, then stop.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.ready.notify_all();
    }

    /// The next batch: the oldest live job and queued live jobs with its prompt, or None
    /// once the queue is closed and empty.
    fn take(&self) -> Option<Vec<Job>> {
        let mut s = self.state.lock().ok()?;
        loop {
            s.jobs.retain(|j| !j.reply.is_closed());
            if let Some(first) = s.jobs.pop_front() {
                let mut batch = vec![first];
                let mut i = 0;
                while batch.len() < self.batch && i < s.jobs.len() {
                    if s.jobs[i].prompt == batch[0].prompt {
                        if let Some(j) = s.jobs.remove(i) {
                            batch.push(j);
                        }
                    } else {
                        i += 1;
                    }
                }
                return Some(batch);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).ok()?;
        }
    }
}

/// Starts one worker thread per detector.
pub fn start_workers(
    queue: &Arc<Queue>,
    metrics: &Arc<Metrics>,
    detectors: Vec<Detector>,
) -> Vec<JoinHandle<()>> {
    detectors
        .into_iter()
        .enumerate()
        .map(|(i, det)| {
            let (queue, metrics) = (Arc::clone(queue), Arc::clone(metrics));
            std::thread::Builder::new()
                .name(format!("glip-serve-{i}"))
                .spawn(move || work(i, &queue, &metrics, det))
        })
        .filter_map(Result::ok)
        .collect()
}

fn work(index: usize, queue: &Queue, metrics: &Metrics, mut det: Detector) {
    metrics.prompt_cache(index, det.prompt_cache_stats());
    let mut current: Option<Arc<Prompt>> = None;
    while let Some(batch) = queue.take() {
        let prompt = Arc::clone(&batch[0].prompt);
        if current.as_deref() != Some(&*prompt) {
            if let Err(e) = det.set_prompt_parsed((*prompt).clone()) {
                let msg = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(glip_rt::Error::Prompt(msg.clone())));
                }
                current = None;
                continue;
            }
            current = Some(prompt);
        }
        let (images, replies): (Vec<RgbImage8>, Vec<_>) =
            batch.into_iter().map(|j| (j.image, j.reply)).unzip();
        metrics.batch(images.len());
        let result = det.detect_batch(&images);
        metrics.prompt_cache(index, det.prompt_cache_stats());
        match result {
            Ok(all) => {
                for (dets, reply) in all.into_iter().zip(replies) {
                    let _ = reply.send(Ok(dets));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(glip_rt::Error::Invalid(msg.clone())));
                }
            }
        }
    }
}
