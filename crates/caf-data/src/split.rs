//! Person-independent splits: no subject is ever on both sides.

use std::collections::HashMap;

use crate::sample::{DataError, Dataset};
use caf_rng::Rng;

/// Indices of the samples on each side of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// Subjects in a seeded random order, and each sample's subject number.
fn shuffled_subjects(dataset: &Dataset, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let names = dataset.subjects();
    let number: HashMap<&str, usize> = names.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let of_sample = dataset.samples.iter().map(|s| number[s.subject.as_str()]).collect();
    let mut order: Vec<usize> = (0..names.len()).collect();
    Rng::derive(seed, &[0x5b11]).shuffle(&mut order);
    (order, of_sample)
}

fn sides(of_sample: &[usize], in_validation: &[bool]) -> Split {
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (index, &subject) in of_sample.iter().enumerate() {
        if in_validation[subject] {
            &mut validation
        } else {
            &mut train
        }
        .push(index);
    }
    Split { train, validation }
}

/// A subject-disjoint split with about `validation_ratio` of the *subjects*
/// (at least one, and at least one left for training) on the validation side,
/// chosen by `seed`.
pub fn subject_split(dataset: &Dataset, validation_ratio: f64, seed: u64) -> Result<Split, DataError> {
    if !(validation_ratio > 0.0 && validation_ratio < 1.0) {
        return Err(DataError::Invalid(format!(
            "validation ratio {validation_ratio} must be between 0 and 1"
        )));
    }
    let (order, of_sample) = shuffled_subjects(dataset, seed);
    if order.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{}: {} subject(s); a person-independent split needs at least 2",
            dataset.name,
            order.len()
        )));
    }
    let count = ((order.len() as f64 * validation_ratio).round() as usize).clamp(1, order.len() - 1);
    let mut in_validation = vec![false; order.len()];
    for &subject in &order[..count] {
        in_validation[subject] = true;
    }
    Ok(sides(&of_sample, &in_validation))
}

/// Subject-disjoint K-fold cross-validation: subjects are shuffled by `seed`
/// and dealt round-robin into `k` folds; fold `i` validates on its subjects
/// and trains on the rest.
pub fn subject_folds(dataset: &Dataset, k: usize, seed: u64) -> Result<Vec<Split>, DataError> {
    let (order, of_sample) = shuffled_subjects(dataset, seed);
    if k < 2 || order.len() < k {
        return Err(DataError::Invalid(format!(
            "{}: {k}-fold cross-validation needs k ≥ 2 and at least k subjects ({} found)",
            dataset.name,
            order.len()
        )));
    }
    let mut fold_of = vec![0; order.len()];
    for (position, &subject) in order.iter().enumerate() {
        fold_of[subject] = position % k;
    }
    Ok((0..k)
        .map(|fold| sides(&of_sample, &fold_of.iter().map(|&f| f == fold).collect::<Vec<_>>()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{IndexReport, Sample};
    use std::collections::HashSet;

    fn dataset(subjects: usize, per_subject: usize) -> Dataset {
        let samples = (0..subjects * per_subject)
            .map(|i| Sample {
                path: format!("{i}.png").into(),
                valence: 0.0,
                arousal: 0.0,
                subject: format!("s{}", i % subjects),
                face: None,
            })
            .collect();
        Dataset {
            name: "test".into(),
            samples,
            report: IndexReport::default(),
        }
    }

    fn subjects_of(dataset: &Dataset, indices: &[usize]) -> HashSet<String> {
        indices.iter().map(|&i| dataset.samples[i].subject.clone()).collect()
    }

    #[test]
    fn no_subject_is_on_both_sides() {
        for (subjects, ratio, seed) in [(10, 0.2, 0), (7, 0.5, 3), (2, 0.1, 9), (50, 0.3, 42)] {
            let data = dataset(subjects, 5);
            let split = subject_split(&data, ratio, seed).expect("split");
            let (train, validation) = (subjects_of(&data, &split.train), subjects_of(&data, &split.validation));
            assert!(train.is_disjoint(&validation), "{subjects} subjects, seed {seed}");
            assert!(!train.is_empty() && !validation.is_empty());
            assert_eq!(split.train.len() + split.validation.len(), data.len());
            assert_eq!(
                subject_split(&data, ratio, seed).expect("split"),
                split,
                "deterministic by seed"
            );
        }
        let data = dataset(20, 3);
        assert_ne!(
            subject_split(&data, 0.25, 1).expect("split"),
            subject_split(&data, 0.25, 2).expect("split")
        );
        assert_eq!(
            subjects_of(&data, &subject_split(&data, 0.25, 1).expect("split").validation).len(),
            5
        );
    }

    #[test]
    fn folds_partition_subjects() {
        let data = dataset(11, 4);
        let folds = subject_folds(&data, 5, 7).expect("folds");
        assert_eq!(folds.len(), 5);
        let mut validated = HashSet::new();
        for fold in &folds {
            let (train, validation) = (subjects_of(&data, &fold.train), subjects_of(&data, &fold.validation));
            assert!(train.is_disjoint(&validation));
            assert_eq!(train.len() + validation.len(), 11);
            for subject in validation {
                assert!(validated.insert(subject), "a subject validated twice");
            }
        }
        assert_eq!(validated.len(), 11);
        assert_eq!(subject_folds(&data, 5, 7).expect("folds"), folds);
    }

    #[test]
    fn impossible_splits_are_errors() {
        assert!(subject_split(&dataset(1, 10), 0.2, 0).is_err());
        assert!(subject_split(&dataset(5, 1), 1.0, 0).is_err());
        assert!(subject_folds(&dataset(3, 2), 4, 0).is_err());
    }
}
