//! The deployed predictor and the evaluation loop see the same pixels and
//! give the same numbers.

use anyhow::Result;
use caf_backbone::{Arch, Checkpoint, Precision};
use caf_data::load_generic_csv;
use caf_data::synthetic::{generate, SyntheticConfig};
use caf_data::{BatchLoader, LoaderConfig};
use caf_e2e::setups::seeded_checkpoint;
use caf_infer::{ImageFile, Predictor};
use caf_train::evaluate;
use candle_core::Device;

#[test]
fn predictor_and_evaluation_agree_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (arch, jpeg) in [(Arch::AlexNet, false), (Arch::ResNet18, true)] {
        let data = dir.path().join(format!("data-{arch}"));
        let config = SyntheticConfig {
            subjects: 2,
            images_per_subject: 5,
            size: 56,
            seed: 4,
            jpeg,
        };
        let report = generate(&data, &config)?;
        let dataset = load_generic_csv(&report.csv, &report.root)?;

        let path = seeded_checkpoint(dir.path(), arch, 11, 64, 72)?;

        let predictor = Predictor::from_checkpoint(&path, &Device::Cpu)?;
        let net = Checkpoint::read(&path, &Device::Cpu)?.va_net(&Device::Cpu, Precision::F32)?;
        let batch = 4;
        let loader = BatchLoader::new(&dataset, *predictor.preprocess(), LoaderConfig::evaluation(batch))?;
        let caf_train::Evaluation {
            predictions: evaluated,
            skipped_images: skipped,
            ..
        } = evaluate(&net, &loader, &Device::Cpu)?;
        assert_eq!(skipped, 0);

        let files: Vec<ImageFile> = dataset
            .samples
            .iter()
            .map(|s| ImageFile {
                path: s.path.clone(),
                face: s.face,
            })
            .collect();
        let predicted: Vec<[f32; 2]> = predictor
            .predict_files(&files, batch)
            .into_iter()
            .map(|r| r.map(|va| [va.valence, va.arousal]))
            .collect::<Result<_, _>>()?;
        assert_eq!(predicted, evaluated.predicted, "{arch}");
    }
    Ok(())
}
