//! The one error type of glip-rt.

use std::path::PathBuf;

/// Everything that can go wrong in glip-rt. Messages name the input that is wrong
/// (file, tensor, key, prompt) so that a user can act on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {what}: {msg}")]
    Image { what: String, msg: String },
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("weights {path}: {msg}")]
    Weights { path: String, msg: String },
    #[error("config: {0}")]
    Config(String),
    #[error("shape mismatch in {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("dtype mismatch in {op}: expected {expected}, got {got}")]
    DType {
        op: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("CUDA kernels were not compiled into this binary (built without nvcc); install the toolchain with scripts/install-cuda-toolchain.sh and rebuild")]
    KernelsNotCompiled,
    /// A check of the emulated CUDA device found a kernel bug.
    #[error("{kernel}: {check} check failed: {detail}")]
    KernelCheck {
        kernel: String,
        check: crate::backend::cuda::EmuCheck,
        detail: String,
    },
    /// An op of the interface (backend/ops.rs) this backend does not implement yet.
    #[error("not on {} yet: {op}", .device.name())]
    NotOnDevice {
        op: &'static str,
        device: crate::tensor::Device,
    },
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error("{0}")]
    Invalid(String),
    /// An input asks for more than a limit of [`crate::limits`] allows (or is not a regular
    /// file); `what` names the input.
    #[error("{what}: {msg}")]
    Limit { what: String, msg: String },
    /// The reader of stdout went away (EPIPE): nothing more can be delivered, so the command
    /// stops; not a failure of the command (exit 0, no message).
    #[error("stdout was closed by its reader")]
    StdoutClosed,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Cuda(format!("{e:?}"))
    }
}

impl From<cudarc::cublas::result::CublasError> for Error {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        Error::Cuda(format!("cuBLAS: {e:?}"))
    }
}
