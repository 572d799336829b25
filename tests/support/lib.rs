//! Helpers shared by the end-to-end tests: deterministic weights that the
//! Python fixture generator reproduces, a writer of PyTorch state-dict files
//! so import paths are tested without Python, and the small runs and
//! checkpoints several tests start from.

pub mod compare;
pub mod fill;
pub mod hub;
pub mod setups;
pub mod torch_pickle;
