//! How a CUDA device is opened for training and inference
//! ([`crate::parse_device`]): one stream for all of its work, no per-buffer
//! events, and a memory pool that keeps what it frees.
//!
//! * **One stream.** candle's `Device::new_cuda` runs on CUDA's per-thread
//!   default stream, so a batch uploaded from a loader thread and the step
//!   that reads it on the training thread would sit on two streams that
//!   nothing orders. `Device::new_cuda_with_stream` makes one stream that
//!   every host thread's work goes to, in the order it was issued.
//! * **No events.** A context with a stream of its own counts as having
//!   several, so cudarc would create two CUDA events for every buffer and
//!   record them on each use, to order uses across streams. With one stream
//!   the stream itself orders them, and candle allocates a buffer for every
//!   tensor, so the events are pure cost.
//! * **A warm pool.** cudarc allocates with `cuMemAllocAsync` from the
//!   device's memory pool, whose default release threshold of zero hands
//!   freed memory back to the driver at every synchronisation, to be mapped
//!   again by the next step. Raising the threshold keeps it for reuse, as
//!   PyTorch's caching allocator does.

use candle_core::cuda_backend::cudarc::driver::{result, sys};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{Device, Result};

/// Opens CUDA device `ordinal` as described in the module documentation.
///
/// The returned device's context holds exactly the one stream made here,
/// and its buffers carry no events: work that a caller puts on another
/// stream of the same context must be synchronised with this one by the
/// caller (caf itself never makes another).
pub(crate) fn open(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda_with_stream(ordinal)?;
    let Device::Cuda(cuda) = &device else {
        unreachable!("new_cuda_with_stream returns a CUDA device")
    };
    // SAFETY: cudarc's events order a buffer's uses across the streams of
    // its context. This context was created just now by
    // `new_cuda_with_stream` (a context object of its own, not shared with
    // any other `Device`), which made exactly one stream and handed it to
    // candle, cuBLAS and cuRAND; caf's kernels and cuDNN launch on that
    // stream too. Every use of every buffer is therefore issued to one
    // stream, which runs them in order, and a buffer is freed
    // (`cuMemFreeAsync`) on that same stream after its last use.
    unsafe { cuda.disable_event_tracking() };
    keep_freed_memory(cuda)?;
    Ok(device)
}

/// Raises the release threshold of the memory pool that `device`'s
/// allocations come from, so freed blocks stay mapped for the next
/// allocation. Nothing to do where the device has no memory pools (cudarc
/// then allocates with `cuMemAlloc`).
fn keep_freed_memory(device: &CudaDevice) -> Result<()> {
    let context = device.cuda_stream().context().clone();
    if !context.has_async_alloc() {
        return Ok(());
    }
    let failed = |what: &str, e: result::DriverError| {
        candle_core::Error::Msg(format!(
            "caf-kernels: could not {what} the memory pool of CUDA device {}: {e}",
            context.ordinal()
        ))
    };
    context.bind_to_thread().map_err(|e| failed("bind", e))?;
    // SAFETY: `cu_device` is the device handle cudarc obtained for this
    // context from `cuDeviceGet`.
    let pool = unsafe { result::device::get_mem_pool(context.cu_device()) }.map_err(|e| failed("find", e))?;
    let mut threshold = u64::MAX;
    // SAFETY: `pool` is the device's current pool, just returned by the
    // driver; the release threshold attribute is a `cuuint64_t`, which
    // `threshold` is.
    unsafe {
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(|e| failed("configure", e))
}
