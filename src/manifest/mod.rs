//! The manifest: the XML contract between capture and recovery.

mod model;

pub use model::*;
