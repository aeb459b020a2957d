//! Frames in device memory (`Detector::detect_device_frame`, the C ABI's
//! `glip_detector_detect_cuda`). On a GPU: an NV12 frame with padded rows, uploaded with
//! cudarc to device memory of the same (primary) context, gives the detections of the same
//! frame from host memory, bit for bit. On the emulated device and the CPU: a clear error.
//! `scripts/gpu-check.sh` runs this under GLIP_REQUIRE_GPU=1.

use glip_rt::api::Detector;
use glip_rt::pixfmt::PixFmt;
use glip_rt::preprocess::load_image;
use glip_rt::testing::{cuda_device, testdata, E2eGolden};
use glip_rt::DeviceChoice;

fn detector(g: &E2eGolden, device: DeviceChoice) -> Detector {
    let mut d = Detector::builder()
        .config(&g.config)
        .weights(&g.weights)
        .bert_config(testdata().join("tiny_bert_config.json"))
        .device(device)
        .allow_fallback(false)
        .build()
        .unwrap();
    d.set_prompt(&g.caption).unwrap();
    d
}

#[test]
fn device_frames_match_host_frames() {
    let g = &E2eGolden::all().unwrap()[0];
    let be = cuda_device("device_frames_match_host_frames");
    let img = load_image(&g.photo, true).unwrap();
    let (w, h) = (img.width, img.height);
    let f = PixFmt::Nv12;
    let packed = f.from_rgb(&img);
    // Each plane at its row + 64 bytes per row (a decoder's pitch).
    let mut at = 0;
    let planes: Vec<(Vec<u8>, usize)> = f
        .planes(w, h)
        .unwrap()
        .into_iter()
        .map(|(row, rows)| {
            let stride = row + 64;
            let mut p = vec![0xEE; stride * rows];
            for r in 0..rows {
                p[r * stride..r * stride + row].copy_from_slice(&packed[at..at + row]);
                at += row;
            }
            (p, stride)
        })
        .collect();
    let host: Vec<(&[u8], usize)> = planes.iter().map(|(p, s)| (p.as_slice(), *s)).collect();

    if be.is_emulated() {
        // Nothing a caller holds is the emulated device's memory: refused, naming it.
        let det = detector(g, DeviceChoice::Emulated);
        let fake: Vec<(u64, usize)> = host.iter().map(|(p, s)| (p.as_ptr() as u64, *s)).collect();
        // SAFETY: the emulated device refuses before any address is used.
        let err = unsafe { det.detect_device_frame(f, w, h, &fake, std::ptr::null_mut()) }
            .unwrap_err()
            .to_string();
        assert!(err.contains("emulated"), "{err}");
        let cpu = detector(g, DeviceChoice::Cpu);
        // SAFETY: the CPU backend refuses before any address is used.
        let err = unsafe { cpu.detect_device_frame(f, w, h, &fake, std::ptr::null_mut()) }
            .unwrap_err()
            .to_string();
        assert!(err.contains("CUDA backend on a GPU"), "{err}");
        return;
    }

    use cudarc::driver::{CudaContext, DevicePtr};
    let det = detector(g, DeviceChoice::parse("cuda:0").unwrap());
    let want = det.detect_frame(f, w, h, &host).unwrap();
    assert!(!want.is_empty());
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.new_stream().unwrap();
    let bufs: Vec<_> = planes
        .iter()
        .map(|(p, _)| stream.clone_htod(p.as_slice()).unwrap())
        .collect();
    let ptrs: Vec<(u64, usize)> = bufs
        .iter()
        .zip(&planes)
        .map(|(b, (_, s))| (b.device_ptr(&stream).0, *s))
        .collect();
    // SAFETY: each address is a live allocation of the primary context holding its plane at
    // its stride; the stream is live; the uploads are queued on it before the copies.
    let got =
        unsafe { det.detect_device_frame(f, w, h, &ptrs, stream.cu_stream().cast()) }.unwrap();
    assert_eq!(got, want, "device frame vs host frame");
    println!(
        "{} detections from device memory equal the host frame's",
        got.len()
    );
}
