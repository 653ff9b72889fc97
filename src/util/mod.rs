//! Small helpers every layer uses: atomic file writes, glob matching, hex,
//! MAC addresses, human-readable sizes. This is the bottom layer of the
//! crate: nothing here imports anything else from it, so any module may
//! depend on it without creating a cycle.

pub mod fs;
pub mod glob;
pub mod hex;
pub mod mac;
pub mod size;
