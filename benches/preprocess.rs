//! Host pre-processing of video frames (GLIP-T's test transform, src/preprocess.rs): the
//! Pillow-exact resize, the normalise-and-pad, and both together, at the frame sizes a
//! video pipeline feeds; raw YUV/BGRA frames to RGB (src/pixfmt.rs). On a GPU this host work runs beside the forward (`glip stream`
//! reads ahead), so it bounds frames/s once the forward is faster than it.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glip_rt::pixfmt::PixFmt;
use glip_rt::preprocess::{
    get_size, normalize_pad, preprocess_image, resize_bilinear_pil, PreprocessConfig, RgbImage8,
};
use glip_rt::testing::Rng;
use std::hint::black_box;

fn frame(w: usize, h: usize) -> RgbImage8 {
    let mut rng = Rng::new(11);
    let data = (0..w * h * 3)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    RgbImage8 {
        width: w,
        height: h,
        data,
    }
}

fn preprocess(c: &mut Criterion) {
    let cfg = PreprocessConfig::default();
    let mut g = c.benchmark_group("preprocess");
    g.sample_size(20);
    // 1080p (downscaled to 1333x750), 640x640 (upscaled to 800x800), 800x1333 (no resize).
    for (w, h) in [(1920, 1080), (640, 640), (1333, 800)] {
        let img = frame(w, h);
        let (oh, ow) = get_size(w, h, cfg.min_size, cfg.max_size);
        g.throughput(Throughput::Elements((w * h) as u64));
        if (oh, ow) != (h, w) {
            g.bench_function(format!("resize_{w}x{h}_to_{ow}x{oh}"), |b| {
                b.iter(|| black_box(resize_bilinear_pil(&img, ow, oh).unwrap()))
            });
            // Each pass alone (the other size kept).
            g.bench_function(format!("resize_{w}x{h}_to_{ow}x{h}"), |b| {
                b.iter(|| black_box(resize_bilinear_pil(&img, ow, h).unwrap()))
            });
            g.bench_function(format!("resize_{w}x{h}_to_{w}x{oh}"), |b| {
                b.iter(|| black_box(resize_bilinear_pil(&img, w, oh).unwrap()))
            });
        }
        let resized = resize_bilinear_pil(&img, ow, oh).unwrap();
        g.bench_function(format!("normalize_pad_{ow}x{oh}"), |b| {
            b.iter(|| black_box(normalize_pad(&resized, &cfg).unwrap()))
        });
        g.bench_function(format!("frame_{w}x{h}"), |b| {
            b.iter(|| black_box(preprocess_image(&img, &cfg).unwrap()))
        });
    }
    // Raw video formats to RGB24 (`glip stream --pix-fmt`, the C ABI, the GStreamer element).
    let (w, h) = (1920, 1080);
    let img = frame(w, h);
    g.throughput(Throughput::Elements((w * h) as u64));
    for f in [PixFmt::Nv12, PixFmt::Bgra] {
        let data = f.from_rgb(&img);
        g.bench_function(format!("to_rgb_{}_{w}x{h}", f.name()), |b| {
            b.iter(|| black_box(f.to_rgb(w, h, &data).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
