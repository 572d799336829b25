//! Rows split by stride phase: the layout that turns a strided read (every
//! `stride`-th element from some offset) into a contiguous run, used by the
//! strided im2col, Winograd's tile loads and max pooling's window taps.

/// `row` dealt out into `stride` runs of `run_len` in `runs`: element `j` of
/// run `p` is `row[j·stride + p]`. Run elements past the row's end are left
/// as they are.
///
/// Strides 2 and 4 (max pooling, AlexNet's first layer, F(4×4) Winograd
/// tiles) have loops over groups of a stride's values, which compile to
/// shuffles. The generic loop runs value by value; compiled for AVX-512 it
/// becomes scatter instructions, slower than baseline code (one reason max
/// pooling's inference variant stays on the baseline target).
///
/// # Panics
/// If `runs` is shorter than `stride` runs, or a run shorter than the row's
/// phases (`row.len()` divided by `stride`, rounded up).
#[inline(always)]
pub(crate) fn split_by_phase<T: Copy>(row: &[T], stride: usize, runs: &mut [T], run_len: usize) {
    assert!(
        stride > 0 && run_len >= row.len().div_ceil(stride) && runs.len() >= stride * run_len,
        "split_by_phase: {} values in {stride} runs of {run_len} ({} available)",
        row.len(),
        runs.len()
    );
    if stride == 2 {
        let (even, odd) = runs[..2 * run_len].split_at_mut(run_len);
        for ((pair, e), o) in row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
            (*e, *o) = (pair[0], pair[1]);
        }
        if row.len() % 2 == 1 {
            even[row.len() / 2] = row[row.len() - 1];
        }
        return;
    }
    if stride == 4 {
        let (first, rest) = runs[..4 * run_len].split_at_mut(run_len);
        let (second, rest) = rest.split_at_mut(run_len);
        let (third, fourth) = rest.split_at_mut(run_len);
        let runs = first
            .iter_mut()
            .zip(second.iter_mut())
            .zip(third.iter_mut())
            .zip(fourth.iter_mut());
        for (group, (((a, b), c), d)) in row.chunks_exact(4).zip(runs) {
            (*a, *b, *c, *d) = (group[0], group[1], group[2], group[3]);
        }
        let whole = row.len() / 4;
        for (phase, &value) in row[4 * whole..].iter().enumerate() {
            [&mut *first, &mut *second, &mut *third][phase][whole] = value;
        }
        return;
    }
    for (phase, run) in runs.chunks_exact_mut(run_len).take(stride).enumerate() {
        for (out, &value) in run.iter_mut().zip(row.iter().skip(phase).step_by(stride)) {
            *out = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stride (the pair loop and the generic one), rows of every
    /// length against it, and runs longer than needed: each value lands
    /// in its phase's run, and the rest of the runs is untouched.
    #[test]
    fn values_land_in_their_phase_runs() {
        for stride in 1..=5 {
            for len in 0..=13usize {
                let row: Vec<u32> = (1..=len as u32).collect();
                let run_len = len.div_ceil(stride) + 1;
                let mut runs = vec![0u32; stride * run_len + 3];
                split_by_phase(&row, stride, &mut runs, run_len);
                for (i, &value) in runs.iter().enumerate() {
                    let (phase, j) = (i / run_len, i % run_len);
                    let source = j * stride + phase;
                    let expected = if phase < stride && source < len { row[source] } else { 0 };
                    assert_eq!(value, expected, "stride {stride}, {len} values, element {i}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "split_by_phase")]
    fn runs_too_short_for_the_row_are_refused() {
        let mut runs = [0f32; 6];
        split_by_phase(&[1.0; 7], 2, &mut runs, 3);
    }
}
