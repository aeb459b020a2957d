//! CPU twin of kernels/elementwise.cu: casts and y = alpha*a + beta*b in f32 arithmetic
//! with f16 storage (round to nearest even, as __float2half_rn).

use crate::error::{Error, Result};
use half::f16;

pub fn cast_f32_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

pub fn cast_f16_f32(x: &[f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

pub fn axpby_f16(alpha: f32, a: &[f16], beta: f32, b: &[f16]) -> Result<Vec<f16>> {
    if a.len() != b.len() {
        return Err(Error::shape(
            "axpby_f16",
            format!("a {} vs b {}", a.len(), b.len()),
        ));
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| f16::from_f32(alpha * x.to_f32() + beta * y.to_f32()))
        .collect())
}

pub fn scale_f16(alpha: f32, a: &[f16], beta: f32) -> Vec<f16> {
    a.iter()
        .map(|x| f16::from_f32(alpha * x.to_f32() + beta))
        .collect()
}
