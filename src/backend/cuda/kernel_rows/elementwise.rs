//! elementwise: the casts, axpby and scale kernels bit for bit against the CPU twins, on an
//! odd length (the tail of the grid-stride loop).

use super::{kernel_row, to_f32, Compared, KernelRow, Scale, Tol};
use crate::backend::cpu::elementwise as cpu;
use crate::backend::cuda::elementwise as gpu;
use crate::backend::cuda::InOut;
use crate::testing::Rng;
use half::f16;

pub(super) fn rows(scale: Scale, t: &mut Vec<KernelRow>) {
    // GLIP-T's P3 (256 × 100 × 168) on a GPU; a P3 of a 104×168 image on the emulated device.
    let n = match scale {
        Scale::GlipT => 256 * 100 * 168 + 7,
        Scale::Reduced => 256 * 13 * 21 + 7,
    };
    t.push(kernel_row(
        "cast_f32_f16 + cast_f16_f32",
        "elementwise",
        format!("n = {n}, |x| up to ~250"),
        move |be| {
            let mut rng = Rng::new(11);
            let x = rng.normal_vec(n, 50.0);
            let mut h = be.filled_f16(n, f16::NAN)?;
            gpu::cast_f32_f16(be, &be.upload_f32(&x)?, &mut h, n)?;
            let mut f = be.filled_f32(n, f32::NAN)?;
            gpu::cast_f16_f32(be, &h, &mut f, n)?;
            let want = cpu::cast_f32_f16(&x);
            Ok(vec![
                Compared {
                    name: "f16".into(),
                    device: to_f32(&be.download(&h)?),
                    twin: to_f32(&want),
                    tol: Tol::EXACT,
                },
                Compared {
                    name: "f32".into(),
                    device: be.download(&f)?,
                    twin: cpu::cast_f16_f32(&want),
                    tol: Tol::EXACT,
                },
            ])
        },
    ));
    t.push(kernel_row(
        "axpby_f16 + scale_f16",
        "elementwise",
        format!("n = {n}, 0.75 a − 1.5 b and 1.25 a + 0.5"),
        move |be| {
            let mut rng = Rng::new(12);
            let a = cpu::cast_f32_f16(&rng.normal_vec(n, 3.0));
            let b = cpu::cast_f32_f16(&rng.normal_vec(n, 3.0));
            let (da, db) = (be.upload_f16(&a)?, be.upload_f16(&b)?);
            let mut y = be.filled_f16(n, f16::NAN)?;
            gpu::axpby_f16(be, 0.75, InOut::Apart(&da, &mut y), -1.5, &db, n)?;
            let mut s = be.filled_f16(n, f16::NAN)?;
            gpu::scale_f16(be, 1.25, InOut::Apart(&da, &mut s), 0.5, n)?;
            // The same two in place (the ops that take their input by value).
            let mut yi = be.upload_f16(&a)?;
            gpu::axpby_f16(be, 0.75, InOut::Same(&mut yi), -1.5, &db, n)?;
            let mut si = be.upload_f16(&a)?;
            gpu::scale_f16(be, 1.25, InOut::Same(&mut si), 0.5, n)?;
            Ok(vec![
                Compared {
                    name: "axpby".into(),
                    device: to_f32(&be.download(&y)?),
                    twin: to_f32(&super::twin(cpu::axpby_f16(0.75, &a, -1.5, &b))?),
                    tol: Tol::EXACT,
                },
                Compared {
                    name: "scale".into(),
                    device: to_f32(&be.download(&s)?),
                    twin: to_f32(&cpu::scale_f16(1.25, &a, 0.5)),
                    tol: Tol::EXACT,
                },
                Compared {
                    name: "axpby in place".into(),
                    device: to_f32(&be.download(&yi)?),
                    twin: to_f32(&super::twin(cpu::axpby_f16(0.75, &a, -1.5, &b))?),
                    tol: Tol::EXACT,
                },
                Compared {
                    name: "scale in place".into(),
                    device: to_f32(&be.download(&si)?),
                    twin: to_f32(&cpu::scale_f16(1.25, &a, 0.5)),
                    tol: Tol::EXACT,
                },
            ])
        },
    ));
}
