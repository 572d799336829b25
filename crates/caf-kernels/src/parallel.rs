//! Sharing work out to rayon's workers: numbered blocks dealt round-robin,
//! each worker with its own scratch, and an output that the blocks write in
//! disjoint parts.

use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;

/// Runs `work(items, scratch)` on consecutive blocks of `block` of the
/// `total` items, the blocks dealt round-robin to the workers, each with its
/// own scratch; returns the workers' scratches (for sums kept in them).
pub(crate) fn for_each_block<S: Send>(
    total: usize,
    block: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(Range<usize>, &mut S) + Sync,
) -> Vec<S> {
    let blocks = total.div_ceil(block.max(1));
    let workers = rayon::current_num_threads().min(blocks).max(1);
    (0..workers)
        .into_par_iter()
        .map(|w| {
            let mut s = scratch();
            for b in (w..blocks).step_by(workers) {
                work(b * block..((b + 1) * block).min(total), &mut s);
            }
            s
        })
        .collect()
}

/// An output buffer written by several threads at once, each in parts that
/// no other thread writes (the caller's promise at [`SharedOutput::new`]).
pub(crate) struct SharedOutput<'a, T> {
    data: *mut T,
    len: usize,
    buffer: PhantomData<&'a mut [T]>,
}

// SAFETY: by the promise made at `new`, no two threads write the same
// element, and nobody reads the buffer until every writer is done.
unsafe impl<T: Send> Sync for SharedOutput<'_, T> {}

impl<'a, T> SharedOutput<'a, T> {
    /// Shares `buffer` out for as long as `Self` lives; its users must write
    /// disjoint parts of it.
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            data: buffer.as_mut_ptr(),
            len: buffer.len(),
            buffer: PhantomData,
        }
    }

    /// `len` elements from `start`, which only the calling block writes.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start + len <= self.len,
            "shared output: {start}..{} outside {}",
            start + len,
            self.len
        );
        // SAFETY: in bounds (checked above); disjoint between threads (see the Sync impl).
        unsafe { std::slice::from_raw_parts_mut(self.data.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_in_its_block() {
        for (total, block) in [(0, 4), (1, 4), (10, 3), (64, 64), (100, 7)] {
            let mut seen = vec![0u8; total];
            let out = SharedOutput::new(&mut seen);
            let blocks = for_each_block(total, block, Vec::new, |items: Range<usize>, mine: &mut Vec<usize>| {
                assert!(items.len() <= block && items.start % block == 0);
                for i in items {
                    out.slice(i, 1)[0] += 1;
                    mine.push(i);
                }
            });
            assert!(
                seen.iter().all(|&count| count == 1),
                "{total} items in blocks of {block}"
            );
            assert_eq!(blocks.iter().map(Vec::len).sum::<usize>(), total);
        }
    }
}
