//! `shoal-storage`: An LSM storage engine: commit log, memtable, SSTables with Bloom filters and block index, compaction, recovery.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
