//! Shared helpers for storage tests.

pub mod synth;
