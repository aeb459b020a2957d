//! Raw video frame formats (the names `ffmpeg -pix_fmt` uses) and their conversion to the
//! RGB24 the model's preprocessing takes.
//!
//! YUV formats are read as ffmpeg writes them when nothing else is said: BT.601 coefficients,
//! limited ("TV") range (Y 16–235, U/V 16–240), 4:2:0 chroma with one U and one V sample for
//! each 2×2 block of pixels (sizes rounded up for odd widths and heights), each pixel taking
//! its block's sample. `gray` is full-range luma.

use crate::error::{Error, Result};
use crate::preprocess::RgbImage8;
use rayon::prelude::*;

/// A raw frame's pixel layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixFmt {
    /// R, G, B bytes per pixel.
    Rgb24,
    /// B, G, R bytes per pixel.
    Bgr24,
    /// R, G, B, A bytes per pixel (alpha ignored).
    Rgba,
    /// B, G, R, A bytes per pixel (alpha ignored).
    Bgra,
    /// One luma byte per pixel.
    Gray,
    /// A Y plane, then one plane of interleaved U, V pairs at half resolution.
    Nv12,
    /// A Y plane, then a U plane and a V plane at half resolution (I420).
    Yuv420p,
}

impl PixFmt {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [PixFmt; 7] = [
        PixFmt::Rgb24,
        PixFmt::Bgr24,
        PixFmt::Rgba,
        PixFmt::Bgra,
        PixFmt::Gray,
        PixFmt::Nv12,
        PixFmt::Yuv420p,
    ];

    /// Its ffmpeg name.
    pub fn name(self) -> &'static str {
        match self {
            PixFmt::Rgb24 => "rgb24",
            PixFmt::Bgr24 => "bgr24",
            PixFmt::Rgba => "rgba",
            PixFmt::Bgra => "bgra",
            PixFmt::Gray => "gray",
            PixFmt::Nv12 => "nv12",
            PixFmt::Yuv420p => "yuv420p",
        }
    }

    /// Bytes of one `width`×`height` frame (None when the size overflows).
    pub fn frame_bytes(self, width: usize, height: usize) -> Option<usize> {
        let pixels = width.checked_mul(height)?;
        let chroma = width.div_ceil(2).checked_mul(height.div_ceil(2))?;
        match self {
            PixFmt::Rgb24 | PixFmt::Bgr24 => pixels.checked_mul(3),
            PixFmt::Rgba | PixFmt::Bgra => pixels.checked_mul(4),
            PixFmt::Gray => Some(pixels),
            PixFmt::Nv12 | PixFmt::Yuv420p => pixels.checked_add(chroma.checked_mul(2)?),
        }
    }

    /// Each plane's packed row length in bytes and its number of rows, in memory order (one
    /// plane for packed RGB and gray; Y and interleaved UV for NV12; Y, U, V for I420). None
    /// when a size overflows.
    pub fn planes(self, width: usize, height: usize) -> Option<Vec<(usize, usize)>> {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        Some(match self {
            PixFmt::Rgb24 | PixFmt::Bgr24 => vec![(width.checked_mul(3)?, height)],
            PixFmt::Rgba | PixFmt::Bgra => vec![(width.checked_mul(4)?, height)],
            PixFmt::Gray => vec![(width, height)],
            PixFmt::Nv12 => vec![(width, height), (cw.checked_mul(2)?, ch)],
            PixFmt::Yuv420p => vec![(width, height), (cw, ch), (cw, ch)],
        })
    }

    /// The bytes a plane of `rows` rows of `row_bytes` spans at `stride` bytes per row (the
    /// last row need not be padded). None when it overflows or `stride < row_bytes`.
    pub fn plane_span(row_bytes: usize, rows: usize, stride: usize) -> Option<usize> {
        if stride < row_bytes {
            return None;
        }
        match rows {
            0 => Some(0),
            r => stride.checked_mul(r - 1)?.checked_add(row_bytes),
        }
    }

    /// A frame given as separate planes, each with its row stride in bytes (what video
    /// frameworks hand out: padded rows, planes apart), packed into the layout
    /// [`PixFmt::to_rgb`] takes. Each plane must span [`PixFmt::plane_span`] bytes.
    pub fn pack(self, width: usize, height: usize, planes: &[(&[u8], usize)]) -> Result<Vec<u8>> {
        let bad = |msg: String| Error::Image {
            what: format!("{width}x{height} {} frame", self.name()),
            msg,
        };
        let layout = self
            .planes(width, height)
            .ok_or_else(|| bad("the size overflows".into()))?;
        if planes.len() != layout.len() {
            return Err(bad(format!(
                "{} planes given, the format has {}",
                planes.len(),
                layout.len()
            )));
        }
        let total = self
            .frame_bytes(width, height)
            .ok_or_else(|| bad("the size overflows".into()))?;
        let mut out = Vec::with_capacity(total);
        for (i, (&(row, rows), &(data, stride))) in layout.iter().zip(planes).enumerate() {
            let span = Self::plane_span(row, rows, stride).ok_or_else(|| {
                bad(format!(
                    "plane {i}: stride {stride} is under its row of {row} bytes"
                ))
            })?;
            if data.len() < span {
                return Err(bad(format!(
                    "plane {i}: {} bytes given, {rows} rows at stride {stride} span {span}",
                    data.len()
                )));
            }
            for r in 0..rows {
                out.extend_from_slice(&data[r * stride..r * stride + row]);
            }
        }
        Ok(out)
    }

    /// An RGB24 image in this format, packed (a plain encoder for tests and tools: BT.601
    /// limited range as [`PixFmt::to_rgb`] reads it, each 2×2 block's chroma taken from its
    /// top-left pixel, alpha 255).
    pub fn from_rgb(self, img: &RgbImage8) -> Vec<u8> {
        let (w, h) = (img.width, img.height);
        let px = |x: usize, y: usize| -> [u8; 3] {
            let i = 3 * (y * w + x);
            [img.data[i], img.data[i + 1], img.data[i + 2]]
        };
        let d = &img.data;
        match self {
            PixFmt::Rgb24 => d.clone(),
            PixFmt::Bgr24 => d.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
            PixFmt::Rgba => d
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect(),
            PixFmt::Bgra => d
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0], 255])
                .collect(),
            // Full-range luma, as to_rgb reads gray.
            PixFmt::Gray => d
                .chunks_exact(3)
                .map(|p| {
                    let [r, g, b] = [p[0], p[1], p[2]].map(f32::from);
                    (0.299 * r + 0.587 * g + 0.114 * b)
                        .round()
                        .clamp(0.0, 255.0) as u8
                })
                .collect(),
            PixFmt::Nv12 | PixFmt::Yuv420p => {
                let mut out: Vec<u8> = (0..h)
                    .flat_map(|y| (0..w).map(move |x| (x, y)))
                    .map(|(x, y)| {
                        let [r, g, b] = px(x, y);
                        rgb_to_yuv(r, g, b)[0]
                    })
                    .collect();
                let (mut us, mut vs) = (Vec::new(), Vec::new());
                for by in 0..h.div_ceil(2) {
                    for bx in 0..w.div_ceil(2) {
                        let [r, g, b] = px(2 * bx, 2 * by);
                        let [_, u, v] = rgb_to_yuv(r, g, b);
                        us.push(u);
                        vs.push(v);
                    }
                }
                if self == PixFmt::Nv12 {
                    out.extend(us.iter().zip(&vs).flat_map(|(u, v)| [*u, *v]));
                } else {
                    out.extend(us.iter().chain(&vs));
                }
                out
            }
        }
    }

    /// A `width`×`height` frame of this format as RGB24.
    pub fn to_rgb(self, width: usize, height: usize, data: &[u8]) -> Result<RgbImage8> {
        let need = self
            .frame_bytes(width, height)
            .ok_or_else(|| Error::Image {
                what: "raw frame".into(),
                msg: format!(
                    "{width}x{height} {} overflows the address space",
                    self.name()
                ),
            })?;
        if width == 0 || height == 0 || data.len() != need {
            return Err(Error::Image {
                what: "raw frame".into(),
                msg: format!(
                    "{width}x{height} {} needs {need} bytes, got {}",
                    self.name(),
                    data.len()
                ),
            });
        }
        let pixels = width * height;
        let chroma = &data[pixels..];
        let (cw, planes) = (width.div_ceil(2), width.div_ceil(2) * height.div_ceil(2));
        // Rows in parallel; every pixel is computed as it would be one at a time.
        let mut rgb = vec![0u8; pixels * 3];
        rgb.par_chunks_exact_mut(width * 3)
            .enumerate()
            .for_each(|(y, out)| {
                let px = out.chunks_exact_mut(3);
                let packed = |bytes: usize| &data[y * width * bytes..(y + 1) * width * bytes];
                match self {
                    PixFmt::Rgb24 => out.copy_from_slice(packed(3)),
                    PixFmt::Bgr24 => px
                        .zip(packed(3).chunks_exact(3))
                        .for_each(|(o, p)| o.copy_from_slice(&[p[2], p[1], p[0]])),
                    PixFmt::Rgba => px
                        .zip(packed(4).chunks_exact(4))
                        .for_each(|(o, p)| o.copy_from_slice(&p[..3])),
                    PixFmt::Bgra => px
                        .zip(packed(4).chunks_exact(4))
                        .for_each(|(o, p)| o.copy_from_slice(&[p[2], p[1], p[0]])),
                    PixFmt::Gray => px.zip(packed(1)).for_each(|(o, &g)| o.fill(g)),
                    PixFmt::Nv12 | PixFmt::Yuv420p => {
                        let row = (y / 2) * cw;
                        for (x, (o, &l)) in px.zip(packed(1)).enumerate() {
                            let k = row + x / 2;
                            let (u, v) = match self {
                                PixFmt::Nv12 => (chroma[2 * k], chroma[2 * k + 1]),
                                _ => (chroma[k], chroma[planes + k]),
                            };
                            o.copy_from_slice(&bt601_limited(l, u, v));
                        }
                    }
                }
            });
        RgbImage8::new(width, height, rgb)
    }
}

impl std::str::FromStr for PixFmt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        PixFmt::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PixFmt::ALL.iter().map(|f| f.name()).collect();
                format!("unknown pixel format `{s}` (one of {})", names.join(", "))
            })
    }
}

/// One limited-range BT.601 YUV sample as RGB, rounded and clamped.
fn bt601_limited(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 255.0 / 219.0 * (f32::from(y) - 16.0);
    let (d, e) = (f32::from(u) - 128.0, f32::from(v) - 128.0);
    // Kr = 0.299, Kb = 0.114; chroma scaled from 224 steps to 255.
    let s = 255.0 / 224.0;
    let r = c + s * 1.402 * e;
    let g = c - s * (0.114 * 1.772 / 0.587) * d - s * (0.299 * 1.402 / 0.587) * e;
    let b = c + s * 1.772 * d;
    [r, g, b].map(|x| x.round().clamp(0.0, 255.0) as u8)
}

/// RGB → limited-range BT.601 YUV, the inverse of [`bt601_limited`] (what an encoder such
/// as ffmpeg's swscale writes).
fn rgb_to_yuv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let [r, g, b] = [r, g, b].map(f32::from);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let u = (b - y) / 1.772;
    let v = (r - y) / 1.402;
    [
        16.0 + 219.0 / 255.0 * y,
        128.0 + 224.0 / 255.0 * u,
        128.0 + 224.0 / 255.0 * v,
    ]
    .map(|x| x.round().clamp(0.0, 255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_to_yuv(p: [u8; 3]) -> [u8; 3] {
        super::rgb_to_yuv(p[0], p[1], p[2])
    }

    #[test]
    fn limited_range_black_white_and_primaries() {
        assert_eq!(bt601_limited(16, 128, 128), [0, 0, 0]);
        assert_eq!(bt601_limited(235, 128, 128), [255, 255, 255]);
        // The standard's 8-bit codes of the primaries (Rec. 601 table): red 81/90/240,
        // green 145/54/34, blue 41/240/110; each comes back within one code.
        for (yuv, rgb) in [
            ([81, 90, 240], [255, 0, 0]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [0, 0, 255]),
        ] {
            let got = bt601_limited(yuv[0], yuv[1], yuv[2]);
            for (g, w) in got.iter().zip(rgb) {
                assert!(
                    (i32::from(*g) - w).abs() <= 1,
                    "{yuv:?} -> {got:?}, want {rgb:?}"
                );
            }
        }
    }

    /// `packed` laid out plane by plane at each plane's row + `pad` bytes per row, the
    /// padding filled with 0xEE (what a reader that ignores the stride would pick up).
    fn strided(f: PixFmt, w: usize, h: usize, packed: &[u8], pad: usize) -> Vec<(Vec<u8>, usize)> {
        let mut at = 0;
        f.planes(w, h)
            .unwrap()
            .into_iter()
            .map(|(row, rows)| {
                let stride = row + pad;
                let mut p = vec![0xEE; stride * rows];
                for r in 0..rows {
                    p[r * stride..r * stride + row].copy_from_slice(&packed[at..at + row]);
                    at += row;
                }
                (p, stride)
            })
            .collect()
    }

    #[test]
    fn strided_planes_pack_to_the_packed_frame() {
        let (w, h) = (7, 5);
        let img =
            RgbImage8::new(w, h, (0..w * h * 3).map(|i| (i * 53 % 256) as u8).collect()).unwrap();
        for f in PixFmt::ALL {
            let packed = f.from_rgb(&img);
            assert_eq!(Some(packed.len()), f.frame_bytes(w, h), "{f:?}");
            let sum: usize = f.planes(w, h).unwrap().iter().map(|(r, n)| r * n).sum();
            assert_eq!(sum, packed.len(), "{f:?}");
            for pad in [0, 3, 64] {
                let planes = strided(f, w, h, &packed, pad);
                let refs: Vec<(&[u8], usize)> =
                    planes.iter().map(|(p, s)| (p.as_slice(), *s)).collect();
                assert_eq!(f.pack(w, h, &refs).unwrap(), packed, "{f:?} pad {pad}");
                // The last row needs no padding.
                let trimmed: Vec<(&[u8], usize)> = refs
                    .iter()
                    .map(|(p, s)| (&p[..p.len() - pad], *s))
                    .collect();
                assert_eq!(f.pack(w, h, &trimmed).unwrap(), packed, "{f:?} pad {pad}");
            }
            // A stride under the row, a plane one byte short, a plane missing: errors.
            let planes = strided(f, w, h, &packed, 0);
            let mut refs: Vec<(&[u8], usize)> =
                planes.iter().map(|(p, s)| (p.as_slice(), *s)).collect();
            let (p0, s0) = refs[0];
            refs[0] = (p0, s0 - 1);
            assert!(f.pack(w, h, &refs).is_err(), "{f:?}");
            refs[0] = (&p0[..p0.len() - 1], s0);
            assert!(f.pack(w, h, &refs).is_err(), "{f:?}");
            refs[0] = (p0, s0);
            refs.pop();
            assert!(f.pack(w, h, &refs).is_err(), "{f:?}");
        }
        // RGB formats encode losslessly.
        for f in [PixFmt::Rgb24, PixFmt::Bgr24, PixFmt::Rgba, PixFmt::Bgra] {
            assert_eq!(f.to_rgb(w, h, &f.from_rgb(&img)).unwrap().data, img.data);
        }
    }

    /// `to_rgb` (rows in parallel) against a plain loop over pixels, on random bytes at an
    /// odd size (chroma planes rounded up), for every format.
    #[test]
    fn conversion_equals_a_pixel_loop() {
        let (w, h) = (37, 23);
        let mut rng = crate::testing::Rng::new(9);
        for f in PixFmt::ALL {
            let n = f.frame_bytes(w, h).unwrap();
            let data: Vec<u8> = (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect();
            let (cw, planes) = (w.div_ceil(2), w.div_ceil(2) * h.div_ceil(2));
            let mut want = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    let k = (y / 2) * cw + x / 2;
                    let c = &data[w * h..];
                    want.extend(match f {
                        PixFmt::Rgb24 => [data[3 * i], data[3 * i + 1], data[3 * i + 2]],
                        PixFmt::Bgr24 => [data[3 * i + 2], data[3 * i + 1], data[3 * i]],
                        PixFmt::Rgba => [data[4 * i], data[4 * i + 1], data[4 * i + 2]],
                        PixFmt::Bgra => [data[4 * i + 2], data[4 * i + 1], data[4 * i]],
                        PixFmt::Gray => [data[i]; 3],
                        PixFmt::Nv12 => bt601_limited(data[i], c[2 * k], c[2 * k + 1]),
                        PixFmt::Yuv420p => bt601_limited(data[i], c[k], c[planes + k]),
                    });
                }
            }
            assert_eq!(f.to_rgb(w, h, &data).unwrap().data, want, "{f:?}");
        }
    }

    #[test]
    fn every_format_round_trips_a_frame() {
        // 5x3: odd sizes, so the chroma planes round up.
        let (w, h) = (5, 3);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        // Flat 2x2 colour blocks survive 4:2:0 chroma; this frame is one colour per block
        // column pair only in luma, so compare YUV frames against per-pixel YUV with the
        // block's chroma.
        for f in PixFmt::ALL {
            let px = |x: usize, y: usize| -> [u8; 3] {
                let i = 3 * (y * w + x);
                [rgb[i], rgb[i + 1], rgb[i + 2]]
            };
            let data: Vec<u8> = match f {
                PixFmt::Rgb24 => rgb.clone(),
                PixFmt::Bgr24 => rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
                PixFmt::Rgba => rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 7]).collect(),
                PixFmt::Bgra => rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0], 9]).collect(),
                PixFmt::Gray => rgb.chunks(3).map(|p| p[1]).collect(),
                PixFmt::Nv12 | PixFmt::Yuv420p => {
                    let mut y_plane = Vec::new();
                    for y in 0..h {
                        for x in 0..w {
                            y_plane.push(rgb_to_yuv(px(x, y))[0]);
                        }
                    }
                    // The block's chroma: its top-left pixel's.
                    let (mut us, mut vs) = (Vec::new(), Vec::new());
                    for by in 0..h.div_ceil(2) {
                        for bx in 0..w.div_ceil(2) {
                            let [_, u, v] = rgb_to_yuv(px(2 * bx, 2 * by));
                            us.push(u);
                            vs.push(v);
                        }
                    }
                    let chroma: Vec<u8> = if f == PixFmt::Nv12 {
                        us.iter().zip(&vs).flat_map(|(u, v)| [*u, *v]).collect()
                    } else {
                        us.iter().chain(&vs).copied().collect()
                    };
                    y_plane.into_iter().chain(chroma).collect()
                }
            };
            assert_eq!(Some(data.len()), f.frame_bytes(w, h), "{f:?}");
            let got = f.to_rgb(w, h, &data).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let i = 3 * (y * w + x);
                    let g = [got.data[i], got.data[i + 1], got.data[i + 2]];
                    let want = match f {
                        PixFmt::Gray => [px(x, y)[1]; 3],
                        PixFmt::Nv12 | PixFmt::Yuv420p => {
                            // This pixel's luma with its block's chroma, decoded.
                            let [luma, _, _] = rgb_to_yuv(px(x, y));
                            let [_, u, v] = rgb_to_yuv(px(x / 2 * 2, y / 2 * 2));
                            bt601_limited(luma, u, v)
                        }
                        _ => px(x, y),
                    };
                    assert_eq!(g, want, "{f:?} at ({x}, {y})");
                }
            }
            // Where chroma is the pixel's own (block corners), YUV decodes near the source.
            if matches!(f, PixFmt::Nv12 | PixFmt::Yuv420p) {
                let i = 0;
                for (g, s) in got.data[i..i + 3].iter().zip(&rgb[i..i + 3]) {
                    assert!((i32::from(*g) - i32::from(*s)).abs() <= 3, "{f:?}");
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        for f in PixFmt::ALL {
            let n = f.frame_bytes(4, 2).unwrap();
            assert!(f.to_rgb(4, 2, &vec![0; n + 1]).is_err(), "{f:?}");
            assert!(f.to_rgb(4, 2, &vec![0; n - 1]).is_err(), "{f:?}");
            assert!(f.to_rgb(0, 2, &[]).is_err(), "{f:?}");
            assert_eq!(f.frame_bytes(usize::MAX, 2), None, "{f:?}");
        }
        assert_eq!(PixFmt::Nv12.frame_bytes(3, 3), Some(9 + 2 * 4));
        assert!("yuyv422".parse::<PixFmt>().is_err());
        assert_eq!("nv12".parse::<PixFmt>(), Ok(PixFmt::Nv12));
    }
}
