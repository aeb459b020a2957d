//! Pictures of detections: each box drawn in its phrase's colour with a "phrase score" label
//! (`glip detect --annotate`), as GLIP's demo draws them above its 0.5 threshold. The labels
//! use the public-domain 8×8 bitmap font of the `font8x8` crate, so no font file is needed.

use crate::api::Detection;
use crate::error::{Error, Result};
use crate::preprocess::RgbImage8;
use font8x8::UnicodeFonts;
use std::path::Path;

/// GLIP's demo draws detections scoring at least this.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// One colour per label (label − 1 modulo the list): distinct on photos and for most eyes.
const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [170, 110, 40],
];

/// The colour of a 1-based label.
pub fn label_colour(label: u32) -> [u8; 3] {
    PALETTE[(label.saturating_sub(1) as usize) % PALETTE.len()]
}

fn put(img: &mut RgbImage8, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        let i = 3 * (y as usize * img.width + x as usize);
        img.data[i..i + 3].copy_from_slice(&c);
    }
}

fn fill(img: &mut RgbImage8, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    for y in y0.max(0)..=y1.min(img.height as i64 - 1) {
        for x in x0.max(0)..=x1.min(img.width as i64 - 1) {
            put(img, x, y, c);
        }
    }
}

/// Draws `text` with its top-left at (x, y), each font pixel `scale`×`scale`.
fn text(img: &mut RgbImage8, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
    for (k, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // The font's least significant bit is the leftmost pixel.
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + (8 * k as i64 + col) * scale, y + row as i64 * scale);
                    fill(img, px, py, px + scale - 1, py + scale - 1, c);
                }
            }
        }
    }
}

/// Draws every detection scoring at least `threshold` onto `img` (boxes in its pixels, as
/// [`Detection::bbox`]), lowest score first so the best ones stay on top.
pub fn draw(img: &mut RgbImage8, dets: &[Detection], threshold: f32) {
    let scale = ((img.width.min(img.height) / 400).max(1)) as i64;
    let thick = 2 * scale;
    let mut shown: Vec<&Detection> = dets.iter().filter(|d| d.score >= threshold).collect();
    shown.sort_by(|a, b| a.score.total_cmp(&b.score));
    for d in shown {
        let c = label_colour(d.label);
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.round() as i64);
        fill(img, x1, y1, x2, y1 + thick - 1, c);
        fill(img, x1, y2 - thick + 1, x2, y2, c);
        fill(img, x1, y1, x1 + thick - 1, y2, c);
        fill(img, x2 - thick + 1, y1, x2, y2, c);
        let label = format!("{} {:.2}", d.phrase, d.score);
        let (tw, th) = (8 * scale * label.chars().count() as i64, 8 * scale);
        // Above the box where there is room, else inside its top.
        let ty = if y1 - th - 2 * scale >= 0 {
            y1 - th - 2 * scale
        } else {
            y1 + thick
        };
        fill(
            img,
            x1,
            ty,
            x1 + tw + 2 * scale - 1,
            ty + th + 2 * scale - 1,
            c,
        );
        // Dark text on light colours, white on dark (perceived luminance).
        let lum = 0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2]);
        let ink = if lum > 150.0 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        text(img, x1 + scale, ty + scale, &label, scale, ink);
    }
}

/// Writes `img` to `path`, the format from its extension (png, jpg/jpeg, webp).
pub fn save(img: &RgbImage8, path: &Path) -> Result<()> {
    image::save_buffer(
        path,
        &img.data,
        img.width as u32,
        img.height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Image {
        what: path.display().to_string(),
        msg: format!("cannot write the annotated picture: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_and_its_label_are_drawn_in_its_colour_and_low_scores_are_not() {
        let mut img = RgbImage8::new(100, 80, vec![10; 100 * 80 * 3]).unwrap();
        let d = |label, score| Detection {
            bbox: [20.0, 30.0, 60.0, 70.0],
            score,
            label,
            phrase: "cat".into(),
        };
        draw(&mut img, &[d(2, 0.9), d(3, 0.2)], DEFAULT_THRESHOLD);
        let at = |x: usize, y: usize| {
            let i = 3 * (y * 100 + x);
            [img.data[i], img.data[i + 1], img.data[i + 2]]
        };
        let c = label_colour(2);
        assert_eq!(at(20, 50), c, "left edge");
        assert_eq!(at(60, 50), c, "right edge");
        assert_eq!(at(40, 70), c, "bottom edge");
        assert_eq!(at(40, 50), [10; 3], "inside the box is untouched");
        // The label sits above the box: its background, with ink somewhere in it.
        let band: Vec<[u8; 3]> = (20..60)
            .flat_map(|x| (18..28).map(move |y| (x, y)))
            .map(|(x, y)| at(x, y))
            .collect();
        assert!(band.contains(&c) && band.iter().any(|p| *p == [0, 0, 0] || *p == [255; 3]));
        // The 0.2 detection (another colour) is not drawn.
        assert!(!img.data.chunks(3).any(|p| p == label_colour(3)));
    }
}
