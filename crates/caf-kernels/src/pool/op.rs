//! The candle operations of [`super::max_pool2d`]: each runs the CPU
//! kernels (`max_cpu`) or, with the `cuda` feature, the CUDA kernels
//! (`max_cuda`), and the training forward pass keeps where each maximum
//! came from for the backward pass.

use std::sync::{Arc, OnceLock};

use candle_core::{backend::BackendStorage, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::MaxPool2dConfig;
use super::PoolGeometry;

/// Max pooling. When built [`MaxPool2dOp::for_training`] it keeps where
/// each maximum came from, which its backward pass needs.
pub(super) struct MaxPool2dOp {
    config: MaxPool2dConfig,
    argmax: Option<OnceLock<MaximaPlaces>>,
}

/// Where each window's maximum lies in its plane, on the forward pass's device.
#[derive(Clone)]
pub(super) enum MaximaPlaces {
    Host(Arc<Vec<u32>>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<candle_core::cuda_backend::cudarc::driver::CudaSlice<u32>>),
}

impl MaxPool2dOp {
    pub(super) fn for_inference(config: MaxPool2dConfig) -> Self {
        Self { config, argmax: None }
    }

    pub(super) fn for_training(config: MaxPool2dConfig) -> Self {
        Self {
            config,
            argmax: Some(OnceLock::new()),
        }
    }

    /// The geometry, plane count and output shape for an input of `dims`.
    fn geometry(&self, dims: &[usize]) -> Result<(usize, PoolGeometry, Shape)> {
        let (planes, g) = PoolGeometry::new(self.config, dims)?;
        Ok((planes, g, Shape::from((dims[0], dims[1], g.out_h, g.out_w))))
    }

    fn keep(&self, places: MaximaPlaces) -> Result<()> {
        if let Some(argmax) = &self.argmax {
            if argmax.set(places).is_err() {
                candle_core::bail!("max_pool2d: one training op ran its forward pass twice")
            }
        }
        Ok(())
    }
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "caf-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g, shape) = self.geometry(layout.dims())?;
        let places = self.argmax.is_some();
        let (output, at) = match storage {
            CpuStorage::F32(data) => {
                let (y, at) = g.forward_keeping(
                    places,
                    planes,
                    crate::storage::contiguous_part(data, layout, self.name())?,
                );
                (CpuStorage::F32(y), at)
            }
            CpuStorage::F64(data) => {
                let (y, at) = g.forward_keeping(
                    places,
                    planes,
                    crate::storage::contiguous_part(data, layout, self.name())?,
                );
                (CpuStorage::F64(y), at)
            }
            other => candle_core::bail!("max_pool2d: unsupported dtype {:?} (use f32 or f64)", other.dtype()),
        };
        self.keep(MaximaPlaces::Host(Arc::new(at)))?;
        Ok((output, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (planes, g, shape) = self.geometry(layout.dims())?;
        let (output, at) = super::max_cuda::forward((planes, &g), storage, layout, self.argmax.is_some())?;
        if let Some(at) = at {
            self.keep(MaximaPlaces::Cuda(Arc::new(at)))?;
        }
        Ok((output, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let Some(at) = self.argmax.as_ref().and_then(OnceLock::get) else {
            candle_core::bail!("max_pool2d: backward pass of an op built without its maxima's places")
        };
        let scatter = ScatterToMaxima {
            config: self.config,
            input_dims: arg.dims().to_vec(),
            at: at.clone(),
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&scatter)?))
    }
}

/// The gradient of [`MaxPool2dOp`]: the output's gradient (the argument)
/// added at the places of the maxima, in a zero tensor shaped like the input.
struct ScatterToMaxima {
    config: MaxPool2dConfig,
    input_dims: Vec<usize>,
    at: MaximaPlaces,
}

impl ScatterToMaxima {
    fn geometry(&self, grad_dims: &[usize]) -> Result<(usize, PoolGeometry)> {
        let (planes, g) = PoolGeometry::new(self.config, &self.input_dims)?;
        if grad_dims != [self.input_dims[0], self.input_dims[1], g.out_h, g.out_w] {
            candle_core::bail!("max_pool2d backward: gradient shape {grad_dims:?} does not match the output")
        }
        Ok((planes, g))
    }
}

impl CustomOp1 for ScatterToMaxima {
    fn name(&self) -> &'static str {
        "caf-max-pool2d-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, g) = self.geometry(layout.dims())?;
        // The only variant without the `cuda` feature.
        #[cfg_attr(not(feature = "cuda"), allow(irrefutable_let_patterns))]
        let MaximaPlaces::Host(at) = &self.at
        else {
            candle_core::bail!("max_pool2d backward: the forward pass ran on another device")
        };
        let name = self.name();
        let grad = match storage {
            CpuStorage::F32(dy) => {
                CpuStorage::F32(g.backward(planes, at, crate::storage::contiguous_part(dy, layout, name)?))
            }
            CpuStorage::F64(dy) => {
                CpuStorage::F64(g.backward(planes, at, crate::storage::contiguous_part(dy, layout, name)?))
            }
            other => candle_core::bail!("max_pool2d backward: unsupported dtype {:?}", other.dtype()),
        };
        Ok((grad, Shape::from(self.input_dims.clone())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (planes, g) = self.geometry(layout.dims())?;
        let MaximaPlaces::Cuda(at) = &self.at else {
            candle_core::bail!("max_pool2d backward: the forward pass ran on another device")
        };
        let grad = super::max_cuda::backward((planes, &g), at, storage, layout)?;
        Ok((grad, Shape::from(self.input_dims.clone())))
    }
}
