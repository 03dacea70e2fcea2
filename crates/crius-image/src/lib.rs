//! `crius-image`: everything about images below the CRI edge.
#![forbid(unsafe_code)]

pub mod config;
pub mod content;
pub mod digest;
pub mod error;
pub mod lease;
pub mod manager;
pub mod manifest;
mod pull;
pub mod records;
pub mod reference;
pub mod snapshot;
pub mod unpack;

pub use config::{ImageConfig, PullAuth, RegistryConfig};
pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use manager::{FsUsage, GcReport, ImageManager, PullResult};
pub use records::{Image, ImageRecords, StoreImageRecords};
