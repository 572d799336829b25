//! # caf-fuzz
//!
//! Every reader caf-rs points at bytes from outside, as one function that
//! takes the bytes and must return (an error is fine) without panicking,
//! aborting or allocating beyond its stated bounds. The libFuzzer targets
//! in `fuzz/` call these; `crates/caf-fuzz/tests/replay.rs` runs each target's committed
//! corpus and regressions through them in every test run.
//!
//! ```
//! // A truncated PNG is an error, not a crash.
//! caf_fuzz::run(caf_fuzz::Target::Image, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
//! ```

mod seeds;
mod targets;

pub use seeds::{regressions, seeds};
pub use targets::{run, Target};
