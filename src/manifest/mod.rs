//! The manifest: the XML contract between capture and recovery.

mod ids;
mod model;
mod paths;
mod stack;
mod stack_check;
mod validate;
mod xml;

pub use model::*;
pub use validate::{ManifestError, Problem, is_dmi_text, is_guid, validate};
pub use xml::{from_xml, to_xml};

/// Read and validate a manifest file.
pub fn load(path: &std::path::Path) -> anyhow::Result<Manifest> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    from_xml(&text).with_context(|| format!("{} is not a valid rewind manifest", path.display()))
}
#[cfg(test)]
pub(crate) mod stack_tests;
#[cfg(test)]
pub(crate) mod tests;
