//! `shoal-vclock`: Vector clocks and per-key sibling sets (dotted version vectors) that never lose an acknowledged update.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
