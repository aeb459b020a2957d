//! GPU vs CPU twin for the logits family: text projection, dot-product logits with the fused
//! epilogue (T = 256 and T = 8, both visual layouts, per-level launches into one packed
//! buffer), and the phrase MEAN of token sigmoids. GLIP-T's five levels on a GPU; on the
//! emulated device the dot-product cases use the levels of a 96x160 image.

use glip_rt::backend::cpu::logits::{self as cpu, PositiveMapCsr, VisualLayout};
use glip_rt::backend::cuda::logits::{self as gpu, DevicePositiveMap, DotShape};
use glip_rt::testing::{cuda_or_skip, max_abs_diff, nse, Rng};
use half::f16;

const N_POS: usize = 22_400;
const LEVELS: [usize; 5] = [16_800, 4_200, 1_050, 273, 77];
/// 12x20 + 6x10 + 3x5 + 2x3 + 1x2: none a multiple of the kernels' tiles.
const LEVELS_REDUCED: [usize; 5] = [240, 60, 15, 6, 2];
const DIM: usize = 256;
const LANG: usize = 768;

fn f16v(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}
fn f32v(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn report(what: &str, got: &[f32], want: &[f32], max_nse: f64, max_abs: f32) {
    assert!(
        got.iter().all(|v| !v.is_nan()),
        "{what}: NaN left in the output"
    );
    let (e, d) = (nse(got, want), max_abs_diff(got, want));
    println!("{what}: nse {e:.3e} max |diff| {d:.3e}");
    assert!(
        e <= max_nse && d <= max_abs,
        "{what}: nse {e:.3e} (≤ {max_nse:e}), max |diff| {d:.3e} (≤ {max_abs})"
    );
}

#[test]
fn text_projection_matches_cpu() {
    let Some(be) = cuda_or_skip("text_projection_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(11);
    let t = 256;
    let hidden = f16v(&rng.normal_vec(t * LANG, 1.0));
    let w = f16v(&rng.normal_vec(DIM * LANG, 0.03));
    let bias = rng.normal_vec(DIM, 0.1);
    let bias_lang = rng.normal_vec(LANG, 0.05);
    let (want_p, want_b) =
        cpu::text_projection(&f32v(&hidden), t, &f32v(&w), &bias, &bias_lang, -4.6).unwrap();
    let mut proj = be.filled_f32(t * DIM, f32::NAN).unwrap();
    let mut tb = be.filled_f32(t, f32::NAN).unwrap();
    gpu::text_proj_f16(
        &be,
        t,
        LANG,
        DIM,
        &be.upload_f16(&hidden).unwrap(),
        &be.upload_f16(&w).unwrap(),
        &be.upload_f32(&bias).unwrap(),
        &be.upload_f32(&bias_lang).unwrap(),
        -4.6,
        &mut proj,
        &mut tb,
    )
    .unwrap();
    report("proj", &be.download(&proj).unwrap(), &want_p, 1e-8, 1e-4);
    report("tok_bias", &be.download(&tb).unwrap(), &want_b, 1e-8, 1e-4);
}

fn dot_case(t: usize, layout: VisualLayout, per_level: bool, seed: u64) {
    let name = format!("dot_logits T={t} {layout:?} per_level={per_level}");
    let Some(be) = cuda_or_skip(&name) else {
        return;
    };
    let all: &[usize] = if glip_rt::testing::reduced(&be) {
        &LEVELS_REDUCED
    } else {
        &LEVELS
    };
    let n_pos: usize = all.iter().sum();
    let mut rng = Rng::new(seed);
    let scale = 0.8f32; // exp(log_scale) != 1 exercises the division
    let proj = rng.normal_vec(t * DIM, 0.06);
    let tok_bias = rng.normal_vec(t, 1.0);
    // Per level, [dim, hw] (NCHW) or [hw, dim]: the kernel and the twin see the same values.
    let levels: Vec<usize> = if per_level { all.to_vec() } else { vec![n_pos] };
    let vis: Vec<Vec<f16>> = levels
        .iter()
        .map(|&hw| f16v(&rng.normal_vec(hw * DIM, 1.0)))
        .collect();
    let mut want = Vec::with_capacity(n_pos * t);
    for (v, &hw) in vis.iter().zip(&levels) {
        want.extend(
            cpu::dot_logits(
                &f32v(v),
                layout,
                &proj,
                &tok_bias,
                1,
                hw,
                t,
                DIM,
                scale,
                cpu::LOGIT_CLAMP,
            )
            .unwrap(),
        );
    }
    let (dp, db) = (
        be.upload_f32(&proj).unwrap(),
        be.upload_f32(&tok_bias).unwrap(),
    );
    let mut out = be.filled_f32(n_pos * t, f32::NAN).unwrap();
    let mut row0 = 0;
    for (v, &hw) in vis.iter().zip(&levels) {
        let s = DotShape {
            batch: 1,
            n_pos: hw,
            n_txt: t,
            dim: DIM,
            channel_major: layout == VisualLayout::ChannelMajor,
            out_rows: n_pos,
            out_row0: row0,
        };
        gpu::dot(
            &be,
            &s,
            &be.upload_f16(v).unwrap(),
            &dp,
            &db,
            scale,
            cpu::LOGIT_CLAMP,
            &mut out,
        )
        .unwrap();
        row0 += hw;
    }
    report(&name, &be.download(&out).unwrap(), &want, 1e-4, 1e-3);
}

#[test]
fn dot_logits_t256_channel_major_per_level() {
    dot_case(256, VisualLayout::ChannelMajor, true, 21);
}

#[test]
fn dot_logits_t256_position_major() {
    dot_case(256, VisualLayout::PositionMajor, false, 22);
}

#[test]
fn dot_logits_t8_channel_major() {
    dot_case(8, VisualLayout::ChannelMajor, false, 23);
}

#[test]
fn dot_logits_t8_position_major_per_level() {
    dot_case(8, VisualLayout::PositionMajor, true, 24);
}

#[test]
fn dot_logits_clamp_binds() {
    let Some(be) = cuda_or_skip("dot_logits_clamp_binds") else {
        return;
    };
    let mut rng = Rng::new(25);
    let (n, t) = (77, 8);
    let proj = rng.normal_vec(t * DIM, 1.0);
    let tok_bias = rng.normal_vec(t, 1.0);
    let vis = f16v(&rng.normal_vec(n * DIM, 1000.0));
    let want = cpu::dot_logits(
        &f32v(&vis),
        VisualLayout::PositionMajor,
        &proj,
        &tok_bias,
        1,
        n,
        t,
        DIM,
        1.0,
        cpu::LOGIT_CLAMP,
    )
    .unwrap();
    assert!(want.iter().any(|v| v.abs() == cpu::LOGIT_CLAMP));
    let mut out = be.filled_f32(n * t, f32::NAN).unwrap();
    let s = DotShape {
        batch: 1,
        n_pos: n,
        n_txt: t,
        dim: DIM,
        channel_major: false,
        out_rows: n,
        out_row0: 0,
    };
    gpu::dot(
        &be,
        &s,
        &be.upload_f16(&vis).unwrap(),
        &be.upload_f32(&proj).unwrap(),
        &be.upload_f32(&tok_bias).unwrap(),
        1.0,
        cpu::LOGIT_CLAMP,
        &mut out,
    )
    .unwrap();
    let got = be.download(&out).unwrap();
    let clamped_equal = got
        .iter()
        .zip(&want)
        .filter(|(_, w)| w.abs() == cpu::LOGIT_CLAMP)
        .all(|(g, w)| g == w);
    assert!(clamped_equal, "clamped logits differ");
    report("dot_logits clamp", &got, &want, 1e-4, 1.0);
}

/// A COCO-like positive map: 80 labels of 1–3 tokens separated by unowned tokens.
pub fn coco_like_map() -> Vec<(u32, Vec<usize>)> {
    let mut map = Vec::new();
    let mut t = 1;
    for label in 1..=80u32 {
        let k = 1 + (label as usize * 7) % 3;
        map.push((label, (t..t + k).collect()));
        t += k + 1;
    }
    map
}

#[test]
fn phrase_mean_matches_cpu() {
    let Some(be) = cuda_or_skip("phrase_mean_matches_cpu") else {
        return;
    };
    let mut rng = Rng::new(31);
    let (t, labels) = (256, 80);
    let logits = rng.normal_vec(N_POS * t, 3.0);
    let map = PositiveMapCsr::new(&coco_like_map(), labels, t).unwrap();
    let want = cpu::phrase_mean(&logits, N_POS, t, &map, labels).unwrap();
    let dmap = DevicePositiveMap::upload(&be, &map, labels, t).unwrap();
    let mut out = be.filled_f32(N_POS * labels, f32::NAN).unwrap();
    gpu::phrase_mean_f32(
        &be,
        N_POS,
        &be.upload_f32(&logits).unwrap(),
        &dmap,
        &mut out,
    )
    .unwrap();
    report(
        "phrase_mean",
        &be.download(&out).unwrap(),
        &want,
        1e-10,
        1e-6,
    );
}
