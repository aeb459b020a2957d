//! Where a model's parameters come from: one walk of the model's own constructors (in the
//! spirit of candle's VarBuilder). Each constructor asks for its tensors by name, shape and
//! initialisation; the same walk
//! - loads a checkpoint onto the backend (f32 on the CPU, f16 matrices on CUDA), collecting
//!   every missing or mis-shaped key and, at [`Vars::finish`], every unexpected one into one
//!   error;
//! - draws GLIP-shaped random weights (benchmarks, smoke tests);
//! - or only lists the keys and shapes the model expects (`expected keys`).
//!
//! So the list of keys, the shapes and the loading can never disagree.

use super::WeightMap;
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::rc::Rc;

/// How a parameter is drawn when weights are random: what GLIP-like initialisation keeps
/// activations in a realistic range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform with variance 1/fan_in, fan_in = the product of all but the first dimension
    /// (Linear and conv weights).
    FanIn,
    /// All ones (norm scales).
    Ones,
    /// Uniform in ±0.01 (biases, norm shifts, tables).
    Small,
    /// Every element this value (GLIP's initial scalars: scales, bias0, gammas).
    Const(f32),
}

enum Source<'a> {
    Checkpoint(&'a WeightMap),
    Random(u64),
    KeysOnly,
}

struct State<'a> {
    source: Source<'a>,
    backend: &'a dyn Backend,
    requested: Vec<(String, Vec<usize>)>,
    /// Random draws, kept (host f32) to be written out as a checkpoint: Some only for
    /// [`Vars::random_checkpoint`] (a model alone need not hold a second copy).
    drawn: Option<Vec<(String, Tensor)>>,
}

/// A handle on the walk at a key prefix. Cloning is cheap; all clones share one record.
#[derive(Clone)]
pub struct Vars<'a> {
    state: Rc<RefCell<State<'a>>>,
    prefix: String,
}

impl<'a> Vars<'a> {
    fn with(source: Source<'a>, backend: &'a dyn Backend) -> Self {
        Vars {
            state: Rc::new(RefCell::new(State {
                source,
                backend,
                requested: Vec::new(),
                drawn: None,
            })),
            prefix: String::new(),
        }
    }
    /// Tensors from a checkpoint, converted to `backend`'s storage.
    pub fn from_weights(w: &'a WeightMap, backend: &'a dyn Backend) -> Self {
        Self::with(Source::Checkpoint(w), backend)
    }
    /// Random tensors (deterministic per key and seed).
    pub fn random(seed: u64, backend: &'a dyn Backend) -> Self {
        Self::with(Source::Random(seed), backend)
    }
    /// As [`Vars::random`], also keeping every draw for [`Vars::take_drawn`].
    pub fn random_checkpoint(seed: u64, backend: &'a dyn Backend) -> Self {
        let v = Self::random(seed, backend);
        v.state.borrow_mut().drawn = Some(Vec::new());
        v
    }
    /// Only the key list: tensors are lazily-zeroed host placeholders.
    pub fn keys_only() -> Vars<'static> {
        Vars::with(Source::KeysOnly, crate::backend::host())
    }

    /// The handle for the sub-module `name` (keys `{prefix}{name}.…`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Vars<'a> {
        Vars {
            state: Rc::clone(&self.state),
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// The full key of `name` under this prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether a parameter under this prefix exists (checkpoints: in the file; otherwise
    /// false), for the few optional tensors GLIP's variants differ by.
    pub fn contains(&self, name: &str) -> bool {
        match &self.state.borrow().source {
            Source::Checkpoint(w) => w.contains(&self.key(name)),
            _ => false,
        }
    }

    /// The parameter `name` of `shape` on the backend.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.fetch(name, shape, init, true)
    }

    /// The parameter `name` of `shape` as a host f32 tensor (for the few parameters the model
    /// rearranges at load, e.g. one row of a table).
    pub fn host(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.fetch(name, shape, init, false)
    }

    fn fetch(&self, name: &str, shape: &[usize], init: Init, device: bool) -> Result<Tensor> {
        let key = self.key(name);
        let mut st = self.state.borrow_mut();
        st.requested.push((key.clone(), shape.to_vec()));
        // Placeholders (keys only; a missing or mis-shaped tensor, which finish() reports)
        // are lazily-zeroed host memory.
        let zeros = || Tensor::from_f32(shape, vec![0.0; shape.iter().product()]);
        let t = match st.source {
            Source::Checkpoint(w) => match w.get(&key, shape) {
                // Integers of the same byte size would convert, silently wrong.
                Ok(t) => {
                    w.check_float(&key, t)?;
                    return if device {
                        st.backend.weight(t)
                    } else {
                        t.to_f32()
                    };
                }
                Err(_) => return zeros(),
            },
            Source::KeysOnly => return zeros(),
            Source::Random(seed) => {
                let t = Tensor::from_f32(shape, draw(seed, &key, shape, init))?;
                if st.drawn.is_some() {
                    let copy = t.try_clone()?;
                    st.drawn.get_or_insert_with(Vec::new).push((key, copy));
                }
                t
            }
        };
        if device {
            st.backend.weight(&t)
        } else {
            Ok(t)
        }
    }

    /// A parameter the model derived on the host from [`Vars::host`] tensors, in the
    /// backend's storage (a host placeholder when only keys are listed).
    pub fn weight_from_host(&self, t: &Tensor) -> Result<Tensor> {
        let st = self.state.borrow();
        match st.source {
            Source::KeysOnly => t.try_clone(),
            _ => st.backend.weight(t),
        }
    }

    /// A scalar stored as a 1-element tensor, read on the host.
    pub fn scalar(&self, name: &str, init: Init) -> Result<f32> {
        let t = self.host(name, &[1], init)?;
        Ok(t.f32s()?.first().copied().unwrap_or(0.0))
    }

    /// Every (key, shape) the walk asked for, in order.
    pub fn requested(&self) -> Vec<(String, Vec<usize>)> {
        self.state.borrow().requested.clone()
    }

    /// The tensors a [`Vars::random_checkpoint`] walk drew, under their keys (a checkpoint of
    /// random weights); empty for any other walk.
    pub fn take_drawn(&self) -> Vec<(String, Tensor)> {
        self.state.borrow_mut().drawn.take().unwrap_or_default()
    }

    /// Ends the walk: for a checkpoint, one error listing every missing, mis-shaped and
    /// unexpected key (keys `ignorable` accepts may be absent or extra).
    pub fn finish(&self, ignorable: impl Fn(&str) -> bool) -> Result<()> {
        let st = self.state.borrow();
        match st.source {
            Source::Checkpoint(w) => crate::weights::validate_keys(w, &st.requested, ignorable),
            _ => Ok(()),
        }
    }
}

/// Deterministic random values for one key: seeded by the key's name, so adding a module
/// does not change the others' weights.
fn draw(seed: u64, key: &str, shape: &[usize], init: Init) -> Vec<f32> {
    let n: usize = shape.iter().product();
    // FNV-1a of the key.
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = crate::testing::Rng::new(seed ^ h);
    match init {
        Init::FanIn => {
            let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
            let a = (3.0 / fan_in as f32).sqrt();
            rng.uniform_vec(n, -a, a)
        }
        Init::Ones => vec![1.0; n],
        Init::Small => rng.uniform_vec(n, -0.01, 0.01),
        Init::Const(v) => vec![v; n],
    }
}
