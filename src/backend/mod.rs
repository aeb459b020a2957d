//! Backends: the CPU reference (f32 arithmetic) and CUDA (f16 storage, f32 accumulation),
//! both implementing the op interface of [`ops`].
//!
//! Every op exists on the CPU; the CPU twin of a kernel family is the reference its parity
//! test compares against, and the fallback when there is no GPU.

pub mod cpu;
pub mod cuda;
pub mod ops;
pub mod plan;

pub use ops::{Backend, SelfAttention};
