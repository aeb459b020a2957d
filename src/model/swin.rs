//! Swin Transformer v1 backbone as GLIP's `modeling/backbone/swint.py` (spec §3.2), over
//! the op interface.
//!
//! Tokens are [B, H, W, C] backend tensors. A block gathers its (shifted, zero-padded)
//! windows into one [B·nW, M², C] tensor so the projections are single GEMMs, runs window
//! attention over all windows, and adds the result back onto the residual.

use super::layers::{LayerNorm, Linear};
use super::vars::{Init, Vars};
use crate::backend::ops::SWIN_SHIFT_MASK;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use crate::backend::ops::WindowGrid;

/// All Swin layer norms use eps 1e-5 (spec §8.23).
const LN_EPS: f32 = 1e-5;

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

/// Patch embedding: zero-pad to /patch, conv patch×patch stride patch, LN over channels.
pub struct PatchEmbed {
    pub proj_w: Tensor,
    pub proj_b: Tensor,
    pub norm: LayerNorm,
    pub patch: usize,
}

impl PatchEmbed {
    /// `vars` at "backbone.body.patch_embed".
    pub fn new(vars: &Vars, patch: usize, dim: usize) -> Result<Self> {
        Ok(PatchEmbed {
            proj_w: vars.get("proj.weight", &[dim, 3, patch, patch], Init::FanIn)?,
            proj_b: vars.get("proj.bias", &[dim], Init::Small)?,
            norm: LayerNorm::new(&vars.pp("norm"), dim, LN_EPS)?,
            patch,
        })
    }

    /// Image batch [N, 3, H, W] → tokens [N, H/p, W/p, dim] after the LN.
    pub fn forward_tokens(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let [_, c, _, _] = x.dims::<4>("PatchEmbed")?;
        if c != 3 {
            return Err(Error::shape(
                "PatchEmbed",
                format!("expected 3 input channels, got {c}"),
            ));
        }
        let x = be.pad_to_multiple(x, self.patch)?;
        let y = be.conv2d(&x, &self.proj_w, Some(&self.proj_b), self.patch, 0)?;
        self.norm.forward(be, &be.nchw_to_nhwc(&y)?)
    }

    /// NCHW image batch → NCHW patch features (what GLIP's PatchEmbed module returns).
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        be.nhwc_to_nchw(&self.forward_tokens(be, x)?)
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
                    m[i * mm + j] = SWIN_SHIFT_MASK;
                }
            }
        }
    }
    mask
}

/// One Swin block (W-MSA if `shift == 0`, SW-MSA otherwise) followed by the MLP.
pub struct SwinBlock {
    pub dim: usize,
    pub heads: usize,
    pub window: usize,
    pub shift: usize,
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    /// The relative position bias expanded to [heads, M², M²].
    pub rel_bias: Tensor,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl SwinBlock {
    /// `vars` at e.g. "backbone.body.layers.0.blocks.1".
    pub fn new(
        vars: &Vars,
        dim: usize,
        heads: usize,
        window: usize,
        shift: usize,
        mlp_hidden: usize,
    ) -> Result<Self> {
        let m = window;
        let side = 2 * m - 1;
        let attn = vars.pp("attn");
        let table = attn.host(
            "relative_position_bias_table",
            &[side * side, heads],
            Init::Small,
        )?;
        let table = table.f32s()?;
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
            norm1: LayerNorm::new(&vars.pp("norm1"), dim, LN_EPS)?,
            qkv: Linear::new(&attn.pp("qkv"), 3 * dim, dim)?,
            proj: Linear::new(&attn.pp("proj"), dim, dim)?,
            rel_bias: vars.weight_from_host(&Tensor::from_f32(&[heads, mm, mm], rel_bias)?)?,
            norm2: LayerNorm::new(&vars.pp("norm2"), dim, LN_EPS)?,
            fc1: Linear::new(&vars.pp("mlp").pp("fc1"), mlp_hidden, dim)?,
            fc2: Linear::new(&vars.pp("mlp").pp("fc2"), dim, mlp_hidden)?,
        })
    }

    /// x: tokens [B, H, W, C] → the block's output (x is updated in place where the backend
    /// can). `region_ids` is the stage's [`WindowGrid::region_ids`] on the backend (used only
    /// when this block is shifted).
    pub fn forward(
        &self,
        be: &dyn Backend,
        x: Tensor,
        region_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mask = if self.shift > 0 {
            Some(region_ids.ok_or_else(|| {
                Error::Invalid("SwinBlock: a shifted block needs the stage's region ids".into())
            })?)
        } else {
            None
        };
        // LN1, then pad (zeros after the LN, spec §8.14), shift and partition in one gather.
        let win = be.window_partition(&self.norm1.forward(be, &x)?, self.window, self.shift)?;
        let qkv = self.qkv.forward(be, &win)?;
        drop(win);
        let attn = be.window_attention(&qkv, &self.rel_bias, mask, self.heads)?;
        let out = self.proj.forward(be, &attn)?;
        // Reverse windows, roll back, crop, residual.
        let x = be.window_merge_add(x, &out, self.window, self.shift)?;
        // MLP with exact GELU.
        let h = be.gelu(self.fc1.forward(be, &self.norm2.forward(be, &x)?)?)?;
        let o = self.fc2.forward(be, &h)?;
        drop(h);
        be.add(x, &o)
    }
}

/// PatchMerging: 2×2 neighbourhood concat (spec §8.16), LN(4C), Linear(4C→2C, no bias).
pub struct PatchMerging {
    pub dim: usize,
    pub norm: LayerNorm,
    pub reduction: Linear,
}

impl PatchMerging {
    /// `vars` at e.g. "backbone.body.layers.0.downsample".
    pub fn new(vars: &Vars, dim: usize) -> Result<Self> {
        Ok(PatchMerging {
            dim,
            norm: LayerNorm::new(&vars.pp("norm"), 4 * dim, LN_EPS)?,
            reduction: Linear::no_bias(&vars.pp("reduction"), 2 * dim, 4 * dim)?,
        })
    }

    /// Tokens [B, H, W, C] → [B, ⌈H/2⌉, ⌈W/2⌉, 2C].
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let cat = self.norm.forward(be, &be.patch_merge_gather(x)?)?;
        self.reduction.forward(be, &cat)
    }
}

/// One stage (GLIP's BasicLayer): blocks alternating W-MSA / SW-MSA, optional PatchMerging.
pub struct SwinStage {
    pub blocks: Vec<SwinBlock>,
    pub downsample: Option<PatchMerging>,
    pub window: usize,
}

impl SwinStage {
    /// `vars` at e.g. "backbone.body.layers.0".
    pub fn new(
        vars: &Vars,
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
                SwinBlock::new(
                    &vars.pp("blocks").pp(b),
                    dim,
                    heads,
                    window,
                    shift,
                    mlp_hidden,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if downsample {
            Some(PatchMerging::new(&vars.pp("downsample"), dim)?)
        } else {
            None
        };
        Ok(SwinStage {
            blocks,
            downsample,
            window,
        })
    }

    /// The stage's shift-mask region ids for tokens of h×w, on the backend: computed once
    /// per stage on the padded grid (`swint.py:355-373`).
    pub fn region_ids(&self, be: &dyn Backend, h: usize, w: usize) -> Result<Tensor> {
        let g = WindowGrid::new(h, w, self.window);
        let mm = self.window * self.window;
        be.upload(&Tensor::from_i32(
            &[g.num_windows(), mm],
            g.region_ids(self.window / 2),
        )?)
    }

    /// Runs the blocks on tokens [B, H, W, C].
    pub fn forward_blocks(&self, be: &dyn Backend, x: Tensor) -> Result<Tensor> {
        let [_, h, w, _] = x.dims::<4>("SwinStage")?;
        let ids = self.region_ids(be, h, w)?;
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(be, x, Some(&ids))?;
        }
        Ok(x)
    }
}

/// The whole backbone: patch embed, stages, per-stage output norms.
pub struct Swin {
    pub cfg: SwinConfig,
    pub patch_embed: PatchEmbed,
    pub stages: Vec<SwinStage>,
    /// `norm{i}` per stage; None where GLIP uses Identity.
    pub out_norms: Vec<Option<LayerNorm>>,
}

impl Swin {
    /// `vars` at the body, "backbone.body" in a GLIP state_dict.
    pub fn new(vars: &Vars, cfg: &SwinConfig) -> Result<Swin> {
        cfg.validate()?;
        let patch_embed = PatchEmbed::new(&vars.pp("patch_embed"), cfg.patch_size, cfg.embed_dim)?;
        let n = cfg.depths.len();
        let mut stages = Vec::with_capacity(n);
        let mut out_norms = Vec::with_capacity(n);
        for i in 0..n {
            let dim = cfg.stage_channels(i);
            stages.push(SwinStage::new(
                &vars.pp("layers").pp(i),
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
                Some(LayerNorm::new(&vars.pp(format!("norm{i}")), dim, LN_EPS)?)
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
    pub fn forward(&self, be: &dyn Backend, image: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.patch_embed.forward_tokens(be, image)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for (stage, norm) in self.stages.iter().zip(&self.out_norms) {
            x = stage.forward_blocks(be, x)?;
            outs.push(match norm {
                Some(n) => be.nhwc_to_nchw(&n.forward(be, &x)?)?,
                None => be.nhwc_to_nchw(&x)?,
            });
            if let Some(pm) = &stage.downsample {
                x = pm.forward(be, &x)?;
            }
        }
        Ok(outs)
    }
}
