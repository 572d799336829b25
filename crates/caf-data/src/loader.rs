//! Batches of prepared images, built by parallel workers ahead of time.
//!
//! Batch `b` of an epoch is built by worker `b mod W` and handed over through
//! that worker's bounded queue, so the batches arrive in order, at most
//! `prefetch` are ready at once, and their content (order, crops, flips)
//! depends only on the seed and the epoch, never on thread timing.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver};

use crate::pipeline::{load_sample, Augment, Preprocess};
use crate::sample::{DataError, Dataset, Sample};
use caf_rng::Rng;

/// How batches are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the samples each epoch (by seed and epoch number).
    pub shuffle: bool,
    /// Leave out the last, smaller batch.
    pub drop_last: bool,
    /// Worker threads decoding and augmenting.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (at least one per worker).
    pub prefetch: usize,
    pub seed: u64,
    /// Training augmentation; `None` gives the evaluation preprocessing.
    pub augment: Option<Augment>,
    /// Fail on an unreadable image instead of skipping it with a warning.
    pub strict: bool,
}

impl LoaderConfig {
    /// Shuffled, augmented batches for training.
    pub fn training(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            shuffle: true,
            drop_last: false,
            workers: default_workers(),
            prefetch: 4,
            seed,
            augment: Some(Augment::paper()),
            strict: false,
        }
    }

    /// Every sample once, in order, centre-cropped.
    pub fn evaluation(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            drop_last: false,
            workers: default_workers(),
            prefetch: 4,
            seed: 0,
            augment: None,
            strict: false,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8)
}

/// One batch, ready for the network.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `B×3×crop×crop`, normalised.
    pub images: Tensor,
    /// `B×2`: valence, arousal.
    pub labels: Tensor,
    /// The same labels, on the host, for grouping and metrics.
    pub label_values: Vec<[f32; 2]>,
    pub subjects: Vec<String>,
    /// Dataset indices of the rows.
    pub indices: Vec<usize>,
    /// Images of this batch that could not be read and were left out.
    pub skipped: Vec<PathBuf>,
}

struct RawBatch {
    images: Vec<f32>,
    indices: Vec<usize>,
    skipped: Vec<PathBuf>,
}

/// Draws batches of a dataset; cheap to keep, one [`Epoch`] per pass.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    samples: Arc<Vec<Sample>>,
    preprocess: Preprocess,
    config: LoaderConfig,
}

impl BatchLoader {
    pub fn new(dataset: &Dataset, preprocess: Preprocess, config: LoaderConfig) -> Result<Self, DataError> {
        if config.batch_size == 0 || config.workers == 0 {
            return Err(DataError::Invalid(format!(
                "batch size ({}) and workers ({}) must be positive",
                config.batch_size, config.workers
            )));
        }
        if dataset.is_empty() {
            return Err(DataError::Invalid(format!("{}: no samples to load", dataset.name)));
        }
        Ok(Self {
            samples: Arc::new(dataset.samples.clone()),
            preprocess,
            config,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Sample indices of each batch of `epoch`.
    pub fn batch_plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.config.shuffle {
            Rng::derive(self.config.seed, &[epoch, 0x0bde]).shuffle(&mut order);
        }
        let mut plan: Vec<Vec<usize>> = order.chunks(self.config.batch_size).map(<[usize]>::to_vec).collect();
        if self.config.drop_last && plan.last().is_some_and(|b| b.len() < self.config.batch_size) {
            plan.pop();
        }
        plan
    }

    pub fn batches_per_epoch(&self) -> usize {
        let full = self.samples.len() / self.config.batch_size;
        let partial = !self.samples.len().is_multiple_of(self.config.batch_size) && !self.config.drop_last;
        full + partial as usize
    }

    /// Starts the workers for one pass; batches come out on `device`.
    pub fn epoch(&self, epoch: u64, device: &Device) -> Epoch {
        self.epoch_from(epoch, 0, device)
    }

    /// The rest of a pass, from batch `first` on (resuming mid-epoch): the
    /// same batches as [`BatchLoader::epoch`] gives from that point.
    pub fn epoch_from(&self, epoch: u64, first: usize, device: &Device) -> Epoch {
        let mut plan = self.batch_plan(epoch);
        plan.drain(..first.min(plan.len()));
        let plan = Arc::new(plan);
        let workers = self.config.workers.min(plan.len()).max(1);
        let capacity = self.config.prefetch.div_ceil(workers).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (sender, receiver) = bounded(capacity);
            receivers.push(receiver);
            let (plan, samples, preprocess, config) =
                (plan.clone(), self.samples.clone(), self.preprocess, self.config.clone());
            handles.push(std::thread::spawn(move || {
                for batch in (worker..plan.len()).step_by(workers) {
                    let built = build_batch(&plan[batch], &samples, &preprocess, &config, epoch);
                    if sender.send(built).is_err() {
                        return; // the epoch was dropped
                    }
                }
            }));
        }
        Epoch {
            receivers,
            handles,
            next: 0,
            total: plan.len(),
            device: device.clone(),
            crop: self.preprocess.crop as usize,
            samples: self.samples.clone(),
            skipped: 0,
        }
    }
}

fn build_batch(
    indices: &[usize],
    samples: &[Sample],
    preprocess: &Preprocess,
    config: &LoaderConfig,
    epoch: u64,
) -> Result<RawBatch, DataError> {
    let mut raw = RawBatch {
        images: Vec::with_capacity(indices.len() * preprocess.image_len()),
        indices: Vec::with_capacity(indices.len()),
        skipped: Vec::new(),
    };
    for &index in indices {
        let sample = &samples[index];
        let mut rng = Rng::derive(config.seed, &[epoch, index as u64, 0xa06]);
        let augment = config.augment.as_ref().map(|a| (a, &mut rng));
        match load_sample(sample, preprocess, augment) {
            Ok(image) => {
                raw.images.extend_from_slice(&image);
                raw.indices.push(index);
            }
            Err(error) if !config.strict => {
                tracing::warn!("skipping an unreadable image: {error}");
                raw.skipped.push(sample.path.clone());
            }
            Err(error) => return Err(error),
        }
    }
    Ok(raw)
}

/// One pass over the data: an iterator of batches. Unreadable images are
/// skipped (see [`Epoch::skipped`]) unless the loader is strict, in which case
/// the batch that holds one is an error. Dropping it stops the workers.
pub struct Epoch {
    receivers: Vec<Receiver<Result<RawBatch, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    device: Device,
    crop: usize,
    samples: Arc<Vec<Sample>>,
    skipped: usize,
}

impl Epoch {
    /// Images skipped so far in this epoch.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn to_batch(&self, raw: RawBatch) -> Result<Batch, DataError> {
        let n = raw.indices.len();
        let tensor_error = |e: candle_core::Error| DataError::Invalid(format!("cannot build the batch tensors: {e}"));
        let label_values: Vec<[f32; 2]> = raw
            .indices
            .iter()
            .map(|&i| [self.samples[i].valence, self.samples[i].arousal])
            .collect();
        let images = Tensor::from_vec(raw.images, (n, 3, self.crop, self.crop), &Device::Cpu)
            .and_then(|t| t.to_device(&self.device))
            .map_err(tensor_error)?;
        let labels = Tensor::from_vec(label_values.concat(), (n, 2), &Device::Cpu)
            .and_then(|t| t.to_device(&self.device))
            .map_err(tensor_error)?;
        let subjects = raw.indices.iter().map(|&i| self.samples[i].subject.clone()).collect();
        Ok(Batch {
            images,
            labels,
            label_values,
            subjects,
            indices: raw.indices,
            skipped: raw.skipped,
        })
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.total {
            let receiver = &self.receivers[self.next % self.receivers.len()];
            self.next += 1;
            let raw = match receiver.recv() {
                Ok(Ok(raw)) => raw,
                Ok(Err(error)) => return Some(Err(error)),
                Err(_) => {
                    return Some(Err(DataError::Invalid(
                        "a data worker stopped unexpectedly (see the log)".into(),
                    )))
                }
            };
            self.skipped += raw.skipped.len();
            if raw.indices.is_empty() {
                continue; // every image of this batch was unreadable
            }
            return Some(self.to_batch(raw));
        }
        None
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::IndexReport;
    use image::{Rgb, RgbImage};

    fn dataset(dir: &std::path::Path, count: usize) -> Dataset {
        let samples = (0..count)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                RgbImage::from_fn(20, 16, |x, y| Rgb([(x * 12) as u8, (y * 15) as u8, (i * 20) as u8]))
                    .save(&path)
                    .expect("png");
                Sample {
                    path,
                    valence: i as f32 / count as f32,
                    arousal: -(i as f32) / count as f32,
                    subject: format!("s{}", i % 3),
                    face: None,
                }
            })
            .collect();
        Dataset {
            name: "test".into(),
            samples,
            report: IndexReport::default(),
        }
    }

    fn preprocess() -> Preprocess {
        Preprocess::imagenet(16, 12).expect("sizes")
    }

    fn collect(loader: &BatchLoader, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>)> {
        loader
            .epoch(epoch, &Device::Cpu)
            .map(|batch| {
                let batch = batch.expect("batch");
                (
                    batch.indices.clone(),
                    batch.images.flatten_all().and_then(|t| t.to_vec1()).expect("values"),
                )
            })
            .collect()
    }

    #[test]
    fn same_seed_same_batches_whatever_the_workers() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dataset(dir.path(), 11);
        let config = LoaderConfig {
            workers: 3,
            prefetch: 2,
            ..LoaderConfig::training(4, 9)
        };
        let loader = BatchLoader::new(&data, preprocess(), config.clone()).expect("loader");
        let first = collect(&loader, 0);
        assert_eq!(first.len(), 3);
        assert_eq!(loader.batches_per_epoch(), 3);
        let one_worker = BatchLoader::new(
            &data,
            preprocess(),
            LoaderConfig {
                workers: 1,
                ..config.clone()
            },
        )
        .expect("loader");
        assert_eq!(collect(&one_worker, 0), first, "same batches with 1 or 3 workers");
        assert_ne!(collect(&loader, 1), first, "another epoch, another order");
        let mut seen: Vec<usize> = first.iter().flat_map(|(i, _)| i.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..11).collect::<Vec<_>>(), "every sample once per epoch");
        let other_seed = BatchLoader::new(&data, preprocess(), LoaderConfig { seed: 10, ..config }).expect("loader");
        assert_ne!(collect(&other_seed, 0), first);
    }

    #[test]
    fn batches_carry_labels_subjects_and_shapes() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dataset(dir.path(), 5);
        let loader = BatchLoader::new(
            &data,
            preprocess(),
            LoaderConfig {
                drop_last: true,
                ..LoaderConfig::evaluation(2)
            },
        )
        .expect("loader");
        let batches: Vec<Batch> = loader.epoch(0, &Device::Cpu).map(|b| b.expect("batch")).collect();
        assert_eq!(batches.len(), 2, "the last, single-sample batch is dropped");
        assert_eq!(batches[1].images.dims(), [2, 3, 12, 12]);
        assert_eq!(batches[1].indices, [2, 3]);
        assert_eq!(
            batches[1].labels.to_vec2::<f32>().expect("labels"),
            [[0.4, -0.4], [0.6, -0.6]]
        );
        assert_eq!(batches[1].label_values, [[0.4, -0.4], [0.6, -0.6]]);
        assert_eq!(batches[1].subjects, ["s2", "s0"]);
    }

    #[test]
    fn corrupt_images_are_skipped_and_counted_or_fail_when_strict() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dataset(dir.path(), 6);
        std::fs::write(&data.samples[2].path, b"\x89PNG\r\n\x1a\n truncated").expect("corrupt");
        std::fs::write(&data.samples[4].path, b"").expect("empty");
        let loader = BatchLoader::new(&data, preprocess(), LoaderConfig::evaluation(4)).expect("loader");
        let mut epoch = loader.epoch(0, &Device::Cpu);
        let batches: Vec<Batch> = epoch.by_ref().map(|b| b.expect("batch")).collect();
        assert_eq!(epoch.skipped(), 2);
        assert_eq!(batches.iter().map(|b| b.indices.len()).sum::<usize>(), 4);
        assert_eq!(batches[0].skipped, [data.samples[2].path.clone()]);
        let strict = BatchLoader::new(
            &data,
            preprocess(),
            LoaderConfig {
                strict: true,
                ..LoaderConfig::evaluation(4)
            },
        )
        .expect("loader");
        let error = strict
            .epoch(0, &Device::Cpu)
            .find_map(|b| b.err())
            .expect("strict error");
        assert!(error.to_string().contains("2.png"), "{error}");
    }

    #[test]
    fn dropping_an_epoch_early_stops_its_workers() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dataset(dir.path(), 12);
        let loader = BatchLoader::new(
            &data,
            preprocess(),
            LoaderConfig {
                workers: 2,
                prefetch: 1,
                ..LoaderConfig::training(2, 0)
            },
        )
        .expect("loader");
        let mut epoch = loader.epoch(0, &Device::Cpu);
        assert!(epoch.next().is_some());
        drop(epoch); // joins the workers; a hang here would fail the test run
    }
}
