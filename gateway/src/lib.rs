//! `shoal-gateway`: The client-facing Shoal coordinator: the HTTP API, routed by the ring, using the coordinator crate.
//!
//! This crate is part of the Shoal workspace (see the repository's
//! `ARCHITECTURE.md`); its API lands with its own issue.
