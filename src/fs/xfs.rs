//! xfs: parameters from `xfs_db -r -c info` (the xfs_info layout), made
//! again with mkfs.xfs, passing each captured switch the installed xfsprogs
//! knows (older ones refuse newer options).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

use super::{Difference, Differences, MkfsTarget, argv, dev_str};
use crate::cmd;

/// What mkfs.xfs needs to make the same xfs filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfsParams {
    #[serde(rename = "@block-size")]
    pub block_size: u32,
    #[serde(rename = "@sector-size")]
    pub sector_size: u32,
    #[serde(rename = "@inode-size")]
    pub inode_size: u32,
    #[serde(rename = "@ag-count")]
    pub ag_count: u32,
    #[serde(rename = "@log-blocks")]
    pub log_blocks: u64,
    /// Feature switches as `name=0|1` (`crc=1 finobt=1 reflink=1 ...`).
    #[serde(rename = "@features", default)]
    pub features: Vec<String>,
}

/// The parameters of the xfs filesystem on `dev`. `xfs_db -r -c info`
/// works on unmounted devices and image files, where xfs_info (on older
/// xfsprogs) wants a mount point.
pub fn read_params(dev: &Path) -> Result<XfsParams> {
    let out = cmd::run("xfs_db", &["-r", "-c", "info", dev_str(dev)?])?;
    parse_xfs_info(&out)
}

/// The installed `mkfs.xfs -V`, if it runs.
pub fn installed_version() -> Option<(u32, u32, u32)> {
    cmd::run("mkfs.xfs", &["-V"])
        .ok()
        .and_then(|out| parse_version(&out))
}

/// The on/off switches xfs_info/xfs_db print (xfsprogs libfrog/fsgeom.c, up to
/// 6.x). Kept as a list because 0/1 alone does not tell a switch from a
/// count (`agcount=1`, `sunit=0`, `attr=1` is a version).
const PRINTED_SWITCHES: &[&str] = &[
    "projid32bit",
    "crc",
    "finobt",
    "sparse",
    "rmapbt",
    "reflink",
    "bigtime",
    "inobtcount",
    "nrext64",
    "exchange",
    "metadir",
    "verity",
    "ascii-ci",
    "ftype",
    "parent",
    "lazy-count",
    "zoned",
];

/// Parse `xfs_db -r -c info DEV` (the xfs_info layout): lines of
/// `section =... key=value, key=value`, where a line with an empty section
/// name continues the one above. Switches not in the known list are ignored.
pub fn parse_xfs_info(text: &str) -> Result<XfsParams> {
    // (section, key) → value, first occurrence wins; features in output order.
    let mut values: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut features = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let Some((label, rest)) = line.split_once('=') else {
            continue;
        };
        let label = label.trim();
        if !label.is_empty() {
            section = label.to_string();
        }
        for token in rest.split_whitespace() {
            let token = token.trim_end_matches(',');
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            if PRINTED_SWITCHES.contains(&key) && (value == "0" || value == "1") {
                let f = format!("{key}={value}");
                if !features.contains(&f) {
                    features.push(f);
                }
            }
            values
                .entry((section.clone(), key.to_string()))
                .or_insert_with(|| value.to_string());
        }
    }
    ensure!(
        !section.is_empty(),
        "not xfs_info output (no `meta-data=` line)"
    );
    let num = |sec: &str, key: &str| -> Result<u64> {
        let v = values
            .get(&(sec.to_string(), key.to_string()))
            .with_context(|| format!("xfs info has no {key}= in its {sec} section"))?;
        v.parse()
            .with_context(|| format!("xfs info {sec} {key}={v} is not a number"))
    };
    let small = |sec: &str, key: &str| -> Result<u32> {
        let n = num(sec, key)?;
        u32::try_from(n).with_context(|| format!("xfs info {sec} {key}={n} is out of range"))
    };
    Ok(XfsParams {
        block_size: small("data", "bsize")?,
        sector_size: small("meta-data", "sectsz")?,
        inode_size: small("meta-data", "isize")?,
        ag_count: small("meta-data", "agcount")?,
        log_blocks: num("log", "blocks")?,
        features,
    })
}

/// `mkfs.xfs version 6.1.0` → (6, 1, 0).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(char::is_numeric))?;
    let mut parts = word.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    Some((
        parts.next()??,
        parts.next().flatten()?,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// An xfs switch as xfs_info shows it, the mkfs.xfs option that sets it,
/// and the first xfsprogs that knows that option.
struct XfsSwitch {
    name: &'static str,
    section: char,
    option: &'static str,
    since: (u32, u32, u32),
}

const MKFS_SWITCHES: &[XfsSwitch] = &[
    XfsSwitch {
        name: "crc",
        section: 'm',
        option: "crc",
        since: (3, 2, 0),
    },
    XfsSwitch {
        name: "finobt",
        section: 'm',
        option: "finobt",
        since: (3, 2, 1),
    },
    XfsSwitch {
        name: "rmapbt",
        section: 'm',
        option: "rmapbt",
        since: (4, 9, 0),
    },
    XfsSwitch {
        name: "reflink",
        section: 'm',
        option: "reflink",
        since: (4, 9, 0),
    },
    XfsSwitch {
        name: "bigtime",
        section: 'm',
        option: "bigtime",
        since: (5, 10, 0),
    },
    XfsSwitch {
        name: "inobtcount",
        section: 'm',
        option: "inobtcount",
        since: (5, 10, 0),
    },
    XfsSwitch {
        name: "metadir",
        section: 'm',
        option: "metadir",
        since: (6, 13, 0),
    },
    XfsSwitch {
        name: "sparse",
        section: 'i',
        option: "sparse",
        since: (4, 2, 0),
    },
    XfsSwitch {
        name: "projid32bit",
        section: 'i',
        option: "projid32bit",
        since: (3, 0, 0),
    },
    XfsSwitch {
        name: "nrext64",
        section: 'i',
        option: "nrext64",
        since: (5, 19, 0),
    },
    XfsSwitch {
        name: "exchange",
        section: 'i',
        option: "exchange",
        since: (6, 10, 0),
    },
    XfsSwitch {
        name: "ftype",
        section: 'n',
        option: "ftype",
        since: (3, 2, 0),
    },
    XfsSwitch {
        name: "parent",
        section: 'n',
        option: "parent",
        since: (6, 10, 0),
    },
    XfsSwitch {
        name: "lazy-count",
        section: 'l',
        option: "lazy-count",
        since: (3, 0, 0),
    },
];

/// The mkfs.xfs command line: every captured switch this xfsprogs knows,
/// with a note for each one it cannot set.
pub fn command(params: Option<&XfsParams>, t: &MkfsTarget, notes: &mut Vec<String>) -> Vec<String> {
    let (device, tools) = (t.device, t.tools);
    let mut m = vec![format!("uuid={}", t.uuid)];
    let (mut b, mut s, mut i, mut d, mut l, mut n) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    if let Some(p) = params {
        b.push(format!("size={}", p.block_size));
        s.push(format!("size={}", p.sector_size));
        i.push(format!("size={}", p.inode_size));
        d.push(format!("agcount={}", p.ag_count));
        l.push(format!("size={}", p.log_blocks * u64::from(p.block_size)));
        for f in &p.features {
            let Some((name, value)) = f.split_once('=') else {
                continue;
            };
            if name == "ascii-ci" {
                if value == "1" {
                    n.push("version=ci".to_string());
                }
                continue;
            }
            let Some(sw) = MKFS_SWITCHES.iter().find(|sw| sw.name == name) else {
                if value == "1" {
                    notes.push(format!(
                        "xfs on {device}: feature {name}=1 cannot be set by mkfs.xfs; it is left at its default"
                    ));
                }
                continue;
            };
            if tools.xfs_version.is_some_and(|v| v < sw.since) {
                if value == "1" {
                    let (a, b2, c) = tools.xfs_version.unwrap_or_default();
                    notes.push(format!(
                        "xfs on {device}: feature {name}=1 needs xfsprogs {}.{}.{} (this is {a}.{b2}.{c}); made without it",
                        sw.since.0, sw.since.1, sw.since.2
                    ));
                }
                continue;
            }
            let opt = format!("{}={value}", sw.option);
            match sw.section {
                'm' => m.push(opt),
                'i' => i.push(opt),
                'n' => n.push(opt),
                _ => l.push(opt),
            }
        }
    }
    let mut a = argv(&["mkfs.xfs", "-q", "-f", "-m"]);
    a.push(m.join(","));
    if let Some(label) = t.label {
        a.extend(["-L".into(), label.to_string()]);
    }
    for (flag, opts) in [
        ("-b", b),
        ("-s", s),
        ("-i", i),
        ("-d", d),
        ("-l", l),
        ("-n", n),
    ] {
        if !opts.is_empty() {
            a.extend([flag.to_string(), opts.join(",")]);
        }
    }
    a.push(device.into());
    a
}

/// Sizes and counts, and every captured switch this xfsprogs prints.
pub fn differences(want: &XfsParams, got: &XfsParams) -> Vec<Difference> {
    let mut d = Differences::default();
    d.cmp("block size", want.block_size, got.block_size);
    d.cmp("sector size", want.sector_size, got.sector_size);
    d.cmp("inode size", want.inode_size, got.inode_size);
    d.cmp("ag count", want.ag_count, got.ag_count);
    d.cmp("log blocks", want.log_blocks, got.log_blocks);
    for f in &want.features {
        // A switch this xfsprogs does not print cannot be compared.
        let name = f.split('=').next().unwrap_or_default();
        if let Some(g) = got
            .features
            .iter()
            .find(|g| g.starts_with(&format!("{name}=")))
        {
            d.cmp("feature", f, g);
        }
    }
    d.0
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{have, image, make};
    use super::super::{FsType, Tools};
    use super::*;

    const XFS_V5_FEATURES: &str = "projid32bit=1 crc=1 finobt=1 sparse=1 rmapbt=0 reflink=1 \
                                   bigtime=1 inobtcount=1 nrext64=0 ascii-ci=0 ftype=1 lazy-count=1";

    #[test]
    fn xfs_info_fixture() {
        let p = parse_xfs_info(include_str!("../../tests/fixtures/fs/xfs_db-info.txt")).unwrap();
        assert_eq!(p.block_size, 4096);
        assert_eq!(p.sector_size, 512);
        assert_eq!(p.inode_size, 512);
        assert_eq!(p.ag_count, 4);
        assert_eq!(p.log_blocks, 16384);
        assert_eq!(p.features.join(" "), XFS_V5_FEATURES);
    }

    #[test]
    fn xfs_info_v4_fixture() {
        let p = parse_xfs_info(include_str!("../../tests/fixtures/fs/xfs_db-info-v4.txt")).unwrap();
        assert_eq!(
            (p.block_size, p.inode_size, p.log_blocks),
            (1024, 256, 65536)
        );
        assert!(p.features.contains(&"crc=0".to_string()));
    }

    /// The layout of newer xfsprogs (6.13+: exchange, metadir, parent, zoned
    /// lines), written by hand from libfrog/fsgeom.c's format string.
    #[test]
    fn xfs_info_newer_layout() {
        let text = "\
meta-data=/dev/nvme0n1p3         isize=512    agcount=16, agsize=1048576 blks
         =                       sectsz=4096  attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=1
         =                       reflink=1    bigtime=1 inobtcount=1 nrext64=1
         =                       exchange=1   metadir=0
data     =                       bsize=4096   blocks=16777216, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1, parent=0
log      =internal log           bsize=4096   blocks=16384, version=2
         =                       sectsz=4096  sunit=1 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
         =                       rgcount=0    rgsize=0 extents
         =                       zoned=0      start=0 reserved=0
";
        let p = parse_xfs_info(text).unwrap();
        assert_eq!((p.sector_size, p.ag_count, p.log_blocks), (4096, 16, 16384));
        let f = p.features.join(" ");
        for want in [
            "exchange=1",
            "metadir=0",
            "parent=0",
            "zoned=0",
            "nrext64=1",
        ] {
            assert!(f.contains(want), "{want} missing from {f}");
        }
        // Counts that happen to be 0 or 1 are not switches.
        assert!(!f.contains("sunit") && !f.contains("rtextents") && !f.contains("start"));
    }

    #[test]
    fn xfs_info_errors() {
        assert!(parse_xfs_info("").is_err());
        let text = include_str!("../../tests/fixtures/fs/xfs_db-info.txt")
            .replace("blocks=16384, version=2", "version=2");
        let err = parse_xfs_info(&text).unwrap_err();
        assert!(format!("{err:#}").contains("log section"), "{err:#}");
    }

    #[test]
    fn xfs_real_image() {
        if !have("mkfs.xfs") || !have("xfs_db") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), "xfs.img", 320 << 20); // mkfs.xfs wants >= 300 MB
        make(
            "mkfs.xfs",
            &["-q", "-f", "-i", "size=1024", img.to_str().unwrap()],
        );
        let Some(FsType::Xfs(Some(p))) = FsType::read("xfs", &img).unwrap() else {
            panic!("not xfs");
        };
        assert_eq!((p.block_size, p.inode_size), (4096, 1024));
        assert!(p.features.contains(&"crc=1".to_string()));
        let err = FsType::read("xfs", &image(dir.path(), "zero.img", 1 << 20)).unwrap_err();
        assert!(format!("{err:#}").contains("xfs_db -r -c info"), "{err:#}");
    }

    fn line(a: &[String]) -> String {
        a.join(" ")
    }

    #[test]
    fn xfs_switches_by_version() {
        let fs = FsType::Xfs(Some(XfsParams {
            block_size: 4096,
            sector_size: 512,
            inode_size: 512,
            ag_count: 4,
            log_blocks: 16384,
            features: "projid32bit=1 crc=1 finobt=1 sparse=1 rmapbt=0 reflink=1 bigtime=1 inobtcount=1 nrext64=0 ascii-ci=0 ftype=1 lazy-count=1 exchange=0 zoned=0"
                .split(' ')
                .map(str::to_string)
                .collect(),
        }));
        let mut notes = vec![];
        let tools = Tools {
            xfs_version: Some((6, 1, 0)),
        };
        let mut t = MkfsTarget {
            device: "/dev/sdc1",
            uuid: "5e6f7a8b-2222-4333-8444-555566667777",
            label: Some("data"),
            grow: false,
            tools: &tools,
        };
        let c = fs.mkfs_commands(&t, &mut notes);
        assert_eq!(
            line(&c[0]),
            "mkfs.xfs -q -f -m uuid=5e6f7a8b-2222-4333-8444-555566667777,crc=1,finobt=1,rmapbt=0,reflink=1,bigtime=1,inobtcount=1 \
             -L data -b size=4096 -s size=512 -i size=512,projid32bit=1,sparse=1,nrext64=0 -d agcount=4 \
             -l size=67108864,lazy-count=1 -n ftype=1 /dev/sdc1"
        );
        assert!(notes.is_empty(), "{notes:?}");
        // An old xfsprogs: bigtime=1 cannot be made, and says so.
        let tools = Tools {
            xfs_version: Some((5, 4, 0)),
        };
        t.tools = &tools;
        let c = fs.mkfs_commands(&t, &mut notes);
        assert!(!line(&c[0]).contains("bigtime") && !line(&c[0]).contains("nrext64"));
        assert_eq!(notes.len(), 2, "{notes:?}"); // bigtime and inobtcount
        assert!(
            notes[0].contains("bigtime=1 needs xfsprogs 5.10.0"),
            "{notes:?}"
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("mkfs.xfs version 6.1.0\n"), Some((6, 1, 0)));
        assert_eq!(parse_version("mkfs.xfs version 5.19\n"), Some((5, 19, 0)));
        assert_eq!(
            parse_version("mkfs.xfs version 6.13.0-rc1"),
            Some((6, 13, 0))
        );
        assert_eq!(parse_version("nothing"), None);
    }
}
