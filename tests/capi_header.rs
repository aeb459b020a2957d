//! include/glip.h is what cbindgen makes of src/capi.rs (with cbindgen.toml): a changed
//! function, struct or comment in the C ABI fails this test until the header is regenerated
//! with `GLIP_BLESS=1 cargo test --release --test capi_header`.

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/capi.rs"))
        .generate()
        .unwrap();
    let mut made = Vec::new();
    bindings.write(&mut made);
    let made = String::from_utf8(made).unwrap();
    let path = root.join("include/glip.h");
    if std::env::var("GLIP_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    // Every function of the ABI is in it (the generator saw the whole file).
    for f in [
        "glip_detector_new(",
        "glip_detector_new_on(",
        "glip_detector_new_dir(",
        "glip_detector_set_prompt(",
        "glip_detector_detect_rgb(",
        "glip_detector_detect_frame(",
        "glip_detector_detect_cuda(",
        "glip_detector_phrase(",
        "glip_last_error(",
        "glip_last_error_code(",
        "glip_detector_free(",
        "GLIP_PIXEL_FORMAT_NV12",
        "GLIP_STATUS_DEVICE",
    ] {
        assert!(made.contains(f), "cbindgen's header lacks {f}:\n{made}");
    }
    assert!(
        committed == made,
        "include/glip.h is not what cbindgen makes of src/capi.rs; regenerate it with \
         GLIP_BLESS=1 cargo test --release --test capi_header\n--- made ---\n{made}"
    );
}
