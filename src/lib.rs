//! rewind: bare-metal recovery of whole Linux machines to a point in time.
//! See DESIGN notes in docs/ and the README.

pub mod api;
pub mod bootloader;
pub mod browse;
pub mod capture;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod console;
pub mod escrow;
pub mod fs;
pub mod init;
pub mod initramfs;
pub mod kmod;
pub mod layout;
pub mod manifest;
pub mod netcfg;
pub mod netconf;
pub mod probe;
pub mod progress;
pub mod raw_regions;
pub mod recover;
pub mod repo;
pub mod restore;
pub mod retarget;
mod rtnetlink;
pub mod server;
pub mod stack;
pub mod stage;
pub mod time;
pub mod tree;
pub mod util;
pub mod walk;
