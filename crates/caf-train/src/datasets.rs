//! Which people a run trains and validates on, and the loaders over them.
//!
//! One rule, used by training, by `eval` of a training checkpoint and by
//! cross-validation alike: a separate `validation` set when the config names
//! one; otherwise fold `fold` of `folds` subject-disjoint folds of `data`
//! (cross-validation), or a `validation_ratio` share of its *subjects*; the
//! split is drawn by the run's seed (docs/method.md, "Splits").

use caf_backbone::Checkpoint;
use caf_data::{Augment, BatchLoader, ColorJitter, Dataset, DatasetSpec, LoaderConfig, Preprocess, Split};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// The subject-disjoint split of `dataset` a config asks for: fold `fold` of
/// `folds`, or `validation_ratio` of the subjects, chosen by the seed.
pub fn validation_split(dataset: &Dataset, config: &TrainConfig) -> Result<Split> {
    Ok(if config.folds >= 2 {
        caf_data::subject_folds(dataset, config.folds, config.seed)?.swap_remove(config.fold)
    } else {
        caf_data::subject_split(dataset, config.validation_ratio, config.seed)?
    })
}

/// The training and validation sets of a run, as [`Trainer`](crate::Trainer) uses them.
pub fn training_and_validation_sets(config: &TrainConfig) -> Result<(Dataset, Dataset)> {
    let dataset = config.data.load()?;
    Ok(match &config.validation {
        Some(validation) => (dataset, validation.load()?),
        None => {
            let split = validation_split(&dataset, config)?;
            (
                dataset.subset(&split.train, "training subjects"),
                dataset.subset(&split.validation, "validation subjects"),
            )
        }
    })
}

/// The validation set of a run: what its per-epoch validation scored.
pub fn validation_set(config: &TrainConfig) -> Result<Dataset> {
    match &config.validation {
        Some(validation) => Ok(validation.load()?),
        None => Ok(training_and_validation_sets(config)?.1),
    }
}

/// What `eval` scores a checkpoint on: `spec` when one is given, otherwise
/// the validation set of the run the checkpoint was saved from.
pub fn evaluation_set(checkpoint: &Checkpoint, spec: Option<&DatasetSpec>) -> Result<Dataset> {
    if let Some(spec) = spec {
        return Ok(spec.load()?);
    }
    let config = TrainConfig::of_checkpoint(checkpoint, &[])?.ok_or_else(|| {
        TrainError::malformed(
            &checkpoint.path,
            "not a training checkpoint: say which data to evaluate on (a dataset format and its paths)",
        )
    })?;
    validation_set(&config)
}

/// The subjects of a dataset, sorted, as owned strings.
pub(crate) fn subject_names(dataset: &Dataset) -> Vec<String> {
    dataset.subjects().into_iter().map(str::to_string).collect()
}

/// The shuffling, augmenting training loader and the evaluation loader.
pub(crate) fn loaders(
    config: &TrainConfig,
    train_set: &Dataset,
    validation_set: &Dataset,
) -> Result<(BatchLoader, BatchLoader)> {
    let preprocess = Preprocess::imagenet(config.resize, config.image_size)?;
    let jitter = (config.color_jitter > 0.0).then_some(ColorJitter {
        brightness: config.color_jitter,
        contrast: config.color_jitter,
        saturation: config.color_jitter,
    });
    let augment = Augment {
        random_crop: config.random_crop,
        horizontal_flip: config.horizontal_flip,
        color_jitter: jitter,
    };
    let prefetch = 2 * config.workers;
    let train_config = LoaderConfig {
        batch_size: config.batch_size,
        shuffle: true,
        drop_last: true,
        workers: config.workers,
        prefetch,
        seed: config.seed,
        augment: Some(augment),
        strict: config.strict_images,
    };
    let eval_config = LoaderConfig {
        workers: config.workers,
        prefetch,
        strict: config.strict_images,
        ..LoaderConfig::evaluation(config.batch_size)
    };
    let train = BatchLoader::new(train_set, preprocess, train_config)?;
    if train.batches_per_epoch() == 0 {
        return Err(TrainError::settings(format!(
            "{}: {} training samples make no full batch of {}; lower batch_size or add data",
            train_set.name,
            train_set.len(),
            config.batch_size
        )));
    }
    Ok((train, BatchLoader::new(validation_set, preprocess, eval_config)?))
}
