//! The calls into cuDNN. Per thread and device: one cuDNN handle on the
//! device's stream, one workspace that grows to the largest need and is
//! reused, and per convolution ([`Dims`]) and math mode a plan: its
//! descriptors, made once, and the algorithm of each pass, found once by
//! cuDNN's search (which times every algorithm on the device) under
//! [`WORKSPACE_CAP`].
//!
//! cuDNN handles are neither `Send` nor `Sync`, hence per thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cudnn::{result, sys, CudnnError};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::Result;

use super::{choose, cuda_math, grown_workspace, Candidate, CudaMath, Dims, Element, WORKSPACE_CAP};
use crate::conv::Geometry;

thread_local! {
    static STATES: RefCell<HashMap<DeviceId, State>> = RefCell::new(HashMap::new());
}

/// An element type cuDNN convolves here: f32, or bf16 with f32 sums.
pub(crate) trait CudnnElement: DeviceRepr + CudaDType {
    const ELEMENT: Element;
}

impl CudnnElement for f32 {
    const ELEMENT: Element = Element::F32;
}

impl CudnnElement for half::bf16 {
    const ELEMENT: Element = Element::Bf16;
}

/// The forward pass `y = conv(x, w)`, without bias.
pub(crate) fn forward<T: CudnnElement>(
    device: &CudaDevice,
    x: &CudaView<T>,
    w: &CudaView<T>,
    g: &Geometry,
) -> Result<CudaSlice<T>> {
    let dims = checked(
        g,
        T::ELEMENT,
        &[
            ("input", x.len(), g.batch * g.image_len()),
            ("weight", w.len(), g.out_channels * g.patch()),
        ],
    )?;
    let pass = Pass {
        what: "forward pass",
        chosen: |plan| &mut plan.forward,
        find: find_forward,
        output_len: g.batch * g.output_len(),
    };
    run(device, dims, pass, (x, w), |handle, plan, chosen, p| {
        // SAFETY: as `run` states for every pass: `x`, `w`, `y` as the plan describes them.
        unsafe {
            result::convolution_forward(
                handle,
                scale(&1.0),
                plan.x.0,
                p.a,
                plan.w.0,
                p.b,
                plan.conv.0,
                chosen.algo,
                p.workspace,
                p.workspace_len,
                scale(&0.0),
                plan.y.0,
                p.out,
            )
        }
    })
}

/// The input gradient `dx` of `dy` through weight `w`.
pub(crate) fn backward_data<T: CudnnElement>(
    device: &CudaDevice,
    dy: &CudaView<T>,
    w: &CudaView<T>,
    g: &Geometry,
) -> Result<CudaSlice<T>> {
    let dims = checked(
        g,
        T::ELEMENT,
        &[
            ("output gradient", dy.len(), g.batch * g.output_len()),
            ("weight", w.len(), g.out_channels * g.patch()),
        ],
    )?;
    let pass = Pass {
        what: "input gradient",
        chosen: |plan| &mut plan.backward_data,
        find: find_backward_data,
        output_len: g.batch * g.image_len(),
    };
    run(device, dims, pass, (dy, w), |handle, plan, chosen, p| {
        // SAFETY: as `run` states for every pass: `dy`, `w`, `dx` as the plan describes them.
        unsafe {
            result::convolution_backward_data(
                handle,
                scale(&1.0),
                plan.w.0,
                p.b,
                plan.y.0,
                p.a,
                plan.conv.0,
                chosen.algo,
                p.workspace,
                p.workspace_len,
                scale(&0.0),
                plan.x.0,
                p.out,
            )
        }
    })
}

/// The weight gradient `dw` of `dy` over input `x`.
pub(crate) fn backward_filter<T: CudnnElement>(
    device: &CudaDevice,
    dy: &CudaView<T>,
    x: &CudaView<T>,
    g: &Geometry,
) -> Result<CudaSlice<T>> {
    let dims = checked(
        g,
        T::ELEMENT,
        &[
            ("output gradient", dy.len(), g.batch * g.output_len()),
            ("input", x.len(), g.batch * g.image_len()),
        ],
    )?;
    let pass = Pass {
        what: "weight gradient",
        chosen: |plan| &mut plan.backward_filter,
        find: find_backward_filter,
        output_len: g.out_channels * g.patch(),
    };
    run(device, dims, pass, (dy, x), |handle, plan, chosen, p| {
        // SAFETY: as `run` states for every pass: `x`, `dy`, `dw` as the plan describes them.
        unsafe {
            result::convolution_backward_filter(
                handle,
                scale(&1.0),
                plan.x.0,
                p.b,
                plan.y.0,
                p.a,
                plan.conv.0,
                chosen.algo,
                p.workspace,
                p.workspace_len,
                scale(&0.0),
                plan.w.0,
                p.out,
            )
        }
    })
}

/// What tells one convolution pass from the others in [`run`].
struct Pass<A: 'static> {
    /// The pass, for errors.
    what: &'static str,
    /// Where the plan keeps this pass's algorithm.
    chosen: fn(&mut Plan) -> &mut Option<Chosen<A>>,
    /// cuDNN's search for it.
    find: fn(sys::cudnnHandle_t, &Plan, Dims) -> Result<Chosen<A>>,
    /// Elements of its output.
    output_len: usize,
}

/// The device pointers one pass launches with.
struct Pointers {
    /// The first operand (`x` forward, `dy` in both gradients).
    a: *const c_void,
    /// The second (`w` forward and for the input gradient, `x` for the weight gradient).
    b: *const c_void,
    out: *mut c_void,
    /// Null when the algorithm needs none.
    workspace: *mut c_void,
    workspace_len: usize,
}

/// Runs one pass on this thread's plan for `dims`: the algorithm found on
/// first use and kept, the workspace grown to its need, a fresh output, and
/// `launch` called with the math type the algorithm was timed with set. A
/// launch may rely on this: the plan's descriptors were made from `dims`,
/// which `checked` matched against the operands' lengths; the output holds
/// `output_len` elements, which cuDNN writes in full (beta = 0) and reads
/// none of; the workspace holds at least the bytes the algorithm asked for;
/// all of it is on the handle's stream.
fn run<T: CudnnElement, A: Copy + 'static>(
    device: &CudaDevice,
    dims: Dims,
    pass: Pass<A>,
    (a, b): (&CudaView<T>, &CudaView<T>),
    launch: impl FnOnce(sys::cudnnHandle_t, &Plan, Chosen<A>, &Pointers) -> std::result::Result<(), CudnnError>,
) -> Result<CudaSlice<T>> {
    with_plan(device, dims, |state, plan| {
        let chosen = match *(pass.chosen)(plan) {
            Some(chosen) => chosen,
            None => {
                let found = (pass.find)(state.handle.0, plan, dims)?;
                *(pass.chosen)(plan) = Some(found);
                found
            }
        };
        let (handle, stream) = (state.handle.0, Arc::clone(&state.stream));
        let workspace = state.workspace(device, chosen.workspace)?;
        // SAFETY (`alloc`): with beta = 0 cuDNN writes every element of the
        // output and reads none.
        let mut out = unsafe { device.alloc::<T>(pass.output_len)? };
        let (a_ptr, _a) = a.device_ptr(&stream);
        let (b_ptr, _b) = b.device_ptr(&stream);
        let (out_ptr, _out) = out.device_ptr_mut(&stream);
        let (workspace, workspace_len, _ws) = workspace_pointer(workspace, &stream);
        plan.conv.set_math(chosen.math, dims)?;
        let pointers = Pointers {
            a: a_ptr as *const c_void,
            b: b_ptr as *const c_void,
            out: out_ptr as *mut c_void,
            workspace,
            workspace_len,
        };
        launch(handle, plan, chosen, &pointers).map_err(|e| failed(pass.what, dims, e))?;
        drop((_a, _b, _out, _ws));
        Ok(out)
    })
}

/// The bias gradient: `dy` summed over the batch and the positions.
pub(crate) fn backward_bias(device: &CudaDevice, dy: &CudaView<f32>, g: &Geometry) -> Result<CudaSlice<f32>> {
    let dims = checked(
        g,
        Element::F32,
        &[("output gradient", dy.len(), g.batch * g.output_len())],
    )?;
    with_plan(device, dims, |state, plan| {
        let stream = Arc::clone(&state.stream);
        // SAFETY (`alloc`): beta = 0, every element written, none read.
        let mut db = unsafe { device.alloc::<f32>(g.out_channels)? };
        let (dy_ptr, _dy) = dy.device_ptr(&stream);
        let (db_ptr, _db) = db.device_ptr_mut(&stream);
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: `plan.y` describes `dy` (its length checked) and
        // `plan.bias` the O values of `db`.
        unsafe {
            sys::cudnnConvolutionBackwardBias(
                state.handle.0,
                scale(&alpha),
                plan.y.0,
                dy_ptr as *const c_void,
                scale(&beta),
                plan.bias.0,
                db_ptr as *mut c_void,
            )
        }
        .result()
        .map_err(|e| failed("bias gradient", dims, e))?;
        drop((_dy, _db));
        Ok(db)
    })
}

/// `g`'s [`Dims`], once every buffer holds the elements `g` says it has.
fn checked(g: &Geometry, element: Element, buffers: &[(&str, usize, usize)]) -> Result<Dims> {
    for &(what, len, expected) in buffers {
        if len != expected {
            candle_core::bail!("conv2d on CUDA: the {what} has {len} elements where {g:?} needs {expected}")
        }
    }
    Dims::new(g, element)
}

fn scale(value: &f32) -> *const c_void {
    (value as *const f32).cast()
}

fn failed(pass: &str, dims: Dims, error: CudnnError) -> candle_core::Error {
    candle_core::Error::Msg(format!("cuDNN {pass} of the convolution {dims:?}: {error}"))
}

/// The workspace's pointer and length (null and 0 when there is none).
fn workspace_pointer<'a>(
    workspace: Option<&'a mut CudaSlice<u8>>,
    stream: &'a CudaStream,
) -> (*mut c_void, usize, Option<impl Drop + 'a>) {
    match workspace {
        Some(workspace) => {
            let len = workspace.len();
            let (ptr, guard) = workspace.device_ptr_mut(stream);
            (ptr as *mut c_void, len, Some(guard))
        }
        None => (std::ptr::null_mut(), 0, None),
    }
}

/// Runs `f` on this thread's state for `device` and the plan of `dims` in
/// the current math mode, making either on first use.
fn with_plan<T>(device: &CudaDevice, dims: Dims, f: impl FnOnce(&mut State, &mut Plan) -> Result<T>) -> Result<T> {
    let math = cuda_math();
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let state = match states.entry(device.id()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(State::new(device)?),
        };
        // The plans are taken out while `f` borrows the state's handle and
        // workspace, and put back after.
        let mut plans = std::mem::take(&mut state.plans);
        let outcome = match plans.entry((dims, math)) {
            std::collections::hash_map::Entry::Occupied(entry) => f(state, entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => match Plan::new(dims, math) {
                Ok(plan) => f(state, entry.insert(plan)),
                Err(e) => Err(e),
            },
        };
        state.plans = plans;
        outcome
    })
}

/// One thread's cuDNN state on one device.
struct State {
    handle: Handle,
    stream: Arc<CudaStream>,
    plans: HashMap<(Dims, CudaMath), Plan>,
    workspace: Option<CudaSlice<u8>>,
}

impl State {
    fn new(device: &CudaDevice) -> Result<Self> {
        let stream = device.cuda_stream();
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| candle_core::Error::Msg(format!("cuDNN: cannot bind the CUDA context to this thread: {e}")))?;
        let handle = Handle(result::create_handle().map_err(|e| {
            candle_core::Error::Msg(format!(
                "cuDNN: cannot create a handle ({e}); is libcudnn.so.9 on LD_LIBRARY_PATH? (docs/gpu.md)"
            ))
        })?);
        // SAFETY: a live handle and the device's live stream.
        unsafe { result::set_stream(handle.0, stream.cu_stream() as sys::cudaStream_t) }
            .map_err(|e| candle_core::Error::Msg(format!("cuDNN: cannot set the stream: {e}")))?;
        Ok(Self {
            handle,
            stream,
            plans: HashMap::new(),
            workspace: None,
        })
    }

    /// A workspace of at least `bytes` (none for 0), grown when too small.
    fn workspace(&mut self, device: &CudaDevice, bytes: usize) -> Result<Option<&mut CudaSlice<u8>>> {
        if bytes == 0 {
            return Ok(None);
        }
        let current = self.workspace.as_ref().map_or(0, |w| w.len());
        if let Some(size) = grown_workspace(current, bytes) {
            // The old one goes first, so that both are never held at once.
            self.workspace = None;
            // SAFETY (`alloc`): cuDNN uses the workspace as scratch and reads
            // nothing there that it did not write.
            self.workspace = Some(unsafe { device.alloc::<u8>(size)? });
        }
        Ok(self.workspace.as_mut())
    }
}

/// An algorithm chosen for one pass, with the workspace it needs and the
/// math type it was timed with.
#[derive(Debug, Clone, Copy)]
struct Chosen<A> {
    algo: A,
    workspace: usize,
    math: sys::cudnnMathType_t,
}

/// One convolution's descriptors and chosen algorithms.
struct Plan {
    x: TensorDescriptor,
    w: FilterDescriptor,
    y: TensorDescriptor,
    /// `1 × O × 1 × 1`: the bias gradient.
    bias: TensorDescriptor,
    conv: ConvDescriptor,
    mode: CudaMath,
    forward: Option<Chosen<sys::cudnnConvolutionFwdAlgo_t>>,
    backward_data: Option<Chosen<sys::cudnnConvolutionBwdDataAlgo_t>>,
    backward_filter: Option<Chosen<sys::cudnnConvolutionBwdFilterAlgo_t>>,
}

impl Plan {
    fn new(dims: Dims, math: CudaMath) -> Result<Self> {
        let describe = |e: CudnnError| failed("descriptors", dims, e);
        let plan = Self {
            x: TensorDescriptor::new(dims.x, dims.element).map_err(describe)?,
            w: FilterDescriptor::new(dims.w, dims.element).map_err(describe)?,
            y: TensorDescriptor::new(dims.y, dims.element).map_err(describe)?,
            bias: TensorDescriptor::new([1, dims.w[0], 1, 1], dims.element).map_err(describe)?,
            conv: ConvDescriptor::new(dims).map_err(describe)?,
            mode: math,
            forward: None,
            backward_data: None,
            backward_filter: None,
        };
        // The search runs under this math type: FMA only for strict f32,
        // tensor cores (TF32, or bf16) allowed otherwise.
        plan.conv.set_math(search_math(math, dims.element), dims)?;
        Ok(plan)
    }
}

/// The math type a mode searches and runs under. bf16 operands always may
/// use tensor cores: their products are exact in f32, so there is nothing
/// stricter to ask for.
fn search_math(math: CudaMath, element: Element) -> sys::cudnnMathType_t {
    match (math, element) {
        (CudaMath::StrictF32, Element::F32) => sys::cudnnMathType_t::CUDNN_FMA_MATH,
        _ => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
    }
}

/// Generates one pass's search: cuDNN times every algorithm for the plan's
/// sizes, and [`choose`] picks among the ones that ran.
macro_rules! find {
    ($name:ident, $algo:ty, $perf:ty, $count:expr, $what:literal, |$handle:ident, $plan:ident, $n:ident, $returned:ident, $results:ident| $call:expr) => {
        fn $name($handle: sys::cudnnHandle_t, $plan: &Plan, dims: Dims) -> Result<Chosen<$algo>> {
            const COUNT: usize = $count as usize;
            // SAFETY: every field of the result structs is an integer, a
            // float or a C enum with a zero variant.
            let mut $results: [$perf; COUNT] = unsafe { std::mem::zeroed() };
            let mut $returned = 0;
            let $n = COUNT as i32;
            // SAFETY: live descriptors made for one convolution, and room for COUNT results.
            unsafe { $call }
                .result()
                .map_err(|e| failed(concat!("search for the ", $what), dims, e))?;
            let found = &$results[..($returned.max(0) as usize).min(COUNT)];
            let candidates: Vec<Candidate<usize>> = found
                .iter()
                .enumerate()
                .map(|(index, r)| Candidate {
                    algo: index,
                    ran: r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                    time_ms: r.time,
                    workspace: r.memory,
                })
                .collect();
            let best = choose(&candidates, WORKSPACE_CAP).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    concat!(
                        "cuDNN found no ",
                        $what,
                        " algorithm for the convolution {:?} within a workspace of {} bytes: {:?}"
                    ),
                    dims, WORKSPACE_CAP, found
                ))
            })?;
            let result = &found[best.algo];
            Ok(Chosen {
                algo: result.algo,
                workspace: result.memory,
                // Strict f32 runs under FMA math whatever the search reports.
                math: match ($plan.mode, dims.element) {
                    (CudaMath::StrictF32, Element::F32) => search_math(CudaMath::StrictF32, Element::F32),
                    _ => result.mathType,
                },
            })
        }
    };
}

find!(
    find_forward,
    sys::cudnnConvolutionFwdAlgo_t,
    sys::cudnnConvolutionFwdAlgoPerf_t,
    sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
    "forward",
    |handle, plan, n, returned, results| sys::cudnnFindConvolutionForwardAlgorithm(
        handle,
        plan.x.0,
        plan.w.0,
        plan.conv.0,
        plan.y.0,
        n,
        &mut returned,
        results.as_mut_ptr()
    )
);

find!(
    find_backward_data,
    sys::cudnnConvolutionBwdDataAlgo_t,
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
    "input-gradient",
    |handle, plan, n, returned, results| sys::cudnnFindConvolutionBackwardDataAlgorithm(
        handle,
        plan.w.0,
        plan.y.0,
        plan.conv.0,
        plan.x.0,
        n,
        &mut returned,
        results.as_mut_ptr()
    )
);

find!(
    find_backward_filter,
    sys::cudnnConvolutionBwdFilterAlgo_t,
    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
    sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
    "weight-gradient",
    |handle, plan, n, returned, results| sys::cudnnFindConvolutionBackwardFilterAlgorithm(
        handle,
        plan.x.0,
        plan.y.0,
        plan.conv.0,
        plan.w.0,
        n,
        &mut returned,
        results.as_mut_ptr()
    )
);

/// A cuDNN handle, destroyed on drop.
struct Handle(sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: made by `create_handle` and destroyed once, here. A
        // failure at teardown has no one left to report to.
        let _ = unsafe { result::destroy_handle(self.0) };
    }
}

/// cuDNN's name for an element type.
fn data_type(element: Element) -> sys::cudnnDataType_t {
    match element {
        Element::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        Element::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

/// A packed NCHW tensor descriptor.
struct TensorDescriptor(sys::cudnnTensorDescriptor_t);

impl TensorDescriptor {
    fn new(dims: [i32; 4], element: Element) -> std::result::Result<Self, CudnnError> {
        let descriptor = Self(result::create_tensor_descriptor()?);
        // SAFETY: a descriptor just made.
        unsafe {
            result::set_tensor4d_descriptor(
                descriptor.0,
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                data_type(element),
                dims,
            )
        }?;
        Ok(descriptor)
    }
}

impl Drop for TensorDescriptor {
    fn drop(&mut self) {
        // SAFETY: made once, destroyed once.
        let _ = unsafe { result::destroy_tensor_descriptor(self.0) };
    }
}

/// An `O×C×kh×kw` filter descriptor.
struct FilterDescriptor(sys::cudnnFilterDescriptor_t);

impl FilterDescriptor {
    fn new(dims: [i32; 4], element: Element) -> std::result::Result<Self, CudnnError> {
        let descriptor = Self(result::create_filter_descriptor()?);
        // SAFETY: a descriptor just made.
        unsafe {
            result::set_filter4d_descriptor(
                descriptor.0,
                data_type(element),
                sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dims,
            )
        }?;
        Ok(descriptor)
    }
}

impl Drop for FilterDescriptor {
    fn drop(&mut self) {
        // SAFETY: made once, destroyed once.
        let _ = unsafe { result::destroy_filter_descriptor(self.0) };
    }
}

/// A 2-d cross-correlation descriptor (square stride and padding, no
/// dilation, f32 sums).
struct ConvDescriptor(sys::cudnnConvolutionDescriptor_t);

impl ConvDescriptor {
    fn new(dims: Dims) -> std::result::Result<Self, CudnnError> {
        let descriptor = Self(result::create_convolution_descriptor()?);
        // SAFETY: a descriptor just made.
        unsafe {
            result::set_convolution2d_descriptor(
                descriptor.0,
                dims.padding,
                dims.padding,
                dims.stride,
                dims.stride,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
        }?;
        Ok(descriptor)
    }

    fn set_math(&self, math: sys::cudnnMathType_t, dims: Dims) -> Result<()> {
        // SAFETY: a live descriptor.
        unsafe { result::set_convolution_math_type(self.0, math) }.map_err(|e| failed("math type", dims, e))
    }
}

impl Drop for ConvDescriptor {
    fn drop(&mut self) {
        // SAFETY: made once, destroyed once.
        let _ = unsafe { result::destroy_convolution_descriptor(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2dParams;

    /// Descriptors are made on the host: this runs wherever libcudnn loads,
    /// GPU or not (bench/gpu/build.sh runs it before packing the binaries).
    #[test]
    fn cudnn_takes_every_layer_and_computes_our_output_sizes() -> Result<()> {
        // (channels, side, out channels, kernel, stride, padding): AlexNet's
        // and ResNet-18's convolutions at 224 px, and a non-square map.
        let layers = [
            (3, 224, 64, 11, 4, 2),
            (64, 27, 192, 5, 1, 2),
            (192, 13, 384, 3, 1, 1),
            (384, 13, 256, 3, 1, 1),
            (3, 224, 64, 7, 2, 3),
            (64, 56, 64, 3, 1, 1),
            (64, 56, 128, 3, 2, 1),
            (64, 56, 128, 1, 2, 0),
            (256, 14, 512, 3, 2, 1),
            (512, 7, 512, 3, 1, 1),
        ];
        for batch in [1, 16, 256] {
            for (channels, side, out, kernel, stride, padding) in layers {
                for (height, width) in [(side, side), (side + 3, side)] {
                    let g = Geometry::new(
                        &[batch, channels, height, width],
                        &[out, channels, kernel, kernel],
                        Conv2dParams { stride, padding },
                    )?;
                    for (element, math) in [
                        (Element::F32, CudaMath::Tf32),
                        (Element::F32, CudaMath::StrictF32),
                        (Element::Bf16, CudaMath::Tf32),
                    ] {
                        let dims = Dims::new(&g, element)?;
                        let plan = Plan::new(dims, math)?;
                        let mut y = [0i32; 4];
                        // SAFETY: live descriptors, four outputs.
                        unsafe {
                            sys::cudnnGetConvolution2dForwardOutputDim(
                                plan.conv.0,
                                plan.x.0,
                                plan.w.0,
                                &mut y[0],
                                &mut y[1],
                                &mut y[2],
                                &mut y[3],
                            )
                        }
                        .result()
                        .map_err(|e| failed("output size", dims, e))?;
                        assert_eq!(y, dims.y, "{g:?}");
                        // The input's descriptor holds the element type and
                        // the packed NCHW strides asked for.
                        let mut read = [0i32; 8];
                        let mut data = sys::cudnnDataType_t::CUDNN_DATA_DOUBLE;
                        let [n, c, h, w, ns, cs, hs, ws] = &mut read;
                        // SAFETY: a live descriptor, nine outputs.
                        unsafe { sys::cudnnGetTensor4dDescriptor(plan.x.0, &mut data, n, c, h, w, ns, cs, hs, ws) }
                            .result()
                            .map_err(|e| failed("descriptor read-back", dims, e))?;
                        let expected = match element {
                            Element::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                            Element::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
                        };
                        assert_eq!(data, expected, "{g:?}");
                        let [b, ch, ih, iw] = dims.x;
                        assert_eq!(read, [b, ch, ih, iw, ch * ih * iw, ih * iw, iw, 1], "{g:?}");
                    }
                }
            }
        }
        Ok(())
    }
}
