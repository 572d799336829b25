//! Every target's seeds, committed corpus (`fuzz/corpus/<target>`) and
//! regressions (`fuzz/regressions/<target>`: inputs that once crashed a
//! reader) go through the target again: none may panic or abort.

use std::path::{Path, PathBuf};

use caf_fuzz::{regressions, run, seeds, Target};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_seed_is_accepted_by_its_reader() {
    for target in Target::ALL {
        for (name, bytes) in seeds(target) {
            let accepted = run(target, &bytes);
            // The dataset indexes name images that are not there: refused whole.
            let indexes = matches!(
                target,
                Target::AffectNet | Target::AfewVa | Target::AffWild2 | Target::GenericCsv
            );
            assert!(accepted || indexes, "{}: seed {name} refused", target.name());
        }
    }
}

#[test]
fn every_input_that_once_crashed_a_reader_is_refused() {
    for target in Target::ALL {
        for (name, bytes) in regressions(target) {
            assert!(!run(target, &bytes), "{}: {name} accepted", target.name());
            let committed = fuzz_dir().join("regressions").join(target.name()).join(name);
            assert_eq!(
                std::fs::read(&committed).ok().as_deref(),
                Some(&bytes[..]),
                "{} is not committed as made (cargo run -p caf-fuzz --example write-seeds)",
                committed.display()
            );
        }
    }
}

#[test]
fn the_committed_corpora_and_regressions_replay_without_a_crash() {
    let mut replayed = 0;
    for target in Target::ALL {
        let corpus = files(&fuzz_dir().join("corpus").join(target.name()));
        assert!(!corpus.is_empty(), "fuzz/corpus/{} is empty", target.name());
        for file in corpus
            .iter()
            .chain(&files(&fuzz_dir().join("regressions").join(target.name())))
        {
            let bytes = std::fs::read(file).expect("corpus file");
            run(target, &bytes);
            replayed += 1;
        }
    }
    eprintln!("{replayed} inputs replayed");
}
