//! A small pickle VM (protocols 0–5, as much of them as `torch.save` checkpoints use).
//!
//! It builds Python-like values rather than running Python: containers are shared
//! (`Rc` + `RefCell`, as pickle's memo needs), tensors and storages are recognised by their
//! torch rebuild functions and persistent ids, and every other class or call becomes an opaque
//! [`Value::Object`], so nothing outside the state_dict can make a read fail.

use super::StorageDType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

pub type Obj = Rc<Value>;

/// A torch storage named by a persistent id; its bytes live in the zip entry `data/<key>`.
#[derive(Debug, PartialEq)]
pub struct StorageRef {
    pub dtype: StorageDType,
    pub key: String,
    pub location: String,
    /// Elements (of `dtype`).
    pub numel: usize,
}

/// A tensor: a strided view (in elements) of a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit i64 (two's complement, little-endian bytes).
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Obj>),
    List(RefCell<Vec<Obj>>),
    /// Insertion order kept; a repeated key is pushed again (lookups take the last).
    Dict(RefCell<Vec<(Obj, Obj)>>),
    Set(RefCell<Vec<Obj>>),
    /// A class or function named by GLOBAL / STACK_GLOBAL.
    Global {
        module: String,
        name: String,
    },
    Storage(Rc<StorageRef>),
    Tensor(TensorRef),
    /// Anything else: the result of calling or instantiating `class`.
    Object {
        class: String,
        args: Vec<Obj>,
        state: RefCell<Option<Obj>>,
    },
    /// A storage or tensor this reader cannot decode (say why). Not an error unless the
    /// state_dict being read needs it: optimizer state may hold anything.
    Unsupported(String),
}

/// Dropping is iterative: the default recursive drop of a value nested a million deep (a few
/// KB of pickle, more once compressed) overflows the stack, whatever the nesting limit of
/// the VM (containers can be nested by mutation after they were built).
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending: Vec<Obj> = Vec::new();
        take_children(self, &mut pending);
        while let Some(o) = pending.pop() {
            // Only the last owner takes the children; shared values are dropped by theirs.
            if let Ok(mut v) = Rc::try_unwrap(o) {
                take_children(&mut v, &mut pending);
            }
        }
    }
}

/// Moves the direct children of `v` into `out`, leaving `v` childless.
fn take_children(v: &mut Value, out: &mut Vec<Obj>) {
    match v {
        Value::Tuple(t) => out.append(t),
        Value::List(l) | Value::Set(l) => out.append(l.get_mut()),
        Value::Dict(d) => {
            for (k, x) in d.get_mut().drain(..) {
                out.push(k);
                out.push(x);
            }
        }
        Value::Object { args, state, .. } => {
            out.append(args);
            if let Some(s) = state.get_mut().take() {
                out.push(s);
            }
        }
        _ => {}
    }
}

/// Whether `v` holds other values (and so has a nesting depth of its own).
fn is_container(v: &Value) -> bool {
    matches!(
        v,
        Value::Tuple(_) | Value::List(_) | Value::Dict(_) | Value::Set(_) | Value::Object { .. }
    )
}

/// Callables (and classes) that torch.save checkpoints use and this VM interprets or that are
/// plain data; everything else the pickle names is reported ([`Unpickled::unknown`]).
pub fn allowed_callable(module: &str, name: &str) -> bool {
    match module {
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch" => {
            name.ends_with("Storage")
                || StorageDType::from_storage_class(name).is_some()
                || ["float8_", "complex", "uint", "qint", "quint"]
                    .iter()
                    .any(|p| name.starts_with(p))
                || matches!(
                    name,
                    "Size"
                        | "device"
                        | "dtype"
                        | "float64"
                        | "double"
                        | "float32"
                        | "float"
                        | "float16"
                        | "half"
                        | "bfloat16"
                        | "int64"
                        | "long"
                        | "int32"
                        | "int"
                        | "int16"
                        | "short"
                        | "int8"
                        | "uint8"
                        | "bool"
                )
        }
        "torch.storage" => name.ends_with("Storage"),
        "torch.nn.parameter" => name == "Parameter",
        // numpy scalars and arrays in a checkpoint's meta data, and protocol 2's bytes.
        "numpy" => matches!(name, "dtype" | "ndarray"),
        "numpy.core.multiarray" | "numpy._core.multiarray" => {
            matches!(name, "scalar" | "_reconstruct")
        }
        "_codecs" => name == "encode",
        "collections" => matches!(name, "OrderedDict" | "defaultdict"),
        "builtins" | "__builtin__" => matches!(
            name,
            "dict"
                | "set"
                | "frozenset"
                | "list"
                | "tuple"
                | "int"
                | "float"
                | "str"
                | "bool"
                | "complex"
                | "slice"
                | "range"
                | "bytearray"
        ),
        "argparse" => name == "Namespace",
        _ => false,
    }
}

/// What [`unpickle_report`] returns: the object and the callables outside the allowlist.
pub struct Unpickled {
    pub root: Obj,
    /// `module.name` of every global the pickle referenced outside [`allowed_callable`], in
    /// first-seen order, each once.
    pub unknown: Vec<String>,
}

/// An error while unpickling, with the byte position of the opcode.
#[derive(Debug)]
pub struct PickleError {
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt or unsupported pickle at byte {}: {}",
            self.pos, self.msg
        )
    }
}

/// A short human description of a value (no deep printing of big containers).
pub fn short_repr(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => format!("<{}-byte int>", b.len()),
        Value::Float(x) => format!("{x}"),
        Value::Str(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::Str(s) => format!("str ({} chars)", s.chars().count()),
        Value::Bytes(b) => format!("bytes ({})", b.len()),
        Value::Tuple(t) => format!("tuple, {} items", t.len()),
        Value::List(l) => format!("list, {} items", l.borrow().len()),
        Value::Dict(d) => format!("dict, {} entries", d.borrow().len()),
        Value::Set(s) => format!("set, {} items", s.borrow().len()),
        Value::Global { module, name } => format!("{module}.{name}"),
        Value::Storage(s) => format!("storage {} ({} {})", s.key, s.numel, s.dtype.name()),
        Value::Tensor(t) => format!("tensor {} {:?}", t.storage.dtype.name(), t.size),
        Value::Object { class, .. } => format!("{class} object"),
        Value::Unsupported(why) => format!("unsupported ({why})"),
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode started (for errors).
    op_pos: usize,
    stack: Vec<Obj>,
    /// Stacks saved by MARK.
    marks: Vec<Vec<Obj>>,
    memo: HashMap<u64, Obj>,
    /// Nesting depth of every container built, by address (a container's depth is one more
    /// than its deepest child's; scalars are 0). Addresses of freed containers may be reused,
    /// but only by a container, whose entry is then overwritten when it is built.
    depths: HashMap<usize, usize>,
    unknown: Vec<String>,
}

type R<T> = std::result::Result<T, PickleError>;

/// Run a pickle and return the object it STOPs with.
pub fn unpickle(data: &[u8]) -> R<Obj> {
    unpickle_report(data).map(|u| u.root)
}

/// Run a pickle: the object it STOPs with and the callables it named outside the allowlist.
/// Containers nested deeper than [`crate::limits::MAX_NESTING`] are refused.
pub fn unpickle_report(data: &[u8]) -> R<Unpickled> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        depths: HashMap::new(),
        unknown: Vec::new(),
    };
    let root = vm.run()?;
    Ok(Unpickled {
        root,
        unknown: vm.unknown,
    })
}

fn obj(v: Value) -> Obj {
    Rc::new(v)
}

impl<'a> Vm<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(PickleError {
            pos: self.op_pos,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n) {
            Some(end) if end <= data.len() => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.err(format!(
                "needs {n} more bytes but the pickle ends (truncated?)"
            )),
        }
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
    fn len_u64(&mut self) -> R<usize> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }
    /// A text line (protocol 0 arguments), without its newline.
    fn line(&mut self) -> R<&'a str> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text argument");
        };
        self.pos += nl + 1;
        match std::str::from_utf8(&rest[..nl]) {
            Ok(s) => Ok(s),
            Err(_) => self.err("text argument is not UTF-8"),
        }
    }
    fn utf8(&mut self, n: usize) -> R<Obj> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(obj(Value::Str(s.to_string()))),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn pop(&mut self) -> R<Obj> {
        match self.stack.pop() {
            Some(o) => Ok(o),
            None => self.err("stack underflow"),
        }
    }
    fn top(&self) -> R<Obj> {
        match self.stack.last() {
            Some(o) => Ok(o.clone()),
            None => self.err("stack underflow"),
        }
    }
    fn pop_mark(&mut self) -> R<Vec<Obj>> {
        match self.marks.pop() {
            Some(prev) => Ok(std::mem::replace(&mut self.stack, prev)),
            None => self.err("no MARK on the stack"),
        }
    }
    fn memo_get(&self, i: u64) -> R<Obj> {
        match self.memo.get(&i) {
            Some(o) => Ok(o.clone()),
            None => self.err(format!("memo key {i} was never stored")),
        }
    }
    fn memo_put(&mut self, i: u64) -> R<()> {
        let top = self.top()?;
        self.memo.insert(i, top);
        Ok(())
    }

    fn depth(&self, o: &Obj) -> usize {
        if is_container(o) {
            self.depths
                .get(&(Rc::as_ptr(o) as usize))
                .copied()
                .unwrap_or(1)
        } else {
            0
        }
    }

    /// One more than the deepest of `items`, refused past the limit.
    fn depth_over(&self, items: &[&Obj]) -> R<usize> {
        let d = 1 + items.iter().map(|o| self.depth(o)).max().unwrap_or(0);
        if d > crate::limits::MAX_NESTING {
            return self.err(format!(
                "containers nested deeper than {} levels (the limit)",
                crate::limits::MAX_NESTING
            ));
        }
        Ok(d)
    }

    /// Builds a container, recording its depth.
    fn container(&mut self, v: Value) -> R<Obj> {
        let d = {
            let kids: Vec<Obj> = match &v {
                Value::Tuple(t) => t.clone(),
                Value::List(l) | Value::Set(l) => l.borrow().clone(),
                Value::Dict(d) => d
                    .borrow()
                    .iter()
                    .flat_map(|(k, x)| [k.clone(), x.clone()])
                    .collect(),
                Value::Object { args, state, .. } => {
                    let mut a = args.clone();
                    a.extend(state.borrow().iter().cloned());
                    a
                }
                _ => Vec::new(),
            };
            self.depth_over(&kids.iter().collect::<Vec<_>>())?
        };
        let o = obj(v);
        self.depths.insert(Rc::as_ptr(&o) as usize, d);
        Ok(o)
    }

    /// Records that `target` now also holds `items` (APPEND, SETITEMS, BUILD).
    fn grew(&mut self, target: &Obj, items: &[Obj]) -> R<()> {
        let all: Vec<&Obj> = items.iter().collect();
        let d = self.depth_over(&all)?.max(self.depth(target));
        self.depths.insert(Rc::as_ptr(target) as usize, d);
        Ok(())
    }

    fn note_global(&mut self, module: &str, name: &str) {
        if !allowed_callable(module, name) {
            let full = format!("{module}.{name}");
            if !self.unknown.contains(&full) {
                self.unknown.push(full);
            }
        }
    }

    fn set_items(&mut self, target: &Obj, items: Vec<Obj>) -> R<()> {
        self.grew(target, &items)?;
        if !items.len().is_multiple_of(2) {
            return self.err("SETITEMS with an odd number of items");
        }
        match &**target {
            Value::Dict(d) => {
                let mut d = d.borrow_mut();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                Ok(())
            }
            // An opaque mapping class (e.g. defaultdict): keep nothing, fail nothing.
            Value::Object { .. } => Ok(()),
            other => self.err(format!("SETITEM(S) on {}", short_repr(other))),
        }
    }
    fn append_items(&mut self, target: &Obj, items: Vec<Obj>) -> R<()> {
        self.grew(target, &items)?;
        match &**target {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            Value::Set(s) => {
                s.borrow_mut().extend(items);
                Ok(())
            }
            Value::Object { .. } => Ok(()),
            other => self.err(format!("APPEND(S)/ADDITEMS on {}", short_repr(other))),
        }
    }

    fn run(&mut self) -> R<Obj> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("pickle protocol {proto} is newer than 5"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                // Constants and scalars.
                b'N' => self.stack.push(obj(Value::None)),
                0x88 => self.stack.push(obj(Value::Bool(true))),
                0x89 => self.stack.push(obj(Value::Bool(false))),
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.stack.push(obj(Value::Int(v)))
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(obj(Value::Int(v)))
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(obj(Value::Int(v)))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    let b = self.take(n)?;
                    self.stack.push(obj(long_le(b)))
                }
                b'I' | b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = match s {
                        "00" if op == b'I' => Value::Bool(false),
                        "01" if op == b'I' => Value::Bool(true),
                        _ => match s.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => Value::BigInt(Vec::new()),
                        },
                    };
                    self.stack.push(obj(v))
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    self.stack.push(obj(Value::Float(v)))
                }
                b'F' => {
                    let s = self.line()?;
                    match s.trim().parse::<f64>() {
                        Ok(v) => self.stack.push(obj(Value::Float(v))),
                        Err(_) => return self.err(format!("bad FLOAT {s:?}")),
                    }
                }
                // Strings and bytes.
                b'X' => {
                    let n = self.u32()? as usize;
                    let o = self.utf8(n)?;
                    self.stack.push(o)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let o = self.utf8(n)?;
                    self.stack.push(o)
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let o = self.utf8(n)?;
                    self.stack.push(o)
                }
                b'T' | b'U' => {
                    // Python 2 str: bytes, decoded as latin-1 as `encoding='latin1'` would.
                    let n = if op == b'T' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    self.stack
                        .push(obj(Value::Str(b.iter().map(|&c| c as char).collect())))
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.stack.push(obj(Value::Bytes(b)))
                }
                b'V' => {
                    let s = self.line()?.to_string();
                    self.stack.push(obj(Value::Str(s)))
                }
                b'S' => {
                    let s = self
                        .line()?
                        .trim_matches(|c| c == '\'' || c == '"')
                        .to_string();
                    self.stack.push(obj(Value::Str(s)))
                }
                // Containers.
                b'}' => {
                    let o = self.container(Value::Dict(RefCell::new(Vec::new())))?;
                    self.stack.push(o)
                }
                b']' => {
                    let o = self.container(Value::List(RefCell::new(Vec::new())))?;
                    self.stack.push(o)
                }
                b')' => {
                    let o = self.container(Value::Tuple(Vec::new()))?;
                    self.stack.push(o)
                }
                0x8f => {
                    let o = self.container(Value::Set(RefCell::new(Vec::new())))?;
                    self.stack.push(o)
                }
                b'(' => {
                    let cur = std::mem::take(&mut self.stack);
                    self.marks.push(cur);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(t)
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let o = self.container(Value::Tuple(items))?;
                    self.stack.push(o)
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let o = self.container(Value::Tuple(items))?;
                    self.stack.push(o)
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let o = self.container(Value::List(RefCell::new(items)))?;
                    self.stack.push(o)
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = self.container(Value::Dict(RefCell::new(Vec::new())))?;
                    self.set_items(&d, items)?;
                    self.stack.push(d)
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let o = self.container(Value::Set(RefCell::new(items)))?;
                    self.stack.push(o)
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let t = self.top()?;
                    self.set_items(&t, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let t = self.top()?;
                    self.set_items(&t, items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    let t = self.top()?;
                    self.append_items(&t, vec![v])?
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let t = self.top()?;
                    self.append_items(&t, items)?
                }
                // Memo.
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?
                }
                b'p' => {
                    let s = self.line()?;
                    let Ok(i) = s.parse::<u64>() else {
                        return self.err(format!("bad PUT {s:?}"));
                    };
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    let o = self.memo_get(i)?;
                    self.stack.push(o)
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    let o = self.memo_get(i)?;
                    self.stack.push(o)
                }
                b'g' => {
                    let s = self.line()?;
                    let Ok(i) = s.parse::<u64>() else {
                        return self.err(format!("bad GET {s:?}"));
                    };
                    let o = self.memo_get(i)?;
                    self.stack.push(o)
                }
                // Classes, calls, objects.
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.note_global(&module, &name);
                    self.stack.push(obj(Value::Global { module, name }))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&*module, &*name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.note_global(m, n);
                            self.stack.push(obj(Value::Global {
                                module: m.clone(),
                                name: n.clone(),
                            }))
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let args = match &*args {
                        Value::Tuple(t) => t.clone(),
                        other => {
                            return self.err(format!(
                                "REDUCE arguments are {}, not a tuple",
                                short_repr(other)
                            ))
                        }
                    };
                    let v = self.call(&func, args)?;
                    self.stack.push(v)
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = match &*args {
                        Value::Tuple(t) => t.clone(),
                        _ => vec![args.clone()],
                    };
                    let v = self.call(&cls, args)?;
                    self.stack.push(v)
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let args = match &*args {
                        Value::Tuple(t) => t.clone(),
                        _ => vec![args.clone()],
                    };
                    let v = self.call(&cls, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    // Objects keep their state for inspection; BUILD on anything else (the
                    // `_metadata` of an OrderedDict state_dict, a tensor's extra state) is not
                    // needed and is dropped.
                    if let Value::Object { state: s, .. } = &*target {
                        self.grew(&target, std::slice::from_ref(&state))?;
                        *s.borrow_mut() = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.stack.push(v)
                }
                b'P' => return self.err("text persistent ids (PERSID) are not used by torch.save"),
                other => return self.err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }

    /// `('storage', storage_type, key, location, numel)`, torch.save's persistent id.
    fn persistent_load(&self, pid: &Obj) -> R<Obj> {
        let Value::Tuple(t) = &**pid else {
            return self.err(format!("persistent id is {}, not a tuple", short_repr(pid)));
        };
        match t.first().map(|o| &**o) {
            Some(Value::Str(s)) if s == "storage" => {}
            _ => return self.err("persistent id is not a ('storage', …) tuple"),
        }
        if t.len() < 5 {
            return self.err(format!(
                "storage persistent id has {} fields, expected 5",
                t.len()
            ));
        }
        let dtype = match &*t[1] {
            Value::Global { module, name } => match StorageDType::from_storage_class(name) {
                Some(d) => d,
                None => {
                    return Ok(obj(Value::Unsupported(format!(
                        "storage type {module}.{name}"
                    ))))
                }
            },
            other => {
                return self.err(format!(
                    "storage type is {}, not a class",
                    short_repr(other)
                ))
            }
        };
        let key = match &*t[2] {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => return self.err(format!("storage key is {}", short_repr(other))),
        };
        let location = match &*t[3] {
            Value::Str(s) => s.clone(),
            _ => String::new(),
        };
        let numel = match &*t[4] {
            Value::Int(n) if *n >= 0 => *n as usize,
            other => return self.err(format!("storage size is {}", short_repr(other))),
        };
        Ok(obj(Value::Storage(Rc::new(StorageRef {
            dtype,
            key,
            location,
            numel,
        }))))
    }

    /// A REDUCE / NEWOBJ: the few torch and builtin callables a state_dict needs are
    /// interpreted, everything else is kept opaque.
    fn call(&mut self, func: &Obj, args: Vec<Obj>) -> R<Obj> {
        let (module, name) = match &**func {
            Value::Global { module, name } => (module.as_str(), name.as_str()),
            _ => {
                return self.container(Value::Object {
                    class: format!("<call of {}>", short_repr(func)),
                    args,
                    state: RefCell::new(None),
                })
            }
        };
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                self.rebuild_tensor(&args)
            }
            ("torch._utils", "_rebuild_tensor_v3") => Ok(obj(match tensor_ref_v3(&args) {
                Ok(t) => Value::Tensor(t),
                Err(why) => Value::Unsupported(why),
            })),
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match args.first() {
                Some(t) if matches!(&**t, Value::Tensor(_) | Value::Unsupported(_)) => {
                    Ok(t.clone())
                }
                _ => Ok(obj(Value::Unsupported(
                    "_rebuild_parameter without a tensor".into(),
                ))),
            },
            // A tensor subclass: `_rebuild_from_type_v2(func, type, args, state)` → func(*args).
            ("torch._tensor", "_rebuild_from_type_v2") => {
                match (args.first(), args.get(2).map(|a| &**a)) {
                    (Some(f), Some(Value::Tuple(inner))) => self.call(f, inner.clone()),
                    _ => Ok(obj(Value::Unsupported(
                        "_rebuild_from_type_v2 with unexpected arguments".into(),
                    ))),
                }
            }
            ("torch._utils", name) if name.starts_with("_rebuild_") => Ok(obj(Value::Unsupported(
                format!("torch._utils.{name} (quantized, sparse or meta tensor)"),
            ))),
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let d = self.container(Value::Dict(RefCell::new(Vec::new())))?;
                // OrderedDict([(k, v), …]) form; torch.save uses the empty form + SETITEMS.
                if let Some(items) = args.first() {
                    if let Value::List(l) = &**items {
                        for pair in l.borrow().iter() {
                            if let Value::Tuple(kv) = &**pair {
                                if kv.len() == 2 {
                                    self.set_items(&d, vec![kv[0].clone(), kv[1].clone()])?;
                                }
                            }
                        }
                    }
                }
                Ok(d)
            }
            ("builtins", "set")
            | ("__builtin__", "set")
            | ("builtins", "frozenset")
            | ("__builtin__", "frozenset") => {
                let items = match args.first().map(|o| &**o) {
                    Some(Value::List(l)) => l.borrow().clone(),
                    Some(Value::Tuple(t)) => t.clone(),
                    _ => Vec::new(),
                };
                self.container(Value::Set(RefCell::new(items)))
            }
            _ => self.container(Value::Object {
                class: format!("{module}.{name}"),
                args,
                state: RefCell::new(None),
            }),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    /// A tensor whose arguments make no sense becomes [`Value::Unsupported`], so that only a
    /// state_dict that needs it fails.
    fn rebuild_tensor(&self, args: &[Obj]) -> R<Obj> {
        Ok(obj(match tensor_ref(args) {
            Ok(t) => Value::Tensor(t),
            Err(why) => Value::Unsupported(why),
        }))
    }
}

fn tensor_ref(args: &[Obj]) -> std::result::Result<TensorRef, String> {
    if args.len() < 4 {
        return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
    }
    let storage = match &*args[0] {
        Value::Storage(s) => s.clone(),
        Value::Unsupported(why) => return Err(why.clone()),
        other => {
            return Err(format!(
                "_rebuild_tensor_v2 on {}, not a storage",
                short_repr(other)
            ))
        }
    };
    let offset = usize_of(&args[1], "storage offset")?;
    let size = usize_tuple(&args[2], "size")?;
    let stride = usize_tuple(&args[3], "stride")?;
    Ok(TensorRef {
        storage,
        offset,
        size,
        stride,
    })
}

/// `_rebuild_tensor_v3(untyped_storage, offset, size, stride, requires_grad, hooks, dtype, …)`,
/// which torch uses for dtypes without a legacy typed storage class: the storage is counted in
/// bytes, offset and strides in elements of `dtype`.
fn tensor_ref_v3(args: &[Obj]) -> std::result::Result<TensorRef, String> {
    let mut t = tensor_ref(args)?;
    let dtype = match args.get(6).map(|a| &**a) {
        Some(Value::Global { module, name }) if module == "torch" => match name.as_str() {
            "float64" | "double" => StorageDType::F64,
            "float32" | "float" => StorageDType::F32,
            "float16" | "half" => StorageDType::F16,
            "bfloat16" => StorageDType::BF16,
            "int64" | "long" => StorageDType::I64,
            "int32" | "int" => StorageDType::I32,
            "int16" | "short" => StorageDType::I16,
            "int8" => StorageDType::I8,
            "uint8" => StorageDType::U8,
            "bool" => StorageDType::Bool,
            other => return Err(format!("tensor dtype torch.{other}")),
        },
        other => {
            return Err(format!(
                "_rebuild_tensor_v3 dtype is {}",
                other.map(short_repr).unwrap_or_else(|| "missing".into())
            ))
        }
    };
    let s = &t.storage;
    let bytes = s
        .numel
        .checked_mul(s.dtype.size())
        .ok_or("storage size overflows")?;
    t.storage = Rc::new(StorageRef {
        dtype,
        key: s.key.clone(),
        location: s.location.clone(),
        numel: bytes / dtype.size(),
    });
    Ok(t)
}

fn usize_of(o: &Obj, what: &str) -> std::result::Result<usize, String> {
    match &**o {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!("tensor {what} is {}", short_repr(other))),
    }
}

fn usize_tuple(o: &Obj, what: &str) -> std::result::Result<Vec<usize>, String> {
    match &**o {
        Value::Tuple(t) => t.iter().map(|x| usize_of(x, what)).collect(),
        other => Err(format!(
            "tensor {what} is {}, not a tuple",
            short_repr(other)
        )),
    }
}

/// LONG1/LONG4 payload: little-endian two's complement of any length.
fn long_le(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        buf[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(b.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long1_sign_extends() {
        assert!(matches!(long_le(&[0xff]), Value::Int(-1)));
        assert!(matches!(long_le(&[0x00, 0x01]), Value::Int(256)));
        assert!(matches!(
            long_le(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]),
            Value::BigInt(_)
        ));
    }

    #[test]
    fn dict_of_ints_and_unknown_opcode() {
        // pickle.dumps({'a': 1, 'b': [2, 3]}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(K\x02K\x03eu.";
        let v = unpickle(p).expect("a valid protocol-2 pickle");
        let Value::Dict(d) = &*v else { panic!() };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        let Value::List(l) = &*d[1].1 else { panic!() };
        assert_eq!(l.borrow().len(), 2);
        let e = unpickle(b"\x80\x02\xff.").unwrap_err();
        assert!(e.msg.contains("0xff"), "{e}");
        let e = unpickle(b"\x80\x02X\x10\x00\x00\x00ab").unwrap_err();
        assert!(e.msg.contains("truncated"), "{e}");
    }
}
