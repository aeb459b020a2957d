//! Image pre-processing vs GLIP (golden 12's network input) and vs Pillow's resampler.

use glip_rt::preprocess::{
    decode_image, get_size, load_image, preprocess_path, preprocess_rgb8, resize_bilinear_pil,
    resize_bilinear_pil_with, PassOrder, PreprocessConfig, RgbImage8, PIXEL_MEAN_BGR,
    PIXEL_STD_BGR,
};
use glip_rt::testing::{testdata, E2eGolden};

/// The golden's test transform, from its own yaml.
fn golden_cfg(g: &E2eGolden) -> PreprocessConfig {
    let cfg = glip_rt::model::config::GlipConfig::from_yaml_file(&g.config).unwrap();
    PreprocessConfig::from_input(&cfg.input)
}

fn crop(img: &RgbImage8, x0: usize, y0: usize, w: usize, h: usize) -> RgbImage8 {
    let mut d = Vec::with_capacity(w * h * 3);
    for y in y0..y0 + h {
        d.extend_from_slice(&img.data[(y * img.width + x0) * 3..(y * img.width + x0 + w) * 3]);
    }
    RgbImage8::new(w, h, d).unwrap()
}

/// (max |diff|, fraction exact) between two equally sized images.
fn compare(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let md = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let exact = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
    (md, exact)
}

#[test]
fn resize_matches_glip_golden_pixels() {
    for g in E2eGolden::all().unwrap() {
        let tensors = g.tensors().unwrap();
        let t = &tensors["input/image"];
        let [_, _, hp, wp] = t.dims::<4>("golden").unwrap();
        let x = t.f32s().unwrap();
        let img = load_image(&g.photo, true).unwrap();
        let cfg = golden_cfg(&g);
        let (oh, ow) = get_size(img.width, img.height, cfg.min_size, cfg.max_size);
        assert_eq!((oh, ow), g.image_hw, "{}", g.name);
        let r = resize_bilinear_pil(&img, ow, oh).unwrap();
        // PIL's pixels from GLIP's normalised BGR input: round(x*std + mean).
        let mut want = vec![0u8; oh * ow * 3];
        for c in 0..3 {
            for y in 0..oh {
                for xx in 0..ow {
                    let v = x[(c * hp + y) * wp + xx] * PIXEL_STD_BGR[c] + PIXEL_MEAN_BGR[c];
                    want[(y * ow + xx) * 3 + (2 - c)] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        let (md, exact) = compare(&r.data, &want);
        println!(
            "{} resize {}x{} -> {ow}x{oh}: max |diff| = {md} grey levels, exact pixels = {:.4}%",
            g.name,
            img.width,
            img.height,
            exact * 100.0
        );
        assert_eq!(md, 0, "{}: expected bit-exact PIL resampling", g.name);
    }
}

#[test]
fn full_tensor_matches_glip_golden() {
    for g in E2eGolden::all().unwrap() {
        let tensors = g.tensors().unwrap();
        let t = &tensors["input/image"];
        let want = t.f32s().unwrap();
        let p = preprocess_path(&g.photo, &golden_cfg(&g)).unwrap();
        let (hp, wp) = g.padded_hw;
        assert_eq!([p.image.n, p.image.c, p.image.h, p.image.w], [1, 3, hp, wp]);
        assert_eq!(t.shape(), &[1, 3, hp, wp]);
        assert_eq!(p.resized_hw, g.image_hw);
        assert_eq!(p.original_hw, g.photo_hw);
        let md = p
            .image
            .data
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let exact = p
            .image
            .data
            .iter()
            .zip(want)
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "{} input/image: max |diff| = {md:e}, bitwise equal {exact}/{}",
            g.name,
            want.len()
        );
        assert!(md <= 1e-5, "{}: max diff {md}", g.name);
    }
}

#[test]
fn resize_matches_pillow_references() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("preprocess/pil_refs.json")).unwrap(),
    )
    .unwrap();
    // The references are crops of the photo the JSON names (Pillow's own resampling).
    let source = testdata()
        .join("golden")
        .join(meta["source"].as_str().unwrap());
    let src = load_image(&source, true).unwrap();
    for c in meta["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let v: Vec<usize> = c["crop_xywh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let o: Vec<usize> = c["out_wh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let cropped = crop(&src, v[0], v[1], v[2], v[3]);
        // Pillow 13 (pass order chosen by shape).
        let got = resize_bilinear_pil_with(&cropped, o[0], o[1], PassOrder::Pillow13).unwrap();
        let want = load_image(&testdata().join(format!("preprocess/{name}.png")), false).unwrap();
        assert_eq!((want.width, want.height), (o[0], o[1]));
        let (md, exact) = compare(&got.data, &want.data);
        println!(
            "{name}: {}x{} -> {}x{} vs Pillow 13: max |diff| = {md}, exact = {:.4}%",
            v[2],
            v[3],
            o[0],
            o[1],
            exact * 100.0
        );
        assert_eq!(md, 0, "{name}: not bit-exact with Pillow 13");
        // Pillow 12 (horizontal first): its own file where the result differs from Pillow 13.
        let p12 = testdata().join(format!("preprocess/{name}_pil12.png"));
        let want12 = if p12.exists() {
            load_image(&p12, false).unwrap()
        } else {
            want
        };
        let got12 = resize_bilinear_pil(&cropped, o[0], o[1]).unwrap();
        let (md, exact) = compare(&got12.data, &want12.data);
        println!(
            "{name}: vs Pillow 12: max |diff| = {md}, exact = {:.4}%",
            exact * 100.0
        );
        assert_eq!(md, 0, "{name}: not bit-exact with Pillow 12");
    }
}

#[test]
fn get_size_matches_python() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata().join("preprocess/pil_refs.json")).unwrap(),
    )
    .unwrap();
    let rows = meta["get_size"].as_array().unwrap();
    for r in rows {
        let v: Vec<i64> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let max = if v[3] < 0 { None } else { Some(v[3] as u32) };
        let got = get_size(v[0] as usize, v[1] as usize, v[2] as u32, max);
        assert_eq!(got, (v[4] as usize, v[5] as usize), "get_size{v:?}");
    }
    println!("get_size: {} cases equal to GLIP's Python", rows.len());
}

#[test]
fn no_resize_when_short_side_matches() {
    let mut rng = glip_rt::testing::Rng::new(7);
    let (w, h) = (37, 32);
    let data: Vec<u8> = (0..w * h * 3)
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    let cfg = PreprocessConfig {
        min_size: 32,
        max_size: Some(1333),
        ..PreprocessConfig::default()
    };
    let p = preprocess_rgb8(w, h, &data, &cfg).unwrap();
    assert_eq!(p.resized_hw, (32, 37));
    assert_eq!((p.image.h, p.image.w), (32, 64));
    // Pixel (0, 0) passes through unresized; padding is exactly zero.
    let b = data[2] as f32 / 255.0 * 255.0;
    assert_eq!(p.image.data[0], (b - PIXEL_MEAN_BGR[0]) / PIXEL_STD_BGR[0]);
    assert!(p.image.data[40..64].iter().all(|&v| v == 0.0));
    // Identity resize (same size) is a copy.
    let img = RgbImage8::new(w, h, data.clone()).unwrap();
    assert_eq!(resize_bilinear_pil(&img, w, h).unwrap().data, data);
}

// ---- decoding: formats, conversions, bad inputs ----

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = glip_rt::testing::test_tmp("glip-pre", tag);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn encode(img: image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut v = std::io::Cursor::new(Vec::new());
    img.write_to(&mut v, fmt).unwrap();
    v.into_inner()
}

#[test]
fn decodes_grey_rgba_16bit_webp() {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
    let rgba = ImageBuffer::from_fn(3, 2, |x, y| {
        Rgba([x as u8 * 10, y as u8 * 20, 7, (x * 100) as u8])
    });
    let got = decode_image(
        &encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        "rgba",
        true,
    )
    .unwrap();
    assert_eq!(&got.data[..6], &[0, 0, 7, 10, 0, 7]); // alpha dropped, not composited
    let grey = ImageBuffer::from_fn(2, 2, |x, y| Luma([(x + 2 * y) as u8 * 50]));
    let got = decode_image(
        &encode(DynamicImage::ImageLuma8(grey), ImageFormat::Png),
        "grey",
        true,
    )
    .unwrap();
    assert_eq!(
        got.data,
        vec![0, 0, 0, 50, 50, 50, 100, 100, 100, 150, 150, 150]
    );
    // 16-bit RGB → high byte (PIL's "RGB;16B"): 0x1234 → 0x12, 0xff80 → 0xff, 0x80ff → 0x80.
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(1, 1, |_, _| Rgb([0x1234, 0xff80, 0x80ff]));
    let got = decode_image(
        &encode(DynamicImage::ImageRgb16(rgb16), ImageFormat::Png),
        "rgb16",
        true,
    )
    .unwrap();
    assert_eq!(got.data, vec![0x12, 0xff, 0x80]);
    let rgb = ImageBuffer::from_fn(4, 3, |x, y| Rgb([x as u8 * 60, y as u8 * 80, 200]));
    let got = decode_image(
        &encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::WebP),
        "webp",
        true,
    )
    .unwrap();
    assert_eq!(got.data, rgb.into_raw()); // lossless WebP
    let jpg = encode(
        DynamicImage::ImageRgb8(ImageBuffer::from_pixel(16, 8, Rgb([120, 60, 30]))),
        ImageFormat::Jpeg,
    );
    let got = decode_image(&jpg, "jpeg", true).unwrap();
    assert_eq!((got.width, got.height), (16, 8));
    assert!(got
        .data
        .chunks(3)
        .all(|p| p[0].abs_diff(120) <= 3 && p[1].abs_diff(60) <= 3 && p[2].abs_diff(30) <= 3));
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose IHDR claims `w`×`h` (CRC correct) followed by a tiny IDAT and IEND.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let chunk = |t: &[u8], d: &[u8]| {
        let mut v = (d.len() as u32).to_be_bytes().to_vec();
        let mut td = t.to_vec();
        td.extend_from_slice(d);
        v.extend_from_slice(&td);
        v.extend_from_slice(&crc32(&td).to_be_bytes());
        v
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend(chunk(b"IHDR", &ihdr));
    f.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    f.extend(chunk(b"IEND", &[]));
    f
}

fn expect_image_err<T>(r: glip_rt::Result<T>, needle: &str) {
    match r {
        Err(e @ glip_rt::Error::Image { .. }) => {
            let m = e.to_string();
            assert!(
                m.to_lowercase().contains(&needle.to_lowercase()),
                "message {m:?} lacks {needle:?}"
            );
            println!("ok: {m}");
        }
        Err(e) => panic!("expected Error::Image containing {needle:?}, got {e:?}"),
        Ok(_) => panic!("expected Error::Image containing {needle:?}, got Ok"),
    }
}

#[test]
fn bad_inputs_are_errors() {
    let d = tmpdir("bad");
    let cfg = PreprocessConfig::default();
    expect_image_err(
        preprocess_path(&d.join("missing.png"), &cfg),
        "cannot read the file",
    );

    let p = d.join("text.png");
    std::fs::write(&p, b"this is not an image at all").unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "not an image");

    let p = d.join("empty.jpg");
    std::fs::write(&p, b"").unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "empty");

    // A valid PNG cut in half.
    let mut rng = glip_rt::testing::Rng::new(3);
    let noise = image::ImageBuffer::from_fn(64, 64, |_, _| {
        image::Rgb([(rng.next_u64() >> 56) as u8, 1, 2])
    });
    let full = encode(
        image::DynamicImage::ImageRgb8(noise),
        image::ImageFormat::Png,
    );
    let p = d.join("trunc.png");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "truncated");

    // A JPEG cut in half (PIL raises "image file is truncated").
    let mut rng = glip_rt::testing::Rng::new(5);
    let noise = image::ImageBuffer::from_fn(64, 64, |_, _| {
        image::Rgb([
            (rng.next_u64() >> 56) as u8,
            (rng.next_u64() >> 56) as u8,
            9,
        ])
    });
    let jpg = encode(
        image::DynamicImage::ImageRgb8(noise),
        image::ImageFormat::Jpeg,
    );
    let p = d.join("trunc.jpg");
    std::fs::write(&p, &jpg[..jpg.len() / 2]).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "truncated");

    // Corrupt bytes after a valid signature.
    let mut bad = full.clone();
    for b in bad.iter_mut().skip(40).take(200) {
        *b ^= 0x5a;
    }
    let p = d.join("corrupt.png");
    std::fs::write(&p, &bad).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "");

    let p = d.join("zero.png");
    std::fs::write(&p, png_header_only(0, 10)).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "");

    let p = d.join("huge.png");
    std::fs::write(&p, png_header_only(30_000, 30_000)).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "too large");
    let p = d.join("huge_mpx.png");
    std::fs::write(&p, png_header_only(19_000, 19_000)).unwrap();
    expect_image_err(preprocess_path(&p, &cfg), "too large");

    expect_image_err(preprocess_rgb8(0, 0, &[], &cfg), "zero-size");
    expect_image_err(preprocess_rgb8(4, 4, &[0; 10], &cfg), "needs 48 bytes");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn exif_orientation_applied() {
    // JPEG with an APP1 Exif segment: orientation 6 (rotate 90° clockwise to display).
    use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
    let img = ImageBuffer::from_fn(16, 8, |x, _| {
        if x < 8 {
            Rgb([250u8, 250, 250])
        } else {
            Rgb([0u8, 0, 0])
        }
    });
    let jpg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
    // TIFF header (big-endian), one IFD entry: tag 0x0112 SHORT count 1 value 6.
    let tiff: Vec<u8> = [
        b"MM\x00\x2a\x00\x00\x00\x08".as_slice(),
        &[0, 1],
        &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut with = jpg[..2].to_vec();
    with.extend([0xff, 0xe1]);
    with.extend(((app1.len() + 2) as u16).to_be_bytes());
    with.extend(app1);
    with.extend(&jpg[2..]);
    let up = decode_image(&with, "exif", true).unwrap();
    assert_eq!((up.width, up.height), (8, 16));
    // Rotated 90° clockwise: the white left half becomes the top half.
    assert!(up.data[..8 * 3].iter().all(|&v| v > 200));
    assert!(up.data[15 * 8 * 3..].iter().all(|&v| v < 50));
    let raw = decode_image(&with, "exif", false).unwrap();
    assert_eq!((raw.width, raw.height), (16, 8));
}
