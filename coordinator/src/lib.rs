//! `shoal-coordinator`: Quorum logic without sockets: plans reads and writes, counts W/R answers, reconciles siblings, plans read repair.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
