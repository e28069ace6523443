//! `shoal-merkle`: Merkle trees over fixed segments of the 64-bit hash space, with incremental updates and a sans-IO diff.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
