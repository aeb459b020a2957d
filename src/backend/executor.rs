//! The executor (design.md §3.8): a forward is recorded once per shape bucket and replayed
//! from one device arena afterwards.
//!
//! The first run of a bucket goes through the [`Recorder`] (op trace) with the device
//! allocator logging (backend/cuda/arena.rs); from the two comes the [`MemoryPlan`] (the
//! activations, as on every backend) and, on a device, the [`DevicePlan`] (every
//! allocation's arena offset). Later runs of the bucket on a device are replays: the same
//! code runs the same ops, and every allocation is a view of the bucket's arena, so a frame
//! allocates and frees nothing and its buffers sit at the same addresses every time.
//!
//! The arena is reused only while nothing from the last replay is held: the views a replay
//! returns keep the arena alive, and a run that finds it still referenced (a caller kept an
//! output, or another thread is replaying) runs op by op with buffers of its own instead of
//! overwriting memory someone can still read. A replay that does not make exactly the
//! planned allocations is an error in the plan, not in the input: the bucket is marked
//! broken (said by [`PlanInfo::broken`]) and the frame runs op by op.

use super::cuda::arena::Arena;
use super::ops::Backend;
use super::plan::{DevicePlan, MemoryPlan, Recorder};
use crate::error::Result;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// What the executor knows of one bucket.
#[derive(Clone, Debug)]
pub struct PlanInfo {
    /// The activations of the recorded forward in one arena (every backend).
    pub memory: Arc<MemoryPlan>,
    /// Every device allocation placed in the bucket's arena (device backends).
    pub device: Option<Arc<DevicePlan>>,
    /// Bytes of the device arena, once the first replay made it.
    pub arena_bytes: Option<usize>,
    /// Runs served from the arena.
    pub replays: u64,
    /// Runs of a known bucket that went op by op (the arena was in use).
    pub op_by_op: u64,
    /// Why replays stopped for this bucket, if they did.
    pub broken: Option<String>,
    /// What the replays' CUDA graphs did (device backends, once the arena exists).
    pub graphs: Option<super::cuda::graph::GraphStats>,
}

struct Entry {
    info: PlanInfo,
    arena: Option<Arc<Arena>>,
}

/// Recorded forwards by bucket `K`.
pub struct Executor<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K> Default for Executor<K> {
    fn default() -> Self {
        Executor {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

enum Step {
    Record,
    Replay(Arc<Arena>, Arc<[super::plan::Slot]>),
    OpByOp,
}

impl<K: Copy + Eq + Hash + Ord> Executor<K> {
    /// Every bucket seen so far, in key order.
    pub fn plans(&self) -> Vec<(K, PlanInfo)> {
        let mut v: Vec<_> = match self.entries.lock() {
            Ok(m) => m
                .iter()
                .map(|(k, e)| {
                    let mut info = e.info.clone();
                    info.graphs = e.arena.as_ref().map(|a| a.graph_stats());
                    (*k, info)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Runs `f` for bucket `key` on `be`: recorded the first time, replayed from the
    /// bucket's arena afterwards where `be` has planned device memory, op by op otherwise.
    /// `f` returns its result and the storage ids ([`crate::tensor::Tensor::storage_id`])
    /// of the device tensors in it, which the plan keeps alive to the end of the forward.
    pub fn run<R>(
        &self,
        be: &dyn Backend,
        key: K,
        mut f: impl FnMut(&dyn Backend) -> Result<(R, Vec<usize>)>,
    ) -> Result<R> {
        let dev = be.device_arena();
        match self.step(dev, key)? {
            Step::OpByOp => Ok(f(be)?.0),
            Step::Record => {
                let logging = dev.map(|d| d.start_recording().is_ok()).unwrap_or(false);
                let rec = Recorder::new(be);
                let r = f(&rec);
                let allocs = match (dev, logging) {
                    (Some(d), true) => Some(d.finish_recording()),
                    _ => None,
                };
                let (out, keep) = r?;
                if dev.is_some() && allocs.is_none() {
                    // Another thread was recording or replaying on this device: its
                    // allocations were not logged, so this frame plans nothing (a later one
                    // records).
                    return Ok(out);
                }
                let trace = rec.into_trace();
                let info = PlanInfo {
                    memory: Arc::new(MemoryPlan::from_trace(&trace)),
                    device: allocs.map(|a| Arc::new(DevicePlan::from_allocs(&trace, &a, &keep))),
                    arena_bytes: None,
                    replays: 0,
                    op_by_op: 0,
                    broken: None,
                    graphs: None,
                };
                if let Ok(mut m) = self.entries.lock() {
                    m.entry(key).or_insert(Entry { info, arena: None });
                }
                Ok(out)
            }
            Step::Replay(arena, slots) => {
                let Some(d) = dev else {
                    return Ok(f(be)?.0);
                };
                if d.start_replay(arena, slots).is_err() {
                    self.count(key, |i| i.op_by_op += 1);
                    return Ok(f(be)?.0);
                }
                let r = f(be);
                let fin = d.finish_replay();
                match (r, fin) {
                    (Ok((out, _)), Ok(())) => {
                        self.count(key, |i| i.replays += 1);
                        Ok(out)
                    }
                    (r, fin) => {
                        let why = match (&r, fin) {
                            (_, Err(e)) => e.to_string(),
                            (Err(e), _) => e.to_string(),
                            _ => String::new(),
                        };
                        drop(r);
                        if let Ok(mut m) = self.entries.lock() {
                            if let Some(e) = m.get_mut(&key) {
                                e.info.broken = Some(why);
                                e.arena = None;
                            }
                        }
                        Ok(f(be)?.0)
                    }
                }
            }
        }
    }

    /// What to do for `key`: decided under the lock, so that two threads never replay into
    /// one arena.
    fn step(&self, dev: Option<&dyn super::plan::DeviceArena>, key: K) -> Result<Step> {
        let Ok(mut m) = self.entries.lock() else {
            return Ok(Step::OpByOp);
        };
        let Some(e) = m.get_mut(&key) else {
            return Ok(Step::Record);
        };
        let (Some(d), Some(plan), None) = (dev, e.info.device.as_ref(), e.info.broken.as_ref())
        else {
            return Ok(Step::OpByOp);
        };
        let arena = match &e.arena {
            Some(a) => Arc::clone(a),
            None => {
                let a = d.new_arena(plan.peak_bytes)?;
                e.info.arena_bytes = Some(a.bytes());
                e.arena = Some(Arc::clone(&a));
                a
            }
        };
        // Ours and the entry's: nothing else holds a view of the last replay.
        if Arc::strong_count(&arena) > 2 {
            e.info.op_by_op += 1;
            return Ok(Step::OpByOp);
        }
        Ok(Step::Replay(arena, Arc::clone(&plan.slots)))
    }

    fn count(&self, key: K, f: impl FnOnce(&mut PlanInfo)) {
        if let Ok(mut m) = self.entries.lock() {
            if let Some(e) = m.get_mut(&key) {
                f(&mut e.info);
            }
        }
    }
}
