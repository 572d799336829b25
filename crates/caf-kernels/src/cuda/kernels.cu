// caf-kernels' CUDA kernels, compiled at run time by NVRTC (src/cuda.rs).
// Every kernel is f32 and does what the CPU kernel of the same name in the
// Rust sources does, in the same order of operations, so the CUDA parity
// tests can compare them closely. Index arithmetic is 64-bit wherever a
// tensor's element count can pass 2^31.

#define CAF_GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

// --- element-wise (elementwise.rs) -----------------------------------------

// max(x, 0); a NaN becomes 0, as on the CPU.
__device__ __forceinline__ float caf_relu_value(float x) { return x > 0.0f ? x : 0.0f; }

extern "C" __global__ void caf_relu_f32(const float *x, float *y, long long n) {
    CAF_GRID_STRIDE(i, n) { y[i] = caf_relu_value(x[i]); }
}

extern "C" __global__ void caf_add_relu_f32(const float *a, const float *b, float *y, long long n) {
    CAF_GRID_STRIDE(i, n) { y[i] = caf_relu_value(a[i] + b[i]); }
}

// The gradient passes where the ReLU's output is positive (PyTorch's rule).
extern "C" __global__ void caf_relu_grad_f32(const float *dy, const float *y, float *dx, long long n) {
    CAF_GRID_STRIDE(i, n) { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
}

// y = x + bias[channel], then the ReLU when `relu` is set (a convolution's
// bias and activation in one pass; `plane` = H·W).
extern "C" __global__ void caf_bias_act_f32(
    const float *x, const float *bias, float *y, long long n, long long plane, int channels, int relu) {
    CAF_GRID_STRIDE(i, n) {
        float v = x[i] + bias[(i / plane) % channels];
        y[i] = relu ? caf_relu_value(v) : v;
    }
}

// --- max pooling (pool.rs) -----------------------------------------------

// One thread per output: the first maximum of its window in row-major
// order (a NaN wins over numbers, the first NaN over later ones) and, when
// `at` is not null, its place within the input plane (row · w + column).
extern "C" __global__ void caf_max_pool2d_f32(
    const float *x, float *y, unsigned int *at,
    long long planes, int h, int w, int out_h, int out_w,
    int kernel, int stride, int padding) {
    long long outputs = planes * out_h * out_w;
    CAF_GRID_STRIDE(o, outputs) {
        long long plane = o / ((long long)out_h * out_w);
        int rest = (int)(o - plane * out_h * out_w);
        int oy = rest / out_w, ox = rest % out_w;
        int y0 = oy * stride - padding, x0 = ox * stride - padding;
        int y1 = min(y0 + kernel, h), x1 = min(x0 + kernel, w);
        y0 = max(y0, 0);
        x0 = max(x0, 0);
        const float *source = x + plane * h * w;
        float best = source[y0 * w + x0];
        unsigned int best_at = (unsigned int)(y0 * w + x0);
        for (int iy = y0; iy < y1; ++iy) {
            for (int ix = x0; ix < x1; ++ix) {
                float v = source[iy * w + ix];
                bool nan_v = v != v, nan_best = best != best;
                if (v > best || (nan_v && !nan_best)) {
                    best = v;
                    best_at = (unsigned int)(iy * w + ix);
                }
            }
        }
        y[o] = best;
        if (at != 0) at[o] = best_at;
    }
}

// One thread per input element: the sum of the output gradients of the
// windows whose maximum it is. Each input gathers from the windows that
// cover it, so no two threads write one place and no atomics are needed.
extern "C" __global__ void caf_max_pool2d_grad_f32(
    const float *dy, const unsigned int *at, float *dx,
    long long planes, int h, int w, int out_h, int out_w,
    int kernel, int stride, int padding) {
    long long inputs = planes * h * w;
    CAF_GRID_STRIDE(i, inputs) {
        long long plane = i / ((long long)h * w);
        int place = (int)(i - plane * h * w);
        int iy = place / w, ix = place % w;
        // Windows oy with oy·stride − padding ≤ iy < oy·stride − padding + kernel.
        int oy0 = iy + padding - kernel + 1 > 0 ? (iy + padding - kernel + stride) / stride : 0;
        int oy1 = min((iy + padding) / stride, out_h - 1);
        int ox0 = ix + padding - kernel + 1 > 0 ? (ix + padding - kernel + stride) / stride : 0;
        int ox1 = min((ix + padding) / stride, out_w - 1);
        const float *grad = dy + plane * out_h * out_w;
        const unsigned int *maxima = at + plane * out_h * out_w;
        float sum = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy) {
            for (int ox = ox0; ox <= ox1; ++ox) {
                int o = oy * out_w + ox;
                if (maxima[o] == (unsigned int)place) sum += grad[o];
            }
        }
        dx[i] = sum;
    }
}

// --- Adam (adam.rs) ------------------------------------------------------

// m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², θ ← θ·decay − lr·(m/c₁)/(√(v/c₂) + ε),
// with 1−β₁, 1−β₂ (taken in f64), 1/c₁ and 1/c₂ passed in, exactly as the CPU
// pass computes it.
extern "C" __global__ void caf_adam_f32(
    float *param, const float *grad, float *m, float *v, long long n,
    float beta1, float beta2, float one_minus_beta1, float one_minus_beta2,
    float lr, float inv_c1, float inv_c2, float eps, float decay) {
    CAF_GRID_STRIDE(i, n) {
        float g = grad[i];
        float mi = beta1 * m[i] + one_minus_beta1 * g;
        float vi = beta2 * v[i] + one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - lr * (mi * inv_c1) / (sqrtf(vi * inv_c2) + eps);
    }
}

// --- training batch normalisation (batch_norm.rs) --------------------------

// Launched with one block of CAF_BLOCK threads per channel (cuda.rs, `per_channel`).
#define CAF_BLOCK 256

// The sum of every thread's `v` over the block, returned to every thread.
__device__ double caf_block_sum(double v) {
    __shared__ double partial[CAF_BLOCK];
    int t = threadIdx.x;
    partial[t] = v;
    __syncthreads();
    for (int half = CAF_BLOCK / 2; half > 0; half >>= 1) {
        if (t < half) partial[t] += partial[t + half];
        __syncthreads();
    }
    double total = partial[0];
    __syncthreads();
    return total;
}

// Element k of channel c's values (image k / plane, place k % plane).
__device__ __forceinline__ long long caf_channel_index(long long k, long long plane, int c, int channels) {
    long long b = k / plane;
    return (b * channels + c) * plane + (k - b * plane);
}

// stats[c] = mean, stats[channels + c] = biased variance of channel c, in
// two passes with f64 sums, as the CPU statistics pass.
extern "C" __global__ void caf_bn_stats_f32(const float *x, float *stats, int batch, int channels, long long plane) {
    int c = blockIdx.x;
    long long count = (long long)batch * plane;
    double sum = 0.0;
    for (long long k = threadIdx.x; k < count; k += CAF_BLOCK) sum += (double)x[caf_channel_index(k, plane, c, channels)];
    double mean = caf_block_sum(sum) / (double)count;
    double squares = 0.0;
    for (long long k = threadIdx.x; k < count; k += CAF_BLOCK) {
        double d = (double)x[caf_channel_index(k, plane, c, channels)] - mean;
        squares += d * d;
    }
    double variance = caf_block_sum(squares) / (double)count;
    if (threadIdx.x == 0) {
        stats[c] = (float)mean;
        stats[channels + c] = (float)variance;
    }
}

__device__ __forceinline__ double caf_inv_std(const float *stats, int c, int channels, double eps) {
    return 1.0 / sqrt((double)stats[channels + c] + eps);
}

// y = (x − mean)·inv_std·weight + bias, as x·scale + shift in f64, then the ReLU when `relu` is set.
extern "C" __global__ void caf_bn_forward_f32(
    const float *x, const float *weight, const float *bias, const float *stats, float *y,
    long long n, long long plane, int channels, double eps, int relu) {
    CAF_GRID_STRIDE(i, n) {
        int c = (int)((i / plane) % channels);
        double scale = caf_inv_std(stats, c, channels, eps) * (double)weight[c];
        double shift = (double)bias[c] - (double)stats[c] * scale;
        float v = (float)((double)x[i] * scale + shift);
        y[i] = relu ? caf_relu_value(v) : v;
    }
}

// sums[c] = Σ dy, sums[channels + c] = Σ dy·x̂ = inv_std·(Σ dy·x − mean·Σ dy), one block per channel.
extern "C" __global__ void caf_bn_grad_sums_f32(
    const float *dy, const float *x, const float *stats, float *sums,
    int batch, int channels, long long plane, double eps) {
    int c = blockIdx.x;
    long long count = (long long)batch * plane;
    double sum = 0.0, dot = 0.0;
    for (long long k = threadIdx.x; k < count; k += CAF_BLOCK) {
        long long i = caf_channel_index(k, plane, c, channels);
        double g = (double)dy[i];
        sum += g;
        dot += g * (double)x[i];
    }
    sum = caf_block_sum(sum);
    dot = caf_block_sum(dot);
    if (threadIdx.x == 0) {
        sums[c] = (float)sum;
        sums[channels + c] = (float)(caf_inv_std(stats, c, channels, eps) * (dot - (double)stats[c] * sum));
    }
}

// dx = weight·inv_std·(dy − mean(dy) − x̂·mean(dy·x̂)).
extern "C" __global__ void caf_bn_input_grad_f32(
    const float *dy, const float *x, const float *weight, const float *sums, const float *stats, float *dx,
    long long n, long long plane, int channels, double count, double eps) {
    CAF_GRID_STRIDE(i, n) {
        int c = (int)((i / plane) % channels);
        double inv_std = caf_inv_std(stats, c, channels, eps);
        double mean_dy = (double)sums[c] / count, mean_dy_xhat = (double)sums[channels + c] / count;
        double scale = (double)weight[c] * inv_std;
        double xhat = ((double)x[i] - (double)stats[c]) * inv_std;
        dx[i] = (float)(scale * ((double)dy[i] - mean_dy - xhat * mean_dy_xhat));
    }
}
