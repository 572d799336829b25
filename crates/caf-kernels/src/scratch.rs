//! Scratch buffers kept by each thread for its next call. Allocated afresh,
//! every buffer would be zero-filled before the kernels overwrite it:
//! megabytes per convolution for the Winograd blocks and im2col's columns.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes of buffers one thread keeps between calls; buffers beyond are
/// freed. Enough for the largest pass's buffers to come back on the next
/// call: ResNet-18's layer4 weight gradient on the thread that calls it
/// (16 MiB of point sums and 19 MiB of transformed tiles at batch 16, in
/// `conv::winograd`), beside the 16 MiB kernel transform of its forward
/// pass; below that, they were page-faulted in and zeroed on every call.
const KEPT_BYTES_PER_THREAD: usize = 64 << 20;

/// Element types with a per-thread store of buffers.
pub trait Kept: Copy + Default + 'static {
    /// What this crate's tests fill every scratch buffer with, so that a
    /// kernel reading an element it did not write fails them.
    #[cfg(test)]
    const POISON: Self;
    /// Runs `f` on this thread's kept buffers.
    fn with_kept<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

macro_rules! kept {
    ($($t:ty),*) => {$(
        impl Kept for $t {
            #[cfg(test)]
            const POISON: Self = <$t>::NAN;
            fn with_kept<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
                thread_local! {
                    static KEPT: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
                }
                KEPT.with_borrow_mut(f)
            }
        }
    )*};
}

kept!(f32, f64);

/// A buffer of a given length whose elements hold whatever its last user
/// left (zeros when it is new): every element must be written before it is
/// read. Dropped, it goes back to the thread that drops it.
pub(crate) struct Scratch<T: Kept>(Vec<T>);

impl<T: Kept> Scratch<T> {
    /// `len` elements, from the smallest kept buffer that holds them.
    pub(crate) fn stale(len: usize) -> Self {
        let reused = T::with_kept(|kept| {
            let fitting = kept.iter().enumerate().filter(|(_, buffer)| buffer.capacity() >= len);
            let smallest = fitting.min_by_key(|(_, buffer)| buffer.capacity()).map(|(i, _)| i);
            smallest.map(|i| kept.swap_remove(i))
        });
        let mut buffer = reused.unwrap_or_default();
        // Shrinking keeps the values; only a buffer's growth is filled.
        buffer.resize(len, T::default());
        #[cfg(test)]
        buffer.fill(T::POISON);
        Self(buffer)
    }
}

impl<T: Kept> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() == 0 {
            return;
        }
        T::with_kept(|kept| {
            let held: usize = kept.iter().map(Vec::capacity).sum();
            if (held + buffer.capacity()) * std::mem::size_of::<T>() <= KEPT_BYTES_PER_THREAD {
                kept.push(buffer);
            }
        });
    }
}

impl<T: Kept> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Kept> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped buffer comes back to the next request it can hold, however
    /// long; one that would take the thread over its budget is freed.
    #[test]
    fn dropped_buffers_serve_the_next_request_on_their_thread() {
        std::thread::spawn(|| {
            let first = Scratch::<f32>::stale(1000);
            assert!(first.iter().all(|v| v.is_nan()), "poisoned in tests");
            let address = first.as_ptr();
            drop(first);
            let again = Scratch::<f32>::stale(500);
            assert_eq!((again.as_ptr(), again.len()), (address, 500));
            drop(again);
            let grown = Scratch::<f32>::stale(1000);
            assert_eq!((grown.as_ptr(), grown.len()), (address, 1000));
            drop(grown);
            let huge = Scratch::<f64>::stale(KEPT_BYTES_PER_THREAD / 8 + 1);
            drop(huge);
            f64::with_kept(|kept| assert!(kept.is_empty(), "over budget, freed"));
            f32::with_kept(|kept| assert_eq!(kept.len(), 1));
        })
        .join()
        .expect("the test thread");
    }
}
