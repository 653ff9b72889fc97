//! Read a running system into a [`Manifest`](crate::manifest::Manifest).

pub mod efi;
pub mod fs;
pub mod net;
