//! The CPU backend: f32 arithmetic (f16 inputs upcast losslessly), rayon threads.
//! Each kernel family's CPU twin lives in a module named like its `kernels/<family>.cu`.

pub mod bi_attn;
pub mod deform_conv;
pub mod elementwise;
pub mod gemm;
pub mod group_norm;
pub mod logits;
pub mod nms;
pub mod nn;

pub mod ops;

/// The CPU backend (its op implementations are in [`ops`]).
#[derive(Default, Clone, Copy, Debug)]
pub struct CpuBackend;
