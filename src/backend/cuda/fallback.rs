//! Per-op CPU fallback (as ort falls back per graph node): an op the CUDA backend has no
//! kernel for runs on the CPU twin — its inputs downloaded (floats as f32), the CPU op run,
//! its float outputs uploaded in the dtype of its first float input (f16 activations) — so
//! the whole model runs on a CUDA device while an op's kernel is still to be written.
//!
//! Every op of today's interface has a kernel (`ops::CPU_FALLBACK_OPS` is empty): `on_cpu`
//! is where an op added to the interface starts, and its unit test below keeps it working.
//! Every fallback is counted (op, calls, bytes moved each way); with fallbacks refused
//! (`--no-fallback`, `GLIP_NO_FALLBACK=1`) the op fails naming itself instead.

use super::CudaBackend;
use crate::backend::cpu::CpuBackend;
use crate::backend::ops::FallbackCount;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Whether fallbacks are allowed, and the counts.
#[derive(Debug)]
pub(super) struct Fallbacks {
    allowed: bool,
    counts: Mutex<BTreeMap<&'static str, FallbackCount>>,
}

/// `GLIP_NO_FALLBACK=1` (or `true`) refuses fallbacks on every CUDA backend created after.
pub fn refused_by_env() -> bool {
    matches!(
        std::env::var("GLIP_NO_FALLBACK").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

impl Fallbacks {
    pub(super) fn new() -> Self {
        Fallbacks {
            allowed: !refused_by_env(),
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

impl CudaBackend {
    /// Allow or refuse per-op CPU fallback (allowed unless `GLIP_NO_FALLBACK=1`).
    pub fn set_fallback(&mut self, allowed: bool) {
        self.fallbacks.allowed = allowed;
    }
    pub fn fallback_allowed(&self) -> bool {
        self.fallbacks.allowed
    }

    /// The ops that ran on the CPU so far, by name.
    pub fn fallback_counts(&self) -> Vec<FallbackCount> {
        match self.fallbacks.counts.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    /// Forget the counts (e.g. after a warm-up run).
    pub fn reset_fallback_counts(&self) {
        match self.fallbacks.counts.lock() {
            Ok(mut m) => m.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }

    /// Runs `op` on the CPU: `inputs` (tensors of this device or host tensors) come down as
    /// f32 (integers kept), `f` computes on the CPU twin, its float outputs go up in the
    /// dtype of the first float input (f16 for activations; f32 stays f32).
    // No op of today's interface needs it (see the module comment); the tests use it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn on_cpu(
        &self,
        op: &'static str,
        inputs: &[&Tensor],
        f: impl FnOnce(&CpuBackend, Vec<Tensor>) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        if !self.fallbacks.allowed {
            return Err(Error::NotOnDevice {
                op,
                device: crate::backend::Backend::device(self),
            });
        }
        let float_dtype = inputs
            .iter()
            .map(|t| t.dtype())
            .find(|d| matches!(d, DType::F16 | DType::F32))
            .unwrap_or(DType::F16);
        let mut down = 0u64;
        let mut host = Vec::with_capacity(inputs.len());
        for t in inputs {
            if t.device() != crate::tensor::Device::Cpu {
                down += t.bytes() as u64;
            }
            let h = self.to_host(t)?;
            host.push(match h.dtype() {
                DType::F16 => h.to_f32()?,
                _ => h,
            });
        }
        let outs = f(&CpuBackend, host)?;
        let mut up = 0u64;
        let mut dev = Vec::with_capacity(outs.len());
        for o in outs {
            let o = match (o.dtype(), float_dtype) {
                (DType::F32, DType::F16) => o.to_f16()?,
                _ => o,
            };
            up += o.bytes() as u64;
            dev.push(self.upload(&o)?);
        }
        let mut counts = match self.fallbacks.counts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let c = counts.entry(op).or_insert_with(|| FallbackCount {
            op,
            ..FallbackCount::default()
        });
        c.calls += 1;
        c.bytes_down += down;
        c.bytes_up += up;
        Ok(dev)
    }

    /// [`CudaBackend::on_cpu`] for an op with one output.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn on_cpu1(
        &self,
        op: &'static str,
        inputs: &[&Tensor],
        f: impl FnOnce(&CpuBackend, Vec<Tensor>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut v = self.on_cpu(op, inputs, |cpu, x| Ok(vec![f(cpu, x)?]))?;
        v.pop()
            .ok_or_else(|| Error::Invalid(format!("CPU fallback of {op} gave no output")))
    }
}

/// The inputs of a fallback, taken in order by the closure.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Inputs(std::vec::IntoIter<Tensor>);

#[cfg_attr(not(test), allow(dead_code))]
impl Inputs {
    pub(super) fn new(v: Vec<Tensor>) -> Self {
        Inputs(v.into_iter())
    }
    /// The next input (the op passes as many as it asks for).
    pub(super) fn next(&mut self, op: &'static str) -> Result<Tensor> {
        self.0
            .next()
            .ok_or_else(|| Error::Invalid(format!("CPU fallback of {op}: too few inputs")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    /// An op run through the fallback on the emulated device: the CPU answer comes back in
    /// f16 on the device, counted with the bytes moved; refused, it names itself.
    #[test]
    fn an_op_without_a_kernel_runs_on_the_cpu_counted_or_names_itself() -> Result<()> {
        let mut be = CudaBackend::emulated();
        be.set_fallback(true);
        let x = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 4.0, -1.0, 0.5, 3.0])?;
        let w = Tensor::from_f32(&[3], vec![1.0, 0.5, 2.0])?;
        let b = Tensor::from_f32(&[3], vec![0.0, 1.0, -1.0])?;
        let dx = be.upload(&x.to_f16()?)?;
        let run = |be: &CudaBackend| {
            be.on_cpu1("layer_norm", &[&dx, &w, &b], |cpu, v| {
                let mut a = Inputs::new(v);
                let op = "layer_norm";
                cpu.layer_norm(&a.next(op)?, &a.next(op)?, &a.next(op)?, 1e-5)
            })
        };
        let got = run(&be)?;
        assert_eq!(got.dtype(), DType::F16, "f16 activations stay f16");
        assert_eq!(got.device(), crate::tensor::Device::Cuda(0));
        let want = CpuBackend.layer_norm(&x, &w, &b, 1e-5)?;
        let g = be.to_host(&got)?.to_f32()?;
        for (a, e) in g.f32s()?.iter().zip(want.f32s()?) {
            assert!((a - e).abs() <= 2e-3 * e.abs().max(1.0), "{a} vs {e}");
        }
        let c = be.fallback_counts();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].op, c[0].calls), ("layer_norm", 1));
        // x down as f16 (12 B; w and b were host tensors), y up as f16 (12 B).
        assert_eq!((c[0].bytes_down, c[0].bytes_up), (12, 12));
        be.reset_fallback_counts();
        be.set_fallback(false);
        let e = run(&be).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("not on CUDA yet: layer_norm"));
        assert!(be.fallback_counts().is_empty());
        Ok(())
    }
}
