//! Expected values were computed by hand and checked with an independent
//! Python implementation (numpy for Otsu; torch for the reference rule, on the
//! reference code's own `cumulative_thresholding`).

use super::*;

const BATCH_A: [[f32; 2]; 8] = [
    [0.9, 0.1],
    [0.05, 0.05],
    [0.1, -0.85],
    [-0.1, 0.0],
    [0.7, 0.7],
    [0.0, 0.1],
    [-0.6, -0.5],
    [0.2, 0.3],
];
const BATCH_B: [[f32; 2]; 6] = [[0.2, 0.4], [0.9, 0.6], [0.1, 0.1], [0.5, 0.2], [0.3, 0.7], [0.8, 0.9]];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn otsu_threshold_by_hand() {
    // Two clusters: the cut is between 0.2 and 0.8.
    assert!(close(otsu_threshold(&[0.9, 0.1, 0.8, 0.2]).expect("threshold"), 0.5));
    // Cuts after the two zeros and after 0.5 tie at 1/6: the first wins.
    assert!(close(
        otsu_threshold(&[1.0, 0.0, 0.5, 1.0, 0.0]).expect("threshold"),
        0.25
    ));
    // |valence| of batch A: {0, .05, .1, .1, .2} against {.6, .7, .9}.
    let abs_v: Vec<f32> = BATCH_A.iter().map(|l| l[0].abs()).collect();
    assert!(close(otsu_threshold(&abs_v).expect("threshold"), 0.4));
}

#[test]
fn otsu_threshold_degenerate_inputs() {
    assert_eq!(otsu_threshold(&[]), None);
    assert_eq!(otsu_threshold(&[0.3, f32::NAN]), None);
    assert!(close(otsu_threshold(&[0.3]).expect("one value"), 0.3));
    assert!(close(otsu_threshold(&[0.3, 0.3, 0.3]).expect("all equal"), 0.3));
}

#[test]
fn otsu_rule_by_hand() {
    // δv = δa = 0.4, δr = 0.5657; radii .906 .071 .856 .1 .99 .1 .781 .361.
    let groups = group(&BATCH_A, GroupingRule::Otsu).expect("pairs");
    assert_eq!(groups.strong, [0, 2, 4, 6]);
    assert_eq!(groups.weak, [1, 3, 5, 7]);
    // δv = 0.65, δa = 0.5, δr = 0.8201: two strong, four weak, cut to two pairs.
    let groups = group(&BATCH_B, GroupingRule::Otsu).expect("pairs");
    assert_eq!(
        groups,
        Groups {
            strong: vec![1, 5],
            weak: vec![0, 2]
        }
    );
}

#[test]
fn reference_rule_by_hand() {
    // th_v = 0.39286, th_a = 0.44828: bound √(th_v² + th_a²) + 0.25 = 0.84606 on v² + a².
    assert!(close(
        reference_cumulative_threshold(&BATCH_B.map(|l| l[0])),
        0.392857142857
    ));
    assert!(close(
        reference_cumulative_threshold(&BATCH_B.map(|l| l[1])),
        0.448275862069
    ));
    let groups = group(&BATCH_B, GroupingRule::Reference).expect("pairs");
    assert_eq!(
        groups,
        Groups {
            strong: vec![1, 5],
            weak: vec![0, 2]
        }
    );
    // Batch A's arousal sums to 0.1: th_a = 7, so everything is weak and the
    // fixed bounds decide: v² + a² > 0.65 strong (.82, .7325, .98), < 0.3 weak.
    let groups = group(&BATCH_A, GroupingRule::Reference).expect("pairs");
    assert_eq!(
        groups,
        Groups {
            strong: vec![0, 2, 4],
            weak: vec![1, 3, 5]
        }
    );
}

#[test]
fn reference_threshold_of_values_summing_to_zero_falls_back() {
    assert!(!reference_cumulative_threshold(&[0.5, -0.5]).is_finite());
    let labels = [
        [0.5, 0.5],
        [-0.5, -0.5],
        [0.9, 0.4],
        [-0.9, -0.4],
        [0.1, 0.0],
        [-0.1, 0.0],
    ];
    let groups = group(&labels, GroupingRule::Reference).expect("fallback pairs");
    assert_eq!(
        groups,
        Groups {
            strong: vec![2, 3],
            weak: vec![4, 5]
        }
    );
}

#[test]
fn single_pair() {
    for rule in [GroupingRule::Otsu, GroupingRule::Reference] {
        let groups = group(&[[0.9, 0.9], [0.0, 0.1]], rule).expect("one pair");
        assert_eq!(
            groups,
            Groups {
                strong: vec![0],
                weak: vec![1]
            },
            "{rule}"
        );
    }
}

#[test]
fn batches_without_a_pair_say_so() {
    let same = [[0.3f32, -0.2]; 5];
    assert_eq!(
        group(&same, GroupingRule::Otsu),
        Err(NoPair {
            strong: 5,
            weak: 0,
            batch: 5
        })
    );
    // On the circle's edge every radius is 1, above δr = √(.5² + .5²).
    let edge = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]];
    let err = group(&edge, GroupingRule::Otsu).expect_err("all strong");
    assert_eq!((err.strong, err.weak), (4, 0));
    assert!(err.to_string().contains("4 strong, 0 weak"), "{err}");
    assert!(group(&[], GroupingRule::Otsu).is_err());
    assert!(group(&[[0.5, 0.5]], GroupingRule::Reference).is_err());
}

#[test]
fn groups_are_disjoint_equal_length_and_ordered() {
    let mut state = 12345u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for batch in [2usize, 3, 16, 256] {
        for _ in 0..50 {
            let labels: Vec<[f32; 2]> = (0..batch).map(|_| [uniform(), uniform()]).collect();
            for rule in [GroupingRule::Otsu, GroupingRule::Reference] {
                let Ok(groups) = group(&labels, rule) else { continue };
                assert_eq!(groups.strong.len(), groups.weak.len());
                assert!(!groups.is_empty());
                assert!(groups.strong.windows(2).all(|w| w[0] < w[1]));
                assert!(groups.weak.windows(2).all(|w| w[0] < w[1]));
                assert!(groups.strong.iter().all(|i| !groups.weak.contains(i) && *i < batch));
            }
        }
    }
}

#[test]
fn rule_names() {
    assert_eq!("Otsu".parse(), Ok(GroupingRule::Otsu));
    assert_eq!("reference".parse(), Ok(GroupingRule::Reference));
    assert!("median".parse::<GroupingRule>().is_err());
    assert_eq!(GroupingRule::default().to_string(), "otsu");
}
