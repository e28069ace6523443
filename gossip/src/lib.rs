//! `shoal-gossip`: Transport-agnostic gossip membership and failure detection, driven by the caller's clock and sockets.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
