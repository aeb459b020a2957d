//! GLIP's DyConv (one VL-DyHead tower layer: `modeling/rpn/vldyhead.py` DyConv with
//! deformable Conv3x3Norm, DyFuse attention and DYReLU), over the op interface. Spec §3.5.3.
//!
//! Per level l (P3..P7), with om = offset(x_l), off = om[:, :18], mask = sigmoid(om[:, 18:]):
//! terms = [GN1(DCN1(x_l)), GN2(DCN2_stride2(x_{l-1})) if l > 0,
//!          upsample_ac(GN0(DCN0(x_{l+1}))) if l < 4], all with level l's off/mask — the last
//! one reading the level-l buffer as if it had level l+1's size (GLIP's quirk, §8.1);
//! y_l = Σ a_k·term_k / n with a_k = h_sigmoid(ReLU(conv1x1(avgpool(term_k)))) per image;
//! out_l = DYReLU(y_l).

use super::layers::{Conv2d, Linear};
use super::vars::{Init, Vars};
use crate::backend::ops::DEFORM_TAPS as TAPS;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Pyramid levels DyConv mixes (P3..P7).
pub const LEVELS: usize = 5;

/// ModulatedDeformConv(C→C, 3x3, pad 1, bias) followed by GroupNorm(16, C).
pub struct DeformConvNorm {
    pub stride: usize,
    /// MODEL.GROUP_NORM.NUM_GROUPS / EPSILON (GLIP-T: 16, 1e-5).
    pub groups: usize,
    pub eps: f32,
    /// [C, C, 3, 3], [C]
    pub weight: Tensor,
    pub bias: Tensor,
    pub gn_weight: Tensor,
    pub gn_bias: Tensor,
}

impl DeformConvNorm {
    fn new(vars: &Vars, c: usize, stride: usize, gn: (usize, f32)) -> Result<Self> {
        Ok(DeformConvNorm {
            stride,
            groups: gn.0,
            eps: gn.1,
            weight: vars.get("conv.weight", &[c, c, 3, 3], Init::FanIn)?,
            bias: vars.get("conv.bias", &[c], Init::Small)?,
            gn_weight: vars.get("bn.weight", &[c], Init::Ones)?,
            gn_bias: vars.get("bn.bias", &[c], Init::Small)?,
        })
    }

    /// DCN(x) with offsets/mask of a level of size `src` (h, w): [B, 18|9, src_h, src_w].
    fn conv(
        &self,
        be: &dyn Backend,
        x: &Tensor,
        off: &Tensor,
        mask: &Tensor,
        src: (usize, usize),
    ) -> Result<Tensor> {
        be.deform_conv3x3(x, off, mask, &self.weight, &self.bias, self.stride, src)
    }

    /// The GN of every level this module convolved, in one op.
    fn norm(&self, be: &dyn Backend, ys: &[Tensor]) -> Result<Vec<Tensor>> {
        let ys: Vec<&Tensor> = ys.iter().collect();
        be.group_norm(&ys, &self.gn_weight, &self.gn_bias, self.groups, self.eps)
    }
}

/// DYReLU(C, C) with GLIP's defaults: reduction 4, λ_a 2, K2, bias, init_a [1, 0], init_b [0, 0].
pub struct DyRelu {
    /// C → C/4 → 4C.
    pub fc1: Linear,
    pub fc2: Linear,
}

impl DyRelu {
    fn new(vars: &Vars, c: usize) -> Result<Self> {
        let sq = c / 4;
        Ok(DyRelu {
            fc1: Linear::new(&vars.pp("fc.0"), sq, c)?,
            fc2: Linear::new(&vars.pp("fc.2"), 4 * c, sq)?,
        })
    }

    fn forward(&self, be: &dyn Backend, y: Tensor) -> Result<Tensor> {
        let z = be.relu(self.fc1.forward(be, &be.avg_pool(&y)?)?)?;
        let z = be.h_sigmoid(self.fc2.forward(be, &z)?)?;
        be.dyrelu_apply(y, &z)
    }
}

/// Intermediates of one forward, for tests against the golden taps.
pub struct DyConvTrace {
    /// Raw 27-channel offset conv output per level, [B, 27, H_l, W_l].
    pub offset_mask: Vec<Tensor>,
    /// Σ a_k·term_k / n per level (the DYReLU input).
    pub pre_dyrelu: Vec<Tensor>,
    pub output: Vec<Tensor>,
}

/// One DyConv layer of the VL-DyHead tower.
pub struct DyConv {
    pub channels: usize,
    /// DyConv[0] (coarser level, stride 1), [1] (same level), [2] (finer level, stride 2).
    pub convs: [DeformConvNorm; 3],
    /// offset conv C → 27, 3×3, pad 1.
    pub offset: Conv2d,
    /// AttnConv 1×1 C → 1 (as a Linear on the pooled features).
    pub attn: Linear,
    pub relu: DyRelu,
}

impl DyConv {
    /// `DyConv.{0,1,2}.{conv,bn}.*`, `offset.*`, `AttnConv.1.*`, `relu.fc.{0,2}.*` under
    /// `vars` (e.g. `rpn.head.dyhead_tower.2`); `gn` is the GroupNorm's (groups, eps)
    /// (MODEL.GROUP_NORM.NUM_GROUPS / EPSILON).
    pub fn new(vars: &Vars, channels: usize, gn: (usize, f32)) -> Result<DyConv> {
        let c = channels;
        if c == 0 || gn.0 == 0 || !c.is_multiple_of(gn.0) {
            return Err(Error::Config(format!(
                "DyConv channels {c} must be a positive multiple of {} GroupNorm groups",
                gn.0
            )));
        }
        let a = vars.pp("AttnConv.1");
        let attn_w = a.host("weight", &[1, c, 1, 1], Init::FanIn)?;
        Ok(DyConv {
            channels: c,
            convs: [
                DeformConvNorm::new(&vars.pp("DyConv.0"), c, 1, gn)?,
                DeformConvNorm::new(&vars.pp("DyConv.1"), c, 1, gn)?,
                DeformConvNorm::new(&vars.pp("DyConv.2"), c, 2, gn)?,
            ],
            offset: Conv2d::new(&vars.pp("offset"), c, 3 * TAPS, 3, 1, 1)?,
            attn: Linear {
                weight: a.weight_from_host(&attn_w.reshape(&[1, c])?)?,
                bias: Some(a.get("bias", &[1], Init::Small)?),
            },
            relu: DyRelu::new(&vars.pp("relu"), c)?,
        })
    }

    /// The five output levels for five input levels (P3..P7, same batch and channels).
    pub fn forward(&self, be: &dyn Backend, x: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(self.run(be, x, false)?.output)
    }

    /// [`forward`](Self::forward) keeping the intermediates.
    pub fn forward_traced(&self, be: &dyn Backend, x: &[Tensor]) -> Result<DyConvTrace> {
        self.run(be, x, true)
    }

    /// The forward; with `trace` the offset/mask and pre-DYReLU maps are kept too.
    fn run(&self, be: &dyn Backend, x: &[Tensor], trace: bool) -> Result<DyConvTrace> {
        const OP: &str = "DyConv";
        if x.len() != LEVELS {
            return Err(Error::shape(
                OP,
                format!("{} levels, expected {LEVELS}", x.len()),
            ));
        }
        let dims = x
            .iter()
            .map(|t| t.dims::<4>(OP))
            .collect::<Result<Vec<_>>>()?;
        let (n, c) = (dims[0][0], self.channels);
        for (l, &[tn, tc, h, w]) in dims.iter().enumerate() {
            if tn != n || tc != c || h == 0 || w == 0 {
                return Err(Error::shape(
                    OP,
                    format!(
                        "level {l} is [{tn}, {tc}, {h}, {w}], expected batch {n}, {c} channels"
                    ),
                ));
            }
        }
        let mut out = DyConvTrace {
            offset_mask: Vec::new(),
            pre_dyrelu: Vec::new(),
            output: Vec::new(),
        };
        // Every level's offsets and mask, then each conv module's DCNs over the levels it
        // reads and one GroupNorm op for all of them (one grouped launch on a device), then
        // the fusion per level.
        let mut offs = Vec::with_capacity(LEVELS);
        for xl in x {
            let om = self.offset.forward(be, xl)?;
            let (off, mask) = be.split_offset_mask(&om)?;
            offs.push((off, mask));
            if trace {
                out.offset_mask.push(om);
            }
        }
        let hw = |l: usize| (dims[l][2], dims[l][3]);
        let mut same = Vec::with_capacity(LEVELS);
        let mut down = Vec::with_capacity(LEVELS - 1);
        let mut up = Vec::with_capacity(LEVELS - 1);
        for (l, (off, mask)) in offs.iter().enumerate() {
            let (h, w) = hw(l);
            same.push(self.convs[1].conv(be, &x[l], off, mask, (h, w))?);
            if l > 0 {
                let t = self.convs[2].conv(be, &x[l - 1], off, mask, (h, w))?;
                let [_, _, th, tw] = t.dims::<4>(OP)?;
                if (th, tw) != (h, w) {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "stride-2 conv of level {} gives {th}x{tw}, level {l} is {h}x{w}",
                            l - 1
                        ),
                    ));
                }
                down.push(t);
            }
            if l + 1 < LEVELS {
                let (nh, nw) = hw(l + 1);
                if nh * nw > h * w {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "level {} ({nh}x{nw}) is larger than level {l} ({h}x{w})",
                            l + 1
                        ),
                    ));
                }
                up.push(self.convs[0].conv(be, &x[l + 1], off, mask, (h, w))?);
            }
        }
        drop(offs);
        let mut same = self.convs[1].norm(be, &same)?.into_iter();
        let mut down = self.convs[2].norm(be, &down)?.into_iter();
        let mut up = self.convs[0].norm(be, &up)?.into_iter();
        let missing = || Error::Invalid("DyConv: a level without its conv term".into());
        for l in 0..LEVELS {
            let (h, w) = hw(l);
            let mut terms = vec![same.next().ok_or_else(missing)?];
            if l > 0 {
                terms.push(down.next().ok_or_else(missing)?);
            }
            if l + 1 < LEVELS {
                terms.push(be.upsample_bilinear_ac(&up.next().ok_or_else(missing)?, h, w)?);
            }
            // DyFuse: a_k = h_sigmoid(ReLU(AttnConv(avgpool(term_k)))) per image.
            let inv = 1.0 / terms.len() as f32;
            let mut y: Option<Tensor> = None;
            for t in terms {
                let a = self.attn.forward(be, &be.avg_pool(&t)?)?;
                let a = be.h_sigmoid(be.relu(a)?)?;
                let term = be.scale_images(t, &a)?;
                y = Some(match y {
                    None => term,
                    Some(acc) => be.add(acc, &term)?,
                });
            }
            let y = y.ok_or_else(|| Error::Invalid("DyConv: no terms".into()))?;
            let y = be.scale(y, inv, 0.0)?;
            if trace {
                out.pre_dyrelu.push(be.duplicate(&y)?);
            }
            out.output.push(self.relu.forward(be, y)?);
        }
        Ok(out)
    }
}
