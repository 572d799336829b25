//! Sharing work out to rayon's workers: an equal contiguous share of the
//! numbered items each, worked through in blocks with the worker's own
//! scratch, and an output that the blocks write in disjoint parts.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::vectorised;
use crate::scratch::Kept;

/// Runs `work(items, scratch)` over the `total` items: each worker takes an
/// equal contiguous share (to one item) and works through it in blocks of at
/// most `block`, with its own scratch; returns what `finish` makes of each
/// worker's scratch (sums kept in it), on the worker, so that buffers it
/// drops go back to that worker's [`Scratch`](crate::scratch::Scratch)
/// store. Equal shares matter more than equal blocks: with blocks dealt
/// round-robin, 5 blocks on 2 workers leave one idle a fifth of the time.
pub(crate) fn for_each_block<S, R: Send>(
    total: usize,
    block: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(Range<usize>, &mut S) + Sync,
    finish: impl Fn(S) -> R + Sync,
) -> Vec<R> {
    let block = block.max(1);
    let workers = rayon::current_num_threads().min(total).max(1);
    (0..workers)
        .into_par_iter()
        .map(|w| {
            let mut s = scratch();
            let (mut start, end) = (w * total / workers, (w + 1) * total / workers);
            while start < end {
                let stop = (start + block).min(end);
                work(start..stop, &mut s);
                start = stop;
            }
            finish(s)
        })
        .collect()
}

/// A vector of `count` planes of `plane` values, made plane by plane in
/// parallel and written straight into its memory (no zeroing pass first),
/// each plane's loop [`vectorised`]: plane `i` holds the first `plane`
/// values of `values(i)`.
///
/// # Panics
/// When `values(i)` gives fewer than `plane` values.
pub(crate) fn collect_planes<T, I>(count: usize, plane: usize, values: impl Fn(usize) -> I + Sync) -> Vec<T>
where
    T: Send,
    I: Iterator<Item = T>,
{
    let len = count * plane;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(i, places)| {
            let written = vectorised(
                #[inline(always)]
                || {
                    let mut written = 0;
                    for (place, value) in places.iter_mut().zip(values(i)) {
                        place.write(value);
                        written += 1;
                    }
                    written
                },
            );
            assert_eq!(written, plane, "plane {i}: {written} values for {plane} places");
        });
    // SAFETY: every plane's `plane` places were written (counted above; a
    // short plane panics before this, and `out` is then dropped empty).
    unsafe { out.set_len(len) };
    out
}

/// An output of `len` elements that blocks write in disjoint parts, each
/// element once, with nothing written before (no zeroing pass by the
/// allocator): shared out as places ([`Self::places`]), then taken whole
/// once every place is written ([`Self::assume_written`]). In this crate's
/// tests the places hold NaNs first, so that one left unwritten fails them.
pub(crate) struct UnwrittenOutput<T> {
    buffer: Vec<T>,
    len: usize,
}

impl<T: Kept> UnwrittenOutput<T> {
    pub(crate) fn new(len: usize) -> Self {
        let buffer = Vec::with_capacity(len);
        #[cfg(test)]
        let buffer = {
            let mut buffer = buffer;
            buffer.spare_capacity_mut()[..len].fill(MaybeUninit::new(T::POISON));
            buffer
        };
        Self { buffer, len }
    }

    /// The places, to share out to the blocks that write them.
    pub(crate) fn places(&mut self) -> SharedOutput<'_, MaybeUninit<T>> {
        SharedOutput::new(&mut self.buffer.spare_capacity_mut()[..self.len])
    }

    /// The output.
    ///
    /// # Safety
    /// Every one of the `len` places was written through [`Self::places`].
    pub(crate) unsafe fn assume_written(mut self) -> Vec<T> {
        // SAFETY: the capacity is `len` and, by the caller's promise, the
        // first `len` elements are written.
        unsafe { self.buffer.set_len(self.len) };
        self.buffer
    }
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

    /// The address of the `len` elements from `start` (in bounds, checked),
    /// to prefetch: reading or writing through it is for [`Self::slice`].
    pub(crate) fn address(&self, start: usize, len: usize) -> *const T {
        self.checked(start, len)
    }

    /// The address of the `len` elements from `start`; a panic, not
    /// undefined behaviour, outside the buffer.
    fn checked(&self, start: usize, len: usize) -> *mut T {
        assert!(
            start + len <= self.len,
            "shared output: {start}..{} outside {}",
            start + len,
            self.len
        );
        // SAFETY: in bounds (checked above).
        unsafe { self.data.add(start) }
    }

    /// `len` elements from `start`, to write.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no other call may hand out (or read
    /// through) any element of `start..start + len`: each thread asks only
    /// for the elements its own block owns, and nobody reads the buffer
    /// until every writer is done. Bounds are checked (a panic, not
    /// undefined behaviour, outside the buffer).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        // SAFETY: in bounds (checked); disjoint from every other live slice
        // by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.checked(start, len), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each plane holds its own values, in order, on however many workers.
    #[test]
    fn collected_planes_hold_each_planes_values() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a pool");
        for (count, plane) in [(0, 5), (5, 0), (1, 1), (7, 13), (64, 3)] {
            let planes = pool.install(|| collect_planes(count, plane, |i| (0..plane).map(move |j| i * 1000 + j)));
            let expected: Vec<usize> = (0..count).flat_map(|i| (0..plane).map(move |j| i * 1000 + j)).collect();
            assert_eq!(planes, expected, "{count} planes of {plane}");
        }
    }

    /// In this crate's tests an unwritten output's places hold NaNs until
    /// written, so that a kernel leaving one unwritten fails its tests.
    #[test]
    fn unwritten_places_hold_nans_in_tests() {
        let mut output = UnwrittenOutput::<f32>::new(5);
        let places = output.places();
        // SAFETY: places 1..4, on this thread alone.
        for place in unsafe { places.slice(1, 3) } {
            place.write(1.0);
        }
        // SAFETY: in test builds `new` wrote a NaN to every place first.
        let values = unsafe { output.assume_written() };
        assert!(values[0].is_nan() && values[4].is_nan(), "{values:?}");
        assert_eq!(values[1..4], [1.0; 3]);
    }

    /// A plane given too few values is refused: its places would be left unwritten.
    #[test]
    #[should_panic(expected = "plane 2: 3 values for 4 places")]
    fn a_short_plane_panics() {
        collect_planes(4, 4, |i| (0..if i == 2 { 3 } else { 4 }).map(|j| j as f32));
    }

    /// Every item runs once, in blocks of at most `block`, and the workers'
    /// shares are contiguous and differ by at most one item.
    #[test]
    fn every_item_runs_once_in_equal_shares() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("a pool");
        for (total, block) in [(0, 4), (1, 4), (2, 4), (10, 3), (10, 64), (64, 64), (100, 7), (294, 64)] {
            let mut seen = vec![0u8; total];
            let out = SharedOutput::new(&mut seen);
            let shares = pool.install(|| {
                for_each_block(
                    total,
                    block,
                    Vec::new,
                    |items: Range<usize>, mine: &mut Vec<usize>| {
                        assert!(items.len() <= block, "{items:?} longer than {block}");
                        for i in items {
                            // SAFETY: item `i` belongs to this block alone.
                            let slot = unsafe { out.slice(i, 1) };
                            slot[0] += 1;
                            mine.push(i);
                        }
                    },
                    |mine| mine,
                )
            });
            assert!(
                seen.iter().all(|&count| count == 1),
                "{total} items in blocks of {block}"
            );
            for share in &shares {
                assert!(share.windows(2).all(|pair| pair[1] == pair[0] + 1), "{share:?}");
            }
            let lens: Vec<usize> = shares.iter().map(Vec::len).collect();
            // Every worker gets a share, however few blocks the items make.
            assert_eq!(
                lens.len(),
                total.clamp(1, 3),
                "{total} items in blocks of {block}: {lens:?}"
            );
            let (least, most) = (lens.iter().min(), lens.iter().max());
            assert!(most.zip(least).is_none_or(|(m, l)| m - l <= 1), "{lens:?}");
            assert_eq!(lens.iter().sum::<usize>(), total);
        }
    }
}
