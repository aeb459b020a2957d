//! GLIP's FPN for SWINT-FPN-RETINANET with LastLevelP6P7 (spec §3.3), over the op
//! interface: laterals 1×1 + top-down nearest upsampling + 3×3 outputs, P6 from P5, P7 from
//! ReLU(P6).

use super::layers::Conv2d;
use super::vars::Vars;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// FPN with P6/P7. Inputs C3, C4, C5 (the Swin stage outputs at strides 8, 16, 32).
pub struct Fpn {
    /// fpn_inner2/3/4 (1×1) and fpn_layer2/3/4 (3×3, pad 1), for C3, C4, C5 in that order.
    pub inner: [Conv2d; 3],
    pub layer: [Conv2d; 3],
    pub p6: Conv2d,
    pub p7: Conv2d,
    pub out_channels: usize,
}

impl Fpn {
    /// `vars` at "backbone.fpn" in a GLIP state_dict; `in_channels` are C3, C4, C5's.
    pub fn new(vars: &Vars, in_channels: [usize; 3], out_channels: usize) -> Result<Fpn> {
        let o = out_channels;
        let inner = |i: usize| {
            Conv2d::new(
                &vars.pp(format!("fpn_inner{}", i + 2)),
                in_channels[i],
                o,
                1,
                1,
                0,
            )
        };
        let layer = |i: usize| Conv2d::new(&vars.pp(format!("fpn_layer{}", i + 2)), o, o, 3, 1, 1);
        Ok(Fpn {
            inner: [inner(0)?, inner(1)?, inner(2)?],
            layer: [layer(0)?, layer(1)?, layer(2)?],
            // LastLevelP6P7(in = out = out_channels) takes P5 (use_P5), fpn.py:148-151.
            p6: Conv2d::new(&vars.pp("top_blocks.p6"), o, o, 3, 2, 1)?,
            p7: Conv2d::new(&vars.pp("top_blocks.p7"), o, o, 3, 2, 1)?,
            out_channels: o,
        })
    }

    /// (C3, C4, C5) → [P3, P4, P5, P6, P7].
    pub fn forward(
        &self,
        be: &dyn Backend,
        c3: &Tensor,
        c4: &Tensor,
        c5: &Tensor,
    ) -> Result<[Tensor; 5]> {
        let mut last = self.inner[2].forward(be, c5)?;
        let p5 = self.layer[2].forward(be, &last)?;
        let mut outs = Vec::with_capacity(2);
        for (i, c) in [(1usize, c4), (0, c3)] {
            let lat = self.inner[i].forward(be, c)?;
            let [_, _, h, w] = lat.dims::<4>("Fpn lateral")?;
            let up = be.upsample_nearest(&last, h, w)?;
            let lat = be.add(lat, &up)?;
            outs.push(self.layer[i].forward(be, &lat)?);
            last = lat;
        }
        let p6 = self.p6.forward(be, &p5)?;
        let p7 = self.p7.forward(be, &be.relu(be.duplicate(&p6)?)?)?;
        let p3 = outs
            .pop()
            .ok_or_else(|| Error::Invalid("Fpn: missing P3".into()))?;
        let p4 = outs
            .pop()
            .ok_or_else(|| Error::Invalid("Fpn: missing P4".into()))?;
        Ok([p3, p4, p5, p6, p7])
    }
}
