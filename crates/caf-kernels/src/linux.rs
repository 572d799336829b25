//! The few Linux system calls the kernels make, directly (the crate has no
//! libc binding): the AMX tile data permission and the huge-page mappings.

const SYS_ARCH_PRCTL: i64 = 158;
const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
const XFEATURE_XTILEDATA: i64 = 18;
const SYS_MMAP: i64 = 9;
const SYS_MUNMAP: i64 = 11;
const SYS_MADVISE: i64 = 28;
const PROT_READ_WRITE: i64 = 0x1 | 0x2;
const MAP_PRIVATE_ANONYMOUS: i64 = 0x02 | 0x20;
const MADV_HUGEPAGE: i64 = 14;

/// `syscall(number, a, b, c, d, e, f)`: its return value (a negative
/// errno on failure).
///
/// # Safety
/// The call with these arguments must be sound for this process.
unsafe fn syscall6(number: i64, args: [i64; 6]) -> i64 {
    let result: i64;
    // SAFETY: the caller's promise; `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// Asks for the AMX tile data state for this process; true when granted.
pub(crate) fn request_tile_data() -> bool {
    // SAFETY: arch_prctl with these arguments reads and writes no memory
    // of ours.
    unsafe { syscall6(SYS_ARCH_PRCTL, [ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0, 0, 0, 0]) == 0 }
}

/// A new private, anonymous, zeroed read-write mapping of `bytes`.
pub(crate) fn mmap_anonymous(bytes: usize) -> Option<*mut u8> {
    // SAFETY: mmap with no address and no file maps fresh memory.
    let result = unsafe {
        syscall6(
            SYS_MMAP,
            [0, bytes as i64, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0],
        )
    };
    // Errors come back as -4095..=-1.
    (!(-4095..0).contains(&result)).then_some(result as *mut u8)
}

/// Unmaps `bytes` from `start`.
///
/// # Safety
/// The range is mapped memory of the caller's alone, referred to by
/// nothing after the call.
pub(crate) unsafe fn munmap(start: *mut u8, bytes: usize) {
    // SAFETY: the caller's promise.
    let result = unsafe { syscall6(SYS_MUNMAP, [start as i64, bytes as i64, 0, 0, 0, 0]) };
    debug_assert_eq!(result, 0, "munmap of a range this crate mapped");
}

/// Marks `bytes` from `start` for transparent huge pages; whether the
/// kernel took the hint.
///
/// # Safety
/// The range is mapped memory of the caller's.
pub(crate) unsafe fn madvise_huge(start: *mut u8, bytes: usize) -> bool {
    // SAFETY: the caller's promise; the advice changes no contents.
    unsafe { syscall6(SYS_MADVISE, [start as i64, bytes as i64, MADV_HUGEPAGE, 0, 0, 0]) == 0 }
}
