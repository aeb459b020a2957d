//! Reading PyTorch `torch.save` checkpoints (the zip format of PyTorch ≥ 1.6) without Python.
//!
//! A checkpoint is a zip archive `<archive>/data.pkl` + `<archive>/data/<key>` (one entry per
//! storage). `data.pkl` is a pickle whose tensors are `torch._utils._rebuild_tensor_v2` calls on
//! persistent ids `('storage', torch.FloatStorage, key, location, numel)`. [`pickle`] runs a
//! small pickle VM that builds a Python-like object graph in which every unknown class is kept as
//! an opaque object, so optimizer or scheduler state never makes a read fail; only the tensors of
//! the `model` state_dict are read from the archive ([`Checkpoint::model_state_dict`]).
//!
//! GLIP's loader (`utils/checkpoint.py`) reads "model", never "model_ema"; so does this one.

pub mod pickle;

use crate::error::{Error, Result};
use crate::limits;
use crate::model::WeightMap;
use crate::tensor::Tensor;
use half::{bf16, f16};
use pickle::{Obj, StorageRef, TensorRef, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

fn perr(path: &Path, msg: impl Into<String>) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Element type of a torch storage (from its storage class, e.g. `torch.HalfStorage`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDType {
    /// The dtype of a torch storage class name (`FloatStorage`, …), if known.
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => StorageDType::F64,
            "FloatStorage" => StorageDType::F32,
            "HalfStorage" => StorageDType::F16,
            "BFloat16Storage" => StorageDType::BF16,
            "LongStorage" => StorageDType::I64,
            "IntStorage" => StorageDType::I32,
            "ShortStorage" => StorageDType::I16,
            "CharStorage" => StorageDType::I8,
            "ByteStorage" | "UntypedStorage" => StorageDType::U8,
            "BoolStorage" => StorageDType::Bool,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(
            self,
            StorageDType::F64 | StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            StorageDType::F64 => "f64",
            StorageDType::F32 => "f32",
            StorageDType::F16 => "f16",
            StorageDType::BF16 => "bf16",
            StorageDType::I64 => "i64",
            StorageDType::I32 => "i32",
            StorageDType::I16 => "i16",
            StorageDType::I8 => "i8",
            StorageDType::U8 => "u8",
            StorageDType::Bool => "bool",
        }
    }
    /// The same element type in safetensors' terms.
    pub fn safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as D;
        match self {
            StorageDType::F64 => D::F64,
            StorageDType::F32 => D::F32,
            StorageDType::F16 => D::F16,
            StorageDType::BF16 => D::BF16,
            StorageDType::I64 => D::I64,
            StorageDType::I32 => D::I32,
            StorageDType::I16 => D::I16,
            StorageDType::I8 => D::I8,
            StorageDType::U8 => D::U8,
            StorageDType::Bool => D::BOOL,
        }
    }
}

/// One tensor read from a checkpoint: contiguous row-major little-endian bytes of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub dtype: StorageDType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Every element as f32 (floats only; f16/bf16 → f32 is exact, f64 is rounded).
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        let b = &self.data;
        Some(match self.dtype {
            StorageDType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StorageDType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StorageDType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StorageDType::F64 => b
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            _ => return None,
        })
    }

    /// A host [`Tensor`] as the rest of glip-rt holds weights: floats as f32, i64/i32/i16/i8 as
    /// i32 (i64 range-checked), u8/bool as u8.
    pub fn to_tensor(&self, name: &str) -> Result<Tensor> {
        let bad = |msg: String| Error::Weights {
            path: name.to_string(),
            msg,
        };
        let b = &self.data;
        let t = if let Some(v) = self.to_f32_vec() {
            Tensor::from_f32(&self.shape, v)
        } else {
            match self.dtype {
                StorageDType::I64 => {
                    let mut out = Vec::with_capacity(b.len() / 8);
                    for c in b.chunks_exact(8) {
                        let x =
                            i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                        out.push(
                            i32::try_from(x)
                                .map_err(|_| bad(format!("i64 value {x} out of i32 range")))?,
                        );
                    }
                    Tensor::from_i32(&self.shape, out)
                }
                StorageDType::I32 => Tensor::from_i32(
                    &self.shape,
                    b.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                StorageDType::I16 => Tensor::from_i32(
                    &self.shape,
                    b.chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                        .collect(),
                ),
                StorageDType::I8 => {
                    Tensor::from_i32(&self.shape, b.iter().map(|&x| x as i8 as i32).collect())
                }
                _ => Tensor::from_u8(&self.shape, b.clone()),
            }
        };
        t.map_err(|e| bad(e.to_string()))
    }
}

/// A state_dict read from a checkpoint, in file order.
#[derive(Debug)]
pub struct StateDict {
    /// Which entry it came from: `model`, or `<top level>` when the file is a bare state_dict.
    pub entry: String,
    pub tensors: Vec<(String, RawTensor)>,
    /// Keys whose values are not tensors (e.g. `_extra_state`), left out.
    pub skipped: Vec<String>,
    /// Every callable or class the whole pickle named outside the allowlist
    /// ([`pickle::allowed_callable`]); none was ever run.
    pub unknown: Vec<String>,
    /// Those of them that sit inside the state_dict itself (`key: module.name`); reading
    /// refuses them unless allowed ([`read_model_state_dict_with`]).
    pub unknown_in_model: Vec<String>,
}

/// One top-level entry of a checkpoint, summarised for people.
#[derive(Clone, Debug, PartialEq)]
pub struct EntrySummary {
    pub name: String,
    /// e.g. "746 tensors", "dict (2 entries)", "123".
    pub summary: String,
}

impl std::fmt::Display for EntrySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.summary)
    }
}

/// An opened `torch.save` zip checkpoint: the unpickled object graph (tensors not yet read).
pub struct Checkpoint {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
    /// `<archive>/`, the folder every entry lives in.
    prefix: String,
    root: Obj,
    unknown: Vec<String>,
}

/// The first bytes of a legacy (pre-1.6, non-zip) `torch.save` file: pickle PROTO 2 followed by
/// LONG1 of torch's magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 4] = [0x80, 0x02, 0x8a, 0x0a];

impl Checkpoint {
    /// Open `path` and unpickle its `data.pkl`.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        // Not opened unless a regular file: a FIFO would block, a device never end.
        crate::limits::check_regular_file(path, limits::MAX_WEIGHTS_FILE_BYTES, "checkpoint")?;
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut head = [0u8; 16];
        let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
        let head = &head[..n];
        if !head.starts_with(b"PK") {
            return Err(perr(path, not_zip_reason(head)));
        }
        let zip = zip::ZipArchive::new(f)
            .map_err(|e| perr(path, format!("not a readable PyTorch checkpoint: the zip archive is truncated or corrupt ({e})")))?;
        let mut ck = Checkpoint {
            path: path.to_path_buf(),
            zip,
            prefix: String::new(),
            root: Rc::new(Value::None),
            unknown: Vec::new(),
        };
        let pkl_name = ck
            .zip
            .file_names()
            .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .min()
            .map(str::to_string)
            .ok_or_else(|| {
                perr(
                    path,
                    "a zip archive but not a PyTorch checkpoint: no `<archive>/data.pkl` entry",
                )
            })?;
        ck.prefix = pkl_name.trim_end_matches("data.pkl").to_string();
        if let Ok(order) = ck.read_entry(&format!("{}byteorder", ck.prefix), 64) {
            if order.trim_ascii() != b"little" {
                return Err(perr(path, format!("checkpoint was written with byte order {:?}; only little-endian is supported", String::from_utf8_lossy(&order))));
            }
        }
        let pkl_size = ck.zip.by_name(&pkl_name).map(|e| e.size()).unwrap_or(0);
        if pkl_size > limits::MAX_PICKLE_BYTES {
            return Err(perr(
                path,
                format!(
                    "{pkl_name} is {pkl_size} bytes, over the limit of {} bytes for a checkpoint's pickle",
                    limits::MAX_PICKLE_BYTES
                ),
            ));
        }
        let pkl = ck.read_entry(&pkl_name, limits::MAX_PICKLE_BYTES)?;
        let u =
            pickle::unpickle_report(&pkl).map_err(|e| perr(path, format!("{pkl_name}: {e}")))?;
        ck.root = u.root;
        ck.unknown = u.unknown;
        Ok(ck)
    }

    /// The unpickled top-level object.
    pub fn root(&self) -> &Obj {
        &self.root
    }

    /// The top-level entries (names + a summary), when the top level is a dict.
    pub fn entries(&self) -> Vec<EntrySummary> {
        match &*self.root {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .map(|(k, v)| EntrySummary {
                    name: key_string(k),
                    summary: summarize(v),
                })
                .collect(),
            _ => vec![EntrySummary {
                name: "<top level>".into(),
                summary: summarize(&self.root),
            }],
        }
    }

    /// The `model` state_dict (GLIP's loader takes "model", not "model_ema"); if the top level
    /// has no `model` entry but is itself a state_dict (all values tensors), that.
    pub fn model_state_dict(&mut self) -> Result<StateDict> {
        let (entry, sd) = self.find_model()?;
        let items: Vec<(Obj, Obj)> = match &*sd {
            Value::Dict(d) => d.borrow().clone(),
            _ => {
                return Err(perr(
                    &self.path,
                    format!("entry `{entry}` is {}, not a state_dict", summarize(&sd)),
                ))
            }
        };
        let mut tensors: Vec<(String, TensorRef)> = Vec::new();
        let mut skipped = Vec::new();
        let mut unknown_in_model = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (k, v) in items {
            let Value::Str(key) = &*k else {
                return Err(perr(
                    &self.path,
                    format!("entry `{entry}` has a non-string key {}", summarize(&k)),
                ));
            };
            let slot = match &*v {
                Value::Tensor(t) => Some(t.clone()),
                Value::Unsupported(why) => {
                    return Err(perr(
                        &self.path,
                        format!("tensor `{key}` in `{entry}` cannot be read: {why}"),
                    ))
                }
                _ => None,
            };
            match (slot, seen.get(key)) {
                (Some(t), Some(&i)) => tensors[i].1 = t,
                (Some(t), None) => {
                    seen.insert(key.clone(), tensors.len());
                    tensors.push((key.clone(), t));
                }
                (None, _) => {
                    for c in unknown_callables(&v) {
                        unknown_in_model.push(format!("{key}: {c}"));
                    }
                    skipped.push(key.clone())
                }
            }
        }
        if tensors.is_empty() {
            return Err(perr(
                &self.path,
                format!("entry `{entry}` holds no tensors"),
            ));
        }
        // Read each storage once, materialise every tensor that views it, then drop it: peak
        // memory stays near the size of the state_dict itself.
        let mut by_storage: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (_, t)) in tensors.iter().enumerate() {
            by_storage.entry(t.storage.key.clone()).or_default().push(i);
        }
        let mut raws: Vec<Option<RawTensor>> = vec![None; tensors.len()];
        let mut keys: Vec<&String> = by_storage.keys().collect();
        keys.sort();
        for skey in keys {
            let idx = &by_storage[skey];
            // A storage needs numel x element size bytes; more is never read (the pickle's
            // claim itself is bounded by the zip entry limit).
            let need = idx
                .iter()
                .map(|&i| {
                    let st = &tensors[i].1.storage;
                    (st.numel as u64).saturating_mul(st.dtype.size() as u64)
                })
                .max()
                .unwrap_or(0);
            let bytes = self.read_entry(
                &format!("{}data/{skey}", self.prefix),
                need.min(limits::MAX_ZIP_ENTRY_BYTES),
            )?;
            for &i in idx {
                let (name, t) = &tensors[i];
                raws[i] = Some(gather(&bytes, t).map_err(|m| {
                    perr(
                        &self.path,
                        format!("tensor `{name}` (storage data/{skey}): {m}"),
                    )
                })?);
            }
        }
        let tensors = tensors
            .into_iter()
            .zip(raws)
            .map(|((k, _), r)| {
                r.map(|r| (k.clone(), r))
                    .ok_or_else(|| perr(&self.path, format!("tensor `{k}` was not read")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StateDict {
            entry,
            tensors,
            skipped,
            unknown: self.unknown.clone(),
            unknown_in_model,
        })
    }

    fn find_model(&self) -> Result<(String, Obj)> {
        let Value::Dict(d) = &*self.root else {
            return Err(perr(
                &self.path,
                format!(
                    "top level is {}, not a dict with a `model` entry or a state_dict",
                    summarize(&self.root)
                ),
            ));
        };
        let d = d.borrow();
        if let Some((_, v)) = d
            .iter()
            .rev()
            .find(|(k, _)| matches!(&**k, Value::Str(s) if s == "model"))
        {
            return Ok(("model".into(), v.clone()));
        }
        if !d.is_empty()
            && d.iter().all(|(k, v)| {
                matches!(&**k, Value::Str(_))
                    && matches!(&**v, Value::Tensor(_) | Value::Unsupported(_))
            })
        {
            return Ok(("<top level>".into(), self.root.clone()));
        }
        let names: Vec<String> = d.iter().take(12).map(|(k, _)| key_string(k)).collect();
        Err(perr(
            &self.path,
            format!(
                "no `model` entry and the top level is not a state_dict (top-level keys: {}{})",
                names.join(", "),
                if d.len() > 12 { ", …" } else { "" }
            ),
        ))
    }

    /// The bytes of zip entry `name`, at most `limit` of them (`limit` bytes are read and the
    /// rest ignored), refusing a compressed entry that expands more than
    /// [`limits::MAX_COMPRESSION_RATIO`] times (a zip bomb).
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path.clone();
        let e = self
            .zip
            .by_name(name)
            .map_err(|e| perr(&path, format!("zip entry `{name}`: {e}")))?;
        let mut limit = limit;
        if e.compression() != zip::CompressionMethod::Stored {
            let cap = e
                .compressed_size()
                .saturating_mul(limits::MAX_COMPRESSION_RATIO)
                .max(1 << 16);
            if e.size() > cap {
                return Err(perr(
                    &path,
                    format!(
                        "zip entry `{name}` claims {} bytes from {} compressed: more than {}x expansion (a zip bomb?); refused",
                        e.size(),
                        e.compressed_size(),
                        limits::MAX_COMPRESSION_RATIO
                    ),
                ));
            }
            // The header's size may lie: the decompressor is stopped at the cap too.
            limit = limit.min(cap);
        }
        // The size is only a hint (a corrupt header may claim anything).
        let mut out = Vec::with_capacity(
            usize::try_from(e.size().min(limit))
                .unwrap_or(0)
                .min(1 << 26),
        );
        e.take(limit).read_to_end(&mut out).map_err(|e| {
            perr(
                &path,
                format!("zip entry `{name}` cannot be read (truncated or corrupt file?): {e}"),
            )
        })?;
        Ok(out)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn not_zip_reason(head: &[u8]) -> String {
    if head.starts_with(&LEGACY_MAGIC) || head.first() == Some(&0x80) {
        "a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported: re-save it with a newer torch \
         (`torch.save(torch.load(f, map_location='cpu'), g)`, torch ≥ 1.6)"
            .into()
    } else if looks_like_safetensors(head) {
        "already a safetensors file, not a PyTorch checkpoint".into()
    } else if head.is_empty() {
        "empty file, not a PyTorch checkpoint".into()
    } else {
        "not a PyTorch checkpoint (expected a zip archive written by torch.save)".into()
    }
}

/// Whether `head` (the first bytes of a file) starts like a safetensors file: an 8-byte
/// little-endian header length followed by `{`.
pub fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9
        && head[8] == b'{'
        && u64::from_le_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ]) < (1 << 30)
}

/// Copy the elements of `t` (a strided view of its storage, whose bytes are `bytes`) into a
/// contiguous tensor.
fn gather(bytes: &[u8], t: &TensorRef) -> std::result::Result<RawTensor, String> {
    let storage: &StorageRef = &t.storage;
    let es = storage.dtype.size();
    let need = storage
        .numel
        .checked_mul(es)
        .ok_or("storage size overflows")?;
    if bytes.len() < need {
        return Err(format!(
            "the storage has {} bytes, its {} {} elements need {need}",
            bytes.len(),
            storage.numel,
            storage.dtype.name()
        ));
    }
    if t.size.len() != t.stride.len() {
        return Err(format!(
            "size {:?} and stride {:?} differ in rank",
            t.size, t.stride
        ));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("size overflows")?;
    let mut out = Vec::new();
    if numel > 0 {
        let mut last = t.offset;
        for (&d, &s) in t.size.iter().zip(&t.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or("stride overflows")?;
        }
        if last >= storage.numel {
            return Err(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches past its storage of {} elements",
                t.offset, t.size, t.stride, storage.numel
            ));
        }
        // In bounds does not bound the size: a stride-0 view of one element may claim
        // billions. A state_dict never repeats elements, so a view larger than its storage is
        // refused, and so is anything over the tensor limit.
        if numel > storage.numel {
            return Err(format!(
                "view of size {:?} (stride {:?}) has {numel} elements, more than its storage's {}; overlapping (stride-0) views are not supported",
                t.size, t.stride, storage.numel
            ));
        }
        let bytes_out = numel.checked_mul(es).ok_or("size overflows")?;
        if bytes_out as u64 > limits::MAX_TENSOR_BYTES {
            return Err(format!(
                "{bytes_out} bytes exceed the limit of {} bytes per tensor",
                limits::MAX_TENSOR_BYTES
            ));
        }
        out.reserve_exact(bytes_out);
        // Contiguous row-major view: one copy.
        let mut expect = 1usize;
        let mut contiguous = true;
        for (&d, &s) in t.size.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                contiguous = false;
            }
            expect *= d;
        }
        if contiguous {
            out.extend_from_slice(&bytes[t.offset * es..(t.offset + numel) * es]);
        } else {
            let rank = t.size.len();
            let mut idx = vec![0usize; rank];
            let mut pos = t.offset;
            for _ in 0..numel {
                out.extend_from_slice(&bytes[pos * es..(pos + 1) * es]);
                // Odometer increment over the dims, innermost fastest.
                for d in (0..rank).rev() {
                    idx[d] += 1;
                    pos += t.stride[d];
                    if idx[d] < t.size[d] {
                        break;
                    }
                    pos -= t.stride[d] * t.size[d];
                    idx[d] = 0;
                }
            }
        }
    }
    Ok(RawTensor {
        dtype: storage.dtype,
        shape: t.size.clone(),
        data: out,
    })
}

/// The callables outside the allowlist that `v` holds anywhere (calls of them, or the
/// callables themselves), each once. Iterative, and each shared value visited once, so cycles
/// and deep values are safe.
fn unknown_callables(v: &Obj) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut todo: Vec<Obj> = vec![v.clone()];
    let mut note = |name: String| {
        if !found.contains(&name) {
            found.push(name);
        }
    };
    while let Some(o) = todo.pop() {
        if !seen.insert(Rc::as_ptr(&o) as usize) {
            continue;
        }
        match &*o {
            Value::Global { module, name } if !pickle::allowed_callable(module, name) => {
                note(format!("{module}.{name}"))
            }
            Value::Object { class, args, state } => {
                let allowed = class
                    .rsplit_once('.')
                    .is_some_and(|(m, n)| pickle::allowed_callable(m, n));
                if !allowed {
                    note(class.clone());
                }
                todo.extend(args.iter().cloned());
                todo.extend(state.borrow().iter().cloned());
            }
            Value::Tuple(t) => todo.extend(t.iter().cloned()),
            Value::List(l) | Value::Set(l) => todo.extend(l.borrow().iter().cloned()),
            Value::Dict(d) => {
                for (k, x) in d.borrow().iter() {
                    todo.push(k.clone());
                    todo.push(x.clone());
                }
            }
            _ => {}
        }
    }
    found
}

fn key_string(k: &Obj) -> String {
    match &**k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => pickle::short_repr(other),
    }
}

/// A one-line description of a value: "746 tensors", "dict (2 entries)", "123", …
pub fn summarize(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let d = d.borrow();
            let nt = d
                .iter()
                .filter(|(_, v)| matches!(&**v, Value::Tensor(_)))
                .count();
            if nt > 0 && nt == d.len() {
                format!("{nt} tensors")
            } else {
                format!("dict, {} entries", d.len())
            }
        }
        other => pickle::short_repr(other),
    }
}

/// Move every key's `module.` prefix away if *all* keys carry it (GLIP's
/// `utils/model_serialization.py` rule for DistributedDataParallel checkpoints). Returns
/// whether it did.
pub fn strip_module_prefix<T>(entries: &mut [(String, T)]) -> bool {
    if entries.is_empty() || !entries.iter().all(|(k, _)| k.starts_with("module.")) {
        return false;
    }
    for (k, _) in entries.iter_mut() {
        k.drain(.."module.".len());
    }
    true
}

/// The `model` state_dict of a checkpoint, `module.` stripped (GLIP's rule), with a summary of
/// the top-level entries.
pub fn read_model_state_dict(path: &Path) -> Result<(StateDict, Vec<EntrySummary>)> {
    read_model_state_dict_with(path, false)
}

/// [`read_model_state_dict`]; a state_dict holding callables outside the allowlist (a call of
/// `os.system` under some key) is refused unless `allow_unknown`, in which case those keys
/// are left out like any other non-tensor value.
pub fn read_model_state_dict_with(
    path: &Path,
    allow_unknown: bool,
) -> Result<(StateDict, Vec<EntrySummary>)> {
    let mut ck = Checkpoint::open(path)?;
    let entries = ck.entries();
    let mut sd = ck.model_state_dict()?;
    if !allow_unknown && !sd.unknown_in_model.is_empty() {
        return Err(perr(
            path,
            format!(
                "entry `{}` holds callables outside the allowlist of torch.save checkpoints (never run): {}; refused (`glip convert --allow-unknown` leaves them out)",
                sd.entry,
                sd.unknown_in_model.join(", ")
            ),
        ));
    }
    strip_module_prefix(&mut sd.tensors);
    Ok((sd, entries))
}

/// The `model` weights of a PyTorch checkpoint as a [`WeightMap`] (floats as f32, integers as
/// i32), `module.` stripped: loading a `.pth` directly, with no conversion step.
pub fn load_pth_weights(path: &Path) -> Result<WeightMap> {
    let (sd, _) = read_model_state_dict(path)?;
    let mut map = HashMap::with_capacity(sd.tensors.len());
    for (k, t) in sd.tensors {
        let tensor = t
            .to_tensor(&k)
            .map_err(|e| perr(path, format!("tensor `{k}`: {e}")))?;
        map.insert(k, tensor);
    }
    Ok(WeightMap::new(path.display().to_string(), map))
}
