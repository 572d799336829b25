//! Memory on 2 MiB pages for what the AMX tiles load.
//!
//! A tile load reads 16 rows of 64 bytes, and it is several times slower
//! when their 4 KiB pages are not in the first-level TLB (docs/performance.md
//! has the measurements): a packed weight streamed from L2 spans hundreds
//! of pages, and one tile of a convolution's image planes has its rows a
//! plane apart, each on a page of its own. On 2 MiB pages a megabyte-sized
//! operand takes one or two TLB entries.
//!
//! Linux backs an anonymous range with huge pages as it is first touched
//! where the range was marked `MADV_HUGEPAGE` and transparent huge pages
//! are enabled (`always` or `madvise` in
//! `/sys/kernel/mm/transparent_hugepage/enabled`). Some allocators (mimalloc)
//! get them for their own arenas; the system allocator does not. So what
//! this crate packs for the tiles (a convolution's weight, kept across
//! calls when frozen; the weight gradient's layouts; the tile product's
//! left operand) gets a mapping of its own, aligned to 2 MiB
//! ([`HugePageBuffer`]), and the buffers that an allocator serves again
//! without new page faults (a convolution's output, its image planes) come
//! from the global allocator, marked before their first write
//! ([`advise_huge_pages`]). Where the system has no huge pages to give, the
//! memory is ordinary pages with the same contents: only the tile loads are
//! slower.

use std::ops::{Deref, DerefMut};

/// `len` zeroed `u32`s (bf16 pairs), on 2 MiB pages where the system gives
/// them.
pub(crate) enum HugePageBuffer {
    /// A mapping of its own: `len` values from `start`, in `bytes` mapped,
    /// unmapped on drop.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    Mapped { start: *mut u32, len: usize, bytes: usize },
    /// Below [`LEAST_BYTES`], or where mapping is not written for the
    /// system.
    Heap(Vec<u32>),
}

// SAFETY: the buffer owns its memory as a Vec<u32> would.
unsafe impl Send for HugePageBuffer {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for HugePageBuffer {}

/// The size and alignment of a huge page.
#[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64")), allow(dead_code))]
const HUGE_PAGE: usize = 2 << 20;

/// Buffers smaller than this stay on ordinary pages: a few dozen 4 KiB
/// pages fit the TLB, and a fresh 2 MiB page costs the zeroing of all of it.
#[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64")), allow(dead_code))]
const LEAST_BYTES: usize = 512 << 10;

impl HugePageBuffer {
    /// `len` zeros.
    ///
    /// # Panics
    /// Where the system has no memory for them, as a `Vec` would.
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len
            .checked_mul(size_of::<u32>())
            .expect("huge page buffer: size overflows");
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if bytes >= LEAST_BYTES {
            let (start, bytes) = map_huge(bytes);
            return Self::Mapped {
                start: start.cast(),
                len,
                bytes,
            };
        }
        Self::Heap(vec![0; len])
    }
}

impl Deref for HugePageBuffer {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            // SAFETY: the mapping holds `len` values (made for them, zeroed)
            // and lives as long as `self`.
            Self::Mapped { start, len, .. } => unsafe { std::slice::from_raw_parts(*start, *len) },
            Self::Heap(values) => values,
        }
    }
}

impl DerefMut for HugePageBuffer {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            // SAFETY: as in `deref`, and `&mut self` makes the access unique.
            Self::Mapped { start, len, .. } => unsafe { std::slice::from_raw_parts_mut(*start, *len) },
            Self::Heap(values) => values,
        }
    }
}

impl Drop for HugePageBuffer {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if let Self::Mapped { start, bytes, .. } = *self {
            // SAFETY: the range is a mapping of this buffer's alone, and
            // nothing borrows it past `drop`.
            unsafe { crate::linux::munmap(start.cast(), bytes) };
        }
    }
}

/// Asks for huge pages under the whole 2 MiB pages inside `memory`, a
/// buffer from the global allocator about to be written for the first
/// time (a fresh large allocation is mapped untouched, and Linux backs a
/// marked range with huge pages as it is first touched). Only a hint: the
/// contents and the allocator's ownership are unchanged, and memory
/// touched before keeps its pages.
pub(crate) fn advise_huge_pages<T>(memory: &mut [T]) {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        if std::mem::size_of_val(memory) < LEAST_BYTES {
            return;
        }
        let (start, end) = (
            memory.as_ptr() as usize,
            memory.as_ptr() as usize + std::mem::size_of_val(memory),
        );
        let (first, last) = (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE);
        if first < last {
            // SAFETY: the range lies inside `memory`, mapped memory this
            // process owns; the advice changes no contents.
            let _hinted = unsafe { crate::linux::madvise_huge(first as *mut u8, last - first) };
        }
    }
}

/// A fresh anonymous mapping of at least `bytes`, starting on a 2 MiB
/// boundary, in whole 2 MiB pages, marked for huge pages: its start and
/// length.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn map_huge(bytes: usize) -> (*mut u8, usize) {
    let length = bytes.next_multiple_of(HUGE_PAGE);
    // Room to slide the start to a 2 MiB boundary; the slack either side
    // is unmapped again.
    let reserved = length + HUGE_PAGE;
    let Some(base) = crate::linux::mmap_anonymous(reserved) else {
        std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(length, HUGE_PAGE).expect("a valid layout"));
    };
    let start = (base as usize).next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - base as usize, base as usize + reserved - (start + length));
    // SAFETY: the head and tail lie inside the mapping just made, outside
    // the part kept; nothing refers to them.
    unsafe {
        if head > 0 {
            crate::linux::munmap(base, head);
        }
        if tail > 0 {
            crate::linux::munmap((start + length) as *mut u8, tail);
        }
    }
    // A hint: where the kernel has no transparent huge pages it refuses,
    // and the mapping stays on 4 KiB pages with the same zeros.
    // SAFETY: the range is the mapping kept, untouched so far.
    let _hinted = unsafe { crate::linux::madvise_huge(start as *mut u8, length) };
    (start as *mut u8, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small and large buffers hold their length of zeros and take writes;
    /// a large one lies on a 2 MiB boundary (a mapping of its own).
    #[test]
    fn buffers_are_zeroed_writable_and_large_ones_aligned() {
        for len in [0, 1, 1000, LEAST_BYTES / 4, (5 << 20) / 4 + 3] {
            let mut buffer = HugePageBuffer::zeroed(len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&v| v == 0), "{len}");
            for (i, v) in buffer.iter_mut().enumerate() {
                *v = i as u32;
            }
            assert!(buffer.iter().enumerate().all(|(i, &v)| v == i as u32), "{len}");
            if cfg!(all(target_os = "linux", target_arch = "x86_64")) && len * 4 >= LEAST_BYTES {
                assert_eq!(buffer.as_ptr() as usize % HUGE_PAGE, 0, "{len}");
            }
        }
    }

    /// Where the kernel offers transparent huge pages for marked ranges, a
    /// large buffer and marked fresh memory are backed by them once
    /// written (`/proc/self/smaps`), unless the kernel reports that it
    /// fell back to small pages meanwhile (no free huge page).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn large_buffers_get_huge_pages_where_the_kernel_offers_them() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !(mode.contains("[always]") || mode.contains("[madvise]")) {
            eprintln!("transparent huge pages off ({}): nothing to check", mode.trim());
            return;
        }
        let fallbacks = || {
            let stat = std::fs::read_to_string("/proc/vmstat").expect("/proc/vmstat");
            let line = stat
                .lines()
                .find(|l| l.starts_with("thp_fault_fallback "))
                .map(str::to_owned);
            line.unwrap_or_default()
        };
        // The huge pages backing the mapping that holds `address`.
        let huge_kib = |address: usize| {
            let maps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
            let mut inside = false;
            for line in maps.lines() {
                let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
                if let Some((Ok(start), Ok(end))) =
                    range.map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)))
                {
                    inside = (start..end).contains(&address);
                } else if inside && line.starts_with("AnonHugePages:") {
                    return line.split_whitespace().nth(1).and_then(|kib| kib.parse::<usize>().ok());
                }
            }
            None
        };
        let before = fallbacks();
        let mut own = HugePageBuffer::zeroed((6 << 20) / 4);
        own.fill(1);
        // Untouched memory as an allocator hands out a fresh large block (a
        // reused one keeps the pages it has): a new mapping, not 2 MiB-aligned
        // at its start, viewed as a buffer.
        let bytes = (6 << 20) + 4096;
        let fresh = crate::linux::mmap_anonymous(bytes).expect("a fresh mapping");
        // SAFETY: the mapping holds `bytes` zeroed bytes and is this test's alone.
        let advised = unsafe { std::slice::from_raw_parts_mut(fresh.add(4096), bytes - 4096) };
        advise_huge_pages(advised);
        advised.fill(1);
        let fell_back = fallbacks() != before;
        let (own_kib, advised_kib) = (
            huge_kib(own.as_ptr() as usize),
            huge_kib(advised.as_ptr() as usize + (3 << 20)),
        );
        // SAFETY: the mapping made above; `advised` is not used after.
        unsafe { crate::linux::munmap(fresh, bytes) };
        if fell_back {
            eprintln!("the kernel fell back to small pages meanwhile: nothing to check");
            return;
        }
        assert!(own_kib.is_some_and(|kib| kib >= 2048), "own mapping: {own_kib:?} KiB");
        assert!(
            advised_kib.is_some_and(|kib| kib >= 2048),
            "advised memory: {advised_kib:?} KiB"
        );
    }
}
