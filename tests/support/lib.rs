//! Helpers shared by the end-to-end tests: deterministic weights that the
//! Python fixture generator reproduces, and a writer of PyTorch state-dict
//! files so import paths are tested without Python.

pub mod fill;
pub mod torch_pickle;
