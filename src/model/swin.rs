//! Swin Transformer v1 backbone as GLIP's `modeling/backbone/swint.py` (spec §3.2), on the CPU.
//!
//! Tokens are kept per image as row-major [H·W, C]. A block gathers its (shifted, zero-padded)
//! windows into one [nW·M², C] buffer so the projections are single GEMMs, runs window
//! attention in parallel over windows, and scatters the result back onto the residual.

use super::{FeatureMap, WeightMap};
use crate::backend::cpu::nn;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// All Swin layer norms use eps 1e-5 (spec §8.23).
const LN_EPS: f32 = 1e-5;
/// The additive mask between different shift regions (`swint.py:373`): −100, not −inf.
const SHIFT_MASK: f32 = -100.0;

/// Hyper-parameters of a Swin v1 backbone (GLIP's MODEL.SWINT.*).
#[derive(Clone, Debug, PartialEq)]
pub struct SwinConfig {
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    pub mlp_ratio: f64,
    /// Whether stage 0's output goes through `norm0`. False for `*-RETINANET` backbones,
    /// where norm0 is Identity and has no weights (spec §8.15).
    pub norm_first_stage: bool,
}

impl SwinConfig {
    /// GLIP-T: Swin-T (96, (2,2,6,2), (3,6,12,24), window 7).
    pub fn swin_t() -> Self {
        SwinConfig {
            patch_size: 4,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            mlp_ratio: 4.0,
            norm_first_stage: false,
        }
    }
    /// GLIP-L: Swin-L (192, (2,2,18,2), (6,12,24,48), window 12).
    pub fn swin_l() -> Self {
        SwinConfig {
            embed_dim: 192,
            depths: vec![2, 2, 18, 2],
            num_heads: vec![6, 12, 24, 48],
            window_size: 12,
            ..Self::swin_t()
        }
    }
    /// Channels of stage `i`'s output: embed_dim · 2^i.
    pub fn stage_channels(&self, i: usize) -> usize {
        self.embed_dim << i
    }
    /// The channel counts of all stage outputs (GLIP's SWINT.OUT_CHANNELS).
    pub fn out_channels(&self) -> Vec<usize> {
        (0..self.depths.len())
            .map(|i| self.stage_channels(i))
            .collect()
    }
    /// MLP hidden width for `dim` channels (`int(dim * mlp_ratio)` in swint.py).
    pub fn mlp_hidden(&self, dim: usize) -> usize {
        (dim as f64 * self.mlp_ratio) as usize
    }
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("Swin: {m}")));
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return bad(format!(
                "DEPTHS {:?} and NUM_HEADS {:?} must be non-empty and of equal length",
                self.depths, self.num_heads
            ));
        }
        if self.window_size == 0 || self.patch_size == 0 || self.embed_dim == 0 {
            return bad(format!(
                "WINDOW_SIZE {}, patch size {} and EMBED_DIM {} must be positive",
                self.window_size, self.patch_size, self.embed_dim
            ));
        }
        for (i, &h) in self.num_heads.iter().enumerate() {
            let c = self.stage_channels(i);
            if h == 0 || !c.is_multiple_of(h) {
                return bad(format!(
                    "stage {i}: {c} channels are not divisible by {h} heads"
                ));
            }
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return bad(format!("MLP_RATIO {} must be positive", self.mlp_ratio));
        }
        Ok(())
    }
}

pub use super::layers::{HostLayerNorm as LayerNorm, HostLinear as Linear};

/// Patch embedding: zero-pad to /patch, conv patch×patch stride patch, LN over channels.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    pub proj_w: Vec<f32>,
    pub proj_b: Vec<f32>,
    pub norm: LayerNorm,
    pub patch: usize,
    pub dim: usize,
}

impl PatchEmbed {
    /// `prefix` like "backbone.body.patch_embed.".
    pub fn load(w: &WeightMap, prefix: &str, patch: usize, dim: usize) -> Result<Self> {
        Ok(PatchEmbed {
            proj_w: w.f32(&format!("{prefix}proj.weight"), &[dim, 3, patch, patch])?,
            proj_b: w.f32(&format!("{prefix}proj.bias"), &[dim])?,
            norm: LayerNorm::load(w, &format!("{prefix}norm"), dim, LN_EPS)?,
            patch,
            dim,
        })
    }

    /// One image [3, H, W] → tokens [Hh·Wh, dim] (after the LN) and (Hh, Wh).
    pub fn forward_tokens(
        &self,
        img: &[f32],
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, usize, usize)> {
        if img.len() != 3 * h * w {
            return Err(Error::shape(
                "PatchEmbed",
                format!("image has {} values, expected 3x{h}x{w}", img.len()),
            ));
        }
        let p = self.patch;
        let (hp, wp) = (h.div_ceil(p) * p, w.div_ceil(p) * p);
        let padded;
        let src = if (hp, wp) == (h, w) {
            img
        } else {
            let mut v = vec![0.0f32; 3 * hp * wp];
            for c in 0..3 {
                for y in 0..h {
                    v[(c * hp + y) * wp..(c * hp + y) * wp + w]
                        .copy_from_slice(&img[(c * h + y) * w..(c * h + y + 1) * w]);
                }
            }
            padded = v;
            &padded[..]
        };
        let (y, oh, ow) = nn::conv2d(
            src,
            1,
            3,
            hp,
            wp,
            &self.proj_w,
            self.dim,
            p,
            Some(&self.proj_b),
            p,
            0,
        )?;
        let mut tokens = chw_to_tokens(&y, self.dim, oh * ow);
        self.norm.apply(&mut tokens)?;
        Ok((tokens, oh, ow))
    }

    /// NCHW image batch → NCHW patch features (what GLIP's PatchEmbed module returns).
    pub fn forward(&self, x: &FeatureMap) -> Result<FeatureMap> {
        if x.c != 3 {
            return Err(Error::shape(
                "PatchEmbed",
                format!("expected 3 input channels, got {}", x.c),
            ));
        }
        let mut out = Vec::new();
        let (mut oh, mut ow) = (0, 0);
        for b in 0..x.n {
            let (t, h, w) = self.forward_tokens(x.image(b), x.h, x.w)?;
            out.extend(tokens_to_chw(&t, self.dim, h * w));
            (oh, ow) = (h, w);
        }
        FeatureMap::new(x.n, self.dim, oh, ow, out)
    }
}

/// [C, N] → [N, C].
pub fn chw_to_tokens(x: &[f32], c: usize, n: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; n * c];
    t.par_chunks_mut(c).enumerate().for_each(|(p, row)| {
        for (ch, v) in row.iter_mut().enumerate() {
            *v = x[ch * n + p];
        }
    });
    t
}

/// [N, C] → [C, N].
pub fn tokens_to_chw(t: &[f32], c: usize, n: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; n * c];
    x.par_chunks_mut(n).enumerate().for_each(|(ch, plane)| {
        for (p, v) in plane.iter_mut().enumerate() {
            *v = t[p * c + ch];
        }
    });
    x
}

/// The window grid of one stage: the token map H×W zero-padded to Hp×Wp, multiples of M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGrid {
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub m: usize,
}

impl WindowGrid {
    pub fn new(h: usize, w: usize, m: usize) -> Self {
        WindowGrid {
            h,
            w,
            hp: h.div_ceil(m) * m,
            wp: w.div_ceil(m) * m,
            m,
        }
    }
    pub fn num_windows(&self) -> usize {
        (self.hp / self.m) * (self.wp / self.m)
    }
    /// Token `t` of window `win` (in the shifted frame) → its (row, col) on the unshifted,
    /// padded grid: roll(−s) means shifted[r] = x[(r + s) mod Hp].
    fn source(&self, win: usize, t: usize, shift: usize) -> (usize, usize) {
        let nww = self.wp / self.m;
        let r = (win / nww) * self.m + t / self.m;
        let c = (win % nww) * self.m + t % self.m;
        ((r + shift) % self.hp, (c + shift) % self.wp)
    }
    /// Region id (0..9) of every token of every window in the shifted frame, [nW, M²]:
    /// row slices [0, Hp−M), [Hp−M, Hp−s), [Hp−s, Hp) and the same for columns
    /// (`swint.py:355-366`).
    pub fn region_ids(&self, shift: usize) -> Vec<u8> {
        let region = |v: usize, n: usize| -> u8 {
            if v < n - self.m {
                0
            } else if v < n - shift {
                1
            } else {
                2
            }
        };
        let nww = self.wp / self.m;
        let mm = self.m * self.m;
        let mut ids = vec![0u8; self.num_windows() * mm];
        for (win, row) in ids.chunks_mut(mm).enumerate() {
            for (t, id) in row.iter_mut().enumerate() {
                let r = (win / nww) * self.m + t / self.m;
                let c = (win % nww) * self.m + t % self.m;
                *id = region(r, self.hp) * 3 + region(c, self.wp);
            }
        }
        ids
    }
}

/// GLIP's SW-MSA attention mask [nW, M², M²]: 0 within a region, −100 across regions.
pub fn shift_attn_mask(h: usize, w: usize, window: usize) -> Vec<f32> {
    let g = WindowGrid::new(h, w, window);
    let ids = g.region_ids(window / 2);
    let mm = window * window;
    let mut mask = vec![0.0f32; g.num_windows() * mm * mm];
    for (win, m) in mask.chunks_mut(mm * mm).enumerate() {
        let id = &ids[win * mm..(win + 1) * mm];
        for i in 0..mm {
            for j in 0..mm {
                if id[i] != id[j] {
                    m[i * mm + j] = SHIFT_MASK;
                }
            }
        }
    }
    mask
}

/// One Swin block (W-MSA if `shift == 0`, SW-MSA otherwise) followed by the MLP.
#[derive(Clone, Debug)]
pub struct SwinBlock {
    pub dim: usize,
    pub heads: usize,
    pub window: usize,
    pub shift: usize,
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    /// The relative position bias expanded to [heads, M², M²].
    pub rel_bias: Vec<f32>,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl SwinBlock {
    /// `prefix` like "backbone.body.layers.0.blocks.1.".
    pub fn load(
        w: &WeightMap,
        prefix: &str,
        dim: usize,
        heads: usize,
        window: usize,
        shift: usize,
        mlp_hidden: usize,
    ) -> Result<Self> {
        let m = window;
        let side = 2 * m - 1;
        let table = w.f32(
            &format!("{prefix}attn.relative_position_bias_table"),
            &[side * side, heads],
        )?;
        let mm = m * m;
        let mut rel_bias = vec![0.0f32; heads * mm * mm];
        for i in 0..mm {
            let (yi, xi) = (i / m, i % m);
            for j in 0..mm {
                let (yj, xj) = (j / m, j % m);
                // (y_i − y_j + M−1)·(2M−1) + (x_i − x_j + M−1), spec §3.2 / swint.py:90-101.
                let idx = (yi + m - 1 - yj) * side + (xi + m - 1 - xj);
                for h in 0..heads {
                    rel_bias[(h * mm + i) * mm + j] = table[idx * heads + h];
                }
            }
        }
        Ok(SwinBlock {
            dim,
            heads,
            window,
            shift,
            norm1: LayerNorm::load(w, &format!("{prefix}norm1"), dim, LN_EPS)?,
            qkv: Linear::load(w, &format!("{prefix}attn.qkv"), 3 * dim, dim)?,
            proj: Linear::load(w, &format!("{prefix}attn.proj"), dim, dim)?,
            rel_bias,
            norm2: LayerNorm::load(w, &format!("{prefix}norm2"), dim, LN_EPS)?,
            fc1: Linear::load(w, &format!("{prefix}mlp.fc1"), mlp_hidden, dim)?,
            fc2: Linear::load(w, &format!("{prefix}mlp.fc2"), dim, mlp_hidden)?,
        })
    }

    /// x: one image's tokens [h·w, C], updated in place. `region_ids` is the stage's
    /// [`WindowGrid::region_ids`] (used only when this block is shifted).
    pub fn forward(
        &self,
        x: &mut [f32],
        h: usize,
        w: usize,
        region_ids: Option<&[u8]>,
    ) -> Result<()> {
        let c = self.dim;
        if x.len() != h * w * c {
            return Err(Error::shape(
                "SwinBlock",
                format!("tokens have {} values, expected {h}x{w}x{c}", x.len()),
            ));
        }
        let g = WindowGrid::new(h, w, self.window);
        let mm = self.window * self.window;
        let nw = g.num_windows();
        let mask = if self.shift > 0 {
            let ids = region_ids.ok_or_else(|| {
                Error::Invalid("SwinBlock: a shifted block needs the stage's region ids".into())
            })?;
            if ids.len() != nw * mm {
                return Err(Error::shape(
                    "SwinBlock",
                    format!(
                        "region ids have {} entries, expected {}",
                        ids.len(),
                        nw * mm
                    ),
                ));
            }
            Some(ids)
        } else {
            None
        };

        // LN1, then pad (zeros after the LN, spec §8.14), shift and partition in one gather.
        let mut y = x.to_vec();
        self.norm1.apply(&mut y)?;
        let mut win = vec![0.0f32; nw * mm * c];
        win.par_chunks_mut(mm * c)
            .enumerate()
            .for_each(|(wi, wbuf)| {
                for (t, dst) in wbuf.chunks_mut(c).enumerate() {
                    let (r, col) = g.source(wi, t, self.shift);
                    if r < h && col < w {
                        dst.copy_from_slice(&y[(r * w + col) * c..(r * w + col + 1) * c]);
                    }
                }
            });
        drop(y);

        let qkv = self.qkv.forward(&win)?;
        let attn = self.window_attention(&qkv, nw, mask);
        let out = self.proj.forward(&attn)?;

        // Reverse windows, roll back, crop, residual: each valid token is written by exactly
        // one window slot, so scatter by recomputing the source position.
        let xs = SyncPtr(x.as_mut_ptr());
        (0..nw).into_par_iter().for_each(|wi| {
            let xs = &xs;
            for t in 0..mm {
                let (r, col) = g.source(wi, t, self.shift);
                if r < h && col < w {
                    let src = &out[(wi * mm + t) * c..(wi * mm + t + 1) * c];
                    // SAFETY: (r, col) ↦ window slot is a bijection between the valid tokens and
                    // a subset of the slots (the roll is a permutation of the padded grid), so
                    // no two iterations write the same row; the row lies inside `x` because
                    // r < h, col < w and x.len() == h·w·c was checked above.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(xs.0.add((r * w + col) * c), c) };
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += *s;
                    }
                }
            }
        });

        // MLP with exact GELU.
        let mut z = x.to_vec();
        self.norm2.apply(&mut z)?;
        let mut hdn = self.fc1.forward(&z)?;
        hdn.par_iter_mut().for_each(|v| *v = nn::gelu(*v));
        let o = self.fc2.forward(&hdn)?;
        x.par_iter_mut()
            .zip(o.par_iter())
            .for_each(|(a, b)| *a += *b);
        Ok(())
    }

    /// Window attention on qkv [nW·M², 3C] (q, k, v then heads) → [nW·M², C], heads concatenated.
    fn window_attention(&self, qkv: &[f32], nw: usize, region_ids: Option<&[u8]>) -> Vec<f32> {
        let c = self.dim;
        let mm = self.window * self.window;
        let hd = c / self.heads;
        let scale = (hd as f32).powf(-0.5);
        let mut out = vec![0.0f32; nw * mm * c];
        out.par_chunks_mut(mm * c)
            .enumerate()
            .for_each(|(wi, obuf)| {
                let wq = &qkv[wi * mm * 3 * c..(wi + 1) * mm * 3 * c];
                let ids = region_ids.map(|r| &r[wi * mm..(wi + 1) * mm]);
                let mut q = vec![0.0f32; mm * hd];
                // K transposed to [hd, M²] so a score row is hd axpys over contiguous keys
                // (vectorises, and sums over d in order like a plain dot product).
                let mut kt = vec![0.0f32; hd * mm];
                let mut v = vec![0.0f32; mm * hd];
                let mut s = vec![0.0f32; mm];
                for head in 0..self.heads {
                    let off = head * hd;
                    for t in 0..mm {
                        let row = &wq[t * 3 * c..(t + 1) * 3 * c];
                        // q is scaled before the product, as swint.py:122.
                        for (dst, &src) in
                            q[t * hd..(t + 1) * hd].iter_mut().zip(&row[off..off + hd])
                        {
                            *dst = src * scale;
                        }
                        for (d, &kv) in row[c + off..c + off + hd].iter().enumerate() {
                            kt[d * mm + t] = kv;
                        }
                        v[t * hd..(t + 1) * hd]
                            .copy_from_slice(&row[2 * c + off..2 * c + off + hd]);
                    }
                    let bias = &self.rel_bias[head * mm * mm..(head + 1) * mm * mm];
                    for i in 0..mm {
                        s.fill(0.0);
                        for (&qd, krow) in q[i * hd..(i + 1) * hd].iter().zip(kt.chunks_exact(mm)) {
                            for (e, &k) in s.iter_mut().zip(krow) {
                                *e += qd * k;
                            }
                        }
                        for (e, &b) in s.iter_mut().zip(&bias[i * mm..(i + 1) * mm]) {
                            *e += b;
                        }
                        if let Some(ids) = ids {
                            let idi = ids[i];
                            for (e, &idj) in s.iter_mut().zip(ids) {
                                if idj != idi {
                                    *e += SHIFT_MASK;
                                }
                            }
                        }
                        let mx = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let mut sum = 0.0f32;
                        for e in s.iter_mut() {
                            *e = (*e - mx).exp();
                            sum += *e;
                        }
                        let inv = 1.0 / sum;
                        let acc = &mut obuf[i * c + off..i * c + off + hd];
                        acc.fill(0.0);
                        for (&p, vj) in s.iter().zip(v.chunks_exact(hd)) {
                            let p = p * inv;
                            for (a, &x) in acc.iter_mut().zip(vj) {
                                *a += p * x;
                            }
                        }
                    }
                }
            });
        out
    }
}

/// A raw pointer that rayon tasks may share; each task writes disjoint rows (see the SAFETY
/// comment at the use).
struct SyncPtr(*mut f32);
// SAFETY: the pointer is only dereferenced for provably disjoint rows of one live buffer.
unsafe impl Sync for SyncPtr {}
// SAFETY: as above.
unsafe impl Send for SyncPtr {}

/// PatchMerging: 2×2 neighbourhood concat (x0 (even,even), x1 (odd row, even col),
/// x2 (even row, odd col), x3 (odd,odd), spec §8.16), LN(4C), Linear(4C→2C, no bias).
#[derive(Clone, Debug)]
pub struct PatchMerging {
    pub dim: usize,
    pub norm: LayerNorm,
    pub reduction: Linear,
}

impl PatchMerging {
    /// `prefix` like "backbone.body.layers.0.downsample.".
    pub fn load(w: &WeightMap, prefix: &str, dim: usize) -> Result<Self> {
        Ok(PatchMerging {
            dim,
            norm: LayerNorm::load(w, &format!("{prefix}norm"), 4 * dim, LN_EPS)?,
            reduction: Linear::load_no_bias(w, &format!("{prefix}reduction"), 2 * dim, 4 * dim)?,
        })
    }

    /// Tokens [h·w, C] → tokens [⌈h/2⌉·⌈w/2⌉, 2C] and the new size.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let c = self.dim;
        if x.len() != h * w * c {
            return Err(Error::shape(
                "PatchMerging",
                format!("tokens have {} values, expected {h}x{w}x{c}", x.len()),
            ));
        }
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let mut cat = vec![0.0f32; oh * ow * 4 * c];
        cat.par_chunks_mut(4 * c).enumerate().for_each(|(p, dst)| {
            let (oy, ox) = (p / ow, p % ow);
            for (q, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let (y, xx) = (2 * oy + dy, 2 * ox + dx);
                // Odd sizes are zero-padded at the bottom/right.
                if y < h && xx < w {
                    dst[q * c..(q + 1) * c]
                        .copy_from_slice(&x[(y * w + xx) * c..(y * w + xx + 1) * c]);
                }
            }
        });
        self.norm.apply(&mut cat)?;
        Ok((self.reduction.forward(&cat)?, oh, ow))
    }
}

/// One stage (GLIP's BasicLayer): blocks alternating W-MSA / SW-MSA, optional PatchMerging.
#[derive(Clone, Debug)]
pub struct SwinStage {
    pub blocks: Vec<SwinBlock>,
    pub downsample: Option<PatchMerging>,
    pub window: usize,
}

impl SwinStage {
    /// `prefix` like "backbone.body.layers.0.".
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &WeightMap,
        prefix: &str,
        dim: usize,
        depth: usize,
        heads: usize,
        window: usize,
        mlp_hidden: usize,
        downsample: bool,
    ) -> Result<Self> {
        let blocks = (0..depth)
            .map(|b| {
                let shift = if b % 2 == 0 { 0 } else { window / 2 };
                SwinBlock::load(
                    w,
                    &format!("{prefix}blocks.{b}."),
                    dim,
                    heads,
                    window,
                    shift,
                    mlp_hidden,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if downsample {
            Some(PatchMerging::load(w, &format!("{prefix}downsample."), dim)?)
        } else {
            None
        };
        Ok(SwinStage {
            blocks,
            downsample,
            window,
        })
    }

    /// Runs the blocks in place on tokens [h·w, C]; the shift mask's region ids are computed
    /// once per stage on the padded grid (`swint.py:355-373`).
    pub fn forward_blocks(&self, x: &mut [f32], h: usize, w: usize) -> Result<()> {
        let ids = WindowGrid::new(h, w, self.window).region_ids(self.window / 2);
        for b in &self.blocks {
            b.forward(x, h, w, Some(&ids))?;
        }
        Ok(())
    }
}

/// The whole backbone: patch embed, stages, per-stage output norms.
#[derive(Clone, Debug)]
pub struct Swin {
    pub cfg: SwinConfig,
    pub patch_embed: PatchEmbed,
    pub stages: Vec<SwinStage>,
    /// `norm{i}` per stage; None where GLIP uses Identity.
    pub out_norms: Vec<Option<LayerNorm>>,
}

impl Swin {
    /// `prefix` is the body's key prefix, "backbone.body." in a GLIP state_dict.
    pub fn load(w: &WeightMap, prefix: &str, cfg: &SwinConfig) -> Result<Swin> {
        cfg.validate()?;
        let patch_embed = PatchEmbed::load(
            w,
            &format!("{prefix}patch_embed."),
            cfg.patch_size,
            cfg.embed_dim,
        )?;
        let n = cfg.depths.len();
        let mut stages = Vec::with_capacity(n);
        let mut out_norms = Vec::with_capacity(n);
        for i in 0..n {
            let dim = cfg.stage_channels(i);
            stages.push(SwinStage::load(
                w,
                &format!("{prefix}layers.{i}."),
                dim,
                cfg.depths[i],
                cfg.num_heads[i],
                cfg.window_size,
                cfg.mlp_hidden(dim),
                i + 1 < n,
            )?);
            out_norms.push(if i == 0 && !cfg.norm_first_stage {
                None
            } else {
                Some(LayerNorm::load(
                    w,
                    &format!("{prefix}norm{i}"),
                    dim,
                    LN_EPS,
                )?)
            });
        }
        Ok(Swin {
            cfg: cfg.clone(),
            patch_embed,
            stages,
            out_norms,
        })
    }

    /// image [N, 3, H, W] → the stage outputs [C2, C3, C4, C5] (strides 4..32), NCHW.
    pub fn forward(&self, image: &FeatureMap) -> Result<Vec<FeatureMap>> {
        if image.c != 3 {
            return Err(Error::shape(
                "Swin",
                format!("expected a 3-channel image, got {} channels", image.c),
            ));
        }
        let n_st = self.stages.len();
        let mut outs: Vec<Option<FeatureMap>> = vec![None; n_st];
        for b in 0..image.n {
            let (mut x, mut h, mut w) =
                self.patch_embed
                    .forward_tokens(image.image(b), image.h, image.w)?;
            for (i, stage) in self.stages.iter().enumerate() {
                let c = self.cfg.stage_channels(i);
                stage.forward_blocks(&mut x, h, w)?;
                let next = match &stage.downsample {
                    Some(pm) => Some(pm.forward(&x, h, w)?),
                    None => None,
                };
                let mut o = x;
                if let Some(norm) = &self.out_norms[i] {
                    norm.apply(&mut o)?;
                }
                let chw = tokens_to_chw(&o, c, h * w);
                let fm = outs[i].get_or_insert_with(|| FeatureMap {
                    n: image.n,
                    c,
                    h,
                    w,
                    data: Vec::with_capacity(image.n * c * h * w),
                });
                fm.data.extend_from_slice(&chw);
                match next {
                    Some((nx, nh, nw)) => (x, h, w) = (nx, nh, nw),
                    None => break,
                }
            }
        }
        outs.into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| {
                    Error::Invalid(format!("Swin: stage {i} produced no output (empty batch?)"))
                })
            })
            .collect()
    }
}
