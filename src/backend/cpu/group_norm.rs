//! CPU twin of kernels/group_norm.cu: GroupNorm (nn.GroupNorm: biased variance, affine) over
//! NCHW maps, optionally followed by ReLU, and the multi-level form the GPU kernel runs (all
//! pyramid levels of one GN module in one call, levels packed in one buffer).
//!
//! Statistics are accumulated in f64 here (the reference); the GPU accumulates f32 partials
//! combined with Chan's formula.

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Activation applied after the affine transform (matches GlipGroupNormParams.activation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GnActivation {
    #[default]
    None = 0,
    Relu = 1,
}

/// One level of a packed multi-level buffer: `[batch, channels, hw]` starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GnLevel {
    pub offset: usize,
    pub hw: usize,
}

/// Geometry and parameters shared by every level of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormShape {
    pub batch: usize,
    pub channels: usize,
    pub groups: usize,
    pub eps: f32,
    pub activation: GnActivation,
}

impl GroupNormShape {
    /// GLIP's DyHead GroupNorm: 16 groups, eps 1e-5, no activation.
    pub fn glip(batch: usize, channels: usize) -> Self {
        GroupNormShape {
            batch,
            channels,
            groups: 16,
            eps: 1e-5,
            activation: GnActivation::None,
        }
    }

    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.batch == 0
            || self.channels == 0
            || self.groups == 0
            || !self.channels.is_multiple_of(self.groups)
        {
            return Err(Error::shape(op, format!("batch {} channels {} groups {}: channels must be a positive multiple of groups", self.batch, self.channels, self.groups)));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(Error::Invalid(format!(
                "{op}: eps {} must be >= 0",
                self.eps
            )));
        }
        Ok(())
    }
}

/// GroupNorm of one level `x: [batch, channels, hw]` into `y` (same shape; may not alias).
/// `weight`, `bias`: [channels].
pub fn group_norm(
    s: &GroupNormShape,
    hw: usize,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "group_norm";
    s.validate(OP)?;
    let n = s.batch * s.channels * hw;
    if x.len() != n || y.len() != n {
        return Err(Error::shape(
            OP,
            format!(
                "x {} / y {} elements, [{}, {}, {hw}] needs {n}",
                x.len(),
                y.len(),
                s.batch,
                s.channels
            ),
        ));
    }
    if weight.len() != s.channels || bias.len() != s.channels {
        return Err(Error::shape(
            OP,
            format!(
                "weight {} / bias {} elements, channels {}",
                weight.len(),
                bias.len(),
                s.channels
            ),
        ));
    }
    if hw == 0 {
        return Ok(());
    }
    let cpg = s.channels / s.groups;
    let slab = cpg * hw;
    let (eps, act) = (s.eps as f64, s.activation);
    y.par_chunks_mut(slab)
        .zip(x.par_chunks(slab))
        .enumerate()
        .for_each(|(i, (ys, xs))| {
            let g = i % s.groups;
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / slab as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / slab as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (ci, (yc, xc)) in ys.chunks_mut(hw).zip(xs.chunks(hw)).enumerate() {
                let c = g * cpg + ci;
                // Per-channel scale/shift so the inner loop is one FMA.
                let a = (rstd * weight[c] as f64) as f32;
                let b = (bias[c] as f64 - mean * rstd * weight[c] as f64) as f32;
                for (o, &v) in yc.iter_mut().zip(xc) {
                    let r = v * a + b;
                    *o = if act == GnActivation::Relu {
                        r.max(0.0)
                    } else {
                        r
                    };
                }
            }
        });
    Ok(())
}

/// The same GroupNorm applied to every level of a packed buffer (the GPU kernel's layout):
/// level l is `[batch, channels, levels[l].hw]` at `levels[l].offset` in `x` and in `y`.
/// Elements of `y` outside the levels are left as they are.
pub fn group_norm_levels(
    s: &GroupNormShape,
    levels: &[GnLevel],
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    y: &mut [f32],
) -> Result<()> {
    const OP: &str = "group_norm_levels";
    if x.len() != y.len() {
        return Err(Error::shape(
            OP,
            format!("x has {} elements, y {}", x.len(), y.len()),
        ));
    }
    for (l, lv) in levels.iter().enumerate() {
        let n = s.batch * s.channels * lv.hw;
        let end = lv
            .offset
            .checked_add(n)
            .ok_or_else(|| Error::shape(OP, format!("level {l} offset overflows")))?;
        if end > x.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "level {l} spans [{}, {end}) of a {}-element buffer",
                    lv.offset,
                    x.len()
                ),
            ));
        }
        group_norm(
            s,
            lv.hw,
            &x[lv.offset..end],
            weight,
            bias,
            &mut y[lv.offset..end],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn normalises_each_group() -> crate::Result<()> {
        let s = GroupNormShape {
            batch: 2,
            channels: 4,
            groups: 2,
            eps: 0.0,
            activation: GnActivation::None,
        };
        let hw = 5;
        let mut rng = Rng::new(3);
        let x = rng
            .normal_vec(2 * 4 * hw, 2.0)
            .iter()
            .map(|v| v + 3.0)
            .collect::<Vec<_>>();
        let mut y = vec![0.0; x.len()];
        group_norm(&s, hw, &x, &[1.0; 4], &[0.0; 4], &mut y)?;
        for slab in y.chunks(2 * hw) {
            let m: f32 = slab.iter().sum::<f32>() / slab.len() as f32;
            let v: f32 = slab.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / slab.len() as f32;
            assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
        }
        Ok(())
    }

    #[test]
    fn levels_match_single_calls_and_relu() -> crate::Result<()> {
        let s = GroupNormShape {
            batch: 2,
            channels: 8,
            groups: 4,
            eps: 1e-5,
            activation: GnActivation::Relu,
        };
        let levels = [
            GnLevel { offset: 0, hw: 6 },
            GnLevel {
                offset: 2 * 8 * 6 + 4,
                hw: 3,
            },
        ];
        let total = levels[1].offset + 2 * 8 * 3;
        let mut rng = Rng::new(5);
        let x = rng.normal_vec(total, 1.0);
        let (w, b) = (rng.normal_vec(8, 1.0), rng.normal_vec(8, 1.0));
        let mut y = vec![f32::NAN; total];
        group_norm_levels(&s, &levels, &x, &w, &b, &mut y)?;
        let mut y1 = vec![0.0; 2 * 8 * 3];
        group_norm(&s, 3, &x[levels[1].offset..], &w, &b, &mut y1)?;
        assert_eq!(&y[levels[1].offset..], &y1[..]);
        assert!(y[levels[1].offset..].iter().all(|v| *v >= 0.0));
        assert!(y[96..100].iter().all(|v| v.is_nan()));
        Ok(())
    }
}
