//! Proof that the emulated device's checks can fail: planted-bug copies of real kernels
//! (build.rs `MUTANTS`) run through the real launch wrappers and must be caught by the named
//! check, while the unmodified kernels pass the same run.

use glip_rt::backend::cpu::group_norm::{GnActivation, GnLevel, GroupNormShape};
use glip_rt::backend::cuda::group_norm::{group_norm_levels_f16, workspace_len};
use glip_rt::backend::cuda::{CudaBackend, EmuCheck, EmuChecks};
use glip_rt::error::Error;
use glip_rt::testing::Rng;
use half::f16;

/// GroupNorm over two small levels; the last piece ends exactly at the buffer's end.
fn group_norm_on(be: &CudaBackend) -> glip_rt::error::Result<()> {
    let s = GroupNormShape {
        activation: GnActivation::None,
        ..GroupNormShape::glip(1, 64)
    };
    let levels = [
        GnLevel {
            offset: 0,
            hw: 40 * 30,
        },
        GnLevel {
            offset: 64 * 1200,
            hw: 10 * 6,
        },
    ];
    let n = 64 * 1200 + 64 * 60;
    let mut rng = Rng::new(7);
    let x: Vec<f16> = (0..n).map(|_| f16::from_f32(1.0 + rng.normal())).collect();
    let dx = be.upload_f16(&x)?;
    let (dw, db) = (
        be.upload_f32(&rng.normal_vec(64, 1.0))?,
        be.upload_f32(&rng.normal_vec(64, 0.5))?,
    );
    let mut ws = be.filled_f32(workspace_len(&s, &levels), f32::NAN)?;
    let mut dy = be.filled_f16(n, f16::NAN)?;
    group_norm_levels_f16(be, &s, &levels, &dx, &dw, &db, &mut ws, &mut dy)
}

fn caught(mutant: Option<&str>) -> Option<(EmuCheck, String)> {
    let mut be = CudaBackend::emulated_with(EmuChecks::Full);
    be.emulator_mut()
        .expect("emulated")
        .set_mutant(mutant)
        .expect("mutant compiled in");
    match group_norm_on(&be) {
        Ok(()) => None,
        Err(Error::KernelCheck { check, detail, .. }) => Some((check, detail)),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn real_group_norm_passes_every_check() {
    assert_eq!(caught(None), None);
}

#[test]
fn removed_syncthreads_is_caught_as_a_race() {
    let (check, detail) = caught(Some("no_sync")).expect("the race must be caught");
    println!("no_sync caught by the {check} check: {detail}");
    assert_eq!(check, EmuCheck::Race, "{detail}");
}

#[test]
fn off_by_one_is_caught_by_the_bounds_check() {
    let (check, detail) = caught(Some("off_by_one")).expect("the overrun must be caught");
    println!("off_by_one caught by the {check} check: {detail}");
    assert_eq!(check, EmuCheck::Bounds, "{detail}");
}
