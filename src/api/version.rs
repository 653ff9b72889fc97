//! `GET /v1/version`: which formats the server speaks, so that a client
//! (an older recovery image, a newer dashboard) can tell before it reads
//! or writes anything.

use serde::{Deserialize, Serialize};

/// The version of this HTTP API (the `/v1/` of its paths).
pub const API_VERSION: u32 = 1;

/// The repository format (the `config` file says `rewind repository 1`).
pub const REPOSITORY_FORMAT: u32 = 1;

/// What a server speaks: every version it reads and writes, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// HTTP API versions (path prefixes `/v1/`, ...).
    pub api: Vec<u32>,
    /// Repository formats (docs/repository.md).
    pub repository: Vec<u32>,
    /// Manifest schema versions (docs/manifest.md).
    pub manifest: Vec<u32>,
}

impl Versions {
    /// What this build speaks.
    pub fn this_build() -> Versions {
        Versions {
            api: vec![API_VERSION],
            repository: vec![REPOSITORY_FORMAT],
            manifest: crate::manifest::SCHEMA_VERSIONS.to_vec(),
        }
    }

    /// Whether a server speaking `self` can serve a client of this build.
    pub fn compatible(&self) -> bool {
        let me = Versions::this_build();
        self.api.contains(&API_VERSION)
            && self.repository.contains(&REPOSITORY_FORMAT)
            && me.manifest.iter().any(|v| self.manifest.contains(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_format_is_the_config_file_s() {
        assert_eq!(
            crate::repo::CONFIG_TEXT,
            format!("rewind repository {REPOSITORY_FORMAT}\n")
        );
        assert!(Versions::this_build().compatible());
        assert_eq!(
            serde_json::to_string(&Versions::this_build()).unwrap(),
            r#"{"api":[1],"repository":[1],"manifest":[1,2]}"#
        );
    }
}
