//! One table-driven test of the op interface (backend/ops.rs) on every backend: each op the
//! CUDA backend implements runs on the CUDA device (a GPU, or the emulated device in CI) and
//! on the CPU backend from the same f16-rounded random inputs, and must agree within f16
//! tolerance; each op it does not implement yet runs on the CPU (counted, same answer), or
//! fails with `not on CUDA yet: <op>` when fallbacks are refused.

use glip_rt::backend::cpu::CpuBackend;
use glip_rt::backend::cuda::CudaBackend;
use glip_rt::backend::Backend;
use glip_rt::testing::{cuda_or_skip, max_abs_diff, nse, Rng};
use glip_rt::{DType, Tensor};

/// Random host f32 values already rounded to f16 (what both backends then see).
fn rnd(rng: &mut Rng, shape: &[usize], std: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape, rng.normal_vec(n, std))
        .unwrap()
        .to_f16()
        .unwrap()
        .to_f32()
        .unwrap()
}

/// The CUDA copy of a host tensor: f16 for activations and matrices, f32 vectors as
/// parameters are stored (`Backend::weight`), or f32 as asked.
fn dev(be: &CudaBackend, t: &Tensor, dtype: DType) -> Tensor {
    let host = match dtype {
        DType::F16 => t.to_f16().unwrap(),
        _ => t.try_clone().unwrap(),
    };
    be.upload(&host).unwrap()
}

fn compare(op: &str, be: &CudaBackend, got: &Tensor, want: &Tensor, max_nse: f64) {
    let got = be.to_host(got).unwrap().to_f32().unwrap();
    assert_eq!(got.shape(), want.shape(), "{op}: shape");
    let (g, w) = (got.f32s().unwrap(), want.f32s().unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{op}: non-finite output");
    let (e, d) = (nse(g, w), max_abs_diff(g, w));
    println!("{op}: nse {e:.2e} max |diff| {d:.2e}");
    assert!(e <= max_nse, "{op}: nse {e:.2e} > {max_nse:e}");
}

#[test]
fn every_cuda_op_matches_the_cpu_op() {
    let be = cuda_or_skip("every_cuda_op_matches_the_cpu_op").expect("a device");
    let cpu = &CpuBackend;
    let mut rng = Rng::new(8);
    let (f16, f32) = (DType::F16, DType::F32);

    // linear, with and without bias (tensor-core GEMM / cuBLAS stand-in).
    let x = rnd(&mut rng, &[2, 5, 32], 1.0);
    let w = rnd(&mut rng, &[24, 32], 0.2);
    let b = rnd(&mut rng, &[24], 0.5);
    let got = be
        .linear(
            &dev(&be, &x, f16),
            &dev(&be, &w, f16),
            Some(&dev(&be, &b, f32)),
        )
        .unwrap();
    compare(
        "linear",
        &be,
        &got,
        &cpu.linear(&x, &w, Some(&b)).unwrap(),
        1e-5,
    );
    let got = be
        .linear(&dev(&be, &x, f16), &dev(&be, &w, f16), None)
        .unwrap();
    compare(
        "linear (no bias)",
        &be,
        &got,
        &cpu.linear(&x, &w, None).unwrap(),
        1e-5,
    );

    // scale and add (elementwise kernels).
    let y = rnd(&mut rng, &[2, 5, 32], 1.0);
    let got = be.scale(dev(&be, &x, f16), 0.75, -0.5).unwrap();
    compare(
        "scale",
        &be,
        &got,
        &cpu.scale(x.try_clone().unwrap(), 0.75, -0.5).unwrap(),
        1e-6,
    );
    let got = be.add(dev(&be, &x, f16), &dev(&be, &y, f16)).unwrap();
    compare(
        "add",
        &be,
        &got,
        &cpu.add(x.try_clone().unwrap(), &y).unwrap(),
        1e-6,
    );

    // The activations (elementwise kernels): spread wide enough that h_sigmoid's and the
    // clamp's bounds bind.
    let z = rnd(&mut rng, &[3, 7, 41], 3.0);
    type Activation = fn(&dyn Backend, Tensor) -> glip_rt::Result<Tensor>;
    let activations: [(&str, Activation); 4] = [
        ("relu", |b, t| b.relu(t)),
        ("clamp", |b, t| b.clamp(t, 1.5)),
        ("h_sigmoid", |b, t| b.h_sigmoid(t)),
        ("gelu", |b, t| b.gelu(t)),
    ];
    for (op, f) in activations {
        let got = f(&be, dev(&be, &z, f16)).unwrap();
        let want = f(cpu, z.try_clone().unwrap()).unwrap();
        compare(op, &be, &got, &want, 1e-6);
    }

    // bi_attn (2 heads of 256, ragged 37 positions, 9 tokens of which 6 real).
    let q = rnd(&mut rng, &[1, 37, 512], 0.06);
    let k = rnd(&mut rng, &[1, 9, 512], 1.0);
    let vl = rnd(&mut rng, &[1, 9, 512], 1.0);
    let vv = rnd(&mut rng, &[1, 37, 512], 1.0);
    let mask = Tensor::from_i32(&[1, 9], (0..9).map(|j| i32::from(j < 6)).collect()).unwrap();
    let (gv, gt) = be
        .bi_attn(
            &dev(&be, &q, f16),
            &dev(&be, &k, f16),
            &dev(&be, &vl, f16),
            &dev(&be, &vv, f16),
            &be.upload(&mask).unwrap(),
            2,
        )
        .unwrap();
    let (wv, wt) = cpu.bi_attn(&q, &k, &vl, &vv, &mask, 2).unwrap();
    compare("bi_attn o_v", &be, &gv, &wv, 1e-4);
    compare("bi_attn o_t", &be, &gt, &wt, 1e-4);

    // group_norm (16 groups of 2 channels, a 5x7 map, batch 2).
    let xg = Tensor::from_f32(
        &[2, 32, 5, 7],
        rnd(&mut rng, &[2, 32, 5, 7], 2.0)
            .f32s()
            .unwrap()
            .iter()
            .map(|v| v + 1.5)
            .collect(),
    )
    .unwrap()
    .to_f16()
    .unwrap()
    .to_f32()
    .unwrap();
    let (gw, gb) = (rnd(&mut rng, &[32], 1.0), rnd(&mut rng, &[32], 0.5));
    let got = be
        .group_norm(
            &dev(&be, &xg, f16),
            &dev(&be, &gw, f32),
            &dev(&be, &gb, f32),
            16,
            1e-5,
        )
        .unwrap();
    compare(
        "group_norm",
        &be,
        &got,
        &cpu.group_norm(&xg, &gw, &gb, 16, 1e-5).unwrap(),
        1e-4,
    );

    // deform_conv3x3, stride 1 and 2.
    let xd = rnd(&mut rng, &[1, 16, 9, 11], 1.0);
    let wd = rnd(&mut rng, &[16, 16, 3, 3], 0.08);
    let bd = rnd(&mut rng, &[16], 0.5);
    for stride in [1, 2] {
        let (oh, ow) = ((9 - 1) / stride + 1, (11 - 1) / stride + 1);
        let off = rnd(&mut rng, &[1, 18, oh, ow], 2.0);
        let m = Tensor::from_f32(&[1, 9, oh, ow], rng.uniform_vec(9 * oh * ow, 0.0, 1.0))
            .unwrap()
            .to_f16()
            .unwrap()
            .to_f32()
            .unwrap();
        let got = be
            .deform_conv3x3(
                &dev(&be, &xd, f16),
                &dev(&be, &off, f16),
                &dev(&be, &m, f16),
                &dev(&be, &wd, f16),
                &dev(&be, &bd, f32),
                stride,
                (oh, ow),
            )
            .unwrap();
        let want = cpu
            .deform_conv3x3(&xd, &off, &m, &wd, &bd, stride, (oh, ow))
            .unwrap();
        compare(
            &format!("deform_conv3x3 stride {stride}"),
            &be,
            &got,
            &want,
            1e-4,
        );
    }

    // text_projection and dot_logits (the head).
    let lang = rnd(&mut rng, &[1, 6, 64], 1.0);
    let pw = rnd(&mut rng, &[32, 64], 0.1);
    let (pb, bl) = (rnd(&mut rng, &[32], 0.1), rnd(&mut rng, &[64], 0.05));
    let (gp, gtb) = be
        .text_projection(
            &dev(&be, &lang, f16),
            &dev(&be, &pw, f16),
            &dev(&be, &pb, f32),
            &dev(&be, &bl, f32),
            -4.6,
        )
        .unwrap();
    let (wp, wtb) = cpu.text_projection(&lang, &pw, &pb, &bl, -4.6).unwrap();
    compare("text_projection proj", &be, &gp, &wp, 1e-6);
    compare("text_projection token bias", &be, &gtb, &wtb, 1e-6);
    let v = rnd(&mut rng, &[1, 32, 4, 5], 1.0);
    let got = be
        .dot_logits(&dev(&be, &v, f16), &gp, &gtb, 0.8, 50_000.0)
        .unwrap();
    let want = cpu.dot_logits(&v, &wp, &wtb, 0.8, 50_000.0).unwrap();
    compare("dot_logits", &be, &got, &want, 1e-5);
}

/// One gather/layout op on both backends from the same input (kernels/layout.cu): f16
/// activations, and f32 where the head packs logits. Gathers copy values, so they must agree
/// exactly; bilinear interpolation within f16 rounding.
type LayoutCase = (
    &'static str,
    &'static [usize],
    fn(&dyn Backend, &Tensor) -> glip_rt::Result<Tensor>,
);

#[test]
fn layout_ops_match_the_cpu_op() {
    let be = cuda_or_skip("layout_ops_match_the_cpu_op").expect("a device");
    let cpu = &CpuBackend;
    let mut rng = Rng::new(10);
    let cases: Vec<LayoutCase> = vec![
        ("pad_to_multiple 4", &[2, 3, 9, 6], |b, x| {
            b.pad_to_multiple(x, 4)
        }),
        ("pad_to_multiple (none)", &[1, 3, 8, 4], |b, x| {
            b.pad_to_multiple(x, 4)
        }),
        ("nchw_to_nhwc", &[2, 5, 3, 7], |b, x| b.nchw_to_nhwc(x)),
        ("nhwc_to_nchw", &[2, 3, 7, 5], |b, x| b.nhwc_to_nchw(x)),
        ("duplicate", &[3, 5, 7], |b, x| b.duplicate(x)),
        ("repeat_batch", &[1, 9, 6], |b, x| b.repeat_batch(x, 3)),
        // A padded window grid (9x11 in windows of 7), unshifted and shifted.
        ("window_partition", &[2, 9, 11, 6], |b, x| {
            b.window_partition(x, 7, 0)
        }),
        ("window_partition shifted", &[2, 9, 11, 6], |b, x| {
            b.window_partition(x, 7, 3)
        }),
        ("patch_merge_gather odd", &[2, 7, 5, 6], |b, x| {
            b.patch_merge_gather(x)
        }),
        ("upsample_nearest", &[2, 3, 5, 7], |b, x| {
            b.upsample_nearest(x, 10, 13)
        }),
        ("upsample_bilinear_ac", &[2, 3, 5, 7], |b, x| {
            b.upsample_bilinear_ac(x, 9, 13)
        }),
        ("upsample_bilinear_ac to 1x1", &[1, 2, 5, 7], |b, x| {
            b.upsample_bilinear_ac(x, 1, 1)
        }),
        // The pyramid packed and unpacked again (levels of a 2-image batch).
        ("levels_to_tokens", &[2, 6, 4, 5], |b, x| {
            let (l0, l1) = (b.upsample_nearest(x, 8, 10)?, b.duplicate(x)?);
            b.levels_to_tokens(&[&l0, &l1, x])
        }),
        ("tokens_to_levels", &[2, 26, 6], |b, x| {
            let ls = b.tokens_to_levels(x, &[(4, 5), (2, 3)])?;
            b.concat_positions(&[&b.nchw_to_nhwc(&ls[1])?.reshape(&[2, 6, 6])?, x])
        }),
        // Parts that differ: x and its per-image transpose.
        ("concat_positions", &[2, 5, 5], |b, x| {
            let t = b.nhwc_to_nchw(&b.duplicate(x)?.reshape(&[2, 5, 1, 5])?)?;
            b.concat_positions(&[x, &t.reshape(&[2, 5, 5])?, x])
        }),
    ];
    for (op, shape, f) in &cases {
        for dtype in [DType::F16, DType::F32] {
            let x = rnd(&mut rng, shape, 1.0);
            let got = f(&be, &dev(&be, &x, dtype))
                .unwrap_or_else(|e| panic!("{op} ({}): {e}", dtype.name()));
            assert_eq!(got.dtype(), dtype, "{op}: keeps its dtype");
            let want = f(cpu, &x).unwrap();
            let tol = if op.contains("bilinear") { 1e-6 } else { 0.0 };
            compare(&format!("{op} ({})", dtype.name()), &be, &got, &want, tol);
        }
    }
}

/// The broadcasts (elementwise family) and reductions (reduce family) on both backends from
/// the same f16 inputs.
#[test]
fn broadcast_and_reduction_ops_match_the_cpu_op() {
    let be = cuda_or_skip("broadcast_and_reduction_ops_match_the_cpu_op").expect("a device");
    let cpu = &CpuBackend;
    let mut rng = Rng::new(11);
    let (f16, f32) = (DType::F16, DType::F32);

    // layer_norm: Swin's and BERT's widths and an odd one, rows offset from 0.
    for (rows, c) in [(37, 96), (5, 768), (3, 45)] {
        let x = Tensor::from_f32(
            &[rows, c],
            rng.normal_vec(rows * c, 2.0)
                .iter()
                .map(|v| v + 3.0)
                .collect(),
        )
        .unwrap()
        .to_f16()
        .unwrap()
        .to_f32()
        .unwrap();
        let (w, b) = (rnd(&mut rng, &[c], 1.0), rnd(&mut rng, &[c], 0.5));
        let got = be
            .layer_norm(
                &dev(&be, &x, f16),
                &dev(&be, &w, f32),
                &dev(&be, &b, f32),
                1e-5,
            )
            .unwrap();
        let want = cpu.layer_norm(&x, &w, &b, 1e-5).unwrap();
        compare(&format!("layer_norm {rows}x{c}"), &be, &got, &want, 1e-5);
    }

    // avg_pool over odd maps (and one larger than a block).
    for shape in [[2, 5, 3, 7], [1, 3, 25, 17]] {
        let x = rnd(&mut rng, &shape, 1.0);
        let got = be.avg_pool(&dev(&be, &x, f16)).unwrap();
        compare(
            &format!("avg_pool {shape:?}"),
            &be,
            &got,
            &cpu.avg_pool(&x).unwrap(),
            1e-6,
        );
    }

    // scale_images: per-image factors [N, 1].
    let x = rnd(&mut rng, &[3, 4, 5, 6], 1.0);
    let a = rnd(&mut rng, &[3, 1], 1.0);
    let got = be
        .scale_images(dev(&be, &x, f16), &dev(&be, &a, f16))
        .unwrap();
    let want = cpu.scale_images(x.try_clone().unwrap(), &a).unwrap();
    compare("scale_images", &be, &got, &want, 1e-6);

    // add_channel_scaled: gamma [C] (f32, as parameters are stored) over [B, N, C].
    let (a, b) = (
        rnd(&mut rng, &[2, 7, 24], 1.0),
        rnd(&mut rng, &[2, 7, 24], 1.0),
    );
    let g = rnd(&mut rng, &[24], 0.5);
    let got = be
        .add_channel_scaled(dev(&be, &a, f16), &dev(&be, &g, f32), &dev(&be, &b, f16))
        .unwrap();
    let want = cpu
        .add_channel_scaled(a.try_clone().unwrap(), &g, &b)
        .unwrap();
    compare("add_channel_scaled", &be, &got, &want, 1e-6);

    // dyrelu_apply: coefficients in (0, 1) as after h_sigmoid.
    let x = rnd(&mut rng, &[2, 6, 5, 3], 1.5);
    let z = Tensor::from_f32(&[2, 24], rng.uniform_vec(48, 0.0, 1.0))
        .unwrap()
        .to_f16()
        .unwrap()
        .to_f32()
        .unwrap();
    let got = be
        .dyrelu_apply(dev(&be, &x, f16), &dev(&be, &z, f16))
        .unwrap();
    let want = cpu.dyrelu_apply(x.try_clone().unwrap(), &z).unwrap();
    compare("dyrelu_apply", &be, &got, &want, 1e-6);

    // split_offset_mask: [B, 27, H, W] → offsets and sigmoid masks.
    let om = rnd(&mut rng, &[2, 27, 3, 5], 3.0);
    let (go, gm) = be.split_offset_mask(&dev(&be, &om, f16)).unwrap();
    let (wo, wm) = cpu.split_offset_mask(&om).unwrap();
    compare("split_offset_mask offsets", &be, &go, &wo, 0.0);
    compare("split_offset_mask mask", &be, &gm, &wm, 1e-6);
}

/// conv2d (im2col + tensor-core GEMM + rows to planes) on both backends: Swin's patch
/// embedding, the FPN's 3×3 and stride-2 convs, a reduction length that is not a multiple of
/// 8 (padded columns), a 1×1 head conv with one output and one without bias.
#[test]
fn conv2d_matches_the_cpu_op() {
    let be = cuda_or_skip("conv2d_matches_the_cpu_op").expect("a device");
    let cpu = &CpuBackend;
    let mut rng = Rng::new(15);
    // (input [B, cin, h, w], cout, k, stride, pad, bias)
    let cases: [([usize; 4], usize, usize, usize, usize, bool); 6] = [
        ([1, 3, 17, 22], 16, 4, 4, 0, true),
        ([2, 8, 9, 11], 24, 3, 1, 1, true),
        ([1, 16, 9, 11], 8, 3, 2, 1, true),
        ([2, 5, 6, 7], 8, 3, 1, 1, true),
        ([2, 32, 5, 6], 1, 1, 1, 0, true),
        ([1, 16, 4, 5], 12, 1, 1, 0, false),
    ];
    for (xs, cout, k, stride, pad, bias) in cases {
        let x = rnd(&mut rng, &xs, 1.0);
        let w = rnd(&mut rng, &[cout, xs[1], k, k], 0.2);
        let b = rnd(&mut rng, &[cout], 0.5);
        let got = be
            .conv2d(
                &dev(&be, &x, DType::F16),
                &dev(&be, &w, DType::F16),
                bias.then(|| dev(&be, &b, DType::F32)).as_ref(),
                stride,
                pad,
            )
            .unwrap();
        let want = cpu.conv2d(&x, &w, bias.then_some(&b), stride, pad).unwrap();
        let name = format!("conv2d {xs:?} -> {cout}, {k}x{k} stride {stride} pad {pad}");
        compare(&name, &be, &got, &want, 1e-5);
    }
}

/// BERT self-attention (T 1, 9 and 256 with padded keys, GLIP's clamp, batch 2), Swin window
/// attention (7×7 windows, unshifted and with the shift mask) and the BERT embeddings, on
/// both backends, with fallbacks refused.
#[test]
fn attention_and_embedding_ops_match_the_cpu_op() {
    let mut be = cuda_or_skip("attention_and_embedding_ops_match_the_cpu_op").expect("a device");
    be.set_fallback(false);
    let cpu = &CpuBackend;
    let mut rng = Rng::new(16);
    let f16 = DType::F16;
    use glip_rt::backend::ops::{SelfAttention, WindowGrid};

    // (batch, T, heads, head width, real tokens per image, clamp)
    let cases: [(usize, usize, usize, usize, usize, Option<f32>); 4] = [
        (1, 1, 2, 8, 1, None),
        (2, 9, 2, 16, 6, Some(50_000.0)),
        (1, 256, 12, 64, 200, Some(50_000.0)),
        (2, 37, 3, 32, 37, None),
    ];
    for (b, t, heads, hd, real, clamp) in cases {
        let h = heads * hd;
        let (q, k, v) = (
            rnd(&mut rng, &[b, t, h], 1.0),
            rnd(&mut rng, &[b, t, h], 1.0),
            rnd(&mut rng, &[b, t, h], 1.0),
        );
        let mask = Tensor::from_i32(
            &[b, t],
            (0..b * t).map(|i| i32::from(i % t < real)).collect(),
        )
        .unwrap();
        let spec = SelfAttention { heads, clamp };
        let got = be
            .self_attention(
                &dev(&be, &q, f16),
                &dev(&be, &k, f16),
                &dev(&be, &v, f16),
                &be.upload(&mask).unwrap(),
                spec,
            )
            .unwrap();
        let want = cpu.self_attention(&q, &k, &v, &mask, spec).unwrap();
        let name = format!("self_attention B{b} T{t} {heads}x{hd} real {real}");
        compare(&name, &be, &got, &want, 1e-5);
    }

    // Window attention on a 9×11 map in windows of 7 (4 windows, padded), 3 heads of 32.
    let g = WindowGrid::new(9, 11, 7);
    let (nw, mm, heads, c) = (g.num_windows(), 49, 3, 96);
    for shift in [0, 3] {
        let qkv = rnd(&mut rng, &[2 * nw, mm, 3 * c], 1.0);
        let bias = rnd(&mut rng, &[heads, mm, mm], 1.0);
        let ids = (shift > 0).then(|| Tensor::from_i32(&[nw, mm], g.region_ids(shift)).unwrap());
        let dev_ids = ids.as_ref().map(|i| be.upload(i).unwrap());
        let got = be
            .window_attention(
                &dev(&be, &qkv, f16),
                &dev(&be, &bias, f16),
                dev_ids.as_ref(),
                heads,
            )
            .unwrap();
        let want = cpu
            .window_attention(&qkv, &bias, ids.as_ref(), heads)
            .unwrap();
        compare(
            &format!("window_attention shift {shift}"),
            &be,
            &got,
            &want,
            1e-5,
        );
    }

    // BERT embeddings: ids of a batch of 2 into a 50-word table, 7 of 12 positions.
    let (vocab, hid) = (50, 24);
    let word = rnd(&mut rng, &[vocab, hid], 1.0);
    let pos = rnd(&mut rng, &[12, hid], 1.0);
    let tt = rnd(&mut rng, &[hid], 1.0);
    let ids = Tensor::from_i32(&[2, 7], (0..14).map(|i| (i * 7 + 3) % 50).collect()).unwrap();
    let got = be
        .bert_embeddings(
            &ids,
            &dev(&be, &word, f16),
            &dev(&be, &pos, f16),
            &dev(&be, &tt, DType::F32),
        )
        .unwrap();
    let want = cpu.bert_embeddings(&ids, &word, &pos, &tt).unwrap();
    compare("bert_embeddings", &be, &got, &want, 1e-6);
    let bad = Tensor::from_i32(&[1, 2], vec![3, 50]).unwrap();
    let e = be
        .bert_embeddings(
            &bad,
            &dev(&be, &word, f16),
            &dev(&be, &pos, f16),
            &dev(&be, &tt, DType::F32),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("token id 50 outside the vocabulary of 50"),
        "{e}"
    );
    assert!(
        be.fallback_counts().is_empty(),
        "{:?}",
        be.fallback_counts()
    );
}
