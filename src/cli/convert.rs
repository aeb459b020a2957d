//! `glip convert`: a PyTorch GLIP checkpoint (`.pth`, torch.save zip format) → safetensors,
//! with no Python.
//!
//! What is written: the `model` state_dict (never `model_ema`, as GLIP's own loader), `module.`
//! stripped when every key has it, floating-point tensors in the chosen dtype (f16 by default,
//! rounded to nearest even; f32 keeps f32/f16/bf16 sources exact), integer and bool tensors
//! unchanged (i64 buffers such as `relative_position_index` stay i64, so the file is a faithful
//! state_dict; the runtime ignores them). Non-tensor entries of the state_dict are left out and
//! listed.

use super::crate_result::Result;
use glip_rt::pth::{self, RawTensor, StorageDType};
use glip_rt::Error;
use half::f16;
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutDType {
    F16,
    F32,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The PyTorch checkpoint (torch.save zip format, PyTorch ≥ 1.6).
    pub input: PathBuf,
    /// The safetensors file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Floating-point dtype of the output (integer buffers keep their type).
    #[arg(long, value_enum, default_value_t = OutDType::F16)]
    pub dtype: OutDType,
    /// Convert even if the state_dict holds callables outside the allowlist (they are left
    /// out; nothing in a checkpoint is ever run).
    #[arg(long)]
    pub allow_unknown: bool,
}

fn werr(path: &Path, msg: impl Into<String>) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// `t`'s floats in `dtype`, other types unchanged.
pub fn cast(t: &RawTensor, dtype: OutDType) -> RawTensor {
    let Some(v) = t.to_f32_vec() else {
        return t.clone();
    };
    let (dt, data) = match (dtype, t.dtype) {
        (OutDType::F16, StorageDType::F16) | (OutDType::F32, StorageDType::F32) => {
            return t.clone()
        }
        (OutDType::F16, _) => (
            StorageDType::F16,
            v.iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        ),
        (OutDType::F32, _) => (
            StorageDType::F32,
            v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        ),
    };
    RawTensor {
        dtype: dt,
        shape: t.shape.clone(),
        data,
    }
}

pub fn run(args: Args) -> Result {
    // Checked first, so that a bad output path costs no reading and leaves nothing behind.
    check_output(&args.output)?;
    let (sd, entries) = pth::read_model_state_dict_with(&args.input, args.allow_unknown)?;
    if !sd.unknown.is_empty() {
        say!(
            "warning: {} references callables outside the allowlist (never run): {}",
            args.input.display(),
            sd.unknown.join(", ")
        );
    }
    if !sd.unknown_in_model.is_empty() {
        say!(
            "warning: left out of `{}` (--allow-unknown): {}",
            sd.entry,
            sd.unknown_in_model.join(", ")
        );
    }
    let tensors: Vec<(String, RawTensor)> = sd
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), cast(t, args.dtype)))
        .collect();
    let mut overflow = 0usize;
    for (k, t) in &tensors {
        if t.dtype == StorageDType::F16 {
            let bad = t
                .data
                .chunks_exact(2)
                .filter(|c| f16::from_le_bytes([c[0], c[1]]).is_infinite())
                .count();
            if bad > 0 {
                say!("warning: {k}: {bad} values overflow f16 (now ±inf); use --dtype f32");
                overflow += bad;
            }
        }
    }
    let views = tensors
        .iter()
        .map(|(k, t)| {
            TensorView::new(t.dtype.safetensors(), t.shape.clone(), &t.data)
                .map(|v| (k.clone(), v))
                .map_err(|e| werr(&args.input, format!("tensor `{k}`: {e}")))
        })
        .collect::<std::result::Result<Vec<_>, Error>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        "source".to_string(),
        format!(
            "glip convert {} (entry `{}`)",
            args.input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sd.entry
        ),
    );
    // Write next to the target and rename, so a failed run never leaves a half-written file
    // under the requested name.
    let tmp = tmp_path(&args.output);
    if let Err(e) = safetensors::serialize_to_file(views, Some(meta), &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(&args.output, format!("cannot write safetensors: {e}")));
    }
    if let Err(e) = std::fs::rename(&tmp, &args.output) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&args.output, e));
    }

    let mut out = super::out::Out::new();
    let floats = tensors.iter().filter(|(_, t)| t.dtype.is_float()).count();
    let bytes: usize = tensors.iter().map(|(_, t)| t.data.len()).sum();
    outln!(
        out,
        "wrote {}: {} tensors from `{}` ({} floats as {}, {} other), {:.1} MB",
        args.output.display(),
        tensors.len(),
        sd.entry,
        floats,
        match args.dtype {
            OutDType::F16 => "f16",
            OutDType::F32 => "f32",
        },
        tensors.len() - floats,
        bytes as f64 / 1e6
    );
    if !sd.skipped.is_empty() {
        outln!(out, "left out (not tensors): {}", sd.skipped.join(", "));
    }
    let others: Vec<String> = entries
        .iter()
        .filter(|e| e.name != sd.entry && sd.entry != "<top level>")
        .map(|e| {
            if e.name == "model_ema" {
                format!("{} ({}, ignored)", e.name, e.summary)
            } else {
                e.to_string()
            }
        })
        .collect();
    if !others.is_empty() {
        outln!(out, "also in file: {}", others.join(", "));
    }
    if overflow > 0 {
        outln!(out, "warning: {overflow} values overflowed f16");
    }
    Ok(ExitCode::SUCCESS)
}

/// The output must name a file (not a directory, nor a path ending in `/`) in an existing
/// directory: the temporary file is made next to it.
fn check_output(out: &Path) -> std::result::Result<(), Error> {
    let bad = |m: &str| Err(werr(out, format!("-o {}: {m}", out.display())));
    let text = out.as_os_str().to_string_lossy();
    if text.ends_with('/') || out.is_dir() {
        return bad(
            "is a directory; give the safetensors file to write, e.g. -o dir/model.safetensors",
        );
    }
    if out.file_name().is_none() {
        return bad("names no file");
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return bad("its directory does not exist");
    }
    Ok(())
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    out.with_file_name(name)
}
