//! What a training checkpoint says about how it was made: the method, the
//! data, how far the run went and its best validation score. `serve`'s
//! `/v1/model` and an exported model card both show it.

use caf_backbone::Checkpoint;
use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::trainer::{META_BEST, META_EPOCH, META_STEP};

/// How a training checkpoint was made, from its metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// `caf` or `baseline`.
    pub method: String,
    /// The training data's format (`synthetic`, `affectnet`, `aff-wild2`, `generic`).
    pub dataset: String,
    /// Encoder weights the run started from (a file or `hf://…`); `None`
    /// for random weights.
    pub pretrained: Option<String>,
    /// Epochs completed when the checkpoint was written, of those planned.
    pub epochs_done: usize,
    pub epochs_planned: usize,
    /// Training iterations completed.
    pub iterations: u64,
    /// The best mean validation CCC (valence and arousal) the run saw.
    pub best_mean_ccc: Option<f64>,
    pub batch_size: usize,
    pub seed: u64,
}

impl Provenance {
    /// `None` for a checkpoint that holds no run (an imported or exported
    /// model); an error for a training checkpoint whose metadata is damaged.
    pub fn of(checkpoint: &Checkpoint) -> Result<Option<Self>> {
        let Some(config) = TrainConfig::of_checkpoint(checkpoint, &[])? else {
            return Ok(None);
        };
        let number = |key: &str| checkpoint.metadata.get(key).and_then(|text| text.parse::<f64>().ok());
        Ok(Some(Self {
            method: format!("{:?}", config.method).to_lowercase(),
            dataset: config.data.format().to_string(),
            pretrained: Some(config.pretrained.clone()).filter(|source| !source.is_empty()),
            epochs_done: number(META_EPOCH).map_or(0, |epoch| epoch as usize),
            epochs_planned: config.epochs,
            iterations: number(META_STEP).map_or(0, |step| step as u64),
            best_mean_ccc: number(META_BEST).filter(|ccc| ccc.is_finite()),
            batch_size: config.batch_size,
            seed: config.seed,
        }))
    }
}
