//! ext2, ext3 and ext4: parameters from `dumpe2fs -h`, made again with
//! mke2fs (the exact feature set and sizes) and tune2fs (the reserved
//! block count, which mke2fs only takes as a percentage).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Difference, Differences, MkfsTarget, argv, dev_str};
use crate::cmd;

/// What mke2fs needs to make the same ext2/3/4 filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtParams {
    #[serde(rename = "@block-size")]
    pub block_size: u32,
    #[serde(rename = "@inode-size")]
    pub inode_size: u32,
    #[serde(rename = "@inode-count")]
    pub inode_count: u64,
    #[serde(rename = "@block-count")]
    pub block_count: u64,
    #[serde(rename = "@reserved-blocks")]
    pub reserved_blocks: u64,
    /// Feature names as mke2fs -O takes them (`has_journal extent 64bit ...`).
    #[serde(rename = "@features", default)]
    pub features: Vec<String>,
}

/// The parameters of the ext2/3/4 filesystem on `dev`.
pub fn read_params(dev: &Path) -> Result<ExtParams> {
    let out = cmd::run("dumpe2fs", &["-h", dev_str(dev)?])?;
    parse_dumpe2fs(&out)
}

/// Parse the superblock summary of `dumpe2fs -h DEV`.
pub fn parse_dumpe2fs(text: &str) -> Result<ExtParams> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            // First occurrence wins: the superblock comes before the journal.
            fields.entry(k.trim()).or_insert(v.trim());
        }
    }
    let get = |key: &str| {
        fields
            .get(key)
            .copied()
            .with_context(|| format!("dumpe2fs output has no `{key}:` line"))
    };
    let num = |key: &str| -> Result<u64> {
        let v = get(key)?;
        v.parse()
            .with_context(|| format!("dumpe2fs `{key}:` is {v:?}, not a number"))
    };
    let small = |key: &str| -> Result<u32> {
        let n = num(key)?;
        u32::try_from(n).with_context(|| format!("dumpe2fs `{key}:` {n} is out of range"))
    };
    let features = match get("Filesystem features")? {
        "(none)" => Vec::new(),
        // needs_recovery and orphan_present are state (a mounted journal,
        // orphans pending), not choices mke2fs -O accepts.
        list => list
            .split_whitespace()
            .filter(|f| !matches!(*f, "needs_recovery" | "orphan_present"))
            .map(str::to_string)
            .collect(),
    };
    Ok(ExtParams {
        block_size: small("Block size")?,
        inode_size: small("Inode size")?,
        inode_count: num("Inode count")?,
        block_count: num("Block count")?,
        reserved_blocks: num("Reserved block count")?,
        features,
    })
}

/// mke2fs for kind `name` (`ext2`, `ext3`, `ext4`), then tune2fs and
/// resize2fs when there are parameters.
pub fn commands(name: &str, params: Option<&ExtParams>, t: &MkfsTarget) -> Vec<Vec<String>> {
    let device = t.device;
    let mut cmds = Vec::new();
    let mut a = argv(&["mke2fs", "-q", "-F", "-t", name, "-U", t.uuid]);
    if let Some(l) = t.label {
        a.extend(argv(&["-L", l]));
    }
    match params {
        Some(p) => {
            // `none` first: the feature set is exactly the captured
            // one, whatever this mke2fs.conf enables by default.
            let mut features = vec!["none".to_string()];
            features.extend(p.features.iter().cloned());
            a.extend([
                "-b".into(),
                p.block_size.to_string(),
                "-I".into(),
                p.inode_size.to_string(),
                "-N".into(),
                p.inode_count.to_string(),
                "-O".into(),
                features.join(","),
                device.into(),
                // With -b, the size is counted in filesystem blocks.
                p.block_count.to_string(),
            ]);
            cmds.push(a);
            // mke2fs takes a percentage; the captured count is exact.
            cmds.push(argv(&[
                "tune2fs",
                "-r",
                &p.reserved_blocks.to_string(),
                device,
            ]));
            if t.grow {
                cmds.push(argv(&["resize2fs", device]));
            }
        }
        None => {
            a.push(device.into());
            cmds.push(a);
        }
    }
    cmds
}

/// Features in any order; sizes and counts unless the filesystem was grown.
pub fn differences(want: &ExtParams, got: &ExtParams, grown: bool) -> Vec<Difference> {
    let mut d = Differences::default();
    let mut a = want.features.clone();
    let mut b = got.features.clone();
    a.sort();
    b.sort();
    d.cmp("features", a.join(" "), b.join(" "));
    d.cmp("block size", want.block_size, got.block_size);
    d.cmp("inode size", want.inode_size, got.inode_size);
    if !grown {
        d.cmp("inode count", want.inode_count, got.inode_count);
        d.cmp("block count", want.block_count, got.block_count);
        d.cmp("reserved blocks", want.reserved_blocks, got.reserved_blocks);
    }
    d.0
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{have, image, make};
    use super::super::{FsType, Tools};
    use super::*;

    fn line(a: &[String]) -> String {
        a.join(" ")
    }

    #[test]
    fn dumpe2fs_ext4_fixture() {
        let p = parse_dumpe2fs(include_str!("../../tests/fixtures/fs/dumpe2fs-ext4.txt")).unwrap();
        assert_eq!(p.block_size, 4096);
        assert_eq!(p.inode_size, 256); // the line has a tab after the colon
        assert_eq!(p.inode_count, 16384);
        assert_eq!(p.block_count, 16384);
        assert_eq!(p.reserved_blocks, 819);
        assert_eq!(
            p.features.join(" "),
            "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg \
             sparse_super large_file huge_file dir_nlink extra_isize metadata_csum"
        );
    }

    #[test]
    fn dumpe2fs_ext2_fixture() {
        let p = parse_dumpe2fs(include_str!("../../tests/fixtures/fs/dumpe2fs-ext2.txt")).unwrap();
        assert_eq!(p.block_size, 1024);
        assert_eq!(p.inode_size, 256);
        assert_eq!(p.inode_count, 4096);
        assert_eq!(p.block_count, 16384);
        assert_eq!(p.reserved_blocks, 819);
        assert!(!p.features.iter().any(|f| f == "has_journal"));
        assert!(p.features.iter().any(|f| f == "resize_inode"));
    }

    #[test]
    fn dumpe2fs_errors_name_the_field() {
        let err = parse_dumpe2fs("Block size: 4096\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("Filesystem features"),
            "{err:#}"
        );
        let text = include_str!("../../tests/fixtures/fs/dumpe2fs-ext4.txt")
            .replace("Inode count:              16384", "Inode count: lots");
        let err = parse_dumpe2fs(&text).unwrap_err();
        assert!(format!("{err:#}").contains("Inode count"), "{err:#}");
        let none = "Filesystem features:      (none)\nBlock size: 1024\nInode size: 128\n\
                    Inode count: 8\nBlock count: 64\nReserved block count: 3\n";
        assert!(parse_dumpe2fs(none).unwrap().features.is_empty());
    }

    #[test]
    fn ext4_real_image() {
        if !have("mkfs.ext4") || !have("dumpe2fs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "ext4.img", 64 << 20);
        make(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-I",
                "256",
                "-L",
                "root",
                img.to_str().unwrap(),
            ],
        );
        let Some(FsType::Ext4(Some(p))) = FsType::read("ext4", &img).unwrap() else {
            panic!("not ext");
        };
        assert_eq!(
            (p.block_size, p.inode_size, p.block_count),
            (4096, 256, 16384)
        );
        assert!(p.features.iter().any(|f| f == "extent"));
    }

    #[test]
    fn ext4_exact() {
        let fs = FsType::Ext4(Some(ExtParams {
            block_size: 4096,
            inode_size: 256,
            inode_count: 51200,
            block_count: 204800,
            reserved_blocks: 10240,
            features: argv(&["has_journal", "extent", "64bit"]),
        }));
        let tools = Tools::default();
        let mut t = MkfsTarget {
            device: "/dev/sdb2",
            uuid: "0a1b2c3d-1111-4222-8333-444455556666",
            label: Some("root"),
            grow: false,
            tools: &tools,
        };
        let mut notes = vec![];
        let c = fs.mkfs_commands(&t, &mut notes);
        assert_eq!(
            line(&c[0]),
            "mke2fs -q -F -t ext4 -U 0a1b2c3d-1111-4222-8333-444455556666 -L root -b 4096 -I 256 \
             -N 51200 -O none,has_journal,extent,64bit /dev/sdb2 204800"
        );
        assert_eq!(line(&c[1]), "tune2fs -r 10240 /dev/sdb2");
        assert_eq!(c.len(), 2);
        t.grow = true;
        let c = fs.mkfs_commands(&t, &mut notes);
        assert_eq!(line(&c[2]), "resize2fs /dev/sdb2");
        assert!(notes.is_empty());
    }

    #[test]
    fn without_parameters_only_identity() {
        let tools = Tools::default();
        let t = MkfsTarget {
            device: "/dev/sdb",
            uuid: "0a1b2c3d-1111-4222-8333-444455556666",
            label: None,
            grow: true,
            tools: &tools,
        };
        let c = FsType::Ext3(None).mkfs_commands(&t, &mut vec![]);
        assert_eq!(
            c,
            [argv(&[
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext3",
                "-U",
                "0a1b2c3d-1111-4222-8333-444455556666",
                "/dev/sdb"
            ])]
        );
    }
}
