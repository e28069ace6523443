//! `shoal-node`: The Shoal replica service: composes storage, merkle, gossip and hints, and serves them over tarpc.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
