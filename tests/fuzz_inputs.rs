//! Fuzz-style tests: random mutations of valid inputs, seeded (reproducible) and bounded in
//! time, for the readers of hostile bytes: the pickle VM, the safetensors header, the yaml
//! config reader, the frame decoders of `glip stream` (raw RGB24 and encoded images) and the
//! tokenizer's input. Each mutated input must give a result or an error, never a panic, and
//! each run must stay fast.

use glip_rt::model::config::GlipConfig;
use glip_rt::testing::{testdata, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Time budget of one target (CI has 2 cores; five targets run in about 10 s in all).
const BUDGET: Duration = Duration::from_secs(2);
const MAX_ROUNDS: usize = 3000;

/// One random edit of `b`: flip, overwrite, insert, delete, duplicate or truncate, or an
/// "interesting" value (0, 0xff, 0x7f, 0x80, a big little-endian length) at a random place.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let pick = |rng: &mut Rng, n: usize| (rng.next_u64() as usize) % n.max(1);
    match rng.next_u64() % 8 {
        0 if !b.is_empty() => {
            let i = pick(rng, b.len());
            b[i] ^= 1 << (rng.next_u64() % 8);
        }
        1 if !b.is_empty() => {
            let i = pick(rng, b.len());
            b[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = pick(rng, b.len() + 1);
            let n = 1 + pick(rng, 16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, ins);
        }
        3 if !b.is_empty() => {
            let i = pick(rng, b.len());
            let n = (1 + pick(rng, 32)).min(b.len() - i);
            b.drain(i..i + n);
        }
        4 if !b.is_empty() => {
            let i = pick(rng, b.len());
            let n = (1 + pick(rng, 64)).min(b.len() - i);
            let span: Vec<u8> = b[i..i + n].to_vec();
            let j = pick(rng, b.len() + 1);
            b.splice(j..j, span);
        }
        5 if !b.is_empty() => {
            let n = pick(rng, b.len());
            b.truncate(n);
        }
        _ if !b.is_empty() => {
            let vals: [&[u8]; 5] = [&[0], &[0xff], &[0x7f], &[0x80], &[0xff, 0xff, 0xff, 0x7f]];
            let v = vals[pick(rng, vals.len())];
            let i = pick(rng, b.len());
            let end = (i + v.len()).min(b.len());
            b[i..end].copy_from_slice(&v[..end - i]);
        }
        _ => b.push(rng.next_u64() as u8),
    }
}

/// Runs `check` on mutations of `seed_input` (1 to 4 edits each) until the budget is spent;
/// a panic fails with the round and the input's length. Returns (rounds, accepted).
fn fuzz(
    name: &str,
    seed: u64,
    seed_input: &[u8],
    mut check: impl FnMut(&[u8]) -> bool,
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let (mut rounds, mut accepted) = (0, 0);
    while rounds < MAX_ROUNDS && start.elapsed() < BUDGET {
        let mut b = seed_input.to_vec();
        for _ in 0..1 + rng.next_u64() % 4 {
            mutate(&mut rng, &mut b);
        }
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| check(&b))) {
            Ok(ok) => accepted += ok as usize,
            Err(_) => {
                let p = std::env::temp_dir().join(format!("glip-fuzz-{name}-{rounds}.bin"));
                let _ = std::fs::write(&p, &b);
                panic!(
                    "{name}: round {rounds} (seed {seed}) panicked; input in {}",
                    p.display()
                );
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: round {rounds} took {:?}",
            t.elapsed()
        );
        rounds += 1;
    }
    println!(
        "{name}: {rounds} mutations, {accepted} accepted, {:?}",
        start.elapsed()
    );
    (rounds, accepted)
}

fn pth_pickle() -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(testdata().join("pth/glip_shaped.pth")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let name = z
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .unwrap()
        .to_string();
    let mut b = Vec::new();
    z.by_name(&name).unwrap().read_to_end(&mut b).unwrap();
    b
}

#[test]
fn fuzz_pickle_vm() {
    let pkl = pth_pickle();
    let (rounds, ok) = fuzz("pickle", 11, &pkl, |b| {
        glip_rt::pth::pickle::unpickle_report(b).is_ok()
    });
    assert!(
        rounds > 100 && ok < rounds,
        "{rounds} rounds, {ok} accepted"
    );
}

#[test]
fn fuzz_safetensors_header() {
    let bytes = std::fs::read(testdata().join("golden/12_e2e_tiny_weights.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Mutate the length and the JSON header; the tensor data stays (it is not parsed).
    let (head, data) = bytes.split_at(8 + hlen);
    let p = std::env::temp_dir().join(format!("glip-fuzz-st-{}.safetensors", std::process::id()));
    let (rounds, _) = fuzz("safetensors", 12, head, |h| {
        let mut f = h.to_vec();
        f.extend_from_slice(data);
        std::fs::write(&p, &f).unwrap();
        glip_rt::weights::load_weights(&p).is_ok()
    });
    let _ = std::fs::remove_file(&p);
    assert!(rounds > 50, "{rounds}");
}

#[test]
fn fuzz_yaml_config() {
    let y = std::fs::read(testdata().join("golden/12_e2e_tiny_config.yaml")).unwrap();
    let (rounds, ok) = fuzz("yaml", 13, &y, |b| match std::str::from_utf8(b) {
        Ok(s) => GlipConfig::from_yaml_str(s, "fuzz.yaml").is_ok(),
        Err(_) => false,
    });
    assert!(rounds > 100 && ok > 0, "{rounds} rounds, {ok} accepted");
}

#[test]
fn fuzz_frame_decoders() {
    // Encoded frames, as `glip stream --input encoded` decodes each one.
    let png = std::fs::read(testdata().join("golden/12_e2e_tiny_photo.png")).unwrap();
    let (rounds, _) = fuzz("encoded frame", 14, &png, |b| {
        glip_rt::preprocess::decode_image(b, "frame", true).is_ok()
    });
    assert!(rounds > 20, "{rounds}");
    // Raw frames: a random size claim against random bytes, as `--input raw` builds them.
    let mut rng = Rng::new(15);
    let start = Instant::now();
    while start.elapsed() < BUDGET / 4 {
        let w = (rng.next_u64() % 64) as usize;
        let h = (rng.next_u64() % 64) as usize;
        let n = (rng.next_u64() % 13_000) as usize;
        let r = glip_rt::preprocess::RgbImage8::new(w, h, vec![0; n]);
        assert_eq!(r.is_ok(), w > 0 && h > 0 && n == w * h * 3);
    }
    for (w, h) in [(usize::MAX, 3), (1 << 62, 4), (3, usize::MAX / 2)] {
        assert!(glip_rt::preprocess::RgbImage8::new(w, h, vec![]).is_err());
    }
}

#[test]
fn fuzz_tokenizer_input() {
    let tok = glip_rt::tokenizer::GlipTokenizer::bert_base_uncased().unwrap();
    let seed = "person. bicycle. traffic light. a cup of tea. 中文. émoji 🐱.".as_bytes();
    let (rounds, ok) = fuzz("tokenizer", 16, seed, |b| {
        let text = String::from_utf8_lossy(b);
        match glip_rt::tokenizer::Prompt::parse(&text) {
            Ok(p) => tok.encode(&p).is_ok(),
            Err(_) => false,
        }
    });
    assert!(rounds > 100 && ok > 0, "{rounds} rounds, {ok} accepted");
}
