//! A recorded forward and its memory plan (design.md §3.8): [`Recorder`] wraps a backend and
//! logs every op of one forward (name, the storage it read, the storage it wrote, bytes);
//! [`MemoryPlan::from_trace`] turns that into liveness intervals and gives every intermediate
//! an offset in one arena (greedy best fit, largest first), with the peak arena size and the
//! lower bound no plan can beat (the most bytes live at once).
//!
//! Identity is the storage's ([`Tensor::storage_id`]: the host address, or a device buffer's
//! allocation id), so an op that returns its input's storage (the CPU backend's in-place
//! elementwise ops) extends that buffer's interval instead of starting a new one; CUDA ops
//! write new buffers. The same forward records the same ops on every backend. Tensors the trace reads but never wrote (weights, the image, the text features)
//! are inputs, not activations, and are not planned. On a device the recorder's trace and
//! the allocator's log give the [`DevicePlan`] of every allocation, which the executor
//! (backend/executor.rs) replays from one arena.

use super::cuda::arena::Arena;
use super::ops::{Backend, SelfAttention};
use crate::error::Result;
use crate::tensor::{DType, Device, Tensor};
use std::cell::RefCell;
use std::sync::Arc;

/// One recorded op: what it read and what it wrote (storage ids and bytes).
#[derive(Clone, Debug)]
pub struct OpRecord {
    pub op: &'static str,
    pub reads: Vec<usize>,
    pub writes: Vec<(usize, usize)>,
    /// The backend's device allocation count when the op returned
    /// ([`DeviceArena::allocations`]; 0 on the CPU): allocation `seq` was made during the
    /// first op whose count exceeds it.
    pub allocs_after: u64,
}

/// One device allocation made while a forward was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocRecord {
    /// Its place among all the backend's allocations ([`DeviceArena::allocations`]).
    pub seq: u64,
    /// The buffer's id ([`crate::backend::cuda::DeviceBuffer::id`]).
    pub id: u64,
    pub bytes: usize,
}

/// Where one allocation of a replayed forward lives in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: usize,
    pub bytes: usize,
}

/// Device memory of one backend: its own allocations (weights, cached prompts, buffers of
/// op-by-op runs) and its arenas, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Held now.
    pub held: usize,
    /// The most held at once so far.
    pub peak: usize,
}

/// What a backend whose memory can be planned offers the executor (the CUDA backend, GPU
/// or emulated; backend/cuda/arena.rs).
pub trait DeviceArena {
    /// Device allocations made so far (every thread), arena views included.
    fn allocations(&self) -> u64;
    /// Of those, the ones that took device memory of their own (arenas included): what a
    /// replayed forward never adds to.
    fn own_allocations(&self) -> u64;
    /// Of all, the ones that were zeroed (a memset each on a GPU): what a replayed forward
    /// does not need (its workspaces are written before they are read).
    fn zeroed_allocations(&self) -> u64;
    /// The device memory this backend holds now and the most it held at once.
    fn memory(&self) -> DeviceMemory;
    /// Log this thread's allocations until [`DeviceArena::finish_recording`].
    fn start_recording(&self) -> Result<()>;
    /// The allocations since [`DeviceArena::start_recording`], in order.
    fn finish_recording(&self) -> Vec<AllocRecord>;
    /// One device allocation of `bytes` for a plan's buffers.
    fn new_arena(&self, bytes: usize) -> Result<Arc<Arena>>;
    /// Serve this thread's allocations from `arena`, the k-th at `slots[k]`.
    fn start_replay(&self, arena: Arc<Arena>, slots: Arc<[Slot]>) -> Result<()>;
    /// End the replay; an error when the forward did not make exactly the planned
    /// allocations.
    fn finish_replay(&self) -> Result<()>;
}

/// A backend that records every op it runs on `inner`.
pub struct Recorder<'a> {
    inner: &'a dyn Backend,
    trace: RefCell<Vec<OpRecord>>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn Backend) -> Self {
        Recorder {
            inner,
            trace: RefCell::new(Vec::new()),
        }
    }

    /// The recorded ops, in order.
    pub fn into_trace(self) -> Vec<OpRecord> {
        self.trace.into_inner()
    }

    /// A tensor's storage identity: the host address, or the device buffer's allocation id.
    fn id(&self, t: &Tensor) -> usize {
        t.storage_id()
    }

    fn log(&self, op: &'static str, reads: Vec<usize>, outs: &[&Tensor]) {
        let writes = outs.iter().map(|t| (self.id(t), t.bytes())).collect();
        let allocs_after = self.inner.device_arena().map_or(0, |a| a.allocations());
        self.trace.borrow_mut().push(OpRecord {
            op,
            reads,
            writes,
            allocs_after,
        });
    }

    fn one(&self, op: &'static str, reads: Vec<usize>, y: Result<Tensor>) -> Result<Tensor> {
        let y = y?;
        self.log(op, reads, &[&y]);
        Ok(y)
    }

    /// [`Recorder::one`] for an op of several outputs.
    fn many(
        &self,
        op: &'static str,
        reads: Vec<usize>,
        ys: Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let ys = ys?;
        self.log(op, reads, &ys.iter().collect::<Vec<_>>());
        Ok(ys)
    }

    fn ids(&self, ts: &[&Tensor]) -> Vec<usize> {
        ts.iter().map(|t| self.id(t)).collect()
    }

    /// [`Recorder::ids`] of `ts` and an optional tensor.
    fn ids_with(&self, ts: &[&Tensor], opt: Option<&Tensor>) -> Vec<usize> {
        let mut v = self.ids(ts);
        v.extend(opt.map(|t| self.id(t)));
        v
    }
}

impl Backend for Recorder<'_> {
    fn activation_dtype(&self) -> crate::tensor::DType {
        self.inner.activation_dtype()
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.one("upload", self.ids(&[t]), self.inner.upload(t))
    }
    fn to_host(&self, t: &Tensor) -> Result<Tensor> {
        self.inner.to_host(t)
    }
    fn weight(&self, t: &Tensor) -> Result<Tensor> {
        self.inner.weight(t)
    }
    fn matmul(&self, a: &Tensor, b: &Tensor, bt: bool) -> Result<Tensor> {
        self.one("matmul", self.ids(&[a, b]), self.inner.matmul(a, b, bt))
    }
    fn cast(&self, t: &Tensor, to: DType) -> Result<Tensor> {
        self.one("cast", self.ids(&[t]), self.inner.cast(t, to))
    }
    fn axpby(&self, alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
        self.one(
            "axpby",
            self.ids(&[a, b]),
            self.inner.axpby(alpha, a, beta, b),
        )
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        self.one(
            "linear",
            self.ids_with(&[x, w], b),
            self.inner.linear(x, w, b),
        )
    }
    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        self.one(
            "layer_norm",
            self.ids(&[x, w, b]),
            self.inner.layer_norm(x, w, b, eps),
        )
    }
    fn clamp(&self, x: Tensor, bound: f32) -> Result<Tensor> {
        let r = self.ids(&[&x]);
        self.one("clamp", r, self.inner.clamp(x, bound))
    }
    fn gelu(&self, x: Tensor) -> Result<Tensor> {
        let r = self.ids(&[&x]);
        self.one("gelu", r, self.inner.gelu(x))
    }
    fn duplicate(&self, x: &Tensor) -> Result<Tensor> {
        self.one("duplicate", self.ids(&[x]), self.inner.duplicate(x))
    }
    fn fallbacks(&self) -> Vec<crate::backend::ops::FallbackCount> {
        self.inner.fallbacks()
    }
    fn device_arena(&self) -> Option<&dyn DeviceArena> {
        self.inner.device_arena()
    }
    fn stage_clock(&self) -> Option<&dyn crate::backend::clock::StageClock> {
        self.inner.stage_clock()
    }
    fn device_frames(&self) -> Option<&dyn crate::backend::frames::DeviceFrames> {
        self.inner.device_frames()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn repeat_batch(&self, x: &Tensor, times: usize) -> Result<Tensor> {
        self.one(
            "repeat_batch",
            self.ids(&[x]),
            self.inner.repeat_batch(x, times),
        )
    }
    fn bert_embeddings(
        &self,
        ids: &Tensor,
        word: &Tensor,
        position: &Tensor,
        token_type0: &Tensor,
    ) -> Result<Tensor> {
        self.one(
            "bert_embeddings",
            self.ids(&[ids, word, position, token_type0]),
            self.inner.bert_embeddings(ids, word, position, token_type0),
        )
    }
    fn self_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        spec: SelfAttention,
    ) -> Result<Tensor> {
        self.one(
            "self_attention",
            self.ids(&[q, k, v, mask]),
            self.inner.self_attention(q, k, v, mask, spec),
        )
    }
    fn scale(&self, x: Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
        let r = self.ids(&[&x]);
        self.one("scale", r, self.inner.scale(x, alpha, beta))
    }
    fn add_channel_scaled(&self, a: Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
        let r = self.ids(&[&a, g, b]);
        self.one(
            "add_channel_scaled",
            r,
            self.inner.add_channel_scaled(a, g, b),
        )
    }
    fn levels_to_tokens(&self, levels: &[&Tensor]) -> Result<Tensor> {
        self.one(
            "levels_to_tokens",
            self.ids(levels),
            self.inner.levels_to_tokens(levels),
        )
    }
    fn tokens_to_levels(&self, x: &Tensor, sizes: &[(usize, usize)]) -> Result<Vec<Tensor>> {
        self.many(
            "tokens_to_levels",
            self.ids(&[x]),
            self.inner.tokens_to_levels(x, sizes),
        )
    }
    fn bi_attn(
        &self,
        q: &Tensor,
        k: &Tensor,
        v_l: &Tensor,
        v_v: &Tensor,
        mask: &Tensor,
        heads: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (a, b) = self.inner.bi_attn(q, k, v_l, v_v, mask, heads)?;
        self.log("bi_attn", self.ids(&[q, k, v_l, v_v, mask]), &[&a, &b]);
        Ok((a, b))
    }
    fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        self.one(
            "conv2d",
            self.ids_with(&[x, w], b),
            self.inner.conv2d(x, w, b, stride, pad),
        )
    }
    fn upsample_nearest(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        self.one(
            "upsample_nearest",
            self.ids(&[x]),
            self.inner.upsample_nearest(x, oh, ow),
        )
    }
    fn upsample_bilinear_ac(&self, x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
        self.one(
            "upsample_bilinear_ac",
            self.ids(&[x]),
            self.inner.upsample_bilinear_ac(x, oh, ow),
        )
    }
    fn relu(&self, x: Tensor) -> Result<Tensor> {
        let r = self.ids(&[&x]);
        self.one("relu", r, self.inner.relu(x))
    }
    fn h_sigmoid(&self, x: Tensor) -> Result<Tensor> {
        let r = self.ids(&[&x]);
        self.one("h_sigmoid", r, self.inner.h_sigmoid(x))
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        self.one("avg_pool", self.ids(&[x]), self.inner.avg_pool(x))
    }
    fn scale_images(&self, x: Tensor, a: &Tensor) -> Result<Tensor> {
        let r = self.ids(&[&x, a]);
        self.one("scale_images", r, self.inner.scale_images(x, a))
    }
    fn split_offset_mask(&self, om: &Tensor) -> Result<(Tensor, Tensor)> {
        let (a, b) = self.inner.split_offset_mask(om)?;
        self.log("split_offset_mask", self.ids(&[om]), &[&a, &b]);
        Ok((a, b))
    }
    fn deform_conv3x3(
        &self,
        x: &Tensor,
        offset: &Tensor,
        mask: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        offset_src: (usize, usize),
    ) -> Result<Tensor> {
        self.one(
            "deform_conv3x3",
            self.ids(&[x, offset, mask, w, b]),
            self.inner
                .deform_conv3x3(x, offset, mask, w, b, stride, offset_src),
        )
    }
    fn group_norm(
        &self,
        xs: &[&Tensor],
        w: &Tensor,
        b: &Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<Vec<Tensor>> {
        self.many(
            "group_norm",
            self.ids(&[xs, &[w, b]].concat()),
            self.inner.group_norm(xs, w, b, groups, eps),
        )
    }
    fn dyrelu_apply(&self, x: Tensor, z: &Tensor) -> Result<Tensor> {
        let r = self.ids(&[&x, z]);
        self.one("dyrelu_apply", r, self.inner.dyrelu_apply(x, z))
    }
    fn text_projection(
        &self,
        lang: &Tensor,
        w: &Tensor,
        b: &Tensor,
        bias_lang: &Tensor,
        bias0: f32,
    ) -> Result<(Tensor, Tensor)> {
        let (p, t) = self.inner.text_projection(lang, w, b, bias_lang, bias0)?;
        self.log(
            "text_projection",
            self.ids(&[lang, w, b, bias_lang]),
            &[&p, &t],
        );
        Ok((p, t))
    }
    fn dot_logits(
        &self,
        vs: &[&Tensor],
        proj: &Tensor,
        tok_bias: &Tensor,
        scale: f32,
        clamp: f32,
    ) -> Result<Vec<Tensor>> {
        self.many(
            "dot_logits",
            self.ids(&[vs, &[proj, tok_bias]].concat()),
            self.inner.dot_logits(vs, proj, tok_bias, scale, clamp),
        )
    }
    fn concat_positions(&self, parts: &[&Tensor]) -> Result<Tensor> {
        self.one(
            "concat_positions",
            self.ids(parts),
            self.inner.concat_positions(parts),
        )
    }
    fn phrase_scores(
        &self,
        logits: &Tensor,
        map: &crate::backend::atss::PositiveMapCsr,
        num_labels: usize,
    ) -> Result<Tensor> {
        self.one(
            "phrase_scores",
            self.ids(&[logits]),
            self.inner.phrase_scores(logits, map, num_labels),
        )
    }
    fn atss_postprocess(
        &self,
        scores: &Tensor,
        centerness: &Tensor,
        bbox_reg: &Tensor,
        levels: &[crate::backend::atss::Level],
        image_hw: &[(f32, f32)],
        cfg: &crate::backend::atss::AtssConfig,
    ) -> Result<Vec<Vec<crate::backend::atss::Candidate>>> {
        let d = self
            .inner
            .atss_postprocess(scores, centerness, bbox_reg, levels, image_hw, cfg)?;
        // Host detections come back: the op reads its inputs and writes no buffer.
        self.log(
            "atss_postprocess",
            self.ids(&[scores, centerness, bbox_reg]),
            &[],
        );
        Ok(d)
    }
    fn pad_to_multiple(&self, x: &Tensor, m: usize) -> Result<Tensor> {
        self.one(
            "pad_to_multiple",
            self.ids(&[x]),
            self.inner.pad_to_multiple(x, m),
        )
    }
    fn nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        self.one("nchw_to_nhwc", self.ids(&[x]), self.inner.nchw_to_nhwc(x))
    }
    fn nhwc_to_nchw(&self, x: &Tensor) -> Result<Tensor> {
        self.one("nhwc_to_nchw", self.ids(&[x]), self.inner.nhwc_to_nchw(x))
    }
    fn window_partition(&self, x: &Tensor, window: usize, shift: usize) -> Result<Tensor> {
        self.one(
            "window_partition",
            self.ids(&[x]),
            self.inner.window_partition(x, window, shift),
        )
    }
    fn window_merge_add(
        &self,
        x: Tensor,
        windows: &Tensor,
        window: usize,
        shift: usize,
    ) -> Result<Tensor> {
        let r = self.ids(&[&x, windows]);
        self.one(
            "window_merge_add",
            r,
            self.inner.window_merge_add(x, windows, window, shift),
        )
    }
    fn window_attention(
        &self,
        qkv: &Tensor,
        rel_bias: &Tensor,
        region_ids: Option<&Tensor>,
        heads: usize,
    ) -> Result<Tensor> {
        self.one(
            "window_attention",
            self.ids_with(&[qkv, rel_bias], region_ids),
            self.inner
                .window_attention(qkv, rel_bias, region_ids, heads),
        )
    }
    fn patch_merge_gather(&self, x: &Tensor) -> Result<Tensor> {
        self.one(
            "patch_merge_gather",
            self.ids(&[x]),
            self.inner.patch_merge_gather(x),
        )
    }
    fn add(&self, a: Tensor, b: &Tensor) -> Result<Tensor> {
        let r = self.ids(&[&a, b]);
        self.one("add", r, self.inner.add(a, b))
    }
}

/// One activation buffer: written by op `start`, last read by op `end`, `bytes` long, at
/// `offset` in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start: usize,
    pub end: usize,
    pub bytes: usize,
    pub offset: usize,
}

/// Every activation of one recorded forward placed in one arena.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    pub ops: usize,
    pub buffers: Vec<Interval>,
    /// The arena size the placement needs.
    pub peak_bytes: usize,
    /// The most bytes live at any op: no placement can need less.
    pub live_bytes_bound: usize,
}

/// Offsets are multiples of this (what vector loads, cp.async and cudaMalloc give).
const ALIGN: usize = 256;

impl MemoryPlan {
    /// Liveness and placement of a trace. An op that writes the storage it read continues
    /// that buffer (in place); any other write starts a new buffer, even at a recycled address.
    pub fn from_trace(trace: &[OpRecord]) -> MemoryPlan {
        use std::collections::HashMap;
        let mut live: HashMap<usize, usize> = HashMap::new(); // address -> buffer index
        let mut bufs: Vec<Interval> = Vec::new();
        for (i, r) in trace.iter().enumerate() {
            for a in &r.reads {
                if let Some(&b) = live.get(a) {
                    bufs[b].end = i;
                }
            }
            for &(a, bytes) in &r.writes {
                let in_place = r.reads.contains(&a) && live.contains_key(&a);
                if !in_place {
                    live.insert(a, bufs.len());
                    bufs.push(Interval {
                        start: i,
                        end: i,
                        bytes: bytes.div_ceil(ALIGN) * ALIGN,
                        offset: 0,
                    });
                }
            }
        }
        let peak = place(&mut bufs);
        let live_bytes_bound = live_bytes_bound(&bufs, trace.len());
        MemoryPlan {
            ops: trace.len(),
            buffers: bufs,
            peak_bytes: peak,
            live_bytes_bound,
        }
    }

    /// Whether two buffers that are live at the same op overlap in the arena (never, for a
    /// valid plan).
    pub fn conflicts(&self) -> Option<(usize, usize)> {
        conflicts(&self.buffers)
    }
}

/// Largest first, each buffer at the lowest offset that fits beside the already placed
/// buffers whose lifetimes overlap its own; returns the arena size.
fn place(bufs: &mut [Interval]) -> usize {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by(|&a, &b| bufs[b].bytes.cmp(&bufs[a].bytes).then(a.cmp(&b)));
    let mut placed: Vec<usize> = Vec::new();
    let mut peak = 0;
    for &b in &order {
        let me = bufs[b];
        let mut clash: Vec<(usize, usize)> = placed
            .iter()
            .map(|&p| bufs[p])
            .filter(|o| o.start <= me.end && me.start <= o.end)
            .map(|o| (o.offset, o.offset + o.bytes))
            .collect();
        clash.sort_unstable();
        let mut off = 0;
        for (lo, hi) in clash {
            if off + me.bytes <= lo {
                break;
            }
            off = off.max(hi);
        }
        bufs[b].offset = off;
        peak = peak.max(off + me.bytes);
        placed.push(b);
    }
    peak
}

/// The most bytes live at any of `ops` ops.
fn live_bytes_bound(bufs: &[Interval], ops: usize) -> usize {
    (0..=ops)
        .map(|i| {
            bufs.iter()
                .filter(|b| b.start <= i && i <= b.end)
                .map(|b| b.bytes)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

/// Two buffers live at the same op that overlap in the arena, if any.
fn conflicts(bufs: &[Interval]) -> Option<(usize, usize)> {
    for (i, a) in bufs.iter().enumerate() {
        for (j, b) in bufs.iter().enumerate().skip(i + 1) {
            let time = a.start <= b.end && b.start <= a.end;
            let space = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
            if time && space {
                return Some((i, j));
            }
        }
    }
    None
}

/// Every device allocation of one recorded forward (op outputs, op workspaces, uploads)
/// placed in one arena, in allocation order: what a replay serves them from.
///
/// An allocation lives from the op that made it to the last op that read or wrote it; a
/// workspace (never seen by the trace) only during its op; a tensor the forward returns
/// (`keep`) to after the last op.
#[derive(Clone, Debug)]
pub struct DevicePlan {
    pub ops: usize,
    /// One interval per allocation, in allocation order (op indices; `offset` in bytes).
    pub buffers: Vec<Interval>,
    pub slots: Arc<[Slot]>,
    pub peak_bytes: usize,
    pub live_bytes_bound: usize,
    /// Allocations made during an op whose result the trace never reads again
    /// (workspaces and dead outputs).
    pub transient: usize,
}

impl DevicePlan {
    pub fn from_allocs(trace: &[OpRecord], allocs: &[AllocRecord], keep: &[usize]) -> Self {
        use std::collections::HashMap;
        let mut last: HashMap<usize, usize> = HashMap::new();
        for (i, r) in trace.iter().enumerate() {
            for &a in r.reads.iter().chain(r.writes.iter().map(|(a, _)| a)) {
                last.insert(a, i);
            }
        }
        let end_of_forward = trace.len();
        let mut transient = 0;
        let mut buffers: Vec<Interval> = allocs
            .iter()
            .map(|a| {
                let start = trace.partition_point(|r| r.allocs_after <= a.seq);
                let id = Tensor::device_storage_id(a.id);
                let end = if keep.contains(&id) {
                    end_of_forward
                } else {
                    match last.get(&id) {
                        Some(&l) => l.max(start),
                        None => start,
                    }
                };
                if end == start && start < end_of_forward {
                    transient += 1;
                }
                Interval {
                    start,
                    end,
                    bytes: a.bytes.div_ceil(ALIGN) * ALIGN,
                    offset: 0,
                }
            })
            .collect();
        let peak_bytes = place(&mut buffers);
        let live_bytes_bound = live_bytes_bound(&buffers, trace.len());
        let slots = allocs
            .iter()
            .zip(&buffers)
            .map(|(a, b)| Slot {
                offset: b.offset,
                bytes: a.bytes,
            })
            .collect();
        DevicePlan {
            ops: trace.len(),
            buffers,
            slots,
            peak_bytes,
            live_bytes_bound,
            transient,
        }
    }

    /// Whether two allocations live at the same op overlap in the arena (never, for a valid
    /// plan).
    pub fn conflicts(&self) -> Option<(usize, usize)> {
        conflicts(&self.buffers)
    }
}

#[cfg(test)]
mod tests {
    /// Every tensor an op of the [`Recorder`](super::Recorder) receives (activations,
    /// masks, region ids, weights) is logged as a read: an uploaded mask is an arena buffer,
    /// and one read but not logged would end its life early, so a replay in one arena could
    /// place another buffer on top of it while the op still reads it. Weights are never
    /// written by an op, so the plan sees them as graph inputs. Checked on this file's own
    /// source: each `Tensor` parameter must appear in the op's `ids(…)` / `ids_with(…)` call.
    #[test]
    fn every_tensor_argument_is_logged_as_a_read() {
        let src = include_str!("plan.rs");
        let start = src.find("impl Backend for Recorder").unwrap_or(0);
        let end = src[start..].find("\n}\n").map_or(src.len(), |e| start + e);
        let mut missing = Vec::new();
        let mut checked = 0;
        for f in src[start..end].split("\n    fn ").skip(1) {
            let name = f.split('(').next().unwrap_or("");
            let Some(sig_end) = f.find(") ->") else {
                continue;
            };
            let sig = &f[name.len() + 1..sig_end];
            let body = &f[sig_end..];
            // Top-level parameters (types like &[(usize, usize)] hold commas).
            let (mut depth, mut cur, mut params) = (0i32, String::new(), Vec::new());
            for ch in sig.chars() {
                match ch {
                    '(' | '[' | '<' => depth += 1,
                    ')' | ']' | '>' => depth -= 1,
                    ',' if depth == 0 => {
                        params.push(std::mem::take(&mut cur));
                        continue;
                    }
                    _ => {}
                }
                cur.push(ch);
            }
            params.push(cur);
            // The text of every ids(…) / ids_with(…) call in the body.
            let mut logged = String::new();
            for (i, _) in body.match_indices("ids") {
                let rest = &body[i..];
                if rest.starts_with("ids(") || rest.starts_with("ids_with(") {
                    // Up to the call's closing parenthesis.
                    let mut depth = 0i32;
                    for ch in rest.chars() {
                        logged.push(ch);
                        match ch {
                            '(' => depth += 1,
                            ')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    logged.push(' ');
                }
            }
            let words: Vec<&str> = logged
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .collect();
            for p in params {
                let Some((pname, ty)) = p.trim().split_once(':') else {
                    continue;
                };
                if !ty.contains("Tensor") || name == "to_host" || name == "weight" {
                    continue; // copies out / parameter conversion: not ops of the forward
                }
                checked += 1;
                if !words.contains(&pname.trim()) {
                    missing.push(format!("{name}({})", pname.trim()));
                }
            }
        }
        assert!(
            checked > 60,
            "only {checked} tensor arguments found: parser broken"
        );
        assert!(missing.is_empty(), "not logged as reads: {missing:?}");
    }
}
