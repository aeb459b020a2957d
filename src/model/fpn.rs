//! GLIP's FPN for SWINT-FPN-RETINANET with LastLevelP6P7 (spec §3.3), on the CPU:
//! laterals 1×1 + top-down nearest upsampling + 3×3 outputs, P6 from P5, P7 from ReLU(P6).

use super::{FeatureMap, WeightMap};
use crate::backend::cpu::nn;
use crate::error::{Error, Result};

/// A conv with bias, square kernel.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    /// `prefix` like "backbone.fpn.fpn_inner2." (keys `weight`, `bias`).
    pub fn load(
        w: &WeightMap,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        Ok(Conv2d {
            weight: w.f32(&format!("{prefix}weight"), &[cout, cin, k, k])?,
            bias: w.f32(&format!("{prefix}bias"), &[cout])?,
            cin,
            cout,
            k,
            stride,
            pad,
        })
    }
    pub fn forward(&self, x: &FeatureMap) -> Result<FeatureMap> {
        if x.c != self.cin {
            return Err(Error::shape(
                "Conv2d",
                format!("input has {} channels, the conv expects {}", x.c, self.cin),
            ));
        }
        let (y, oh, ow) = nn::conv2d(
            &x.data,
            x.n,
            x.c,
            x.h,
            x.w,
            &self.weight,
            self.cout,
            self.k,
            Some(&self.bias),
            self.stride,
            self.pad,
        )?;
        FeatureMap::new(x.n, self.cout, oh, ow, y)
    }
}

/// `F.interpolate(x, size=(oh, ow), mode="nearest")`: src = min(floor(dst · in/out), in − 1)
/// with the scale computed in f32, as PyTorch does for an explicit output size.
pub fn upsample_nearest(x: &FeatureMap, oh: usize, ow: usize) -> FeatureMap {
    let sy = x.h as f32 / oh as f32;
    let sx = x.w as f32 / ow as f32;
    let src_y: Vec<usize> = (0..oh)
        .map(|o| ((o as f32 * sy).floor() as usize).min(x.h - 1))
        .collect();
    let src_x: Vec<usize> = (0..ow)
        .map(|o| ((o as f32 * sx).floor() as usize).min(x.w - 1))
        .collect();
    let mut data = vec![0.0f32; x.n * x.c * oh * ow];
    for (plane, dst) in data.chunks_mut(oh * ow).enumerate() {
        let src = &x.data[plane * x.h * x.w..(plane + 1) * x.h * x.w];
        for (oy, &iy) in src_y.iter().enumerate() {
            for (ox, &ix) in src_x.iter().enumerate() {
                dst[oy * ow + ox] = src[iy * x.w + ix];
            }
        }
    }
    FeatureMap {
        n: x.n,
        c: x.c,
        h: oh,
        w: ow,
        data,
    }
}

/// FPN with P6/P7. Inputs C3, C4, C5 (the Swin stage outputs at strides 8, 16, 32).
#[derive(Clone, Debug)]
pub struct Fpn {
    /// fpn_inner2/3/4 (1×1) and fpn_layer2/3/4 (3×3, pad 1), for C3, C4, C5 in that order.
    pub inner: [Conv2d; 3],
    pub layer: [Conv2d; 3],
    pub p6: Conv2d,
    pub p7: Conv2d,
    pub out_channels: usize,
}

impl Fpn {
    /// `prefix` is "backbone.fpn." in a GLIP state_dict; `in_channels` are C3, C4, C5's.
    pub fn load(
        w: &WeightMap,
        prefix: &str,
        in_channels: [usize; 3],
        out_channels: usize,
    ) -> Result<Fpn> {
        let o = out_channels;
        let inner = |i: usize| {
            Conv2d::load(
                w,
                &format!("{prefix}fpn_inner{}.", i + 2),
                in_channels[i],
                o,
                1,
                1,
                0,
            )
        };
        let layer =
            |i: usize| Conv2d::load(w, &format!("{prefix}fpn_layer{}.", i + 2), o, o, 3, 1, 1);
        Ok(Fpn {
            inner: [inner(0)?, inner(1)?, inner(2)?],
            layer: [layer(0)?, layer(1)?, layer(2)?],
            // LastLevelP6P7(in = out = out_channels) takes P5 (use_P5), fpn.py:148-151.
            p6: Conv2d::load(w, &format!("{prefix}top_blocks.p6."), o, o, 3, 2, 1)?,
            p7: Conv2d::load(w, &format!("{prefix}top_blocks.p7."), o, o, 3, 2, 1)?,
            out_channels: o,
        })
    }

    /// (C3, C4, C5) → [P3, P4, P5, P6, P7].
    pub fn forward(
        &self,
        c3: &FeatureMap,
        c4: &FeatureMap,
        c5: &FeatureMap,
    ) -> Result<[FeatureMap; 5]> {
        if c3.n != c4.n || c4.n != c5.n {
            return Err(Error::shape(
                "Fpn",
                format!("batch sizes differ: {} / {} / {}", c3.n, c4.n, c5.n),
            ));
        }
        let mut last = self.inner[2].forward(c5)?;
        let p5 = self.layer[2].forward(&last)?;
        let mut outs = Vec::with_capacity(2);
        for (i, c) in [(1usize, c4), (0, c3)] {
            let mut lat = self.inner[i].forward(c)?;
            let up = upsample_nearest(&last, lat.h, lat.w);
            for (a, b) in lat.data.iter_mut().zip(&up.data) {
                *a += *b;
            }
            outs.push(self.layer[i].forward(&lat)?);
            last = lat;
        }
        let p6 = self.p6.forward(&p5)?;
        let mut r6 = p6.clone();
        r6.data.iter_mut().for_each(|v| *v = v.max(0.0));
        let p7 = self.p7.forward(&r6)?;
        let p3 = outs
            .pop()
            .ok_or_else(|| Error::Invalid("Fpn: missing P3".into()))?;
        let p4 = outs
            .pop()
            .ok_or_else(|| Error::Invalid("Fpn: missing P4".into()))?;
        Ok([p3, p4, p5, p6, p7])
    }
}
