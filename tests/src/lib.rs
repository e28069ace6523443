//! `shoal-tests`: cross-crate integration and fault tests for Shoal.
//!
//! The tests live in `tests/tests/`; this library holds what they share
//! (cluster harnesses, the oracle) as those land.
