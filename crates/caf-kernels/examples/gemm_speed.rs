//! GFLOPS of the `gemm` crate on the shapes the convolutions produce, one
//! thread and all threads: `cargo run --release -p caf-kernels --example gemm_speed`.

use std::time::Instant;

fn gflops(m: usize, n: usize, k: usize, parallelism: gemm::Parallelism) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        // SAFETY: row-major a (m×k), b (k×n), c (m×n), all allocated above.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() {
    let threads = rayon::current_num_threads();
    println!("m×n×k: GFLOPS with 1 thread, with {threads}");
    let shapes = [
        (384, 169, 1728),   // AlexNet conv3, one image
        (192, 729, 1600),   // AlexNet conv2, one image
        (64, 3136, 576),    // ResNet layer1, one image
        (512, 49, 4608),    // ResNet layer4, one image
        (256, 3456, 169),   // AlexNet conv4 weight gradient, one image
        (2048, 2048, 2048), // large square
    ];
    for (m, n, k) in shapes {
        let one = gflops(m, n, k, gemm::Parallelism::None);
        let all = gflops(m, n, k, gemm::Parallelism::Rayon(threads));
        println!("{m}×{n}×{k}: {one:.1}, {all:.1}");
    }
}
