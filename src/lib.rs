//! glip-rt: a GLIP (grounded language-image pre-training) inference runtime.
//!
//! Hand-written CUDA kernels (`kernels/`, compiled by build.rs and embedded) and a CPU
//! backend computing the same function, which is the reference for every kernel and the
//! fallback without a GPU. See README.md and docs/.

pub mod annotate;
pub mod api;
pub mod backend;
pub mod block_cache;
pub mod capi;
pub mod cocoeval;
pub mod error;
pub mod kernels;
pub mod limits;
pub mod model;
pub mod parity;
pub mod phrases;
pub mod pixfmt;
pub mod pth;
pub mod selftest;
pub mod tensor;
pub mod testing;
pub mod weights;
pub mod y4m;
pub mod yaml_guard;

pub mod preprocess;
pub mod tokenizer;

pub use api::{Detection, Detector};
pub use backend::DeviceChoice;
pub use error::{Error, Result};
pub use tensor::{DType, Device, Tensor};
