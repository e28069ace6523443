//! placeholder while node lands
#![allow(missing_docs)]
pub mod config;
pub mod env;
pub mod logging;
pub mod membership;
pub mod node;
pub mod pool;
pub mod rpc;
pub mod serve;
pub mod store;

pub use config::Config;

#[doc(hidden)]
pub mod __private {
    pub use futures::{pin_mut, StreamExt};
    pub use tarpc::server::{BaseChannel, Channel};
}
