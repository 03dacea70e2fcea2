//! `crius-image`: everything about images below the CRI edge.
#![forbid(unsafe_code)]

pub mod content;
pub mod digest;
pub mod error;
pub mod snapshot;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
