//! What the AMX tiles reach on one core with the image laid out two ways,
//! on ResNet-18's stride-1 3×3 convolutions at 224×224 whose weight stays
//! in L2 (layer1 to layer3; operands of ones, written so that every page is
//! the process's own: untouched zeros would all read one shared page and
//! sit in L1, and the products run faster on zeros; only the loads and the
//! products are timed, nothing is written back):
//!
//! ```sh
//! cargo run --release -p caf-kernels --example tile_layouts
//! ```
//!
//! * `planes`: the layout the tile convolutions use, the image as the
//!   right operand: a tile row is one plane of a channel pair, 16 positions
//!   of it, so a tile's 16 rows lie a plane apart and start wherever the
//!   tap points, mostly inside a cache line.
//! * `rows`: the image as the left operand: a tile row is one position's 32
//!   channels (64 bytes), so a tile is 1 KiB in one piece, on whole lines
//!   for every tap, and the sums come out by position.
//! * `registers`: `tdpbf16ps` on operands already in the tiles, the
//!   ceiling.
//!
//! Each shape runs a chunk of images whose layout is about 1 MiB, as the
//! convolutions' workers do: for each block of 32 positions and 32 output
//! channels, every step (a tap and 32 channels) loads two tiles of the
//! weight and two of the image and adds four products. Best of 12 runs of
//! each, alternated. On a CPU without AMX it says so and stops.

use std::arch::asm;
use std::time::Instant;

use caf_kernels::InstructionSet;

/// Palette 1, eight tiles of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn config() -> TileConfig {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    for tile in 0..8 {
        bytes[16 + 2 * tile] = 64;
        bytes[48 + tile] = 16;
    }
    TileConfig(bytes)
}

/// bf16 ones aligned to a page.
struct Ones(Vec<u8>, usize);

impl Ones {
    fn new(len: usize) -> Self {
        let bytes: Vec<u8> = [0x80, 0x3F].into_iter().cycle().take(len + 4096).collect();
        let skip = bytes.as_ptr().align_offset(4096);
        Self(bytes, skip)
    }

    fn at(&self, offset: usize) -> *const u8 {
        self.0[self.1 + offset..].as_ptr()
    }
}

/// One convolution's operands and the steps of its blocks.
struct Shape {
    channels: usize,
    side: usize,
    images: usize,
}

impl Shape {
    fn padded_w(&self) -> usize {
        self.side + 2
    }

    /// Positions of one image's layout (the padded map and room past it).
    fn layout_positions(&self) -> usize {
        (self.side + 2) * self.padded_w() + 64
    }

    fn position_blocks(&self) -> usize {
        self.side * self.padded_w() / 32
    }

    fn steps(&self) -> usize {
        self.channels / 32 * 9
    }

    /// Where step `step`'s tap points, in positions from the block's first.
    fn tap(&self, step: usize) -> usize {
        let tap = step % 9;
        tap / 3 * self.padded_w() + tap % 3
    }

    fn flops(&self) -> f64 {
        let products = self.images * self.position_blocks() * (self.channels / 32) * self.steps();
        products as f64 * 4.0 * 16.0 * 16.0 * 32.0 * 2.0
    }
}

/// How the image is laid out. Both give a block of 32 channels the same
/// bytes (a pair or a row per position); they differ in where a
/// position's pairs lie and in which side of the products the image takes.
#[derive(Clone, Copy)]
enum Layout {
    /// Per channel pair a plane of 4-byte pairs; a step's two image tiles
    /// are 16 planes from the tap's position, the second 16 positions on,
    /// on the right of the products.
    Planes,
    /// Per block of 32 channels a 64-byte row per position; a step's two
    /// image tiles are the 32 rows from the tap's position, on the left.
    Rows,
}

impl Layout {
    fn position_bytes(self) -> usize {
        match self {
            Layout::Planes => 4,
            Layout::Rows => 64,
        }
    }
}

/// Every block of the chunk of images, each step's four tile loads and
/// four products.
///
/// # Safety
/// AMX with the tile data granted and the tiles configured.
unsafe fn run(layout: Layout, shape: &Shape, weight: &Ones, image: &Ones) {
    let channel_block_bytes = shape.layout_positions() * 64;
    let image_bytes = shape.channels / 32 * channel_block_bytes;
    let plane = shape.layout_positions() * 4;
    for n in 0..shape.images {
        for block in 0..shape.position_blocks() {
            for row_block in 0..shape.channels / 32 {
                // SAFETY: the caller's promises; every tile lies inside
                // `weight` and `image` (sized by `main` for these steps).
                unsafe {
                    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3");
                    for step in 0..shape.steps() {
                        let w = weight.at((row_block * shape.steps() + step) * 2048);
                        let position = block * 32 + shape.tap(step);
                        let x = image
                            .at(n * image_bytes + step / 9 * channel_block_bytes + position * layout.position_bytes());
                        match layout {
                            Layout::Planes => asm!(
                                "tileloadd tmm4, [{w} + {row} * 1]",
                                "tileloadd tmm5, [{w} + {row} * 1 + 1024]",
                                "tileloadd tmm6, [{x} + {plane} * 1]",
                                "tileloadd tmm7, [{x} + {plane} * 1 + 64]",
                                "tdpbf16ps tmm0, tmm4, tmm6",
                                "tdpbf16ps tmm1, tmm4, tmm7",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                w = in(reg) w,
                                x = in(reg) x,
                                row = in(reg) 64usize,
                                plane = in(reg) plane,
                                options(nostack),
                            ),
                            Layout::Rows => asm!(
                                "tileloadd tmm4, [{x} + {row} * 1]",
                                "tileloadd tmm5, [{x} + {row} * 1 + 1024]",
                                "tileloadd tmm6, [{w} + {row} * 1]",
                                "tileloadd tmm7, [{w} + {row} * 1 + 1024]",
                                "tdpbf16ps tmm0, tmm4, tmm6",
                                "tdpbf16ps tmm1, tmm4, tmm7",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                w = in(reg) w,
                                x = in(reg) x,
                                row = in(reg) 64usize,
                                options(nostack),
                            ),
                        }
                    }
                }
            }
        }
    }
}

/// GFLOPS of `tdpbf16ps` on tiles already loaded.
///
/// # Safety
/// As [`run`].
unsafe fn registers(weight: &Ones) -> f64 {
    let repeats = 2_000_000usize;
    // SAFETY: the caller's promises; the loads read 2 KiB of `weight`.
    unsafe {
        asm!(
            "tileloadd tmm4, [{w} + {row} * 1]",
            "tileloadd tmm5, [{w} + {row} * 1]",
            "tileloadd tmm6, [{w} + {row} * 1]",
            "tileloadd tmm7, [{w} + {row} * 1]",
            w = in(reg) weight.at(0),
            row = in(reg) 64usize,
        );
    }
    let started = Instant::now();
    for _ in 0..repeats {
        // SAFETY: the caller's promises.
        unsafe {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            )
        };
    }
    repeats as f64 * 4.0 * 16.0 * 16.0 * 32.0 * 2.0 / started.elapsed().as_secs_f64() / 1e9
}

fn main() {
    if InstructionSet::detected() != InstructionSet::AmxBf16 {
        println!(
            "this CPU has no AMX tiles ({}): nothing to time",
            InstructionSet::detected().name()
        );
        return;
    }
    let config = config();
    // SAFETY: the CPU has AMX and `detected` asked for the tile data; the
    // configuration is palette 1 with eight valid tiles.
    unsafe { asm!("ldtilecfg [{c}]", c = in(reg) &config, options(nostack, readonly)) };
    let shapes = [(64, 56), (128, 28), (256, 14)].map(|(channels, side)| {
        let mut shape = Shape {
            channels,
            side,
            images: 1,
        };
        shape.images = ((1 << 20) / (shape.channels * shape.layout_positions() * 2)).max(1);
        shape
    });
    println!("one thread, GFLOPS of the tile products (best of 12 alternated runs)");
    for shape in &shapes {
        let weight = Ones::new(shape.channels / 32 * shape.steps() * 2048);
        let image = Ones::new(shape.images * shape.channels * shape.layout_positions() * 2 + 4096);
        let (mut planes, mut rows) = (f64::MAX, f64::MAX);
        for _ in 0..12 {
            let started = Instant::now();
            // SAFETY: tiles configured above; the buffers hold every step.
            unsafe { run(Layout::Planes, shape, &weight, &image) };
            planes = planes.min(started.elapsed().as_secs_f64());
            let started = Instant::now();
            // SAFETY: as above.
            unsafe { run(Layout::Rows, shape, &weight, &image) };
            rows = rows.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{:>3} channels {:>2}×{:<2} ({} images): planes {:>5.0}  rows {:>5.0}",
            shape.channels,
            shape.side,
            shape.side,
            shape.images,
            shape.flops() / planes / 1e9,
            shape.flops() / rows / 1e9
        );
    }
    // SAFETY: tiles configured above.
    let peak = unsafe { registers(&Ones::new(2048)) };
    println!("registers only: {peak:.0}");
    // SAFETY: releasing the tiles touches no memory.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
