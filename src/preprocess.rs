//! GLIP's image input: decode, resize, normalise, pad (spec §3.1, evaluation path).
//!
//! 1. Decode (JPEG, PNG, WebP) to 8-bit RGB as `PIL.Image.open(..).convert('RGB')` does:
//!    alpha dropped (not composited), grey replicated, 16-bit RGB reduced to its high byte.
//! 2. Resize with GLIP's `Resize.get_size` (`data/transforms/transforms.py:93-115`) and PIL's
//!    antialiased bilinear resampler (`libImaging/Resample.c`), reproduced bit for bit: see
//!    [`resize_bilinear_pil`].
//! 3. `ToTensor` (/255), RGB→BGR, ×255, `Normalize(mean, std)`, all in f32 in torch's order.
//! 4. Zero-pad bottom/right to a multiple of 32 after normalisation (`to_image_list`).
//!
//! Deliberate differences from GLIP, both switchable or documented:
//! * EXIF orientation is applied by default ([`PreprocessConfig::exif_orientation`]): GLIP opens
//!   images with PIL without `ImageOps.exif_transpose`, so a phone photo stored sideways is
//!   detected sideways and its boxes refer to the stored (not the displayed) pixel grid. A user
//!   of a detector expects boxes on the upright photo; set the flag to false for GLIP's exact
//!   behaviour. Sizes returned ([`Preprocessed::original_hw`]) are those after orientation.
//! * 16-bit greyscale: PIL converts "I;16" to RGB by clamping each value to 255 (almost every
//!   pixel of a real 16-bit photo becomes white); here the high byte is kept, as PIL does for
//!   16-bit RGB.
//! * Lossy decoders (JPEG: zune-jpeg vs libjpeg-turbo, lossy WebP) may differ from PIL's by a
//!   grey level at some pixels; PNG and lossless WebP decode identically.

use crate::error::{Error, Result};
use crate::model::FeatureMap;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use rayon::prelude::*;
use std::io::Cursor;
use std::path::Path;

/// `INPUT.PIXEL_MEAN` (B, G, R order, 0..255 scale).
pub const PIXEL_MEAN_BGR: [f32; 3] = [103.530, 116.280, 123.675];
/// `INPUT.PIXEL_STD` (B, G, R order).
pub const PIXEL_STD_BGR: [f32; 3] = [57.375, 57.120, 58.395];
/// Largest accepted side, checked from the header before decoding.
pub const MAX_SIDE: u32 = 20_000;
/// Largest accepted pixel count (200 Mpx), checked from the header before decoding.
pub const MAX_PIXELS: u64 = 200_000_000;

/// Pre-processing settings; the defaults are GLIP-T's test settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// `INPUT.MIN_SIZE_TEST`: target length of the short side.
    pub min_size: u32,
    /// `INPUT.MAX_SIZE_TEST`: cap on the long side (None: no cap, the demo's `T.Resize`).
    pub max_size: Option<u32>,
    /// `DATALOADER.SIZE_DIVISIBILITY`: pad H and W up to a multiple of this (0 or 1: none).
    pub size_divisibility: usize,
    /// Rotate/flip by the EXIF orientation tag (GLIP does not; see the module docs).
    pub exif_orientation: bool,
    /// Which Pillow's resampling pass order to reproduce (default: Pillow <= 12).
    pub pass_order: PassOrder,
    /// In the network's channel order.
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
    /// INPUT.FORMAT / TO_BGR255: channels reordered to B, G, R ("bgr") ...
    pub bgr: bool,
    /// ... and pixel values in 0..255 rather than 0..1 ("255").
    pub times_255: bool,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            min_size: 800,
            max_size: Some(1333),
            size_divisibility: 32,
            exif_orientation: true,
            pass_order: PassOrder::HorizontalFirst,
            pixel_mean: PIXEL_MEAN_BGR,
            pixel_std: PIXEL_STD_BGR,
            bgr: true,
            times_255: true,
        }
    }
}

impl PreprocessConfig {
    /// GLIP's test transform as a config's INPUT section sets it (MIN/MAX_SIZE_TEST,
    /// SIZE_DIVISIBILITY, PIXEL_MEAN/STD, FORMAT, TO_BGR255).
    pub fn from_input(input: &crate::model::config::InputConfig) -> Self {
        PreprocessConfig {
            min_size: input.min_size_test as u32,
            max_size: Some(input.max_size_test as u32),
            size_divisibility: input.size_divisibility,
            pixel_mean: input.pixel_mean,
            pixel_std: input.pixel_std,
            bgr: input.bgr(),
            times_255: input.times_255(),
            ..PreprocessConfig::default()
        }
    }
}

/// An 8-bit RGB image, HWC row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage8 {
    pub width: usize,
    pub height: usize,
    /// [height, width, 3].
    pub data: Vec<u8>,
}

impl RgbImage8 {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(img_err(
                "raw frame",
                format!("zero-size image ({width}x{height})"),
            ));
        }
        let need = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        if need != Some(data.len()) {
            return Err(img_err(
                "raw frame",
                match need {
                    Some(n) => format!("{width}x{height} RGB needs {n} bytes, got {}", data.len()),
                    None => format!("{width}x{height} RGB overflows the address space"),
                },
            ));
        }
        Ok(RgbImage8 {
            width,
            height,
            data,
        })
    }
}

/// The network input and the sizes needed to map boxes back (spec §3.10).
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// [1, 3, Hp, Wp], BGR, normalised, zero-padded bottom/right.
    pub image: FeatureMap,
    /// (height, width) after resizing, before padding: the frame boxes are predicted in.
    pub resized_hw: (usize, usize),
    /// (height, width) of the decoded (and, if enabled, EXIF-oriented) image.
    pub original_hw: (usize, usize),
}

fn img_err(what: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Image {
        what: what.into(),
        msg: msg.into(),
    }
}

/// GLIP's `Resize.get_size`: (out_h, out_w) for an image of `w`×`h`, Python's arithmetic
/// reproduced (float ratio, `round` half-to-even for the capped size, `int()` truncation).
pub fn get_size(w: usize, h: usize, min_size: u32, max_size: Option<u32>) -> (usize, usize) {
    let mut size = min_size as usize;
    if let Some(max_size) = max_size {
        let mn = w.min(h) as f64;
        let mx = w.max(h) as f64;
        if mx / mn * size as f64 > max_size as f64 {
            size = (max_size as f64 * mn / mx).round_ties_even() as usize;
        }
    }
    if (w <= h && w == size) || (h <= w && h == size) {
        return (h, w);
    }
    if w < h {
        let oh = ((size * h) as f64 / w as f64) as usize;
        (oh, size)
    } else {
        let ow = ((size * w) as f64 / h as f64) as usize;
        (size, ow)
    }
}

/// Fixed-point bits of PIL's 8-bit resampling coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter over the whole input
/// (box = [0, in_size]), converted by `normalize_coeffs_8bpc` to fixed point. Returns
/// (ksize, bounds as (xmin, count) per output, coefficients [out_size * ksize]).
fn precompute_coeffs(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    // (double)(in1 - in0) / outSize with float in0 = 0, in1 = inSize.
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; negatives clamp to 0 right after.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let t = ((x + xmin) as f64 - center + 0.5) * inv_filterscale;
            let t = t.abs();
            let w = if t < 1.0 { 1.0 - t } else { 0.0 };
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for kx in k.iter_mut().take(n) {
                *kx /= ww;
            }
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        for x in 0..ksize {
            let v = if x < n { k[x] } else { 0.0 };
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + v * one) as i32
            } else {
                (0.5 + v * one) as i32
            };
        }
        bounds.push((xmin, n));
    }
    (ksize, bounds, kk)
}

/// PIL's `clip8`: the accumulator shifted down (arithmetic shift, i.e. floor) and clamped.
#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which Pillow's pass order [`resize_bilinear_pil`] reproduces. Each pass rounds to uint8, so
/// the order changes some pixels by one grey level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PassOrder {
    /// Pillow up to 12.x (GLIP's era and every Pillow before 2026): horizontal pass first.
    #[default]
    HorizontalFirst,
    /// Pillow 13: vertical pass first when the height shrinks by more than twice as many
    /// pixels as the width (`(in_h - out_h) > 0 && (in_h - out_h) > 2 * (in_w - out_w)`),
    /// horizontal first otherwise. Differs from [`PassOrder::HorizontalFirst`] only for such
    /// inputs (with an aspect-preserving resize: images more than twice as tall as wide).
    Pillow13,
}

/// `Image.resize((out_w, out_h), Image.BILINEAR)` of an 8-bit RGB image, bit-exact with
/// Pillow's `ImagingResample` (Pillow <= 12 pass order; see [`resize_bilinear_pil_with`]).
pub fn resize_bilinear_pil(src: &RgbImage8, out_w: usize, out_h: usize) -> Result<RgbImage8> {
    resize_bilinear_pil_with(src, out_w, out_h, PassOrder::HorizontalFirst)
}

/// Pillow's antialiased bilinear resize, reproduced: two separable passes (order: see
/// [`PassOrder`]); a pass whose size is unchanged is skipped; with horizontal first, only the
/// rows the vertical pass reads are resampled; the triangle filter's support grows with the
/// downscale factor (antialiasing); coefficients are normalised to sum 1, then rounded to
/// 22-bit fixed point; accumulators start at 0.5 (rounding), are shifted down and clipped to
/// 0..255; the intermediate image is uint8.
pub fn resize_bilinear_pil_with(
    src: &RgbImage8,
    out_w: usize,
    out_h: usize,
    order: PassOrder,
) -> Result<RgbImage8> {
    if out_w == 0 || out_h == 0 {
        return Err(img_err(
            "resize",
            format!("zero output size {out_w}x{out_h}"),
        ));
    }
    if src.width == 0 || src.height == 0 || src.data.len() != src.width * src.height * 3 {
        return Err(img_err(
            "resize",
            format!("invalid {}x{} source", src.width, src.height),
        ));
    }
    let (in_w, in_h) = (src.width as i64, src.height as i64);
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let horizontal_first = match order {
        PassOrder::HorizontalFirst => true,
        PassOrder::Pillow13 => {
            !((in_h - out_h as i64) > 0 && (in_h - out_h as i64) > (in_w - out_w as i64) * 2)
        }
    };
    Ok(match (horizontal_first, need_h, need_v) {
        (_, false, false) => src.clone(),
        (_, true, false) => horizontal_pass(src, 0, src.height, out_w),
        (_, false, true) => {
            let (ksize, bounds, kk) = precompute_coeffs(src.height, out_h);
            vertical_pass(src, out_h, ksize, &bounds, &kk)
        }
        (true, true, true) => {
            let (ksize, bounds, kk) = precompute_coeffs(src.height, out_h);
            // Only the rows the vertical pass reads, [first, last), are resampled.
            let first = bounds[0].0;
            let last = bounds[out_h - 1].0 + bounds[out_h - 1].1;
            let tmp = horizontal_pass(src, first, last, out_w);
            let shifted: Vec<(usize, usize)> =
                bounds.iter().map(|&(a, n)| (a - first, n)).collect();
            vertical_pass(&tmp, out_h, ksize, &shifted, &kk)
        }
        (false, true, true) => {
            let (ksize, bounds, kk) = precompute_coeffs(src.height, out_h);
            let tmp = vertical_pass(src, out_h, ksize, &bounds, &kk);
            horizontal_pass(&tmp, 0, tmp.height, out_w)
        }
    })
}

/// Pillow's `_ImagingResampleHorizontal_8bpc` on rows [first, last) of `src`, rows in
/// parallel (each output pixel is the same integer sum as Pillow's, so the result is too).
/// Its cost is one multiply-add per tap and pixel; a variant unrolled to a fixed filter
/// width measured no faster.
fn horizontal_pass(src: &RgbImage8, first: usize, last: usize, out_w: usize) -> RgbImage8 {
    let (ksize, bounds, kk) = precompute_coeffs(src.width, out_w);
    let half = 1i32 << (PRECISION_BITS - 1);
    let line_len = src.width * 3;
    let mut tmp = vec![0u8; (last - first) * out_w * 3];
    tmp.par_chunks_exact_mut(out_w * 3)
        .zip(src.data[first * line_len..last * line_len].par_chunks_exact(line_len))
        .for_each(|(out_row, line)| {
            for ((px, &(xmin, n)), k) in out_row
                .chunks_exact_mut(3)
                .zip(&bounds)
                .zip(kk.chunks_exact(ksize))
            {
                // A pixel as 4 lanes (the 4th 0): one vector multiply-add per tap.
                let mut acc = [half; 4];
                for (p, &kx) in line[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(k) {
                    let v = [p[0] as i32, p[1] as i32, p[2] as i32, 0];
                    for (a, &q) in acc.iter_mut().zip(&v) {
                        *a += q * kx;
                    }
                }
                px[0] = clip8(acc[0]);
                px[1] = clip8(acc[1]);
                px[2] = clip8(acc[2]);
            }
        });
    RgbImage8 {
        width: out_w,
        height: last - first,
        data: tmp,
    }
}

/// Pillow's `_ImagingResampleVertical_8bpc`: output row yy reads rows bounds[yy] of `src`.
/// Rows in parallel; a row is accumulated tap by tap over the whole row, which vectorises
/// and gives Pillow's sums exactly (integer sums do not depend on their order, and these
/// stay below i32's range: the weights are non-negative and sum to about 2²², so a sum is
/// at most about 255 · 2²² ≈ 2³⁰).
fn vertical_pass(
    src: &RgbImage8,
    out_h: usize,
    ksize: usize,
    bounds: &[(usize, usize)],
    kk: &[i32],
) -> RgbImage8 {
    let half = 1i32 << (PRECISION_BITS - 1);
    let stride = src.width * 3;
    let mut out = vec![0u8; out_h * stride];
    out.par_chunks_exact_mut(stride)
        .zip(bounds.par_iter())
        .zip(kk.par_chunks_exact(ksize))
        .for_each_init(
            || vec![0i32; stride],
            |acc, ((out_row, &(ymin, n)), k)| {
                acc.fill(half);
                let rows = src.data[ymin * stride..(ymin + n) * stride].chunks_exact(stride);
                for (row, &ky) in rows.zip(k) {
                    for (a, &p) in acc.iter_mut().zip(row) {
                        *a += p as i32 * ky;
                    }
                }
                for (o, &a) in out_row.iter_mut().zip(acc.iter()) {
                    *o = clip8(a);
                }
            },
        );
    RgbImage8 {
        width: src.width,
        height: out_h,
        data: out,
    }
}

/// Normalise an 8-bit RGB image into GLIP's network input: `ToTensor` (x/255 in f32),
/// channels reordered to B, G, R and ×255 (GLIP-T's "bgr255"; each as `cfg` says), (x −
/// mean)/std, then zero padding at the bottom and right to a multiple of
/// `size_divisibility`. Returns [1, 3, Hp, Wp].
pub fn normalize_pad(img: &RgbImage8, cfg: &PreprocessConfig) -> Result<FeatureMap> {
    let (h, w) = (img.height, img.width);
    let d = cfg.size_divisibility.max(1);
    let hp = h.div_ceil(d) * d;
    let wp = w.div_ceil(d) * d;
    let mut fm = FeatureMap::zeros(1, 3, hp, wp);
    let range = if cfg.times_255 { 255.0f32 } else { 1.0 };
    // An output value depends only on its channel and byte: one table per channel, each
    // entry computed with the transform's own f32 operations (so the same bits).
    let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
        let (mean, std) = (cfg.pixel_mean[c], cfg.pixel_std[c]);
        std::array::from_fn(|v| {
            let x = v as f32 / 255.0f32 * range;
            (x - mean) / std
        })
    });
    // One output row per task: (channel, y) of the [3, hp, wp] planes; rows below the
    // image stay zero (padding).
    fm.data
        .par_chunks_exact_mut(wp)
        .enumerate()
        .for_each(|(i, out)| {
            let (c, y) = (i / hp, i % hp);
            if y >= h {
                return;
            }
            // BGR channel c reads RGB channel 2 - c.
            let src_c = if cfg.bgr { 2 - c } else { c };
            let lut = &lut[c];
            let row = &img.data[y * w * 3..(y + 1) * w * 3];
            for (o, px) in out[..w].iter_mut().zip(row.chunks_exact(3)) {
                *o = lut[px[src_c] as usize];
            }
        });
    Ok(fm)
}

/// Resize and normalise a decoded image.
pub fn preprocess_image(img: &RgbImage8, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    if img.width == 0 || img.height == 0 {
        return Err(img_err(
            "input",
            format!("zero-size image ({}x{})", img.width, img.height),
        ));
    }
    if cfg.min_size == 0 {
        return Err(Error::Config("min_size must be positive".into()));
    }
    let (oh, ow) = get_size(img.width, img.height, cfg.min_size, cfg.max_size);
    if oh == 0 || ow == 0 {
        return Err(img_err(
            "input",
            format!(
                "{}x{} is too elongated: it would resize to {ow}x{oh}",
                img.width, img.height
            ),
        ));
    }
    let resized = if (oh, ow) == (img.height, img.width) {
        None
    } else {
        Some(resize_bilinear_pil_with(img, ow, oh, cfg.pass_order)?)
    };
    let r = resized.as_ref().unwrap_or(img);
    Ok(Preprocessed {
        image: normalize_pad(r, cfg)?,
        resized_hw: (oh, ow),
        original_hw: (img.height, img.width),
    })
}

/// A raw RGB frame (HWC, 8-bit), as video pipelines deliver it.
pub fn preprocess_rgb8(
    width: usize,
    height: usize,
    data: &[u8],
    cfg: &PreprocessConfig,
) -> Result<Preprocessed> {
    let img = RgbImage8::new(width, height, data.to_vec())?;
    preprocess_image(&img, cfg)
}

/// Decode an image file and pre-process it.
pub fn preprocess_path(path: &Path, cfg: &PreprocessConfig) -> Result<Preprocessed> {
    let img = load_image(path, cfg.exif_orientation)?;
    preprocess_image(&img, cfg)
}

/// Read and decode an image file to 8-bit RGB (see [`decode_image`]).
pub fn load_image(path: &Path, exif_orientation: bool) -> Result<RgbImage8> {
    let what = path.display().to_string();
    // Bounded: a FIFO or a device (`/dev/zero`) is refused instead of blocking or filling
    // memory.
    let bytes = crate::limits::read_file(path, crate::limits::MAX_IMAGE_FILE_BYTES, "image")
        .map_err(|e| match e {
            Error::Io { source, .. } => img_err(&what, format!("cannot read the file: {source}")),
            other => other,
        })?;
    decode_image(&bytes, &what, exif_orientation)
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    // 200 Mpx of 16-bit RGBA plus decoder working memory.
    l.max_alloc = Some(MAX_PIXELS * 8 + (256 << 20));
    l
}

/// Decode JPEG/PNG/WebP bytes to 8-bit RGB like `PIL.Image.open(..).convert('RGB')` (see the
/// module docs for the exceptions). The size is checked from the header before decoding:
/// zero, more than [`MAX_SIDE`] on a side or more than [`MAX_PIXELS`] is refused. `what`
/// names the input in errors.
pub fn decode_image(bytes: &[u8], what: &str, exif_orientation: bool) -> Result<RgbImage8> {
    if bytes.is_empty() {
        return Err(img_err(what, "the file is empty"));
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let mut r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| img_err(what, format!("cannot read: {e}")))?;
        if r.format().is_none() {
            return Err(img_err(
                what,
                "not an image in a supported format (JPEG, PNG, WebP)",
            ));
        }
        r.limits(limits());
        Ok(r)
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| {
        img_err(
            what,
            format!("cannot read the image header: {}", describe(&e)),
        )
    })?;
    check_size(what, w, h)?;
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) && jpeg_truncated(bytes) {
        // zune-jpeg fills a cut-off scan with grey; PIL raises "image file is truncated".
        return Err(img_err(
            what,
            "the file is truncated (JPEG without an end-of-image marker after its last scan)",
        ));
    }
    let mut decoder = reader()?
        .into_decoder()
        .map_err(|e| img_err(what, format!("cannot decode: {}", describe(&e))))?;
    let orientation = if exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| img_err(what, format!("cannot decode: {}", describe(&e))))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    to_rgb8_like_pil(img, what)
}

/// Whether a JPEG lacks the EOI marker (FF D9) after its last start-of-scan (FF DA). Inside
/// entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so FF D9 there is
/// the real end; an embedded EXIF thumbnail's markers come before the main image's scans.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        None => true,
        Some(p) => !bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
    }
}

fn check_size(what: &str, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(img_err(what, format!("zero-size image ({w}x{h})")));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(img_err(
            what,
            format!(
                "{w}x{h} is too large (limits: {MAX_SIDE} px per side, {} Mpx)",
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

fn describe(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => format!("image too large for the decoder limits ({l})"),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("the file is truncated ({io})")
        }
        other => other.to_string(),
    }
}

/// PIL's `.convert('RGB')`: grey replicated, alpha discarded (not composited onto a
/// background), 16-bit reduced to the high byte (PIL's "RGB;16B" unpacker).
fn to_rgb8_like_pil(img: DynamicImage, what: &str) -> Result<RgbImage8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hi = |v: u16| (v >> 8) as u8;
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().flat_map(|v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().into_iter().map(hi).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [hi(p[0]), hi(p[1]), hi(p[2])])
            .collect(),
        DynamicImage::ImageLuma16(b) => b.into_raw().into_iter().flat_map(|v| [hi(v); 3]).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [hi(p[0]); 3])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    RgbImage8::new(w, h, data).map_err(|e| img_err(what, e.to_string()))
}

#[cfg(test)]
mod tests {
    //! The fast passes (parallel rows, row-wise vertical sums, a per-channel table for the
    //! normalisation) against Pillow's loops written out plainly, bit for bit, on random
    //! pixels at random sizes: downscales by up to 6× (filter widths 3 to 15), upscales,
    //! one-pixel sides, both pass orders. (Pillow's own pixels: tests/golden_preprocess.rs.)
    use super::*;
    use crate::testing::Rng;

    /// `ImagingResample` as Pillow's C reads, one output value at a time.
    fn reference_resize(src: &RgbImage8, out_w: usize, out_h: usize, order: PassOrder) -> Vec<u8> {
        let half = 1i32 << (PRECISION_BITS - 1);
        let h_pass = |img: &RgbImage8, first: usize, last: usize| -> RgbImage8 {
            let (ksize, bounds, kk) = precompute_coeffs(img.width, out_w);
            let mut data = Vec::new();
            for y in first..last {
                for (xx, &(xmin, n)) in bounds.iter().enumerate() {
                    for c in 0..3 {
                        let mut s = half;
                        for x in 0..n {
                            s += img.data[(y * img.width + xmin + x) * 3 + c] as i32
                                * kk[xx * ksize + x];
                        }
                        data.push(clip8(s));
                    }
                }
            }
            RgbImage8 {
                width: out_w,
                height: last - first,
                data,
            }
        };
        let v_pass = |img: &RgbImage8, offset: usize| -> RgbImage8 {
            let (ksize, bounds, kk) = precompute_coeffs(src.height, out_h);
            let mut data = Vec::new();
            for (yy, &(ymin, n)) in bounds.iter().enumerate() {
                for i in 0..img.width * 3 {
                    let mut s = half;
                    for y in 0..n {
                        s += img.data[(ymin - offset + y) * img.width * 3 + i] as i32
                            * kk[yy * ksize + y];
                    }
                    data.push(clip8(s));
                }
            }
            RgbImage8 {
                width: img.width,
                height: out_h,
                data,
            }
        };
        let (need_h, need_v) = (out_w != src.width, out_h != src.height);
        let (dh, dw) = (
            src.height as i64 - out_h as i64,
            src.width as i64 - out_w as i64,
        );
        let v_first = order == PassOrder::Pillow13 && dh > 0 && dh > 2 * dw;
        let mut img = src.clone();
        if v_first {
            if need_v {
                img = v_pass(&img, 0);
            }
            if need_h {
                img = h_pass(&img, 0, img.height);
            }
        } else if need_h && need_v {
            let (_, bounds, _) = precompute_coeffs(src.height, out_h);
            let first = bounds[0].0;
            let last = bounds[out_h - 1].0 + bounds[out_h - 1].1;
            img = v_pass(&h_pass(&img, first, last), first);
        } else if need_h {
            img = h_pass(&img, 0, img.height);
        } else if need_v {
            img = v_pass(&img, 0);
        }
        img.data
    }

    fn random_image(rng: &mut Rng, w: usize, h: usize) -> RgbImage8 {
        let data = (0..w * h * 3)
            .map(|_| (rng.next_u64() >> 56) as u8)
            .collect();
        RgbImage8::new(w, h, data).unwrap()
    }

    #[test]
    fn fast_resize_equals_pillows_loops() {
        let mut rng = Rng::new(2026);
        let mut sizes = vec![
            (1, 1, 3, 2),
            (5, 1, 1, 7),
            (97, 13, 16, 61),
            (40, 300, 33, 99),
        ];
        for _ in 0..40 {
            let mut side = || 1 + (rng.next_u64() % 120) as usize;
            sizes.push((side(), side(), side(), side()));
        }
        for (w, h, ow, oh) in sizes {
            let img = random_image(&mut rng, w, h);
            for order in [PassOrder::HorizontalFirst, PassOrder::Pillow13] {
                let got = resize_bilinear_pil_with(&img, ow, oh, order).unwrap();
                assert_eq!((got.width, got.height), (ow, oh));
                assert!(
                    got.data == reference_resize(&img, ow, oh, order),
                    "{w}x{h} -> {ow}x{oh} ({order:?}) differs from Pillow's loops"
                );
            }
        }
    }

    #[test]
    fn normalize_table_equals_the_transform() {
        let mut rng = Rng::new(5);
        let img = random_image(&mut rng, 45, 23);
        for (bgr, times_255) in [(true, true), (false, false)] {
            let cfg = PreprocessConfig {
                bgr,
                times_255,
                pixel_mean: [0.485, 0.456, 0.406],
                pixel_std: [0.229, 0.224, 0.225],
                ..PreprocessConfig::default()
            };
            let fm = normalize_pad(&img, &cfg).unwrap();
            assert_eq!((fm.h, fm.w), (32, 64));
            let range = if times_255 { 255.0f32 } else { 1.0 };
            for c in 0..3 {
                let src_c = if bgr { 2 - c } else { c };
                for y in 0..32 {
                    for x in 0..64 {
                        let got = fm.data[(c * 32 + y) * 64 + x];
                        let want = if y < 23 && x < 45 {
                            let v = img.data[(y * 45 + x) * 3 + src_c] as f32 / 255.0f32 * range;
                            (v - cfg.pixel_mean[c]) / cfg.pixel_std[c]
                        } else {
                            0.0
                        };
                        assert_eq!(got.to_bits(), want.to_bits(), "c {c} y {y} x {x}");
                    }
                }
            }
        }
    }
}
