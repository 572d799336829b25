//! Writes every target's seeds into `fuzz/corpus/<target>/seed-<name>`, and
//! the inputs that once crashed a reader into `fuzz/regressions/<target>/`.

fn main() -> std::io::Result<()> {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for target in caf_fuzz::Target::ALL {
        let dir = fuzz.join("corpus").join(target.name());
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in caf_fuzz::seeds(target) {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        let dir = fuzz.join("regressions").join(target.name());
        for (name, bytes) in caf_fuzz::regressions(target) {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
