//! The C ABI (`include/glip.h`, generated from this file by cbindgen; `tests/capi_header.rs`
//! checks it is current): a detector handle for video-analytics pipelines written in C or
//! C++ (GStreamer/DeepStream elements, NVR software). Every function reports failure through
//! its return value (a [`GlipStatus`], or NULL for a handle), with the message from
//! `glip_last_error()` and the status from `glip_last_error_code()`; none unwinds a panic
//! across the boundary.
//!
//! Threads: a handle may be used from any thread, by one thread at a time (a detector runs
//! one forward at a time); different handles run on different threads at once. Each
//! function's comment says what it allows.

use crate::api::Detector;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
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

/// What a call returns: `GLIP_STATUS_OK`, or the kind of failure (`glip_last_error()` has
/// the message).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlipStatus {
    Ok = 0,
    /// A NULL pointer, a size, stride, format or capacity that cannot be right.
    InvalidArgument = 1,
    /// A file that cannot be read.
    Io = 2,
    /// The config, the weights or the model they make (a missing tensor, a wrong shape).
    Model = 3,
    /// The prompt (empty, not UTF-8, no phrase, too long).
    Prompt = 4,
    /// A frame that cannot be decoded or converted.
    Image = 5,
    /// No such device, a CUDA failure, or device memory given to a detector on the CPU.
    Device = 6,
    /// An input over one of glip-rt's limits (image pixels, file size).
    Limit = 7,
    /// A bug in glip-rt (a panic caught at the boundary).
    Internal = 8,
}

impl GlipStatus {
    fn of(e: &crate::Error) -> GlipStatus {
        use crate::Error as E;
        match e {
            E::Io { .. } => GlipStatus::Io,
            E::Image { .. } => GlipStatus::Image,
            E::Prompt(_) | E::Tokenizer(_) => GlipStatus::Prompt,
            E::Weights { .. } | E::Config(_) | E::Shape { .. } | E::DType { .. } => {
                GlipStatus::Model
            }
            E::Cuda(_)
            | E::KernelsNotCompiled
            | E::KernelCheck { .. }
            | E::NotOnDevice { .. }
            | E::NoDevice(_) => GlipStatus::Device,
            E::Invalid(_) => GlipStatus::InvalidArgument,
            E::Limit { .. } => GlipStatus::Limit,
            E::StdoutClosed => GlipStatus::Internal,
        }
    }
}

/// A raw frame's pixel layout (`GlipFrame::format`); the YUV formats are read as BT.601
/// limited range, 4:2:0 chroma (ffmpeg's default).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlipPixelFormat {
    /// R, G, B bytes per pixel; one plane.
    Rgb24 = 0,
    /// B, G, R bytes per pixel; one plane.
    Bgr24 = 1,
    /// R, G, B, A (alpha ignored); one plane.
    Rgba = 2,
    /// B, G, R, A or B, G, R, x (alpha ignored); one plane.
    Bgra = 3,
    /// One luma byte per pixel; one plane.
    Gray8 = 4,
    /// Y plane, then interleaved U, V at half resolution; two planes.
    Nv12 = 5,
    /// Y plane, U plane, V plane at half resolution; three planes.
    I420 = 6,
}

impl GlipPixelFormat {
    fn from_u32(v: u32) -> crate::Result<crate::pixfmt::PixFmt> {
        use crate::pixfmt::PixFmt;
        Ok(match v {
            0 => PixFmt::Rgb24,
            1 => PixFmt::Bgr24,
            2 => PixFmt::Rgba,
            3 => PixFmt::Bgra,
            4 => PixFmt::Gray,
            5 => PixFmt::Nv12,
            6 => PixFmt::Yuv420p,
            _ => {
                return Err(crate::Error::Invalid(format!(
                    "frame format {v} is not a GlipPixelFormat (0..=6)"
                )))
            }
        })
    }
}

/// One frame as planes in memory order (see GlipPixelFormat for how many): host memory for
/// `glip_detector_detect_frame`, device memory for `glip_detector_detect_cuda`. A stride is
/// the bytes from one row's start to the next's (0: rows packed); a plane's last row need
/// not be padded. Planes past the format's count are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GlipFrame {
    /// A GlipPixelFormat value.
    pub format: u32,
    pub width: u32,
    pub height: u32,
    pub planes: [*const u8; 3],
    pub strides: [u32; 3],
}

thread_local! {
    static LAST_ERROR: RefCell<(GlipStatus, CString)> =
        RefCell::new((GlipStatus::Ok, CString::default()));
}

fn set_error(code: GlipStatus, msg: impl Into<String>) {
    let s = msg.into().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = (code, CString::new(s).unwrap_or_default()));
}

/// Runs `f`; an error or a panic becomes its status, recorded with its message for
/// glip_last_error_code / glip_last_error.
fn run<T>(f: impl FnOnce() -> crate::Result<T>) -> std::result::Result<T, GlipStatus> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let code = GlipStatus::of(&e);
            set_error(code, e.to_string());
            Err(code)
        }
        Err(_) => {
            set_error(GlipStatus::Internal, "internal error (panic) in glip-rt");
            Err(GlipStatus::Internal)
        }
    }
}

/// [`run`] for calls that return a value: `fail` on failure.
fn guard<T>(fail: T, f: impl FnOnce() -> crate::Result<T>) -> T {
    run(f).unwrap_or(fail)
}

/// [`run`] for calls that return a status.
fn status(f: impl FnOnce() -> crate::Result<()>) -> GlipStatus {
    run(f).err().unwrap_or(GlipStatus::Ok)
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
/// present, else the CPU). Returns NULL on failure (glip_last_error_code says why).
/// Thread-safe: any thread, at the same time as calls on other handles.
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

/// glip_detector_new on a chosen device: `device` is "auto", "cpu", "cuda", "cuda:N" or
/// "emu" (the emulated CUDA device), or NULL for "auto". An unknown name or an absent device
/// is an error (NULL; glip_last_error says why). Thread-safe as glip_detector_new.
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
        let mut builder = Detector::builder().config(c).weights(w);
        if let Some(b) = b {
            builder = builder.bert_config(b);
        }
        if let Some(t) = t {
            builder = builder.tokenizer(t);
        }
        new_handle(builder, d)
    })
}

/// A detector from a model folder: `config.yaml`, `model.safetensors` and, when present,
/// `bert_config.json` and `tokenizer.json`; on `device` as glip_detector_new_on (NULL for
/// "auto"). Returns NULL on failure (glip_last_error says why: a missing folder or file is
/// named). Thread-safe as glip_detector_new.
///
/// # Safety
/// The arguments are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_new_dir(
    model_dir: *const c_char,
    device: *const c_char,
) -> *mut GlipDetector {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded caller contract (NUL-terminated or NULL).
        let (m, d) = unsafe {
            (
                opt_path(model_dir, "model_dir")?,
                opt_path(device, "device")?,
            )
        };
        let m = m.ok_or_else(|| crate::Error::Config("model_dir path is NULL".into()))?;
        new_handle(Detector::builder().model_dir(m), d)
    })
}

/// Builds the detector on the named device (None: auto) and boxes it as a handle.
fn new_handle(
    builder: crate::api::DetectorBuilder,
    device: Option<PathBuf>,
) -> crate::Result<*mut GlipDetector> {
    let device = match device {
        // An unknown name is a bad argument here (GLIP_STATUS_INVALID_ARGUMENT).
        Some(d) => crate::DeviceChoice::parse(&d.to_string_lossy())
            .map_err(|e| crate::Error::Invalid(format!("device: {e}")))?,
        None => crate::DeviceChoice::Auto,
    };
    let det = builder.device(device).build()?;
    Ok(Box::into_raw(Box::new(GlipDetector {
        det,
        phrases: Vec::new(),
    })))
}

/// The detector behind a handle, or GLIP_STATUS_INVALID_ARGUMENT when it is NULL.
///
/// # Safety
/// `det` is NULL or a live handle from glip_detector_new that no other thread uses now.
unsafe fn handle_mut<'a>(det: *mut GlipDetector) -> crate::Result<&'a mut GlipDetector> {
    // SAFETY: forwarded caller contract.
    unsafe { det.as_mut() }.ok_or_else(|| crate::Error::Invalid("detector is NULL".into()))
}

/// Sets the prompt ("person. bicycle. traffic light."), encoded once for the frames after
/// it. On failure the previous prompt stays. Not at the same time as any other call on
/// `det`.
///
/// # Safety
/// `det` comes from glip_detector_new; `prompt` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_set_prompt(
    det: *mut GlipDetector,
    prompt: *const c_char,
) -> GlipStatus {
    status(|| {
        // SAFETY: caller contract: a live handle, used by one thread at a time.
        let d = unsafe { handle_mut(det) }?;
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
        Ok(())
    })
}

/// Detections scoring below `threshold` (in [0, 1]) are left out from the next frame on;
/// the default 0 keeps GLIP's full top 100. Phrases given their own threshold
/// (glip_detector_set_phrase_thresholds) keep it. On failure nothing changes. Not at the
/// same time as any other call on `det`.
///
/// # Safety
/// `det` comes from glip_detector_new.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_set_threshold(
    det: *mut GlipDetector,
    threshold: f32,
) -> GlipStatus {
    status(|| {
        // SAFETY: caller contract: a live handle, used by one thread at a time.
        let d = unsafe { handle_mut(det) }?;
        d.det.set_threshold(threshold)
    })
}

/// Per-phrase thresholds of the current prompt as a JSON object, e.g.
/// `{"traffic light": 0.3, "person": 0.5}`: a detection of such a phrase is kept from its
/// own threshold on, the others from the detector's. After glip_detector_set_prompt
/// (before it: GLIP_STATUS_PROMPT). Replaces those set before; NULL or `{}` clears them,
/// and so does a new prompt. A phrase the prompt lacks is
/// GLIP_STATUS_PROMPT, unreadable JSON or a value outside [0, 1]
/// GLIP_STATUS_INVALID_ARGUMENT; on failure nothing changes. Not at the same time as any
/// other call on `det`.
///
/// # Safety
/// `det` comes from glip_detector_new; `json` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_set_phrase_thresholds(
    det: *mut GlipDetector,
    json: *const c_char,
) -> GlipStatus {
    status(|| {
        // SAFETY: caller contract: a live handle, used by one thread at a time.
        let d = unsafe { handle_mut(det) }?;
        let pairs = if json.is_null() {
            Vec::new()
        } else {
            // SAFETY: caller contract: NUL-terminated.
            let text = unsafe { CStr::from_ptr(json) }
                .to_str()
                .map_err(|_| crate::Error::Invalid("phrase thresholds are not UTF-8".into()))?;
            crate::api::phrase_thresholds_from_json(text)?
        };
        d.det.set_phrase_thresholds(&pairs)
    })
}

/// Writes at most `capacity` of `dets` to `out` and their number to `count`.
///
/// # Safety
/// `out` holds `capacity` writable GlipDetection (or is NULL with capacity 0); `count` is
/// writable.
unsafe fn write_detections(
    dets: &[crate::api::Detection],
    out: *mut GlipDetection,
    capacity: u32,
    count: *mut u32,
) {
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
    unsafe { count.write(u32::try_from(dets.len()).unwrap_or(u32::MAX)) };
}

/// The handle and output pointers every detect call takes, checked.
///
/// # Safety
/// `det` is NULL or a live handle.
unsafe fn checked<'a>(
    det: *const GlipDetector,
    out: *mut GlipDetection,
    capacity: u32,
    count: *mut u32,
) -> crate::Result<&'a GlipDetector> {
    // SAFETY: caller contract: NULL or a live handle.
    let d =
        unsafe { det.as_ref() }.ok_or_else(|| crate::Error::Invalid("detector is NULL".into()))?;
    if count.is_null() || (out.is_null() && capacity > 0) {
        return Err(crate::Error::Invalid(
            "count is NULL, or out is NULL with a capacity above 0".into(),
        ));
    }
    Ok(d)
}

/// A frame's format, width, height and its planes' (pointer, stride, bytes spanned).
type CheckedFrame = (
    crate::pixfmt::PixFmt,
    usize,
    usize,
    Vec<(*const u8, usize, usize)>,
);

/// The frame's format, size and planes, checked: the size before anything is read, a NULL
/// plane, a stride under its row.
fn frame_planes(f: &GlipFrame) -> crate::Result<CheckedFrame> {
    let fmt = GlipPixelFormat::from_u32(f.format)?;
    let (w, h) = (f.width as usize, f.height as usize);
    crate::api::check_frame_size(w, h)?;
    let layout = fmt
        .planes(w, h)
        .ok_or_else(|| crate::Error::Invalid("frame size overflows".into()))?;
    let mut planes = Vec::with_capacity(layout.len());
    for (i, &(row, rows)) in layout.iter().enumerate() {
        let ptr = f.planes[i];
        if ptr.is_null() {
            return Err(crate::Error::Invalid(format!(
                "a {} frame has {} planes; plane {i} is NULL",
                fmt.name(),
                layout.len()
            )));
        }
        let stride = match f.strides[i] {
            0 => row,
            s => s as usize,
        };
        let span = crate::pixfmt::PixFmt::plane_span(row, rows, stride).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "plane {i}: stride {stride} is under its row of {row} bytes ({w} pixels of {})",
                fmt.name()
            ))
        })?;
        planes.push((ptr, stride, span));
    }
    Ok((fmt, w, h, planes))
}

/// Detects in one RGB24 frame (`width * height * 3` bytes, row-major, rows packed). Writes
/// at most `capacity` detections to `out` and the number found to `*count` (which may exceed
/// `capacity`). Not at the same time as another call on `det`; other handles may run on
/// other threads meanwhile.
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
) -> GlipStatus {
    let frame = GlipFrame {
        format: GlipPixelFormat::Rgb24 as u32,
        width,
        height,
        planes: [rgb, std::ptr::null(), std::ptr::null()],
        strides: [0; 3],
    };
    // SAFETY: forwarded caller contract (one packed RGB24 plane).
    unsafe { glip_detector_detect_frame(det, &frame, out, capacity, count) }
}

/// Detects in one frame in host memory: any GlipPixelFormat, planes with row strides (as
/// video frameworks hand them out). Output as glip_detector_detect_rgb. Not at the same time
/// as another call on `det`.
///
/// # Safety
/// `frame` points to a GlipFrame whose planes each hold their rows at their strides
/// (readable); `out`, `count` as glip_detector_detect_rgb.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_detect_frame(
    det: *const GlipDetector,
    frame: *const GlipFrame,
    out: *mut GlipDetection,
    capacity: u32,
    count: *mut u32,
) -> GlipStatus {
    status(|| {
        // SAFETY: caller contract.
        let d = unsafe { checked(det, out, capacity, count) }?;
        // SAFETY: caller contract: NULL or a readable GlipFrame.
        let f = unsafe { frame.as_ref() }
            .ok_or_else(|| crate::Error::Invalid("frame is NULL".into()))?;
        let (fmt, w, h, planes) = frame_planes(f)?;
        let slices: Vec<(&[u8], usize)> = planes
            .iter()
            // SAFETY: caller contract: plane `i` holds its rows at its stride, which span
            // `span` bytes (checked against the format's row sizes above).
            .map(|&(p, stride, span)| (unsafe { std::slice::from_raw_parts(p, span) }, stride))
            .collect();
        let dets = d.det.detect_frame(fmt, w, h, &slices)?;
        // SAFETY: checked above; caller contract on `out` and `count`.
        unsafe { write_detections(&dets, out, capacity, count) };
        Ok(())
    })
}

/// Detects in one frame in CUDA device memory (`frame`'s planes are device addresses in the
/// detector's CUDA context, e.g. a decoder's output), read on `stream` (a CUstream; NULL for
/// the default stream) after the work queued there. The planes are copied to the host
/// and take glip_detector_detect_frame's path. A detector on the CPU (or the emulated
/// device) returns GLIP_STATUS_DEVICE. Not at the same time as another call on `det`.
///
/// # Safety
/// The planes are device memory holding their rows at their strides; `stream` is NULL or a
/// live stream of the detector's context; `out`, `count` as glip_detector_detect_rgb.
#[no_mangle]
pub unsafe extern "C" fn glip_detector_detect_cuda(
    det: *const GlipDetector,
    frame: *const GlipFrame,
    stream: *mut c_void,
    out: *mut GlipDetection,
    capacity: u32,
    count: *mut u32,
) -> GlipStatus {
    status(|| {
        // SAFETY: caller contract.
        let d = unsafe { checked(det, out, capacity, count) }?;
        // SAFETY: caller contract: NULL or a readable GlipFrame.
        let f = unsafe { frame.as_ref() }
            .ok_or_else(|| crate::Error::Invalid("frame is NULL".into()))?;
        let (fmt, w, h, planes) = frame_planes(f)?;
        let device: Vec<(u64, usize)> = planes
            .iter()
            .map(|&(p, stride, _)| (p as u64, stride))
            .collect();
        // SAFETY: forwarded caller contract (device planes, stream of the context).
        let dets = unsafe { d.det.detect_device_frame(fmt, w, h, &device, stream) }?;
        // SAFETY: checked above; caller contract on `out` and `count`.
        unsafe { write_detections(&dets, out, capacity, count) };
        Ok(())
    })
}

/// The phrase of a 1-based label of the current prompt, or NULL. Valid until the next
/// glip_detector_set_prompt or glip_detector_free on `det`; not at the same time as those.
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
/// call on this thread. Thread-safe: each thread has its own.
#[no_mangle]
pub extern "C" fn glip_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().1.as_ptr())
}

/// The status of this thread's last failure (GLIP_STATUS_OK if none): why a call that
/// returns a handle returned NULL. Thread-safe: each thread has its own.
#[no_mangle]
pub extern "C" fn glip_last_error_code() -> GlipStatus {
    LAST_ERROR.with(|e| e.borrow().0)
}

/// Frees a detector (NULL is ignored). Not at the same time as any other call on `det`.
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
