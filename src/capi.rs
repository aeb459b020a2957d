//! The C ABI (`include/glip.h`): a detector handle for video-analytics pipelines written in
//! C or C++ (GStreamer/DeepStream elements, NVR software). Every function reports failure
//! through its return value, with the message from `glip_last_error()`; none unwinds a
//! panic across the boundary.

use crate::api::Detector;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// One detection as C sees it: xyxy box in original-image pixels, score, 1-based label.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GlipDetection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub label: u32,
}

/// Opaque handle: a detector plus the C strings of the current prompt's phrases.
pub struct GlipDetector {
    det: Detector,
    phrases: Vec<(u32, CString)>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: impl Into<String>) {
    let s = msg.into().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(s).unwrap_or_default());
}

/// Runs `f`, turning an error or a panic into `fail` plus a message for glip_last_error.
fn guard<T>(fail: T, f: impl FnOnce() -> crate::Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_error(e.to_string());
            fail
        }
        Err(_) => {
            set_error("internal error (panic) in glip-rt");
            fail
        }
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn opt_path(p: *const c_char, what: &str) -> crate::Result<Option<PathBuf>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a NUL-terminated string (documented in glip.h).
    let s = unsafe { CStr::from_ptr(p) };
    let s = s
        .to_str()
        .map_err(|_| crate::Error::Invalid(format!("{what}: path is not UTF-8")))?;
    // An empty path would only give the OS's bare ": No such file or directory".
    if s.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{what}: the path is empty (give a file, or NULL for the default where allowed)"
        )));
    }
    Ok(Some(PathBuf::from(s)))
}

/// Creates a detector from GLIP's yaml config and safetensors weights; `bert_config` and
/// `tokenizer` may be NULL (bert-base-uncased). Runs on the device `auto` picks (a GPU when
/// present, else the CPU). Returns NULL on failure.
///
/// # Safety
/// The arguments are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_new(
    config: *const c_char,
    weights: *const c_char,
    bert_config: *const c_char,
    tokenizer: *const c_char,
) -> *mut GlipDetector {
    // SAFETY: forwarded caller contract.
    unsafe { glip_detector_new_on(config, weights, bert_config, tokenizer, std::ptr::null()) }
}

/// [`glip_detector_new`] on a chosen device: `device` is "auto", "cpu", "cuda", "cuda:N" or
/// "emu" (the emulated CUDA device), or NULL for "auto". An unknown name or an absent device
/// is an error (NULL; glip_last_error says why).
///
/// # Safety
/// The arguments are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_new_on(
    config: *const c_char,
    weights: *const c_char,
    bert_config: *const c_char,
    tokenizer: *const c_char,
    device: *const c_char,
) -> *mut GlipDetector {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded caller contract (NUL-terminated or NULL).
        let (c, w, b, t, d) = unsafe {
            (
                opt_path(config, "config")?,
                opt_path(weights, "weights")?,
                opt_path(bert_config, "bert_config")?,
                opt_path(tokenizer, "tokenizer")?,
                opt_path(device, "device")?,
            )
        };
        let c = c.ok_or_else(|| crate::Error::Config("config path is NULL".into()))?;
        let w = w.ok_or_else(|| crate::Error::Config("weights path is NULL".into()))?;
        let device = match d {
            Some(d) => crate::DeviceChoice::parse(&d.to_string_lossy())?,
            None => crate::DeviceChoice::Auto,
        };
        let mut builder = Detector::builder().config(c).weights(w).device(device);
        if let Some(b) = b {
            builder = builder.bert_config(b);
        }
        if let Some(t) = t {
            builder = builder.tokenizer(t);
        }
        let det = builder.build()?;
        Ok(Box::into_raw(Box::new(GlipDetector {
            det,
            phrases: Vec::new(),
        })))
    })
}

/// Sets the prompt ("person. bicycle. traffic light."). Returns 0, or -1 on failure.
///
/// # Safety
/// `det` comes from glip_detector_new; `prompt` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_set_prompt(
    det: *mut GlipDetector,
    prompt: *const c_char,
) -> i32 {
    guard(-1, || {
        // SAFETY: caller contract: a live handle, used by one thread at a time.
        let d = unsafe { det.as_mut() }
            .ok_or_else(|| crate::Error::Invalid("detector is NULL".into()))?;
        if prompt.is_null() {
            return Err(crate::Error::Prompt("prompt is NULL".into()));
        }
        // SAFETY: caller contract: NUL-terminated.
        let p = unsafe { CStr::from_ptr(prompt) }
            .to_str()
            .map_err(|_| crate::Error::Prompt("prompt is not UTF-8".into()))?;
        d.det.set_prompt(p)?;
        d.phrases.clear();
        for c in d.det.prompt_chunks() {
            for ph in &c.prompt.phrases {
                d.phrases.push((
                    ph.label,
                    CString::new(ph.name.replace('\0', " ")).unwrap_or_default(),
                ));
            }
        }
        Ok(0)
    })
}

/// Detects in one RGB24 frame (`width * height * 3` bytes, row-major). Writes at most
/// `capacity` detections to `out` and the number found to `*count` (which may exceed
/// `capacity`). Returns 0, or -1 on failure.
///
/// # Safety
/// `rgb` points to `width * height * 3` readable bytes; `out` to `capacity` writable
/// GlipDetection (or is NULL with capacity 0); `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_detect_rgb(
    det: *const GlipDetector,
    rgb: *const u8,
    width: u32,
    height: u32,
    out: *mut GlipDetection,
    capacity: u32,
    count: *mut u32,
) -> i32 {
    guard(-1, || {
        // SAFETY: caller contract: a live handle.
        let d = unsafe { det.as_ref() }
            .ok_or_else(|| crate::Error::Invalid("detector is NULL".into()))?;
        if rgb.is_null() || count.is_null() || (out.is_null() && capacity > 0) {
            return Err(crate::Error::Invalid("rgb, count or out is NULL".into()));
        }
        // Bounded before the frame is copied: a wrong size must not copy gigabytes.
        crate::limits::checked_size(
            "width x height",
            &[width as usize, height as usize],
            crate::limits::MAX_IMAGE_PIXELS,
            "pixels",
        )?;
        let n = (width as usize) * (height as usize) * 3;
        // SAFETY: caller contract: `rgb` holds width*height*3 readable bytes.
        let data = unsafe { std::slice::from_raw_parts(rgb, n) }.to_vec();
        let img = crate::preprocess::RgbImage8::new(width as usize, height as usize, data)?;
        let dets = d.det.detect(&img)?;
        let k = dets.len().min(capacity as usize);
        for (i, x) in dets.iter().take(k).enumerate() {
            let v = GlipDetection {
                x1: x.bbox[0],
                y1: x.bbox[1],
                x2: x.bbox[2],
                y2: x.bbox[3],
                score: x.score,
                label: x.label,
            };
            // SAFETY: i < k <= capacity, and `out` holds `capacity` elements.
            unsafe { out.add(i).write(v) };
        }
        // SAFETY: caller contract: `count` is writable.
        unsafe { count.write(dets.len() as u32) };
        Ok(0)
    })
}

/// The phrase of a 1-based label of the current prompt, or NULL. Valid until the next
/// glip_detector_set_prompt or glip_detector_free.
///
/// # Safety
/// `det` comes from glip_detector_new.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_phrase(
    det: *const GlipDetector,
    label: u32,
) -> *const c_char {
    // SAFETY: caller contract: a live handle.
    match unsafe { det.as_ref() } {
        Some(d) => d
            .phrases
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(std::ptr::null(), |(_, s)| s.as_ptr()),
        None => std::ptr::null(),
    }
}

/// The message of this thread's last failure ("" if none). Valid until the next failing
/// call on this thread.
#[no_mangle]
pub extern "C" fn glip_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Frees a detector (NULL is ignored).
///
/// # Safety
/// `det` comes from glip_detector_new and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_free(det: *mut GlipDetector) {
    if !det.is_null() {
        // SAFETY: the pointer came from Box::into_raw in glip_detector_new and is freed once.
        drop(unsafe { Box::from_raw(det) });
    }
}
