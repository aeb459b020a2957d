//! A small n-d tensor: shape + typed storage on the host or on a CUDA device.
//!
//! Host tensors are row-major and contiguous. The CPU backend computes in f32; f16 host
//! data (weights) is upcast on use. Device tensors hold a cudarc slice; they are made and
//! read back only through a backend.

use crate::error::{Error, Result};
use half::f16;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    I32,
    U8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::U8 => 1,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// For messages: "the CPU", "CUDA".
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "the CPU",
            Device::Cuda(_) => "CUDA",
        }
    }
}

/// Host storage, one variant per dtype.
#[derive(Clone, Debug)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

/// Device storage (a GPU's or the emulated device's buffers), one variant per dtype.
#[derive(Debug)]
pub enum DeviceData {
    F32(crate::backend::cuda::DeviceBuffer<f32>),
    F16(crate::backend::cuda::DeviceBuffer<f16>),
    I32(crate::backend::cuda::DeviceBuffer<i32>),
    U8(crate::backend::cuda::DeviceBuffer<u8>),
}

#[derive(Debug)]
pub enum Storage {
    Host(HostData),
    Cuda { ordinal: usize, data: DeviceData },
}

#[derive(Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        Self::from_host(shape, HostData::F32(data))
    }
    pub fn from_f16(shape: &[usize], data: Vec<f16>) -> Result<Self> {
        Self::from_host(shape, HostData::F16(data))
    }
    pub fn from_i32(shape: &[usize], data: Vec<i32>) -> Result<Self> {
        Self::from_host(shape, HostData::I32(data))
    }
    pub fn from_u8(shape: &[usize], data: Vec<u8>) -> Result<Self> {
        Self::from_host(shape, HostData::U8(data))
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(HostData::F32(vec![0.0; numel(shape)])),
        }
    }
    pub fn from_host(shape: &[usize], data: HostData) -> Result<Self> {
        let len = match &data {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::U8(v) => v.len(),
        };
        if len != numel(shape) {
            return Err(Error::shape(
                "Tensor::from_host",
                format!(
                    "shape {shape:?} needs {} elements, data has {len}",
                    numel(shape)
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(data),
        })
    }
    pub fn from_device(shape: &[usize], ordinal: usize, data: DeviceData) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda { ordinal, data },
        }
    }

    /// A copy of a host tensor (device tensors are copied through their backend).
    pub fn try_clone(&self) -> Result<Tensor> {
        Tensor::from_host(&self.shape, self.host()?.clone())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dims<const N: usize>(&self, op: &'static str) -> Result<[usize; N]> {
        <[usize; N]>::try_from(self.shape.as_slice())
            .map_err(|_| Error::shape(op, format!("expected {N} dims, got shape {:?}", self.shape)))
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Host(HostData::F32(_))
            | Storage::Cuda {
                data: DeviceData::F32(_),
                ..
            } => DType::F32,
            Storage::Host(HostData::F16(_))
            | Storage::Cuda {
                data: DeviceData::F16(_),
                ..
            } => DType::F16,
            Storage::Host(HostData::I32(_))
            | Storage::Cuda {
                data: DeviceData::I32(_),
                ..
            } => DType::I32,
            Storage::Host(HostData::U8(_))
            | Storage::Cuda {
                data: DeviceData::U8(_),
                ..
            } => DType::U8,
        }
    }
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Host(_) => Device::Cpu,
            Storage::Cuda { ordinal, .. } => Device::Cuda(*ordinal),
        }
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }
    pub fn host(&self) -> Result<&HostData> {
        match &self.storage {
            Storage::Host(h) => Ok(h),
            Storage::Cuda { .. } => Err(Error::Invalid(
                "tensor is on a CUDA device; copy it to the host first".into(),
            )),
        }
    }

    /// The address of a host tensor's storage (None on a device): an identity for the
    /// memory planner, which sees an op that returns its input's storage as in place.
    pub fn host_addr(&self) -> Option<usize> {
        match &self.storage {
            Storage::Host(HostData::F32(v)) => Some(v.as_ptr() as usize),
            Storage::Host(HostData::F16(v)) => Some(v.as_ptr() as usize),
            Storage::Host(HostData::I32(v)) => Some(v.as_ptr() as usize),
            Storage::Host(HostData::U8(v)) => Some(v.as_ptr() as usize),
            Storage::Cuda { .. } => None,
        }
    }
    /// The identity of the tensor's storage: its host address, or (device tensors) its
    /// buffer's allocation id with the top bit set, so the two never meet. Two tensors have
    /// the same identity while they share storage.
    pub fn storage_id(&self) -> usize {
        match &self.storage {
            Storage::Host(_) => self.host_addr().unwrap_or(0),
            Storage::Cuda { data, .. } => {
                let id = match data {
                    DeviceData::F32(b) => b.id(),
                    DeviceData::F16(b) => b.id(),
                    DeviceData::I32(b) => b.id(),
                    DeviceData::U8(b) => b.id(),
                };
                Self::device_storage_id(id)
            }
        }
    }
    /// The [`Tensor::storage_id`] of a tensor over device buffer `id`.
    pub fn device_storage_id(id: u64) -> usize {
        const DEVICE: usize = 1 << (usize::BITS - 1);
        DEVICE | id as usize
    }
    /// Bytes of the tensor's elements.
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    /// Borrow f32 host data (no conversion).
    pub fn f32s(&self) -> Result<&[f32]> {
        match self.host()? {
            HostData::F32(v) => Ok(v),
            other => Err(Error::DType {
                op: "f32s",
                expected: "f32",
                got: host_dtype(other).name(),
            }),
        }
    }
    pub fn f32s_mut(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Host(HostData::F32(v)) => Ok(v),
            _ => Err(Error::DType {
                op: "f32s_mut",
                expected: "f32 host",
                got: "other",
            }),
        }
    }
    pub fn i32s(&self) -> Result<&[i32]> {
        match self.host()? {
            HostData::I32(v) => Ok(v),
            other => Err(Error::DType {
                op: "i32s",
                expected: "i32",
                got: host_dtype(other).name(),
            }),
        }
    }
    pub fn u8s(&self) -> Result<&[u8]> {
        match self.host()? {
            HostData::U8(v) => Ok(v),
            other => Err(Error::DType {
                op: "u8s",
                expected: "u8",
                got: host_dtype(other).name(),
            }),
        }
    }

    /// Host data as f32 (f16 and integers converted; f32 copied).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(match self.host()? {
            HostData::F32(v) => v.clone(),
            HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            HostData::U8(v) => v.iter().map(|&x| x as f32).collect(),
        })
    }
    /// A host f32 tensor with the same values (a no-op clone for f32).
    pub fn to_f32(&self) -> Result<Tensor> {
        Tensor::from_f32(&self.shape, self.to_f32_vec()?)
    }
    pub fn to_f16(&self) -> Result<Tensor> {
        let v = match self.host()? {
            HostData::F16(v) => v.clone(),
            _ => self.to_f32_vec()?.into_iter().map(f16::from_f32).collect(),
        };
        Tensor::from_f16(&self.shape, v)
    }

    /// Same data, new shape (host only; element count must match).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {:?}", self.shape, shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

pub fn host_dtype(h: &HostData) -> DType {
    match h {
        HostData::F32(_) => DType::F32,
        HostData::F16(_) => DType::F16,
        HostData::I32(_) => DType::I32,
        HostData::U8(_) => DType::U8,
    }
}
