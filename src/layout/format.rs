//! Formatting: the exact mkfs command lines that remake each captured
//! filesystem (built here, listed in the plan, run in the format stage),
//! and the check that what mkfs made matches the capture.

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::manifest::{Filesystem, Swap};
use crate::probe::fs::{FsParams, read_fs_params};

/// What this machine's mkfs tools can do, where it matters for the argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    /// `mkfs.xfs -V`; `None` when unknown (every switch is then passed).
    pub xfs_version: Option<(u32, u32, u32)>,
}

impl Tools {
    /// Ask the installed tools. A missing tool is not an error here: the
    /// preflight check reports it before anything is written.
    pub fn detect() -> Tools {
        let xfs_version = cmd::run("mkfs.xfs", &["-V"])
            .ok()
            .and_then(|out| parse_version(&out));
        Tools { xfs_version }
    }
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

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The commands that make `fs` on `device`: mkfs first, then any tuning
/// mkfs cannot do itself, then (when `grow`) growing it to its partition.
/// `notes` receives what cannot be reproduced exactly.
pub fn filesystem_commands(
    fs: &Filesystem,
    device: &str,
    grow: bool,
    tools: &Tools,
    notes: &mut Vec<String>,
) -> Result<Vec<Vec<String>>> {
    let label = fs.label.as_deref();
    let mut cmds = Vec::new();
    match fs.fs_type.as_str() {
        t @ ("ext2" | "ext3" | "ext4") => {
            let mut a = argv(&["mke2fs", "-q", "-F", "-t", t, "-U", &fs.uuid]);
            if let Some(l) = label {
                a.extend(argv(&["-L", l]));
            }
            match &fs.ext {
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
                    if grow {
                        cmds.push(argv(&["resize2fs", device]));
                    }
                }
                None => {
                    a.push(device.into());
                    cmds.push(a);
                }
            }
        }
        "xfs" => cmds.push(xfs_argv(fs, device, tools, notes)),
        "vfat" => {
            let volid = fs.uuid.replace('-', "");
            let mut a = argv(&["mkfs.fat", "-i", &volid]);
            if let Some(l) = label {
                a.extend(argv(&["-n", l]));
            }
            if let Some(p) = &fs.vfat {
                a.extend([
                    "-F".into(),
                    p.fat_size.to_string(),
                    "-S".into(),
                    p.sector_size.to_string(),
                    "-s".into(),
                    p.sectors_per_cluster.to_string(),
                    "-R".into(),
                    p.reserved_sectors.to_string(),
                    "-f".into(),
                    p.fat_count.to_string(),
                ]);
                // FAT32 has no fixed root directory; mkfs.fat refuses -r 0.
                if p.root_entries > 0 {
                    a.extend(["-r".into(), p.root_entries.to_string()]);
                }
            }
            a.push(device.into());
            cmds.push(a);
        }
        "btrfs" => {
            let mut a = argv(&["mkfs.btrfs", "-q", "-f", "-U", &fs.uuid]);
            if let Some(l) = label {
                a.extend(argv(&["-L", l]));
            }
            if let Some(p) = &fs.btrfs {
                a.extend([
                    "-n".into(),
                    p.node_size.to_string(),
                    "-s".into(),
                    p.sector_size.to_string(),
                ]);
            }
            a.push(device.into());
            cmds.push(a);
            notes.push(format!(
                "btrfs on {device}: the device UUID (blkid UUID_SUB) is new; mkfs.btrfs cannot set it"
            ));
        }
        other => bail!(
            "cannot make a {other} filesystem on {device}: rewind recreates ext2, ext3, ext4, xfs, vfat and btrfs"
        ),
    }
    Ok(cmds)
}

pub fn swap_commands(swap: &Swap, device: &str) -> Vec<Vec<String>> {
    let mut a = argv(&["mkswap", "-U", &swap.uuid]);
    if let Some(l) = &swap.label {
        a.extend(argv(&["-L", l]));
    }
    a.push(device.into());
    vec![a]
}

/// An xfs switch as xfs_info shows it, the mkfs.xfs option that sets it,
/// and the first xfsprogs that knows that option.
struct XfsSwitch {
    name: &'static str,
    section: char,
    option: &'static str,
    since: (u32, u32, u32),
}

const XFS_SWITCHES: &[XfsSwitch] = &[
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

fn xfs_argv(fs: &Filesystem, device: &str, tools: &Tools, notes: &mut Vec<String>) -> Vec<String> {
    let mut m = vec![format!("uuid={}", fs.uuid)];
    let (mut b, mut s, mut i, mut d, mut l, mut n) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    if let Some(p) = &fs.xfs {
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
            let Some(sw) = XFS_SWITCHES.iter().find(|sw| sw.name == name) else {
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
    if let Some(label) = &fs.label {
        a.extend(["-L".into(), label.clone()]);
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

/// Run one command of the plan through the command runner.
pub fn run_argv(argv: &[String]) -> Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::run(program, &args)
}

/// Create btrfs subvolumes (paths inside the filesystem, `/@home`) on the
/// freshly made filesystem on `device`, parents before children, through a
/// temporary mount of its top level.
pub fn create_subvolumes(device: &str, subvolumes: &[String]) -> Result<()> {
    let top = std::env::temp_dir().join(format!("rewind-btrfs-top-{}", std::process::id()));
    std::fs::create_dir_all(&top).with_context(|| format!("cannot create {}", top.display()))?;
    super::mount::mount_one(device, &top, "btrfs", "subvolid=5")
        .with_context(|| format!("cannot mount the top level of {device}"))?;
    let mut sorted: Vec<&String> = subvolumes.iter().collect();
    sorted.sort_by_key(|s| super::mount::order_key(s));
    let result = sorted.iter().try_for_each(|s| -> Result<()> {
        let path = top.join(s.trim_start_matches('/'));
        if path.exists() {
            return Ok(()); // created as the parent of an earlier one
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let p = path.to_str().context("subvolume path is not UTF-8")?;
        cmd::run("btrfs", &["subvolume", "create", p]).map(drop)
    });
    let unmounted = super::mount::unmount_one(&top);
    let _ = std::fs::remove_dir(&top);
    result?;
    unmounted
}

/// Compare what mkfs made on `device` with the captured parameters; every
/// difference is returned as a warning (the filesystem is usable, but not
/// the same). A grown filesystem's block count is expected to differ.
pub fn verify(fs: &Filesystem, device: &str, grown: bool) -> Result<Vec<String>> {
    let made = read_fs_params(std::path::Path::new(device), &fs.fs_type)
        .with_context(|| format!("cannot read back the {} made on {device}", fs.fs_type))?;
    let mut diffs = Vec::new();
    let mut cmp = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!(
                "{} on {device} differs from the capture: {what} {want} was made as {got}",
                fs.fs_type
            ));
        }
    };
    match (made, &fs.ext, &fs.xfs, &fs.vfat, &fs.btrfs) {
        (FsParams::Ext(got), Some(want), _, _, _) => {
            let mut a = want.features.clone();
            let mut b = got.features.clone();
            a.sort();
            b.sort();
            cmp("features", a.join(" "), b.join(" "));
            cmp(
                "block size",
                want.block_size.to_string(),
                got.block_size.to_string(),
            );
            cmp(
                "inode size",
                want.inode_size.to_string(),
                got.inode_size.to_string(),
            );
            if !grown {
                cmp(
                    "inode count",
                    want.inode_count.to_string(),
                    got.inode_count.to_string(),
                );
                cmp(
                    "block count",
                    want.block_count.to_string(),
                    got.block_count.to_string(),
                );
                cmp(
                    "reserved blocks",
                    want.reserved_blocks.to_string(),
                    got.reserved_blocks.to_string(),
                );
            }
        }
        (FsParams::Xfs(got), _, Some(want), _, _) => {
            cmp(
                "block size",
                want.block_size.to_string(),
                got.block_size.to_string(),
            );
            cmp(
                "sector size",
                want.sector_size.to_string(),
                got.sector_size.to_string(),
            );
            cmp(
                "inode size",
                want.inode_size.to_string(),
                got.inode_size.to_string(),
            );
            cmp(
                "ag count",
                want.ag_count.to_string(),
                got.ag_count.to_string(),
            );
            cmp(
                "log blocks",
                want.log_blocks.to_string(),
                got.log_blocks.to_string(),
            );
            for f in &want.features {
                // A switch this xfsprogs does not print cannot be compared.
                let name = f.split('=').next().unwrap_or_default();
                if let Some(g) = got
                    .features
                    .iter()
                    .find(|g| g.starts_with(&format!("{name}=")))
                {
                    cmp("feature", f.clone(), g.clone());
                }
            }
        }
        (FsParams::Vfat(got), _, _, Some(want), _) => {
            cmp("parameters", format!("{want:?}"), format!("{got:?}"));
        }
        (FsParams::Btrfs(got), _, _, _, Some(want)) => {
            cmp("parameters", format!("{want:?}"), format!("{got:?}"));
        }
        _ => {} // no captured parameters: nothing to compare
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::from_xml;

    fn fs_from(xml_fs: &str) -> Filesystem {
        let m = from_xml(&super::super::plan::tests::manifest_xml(
            r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
            &xml_fs.replace("DISK", r#"disk="sda""#),
        ))
        .unwrap();
        m.filesystems[0].clone()
    }

    fn line(a: &[String]) -> String {
        a.join(" ")
    }

    #[test]
    fn ext4_exact() {
        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="ext4" uuid="0a1b2c3d-1111-4222-8333-444455556666" label="root">
                 <ext block-size="4096" inode-size="256" inode-count="51200" block-count="204800" reserved-blocks="10240" features="has_journal extent 64bit"/>
               </filesystem>"#,
        );
        let mut notes = vec![];
        let c =
            filesystem_commands(&fs, "/dev/sdb2", false, &Tools::default(), &mut notes).unwrap();
        assert_eq!(
            line(&c[0]),
            "mke2fs -q -F -t ext4 -U 0a1b2c3d-1111-4222-8333-444455556666 -L root -b 4096 -I 256 \
             -N 51200 -O none,has_journal,extent,64bit /dev/sdb2 204800"
        );
        assert_eq!(line(&c[1]), "tune2fs -r 10240 /dev/sdb2");
        assert_eq!(c.len(), 2);
        let c = filesystem_commands(&fs, "/dev/sdb2", true, &Tools::default(), &mut notes).unwrap();
        assert_eq!(line(&c[2]), "resize2fs /dev/sdb2");
        assert!(notes.is_empty());
    }

    #[test]
    fn without_parameters_only_identity() {
        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="ext3" uuid="0a1b2c3d-1111-4222-8333-444455556666"/>"#,
        );
        let c = filesystem_commands(&fs, "/dev/sdb", true, &Tools::default(), &mut vec![]).unwrap();
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

    #[test]
    fn xfs_switches_by_version() {
        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="xfs" uuid="5e6f7a8b-2222-4333-8444-555566667777" label="data">
                 <xfs block-size="4096" sector-size="512" inode-size="512" ag-count="4" log-blocks="16384" features="projid32bit=1 crc=1 finobt=1 sparse=1 rmapbt=0 reflink=1 bigtime=1 inobtcount=1 nrext64=0 ascii-ci=0 ftype=1 lazy-count=1 exchange=0 zoned=0"/>
               </filesystem>"#,
        );
        let mut notes = vec![];
        let tools = Tools {
            xfs_version: Some((6, 1, 0)),
        };
        let c = filesystem_commands(&fs, "/dev/sdc1", false, &tools, &mut notes).unwrap();
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
        let c = filesystem_commands(&fs, "/dev/sdc1", false, &tools, &mut notes).unwrap();
        assert!(!line(&c[0]).contains("bigtime") && !line(&c[0]).contains("nrext64"));
        assert_eq!(notes.len(), 2, "{notes:?}"); // bigtime and inobtcount
        assert!(
            notes[0].contains("bigtime=1 needs xfsprogs 5.10.0"),
            "{notes:?}"
        );
    }

    #[test]
    fn vfat_btrfs_swap() {
        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="vfat" uuid="1234-ABCD" label="ESP">
                 <vfat fat-size="32" sector-size="512" sectors-per-cluster="1" reserved-sectors="32" fat-count="2" root-entries="0"/>
               </filesystem>"#,
        );
        let c =
            filesystem_commands(&fs, "/dev/sdb1", false, &Tools::default(), &mut vec![]).unwrap();
        assert_eq!(
            line(&c[0]),
            "mkfs.fat -i 1234ABCD -n ESP -F 32 -S 512 -s 1 -R 32 -f 2 /dev/sdb1"
        );
        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="vfat" uuid="C0FF-EE01">
                 <vfat fat-size="16" sector-size="512" sectors-per-cluster="4" reserved-sectors="4" fat-count="2" root-entries="512"/>
               </filesystem>"#,
        );
        let c =
            filesystem_commands(&fs, "/dev/sdb1", false, &Tools::default(), &mut vec![]).unwrap();
        assert!(line(&c[0]).ends_with("-f 2 -r 512 /dev/sdb1"), "{c:?}");

        let fs = fs_from(
            r#"<filesystem device="/dev/sda" DISK type="btrfs" uuid="9a8b7c6d-3333-4444-8555-666677778888" label="home">
                 <btrfs node-size="16384" sector-size="4096"/>
               </filesystem>"#,
        );
        let mut notes = vec![];
        let c =
            filesystem_commands(&fs, "/dev/sdb5", false, &Tools::default(), &mut notes).unwrap();
        assert_eq!(
            line(&c[0]),
            "mkfs.btrfs -q -f -U 9a8b7c6d-3333-4444-8555-666677778888 -L home -n 16384 -s 4096 /dev/sdb5"
        );
        assert_eq!(notes.len(), 1);

        let m = from_xml(&super::super::plan::tests::manifest_xml(
            r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
            r#"<swap device="/dev/sda" disk="sda" uuid="deadbeef-0000-4000-8000-000000000001" label="swap"/>"#,
        ))
        .unwrap();
        assert_eq!(
            line(&swap_commands(&m.swaps[0], "/dev/sdb4")[0]),
            "mkswap -U deadbeef-0000-4000-8000-000000000001 -L swap /dev/sdb4"
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

    /// Whether `tool` is on PATH (non-root users on Debian lack /usr/sbin).
    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("note: {tool} not on PATH, skipping");
        }
        found
    }

    /// Make a filesystem on an image file with `make`, capture it as the
    /// probe does, remake it on a second image with the planned commands,
    /// and check that the parameters and blkid's view are the same.
    fn roundtrip(fs_type: &str, make: &[&str], mib: u64) {
        let tools: Vec<&str> = vec![make[0], "blkid"];
        if !tools.iter().all(|t| have(t)) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = |name: &str| {
            let p = dir.path().join(name);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(mib << 20)
                .unwrap();
            p.display().to_string()
        };
        let (a, b) = (image("a.img"), image("b.img"));
        let mut argv: Vec<String> = make.iter().map(|s| s.to_string()).collect();
        argv.push(a.clone());
        run_argv(&argv).unwrap();

        let tags = crate::probe::fs::blkid(std::path::Path::new(&a)).unwrap();
        let m = from_xml(&super::super::plan::tests::manifest_xml(
            r#"<disk name="sda" path="/dev/sda" size="1073741824" logical-sector-size="512" physical-sector-size="512"/>"#,
            &format!(
                r#"<filesystem device="/dev/sda" disk="sda" type="{fs_type}" uuid="{}"/>"#,
                tags["UUID"]
            ),
        ))
        .unwrap();
        let mut fs = m.filesystems[0].clone();
        fs.label = tags.get("LABEL").cloned();
        match read_fs_params(std::path::Path::new(&a), fs_type).unwrap() {
            FsParams::Ext(p) => fs.ext = Some(p),
            FsParams::Xfs(p) => fs.xfs = Some(p),
            FsParams::Vfat(p) => fs.vfat = Some(p),
            FsParams::Btrfs(p) => fs.btrfs = Some(p),
            FsParams::None => panic!("no parameters for {fs_type}"),
        }
        let mut notes = vec![];
        for c in filesystem_commands(&fs, &b, false, &Tools::detect(), &mut notes).unwrap() {
            run_argv(&c).unwrap();
        }
        assert_eq!(
            verify(&fs, &b, false).unwrap(),
            Vec::<String>::new(),
            "{make:?}"
        );
        let mut want = tags.clone();
        let mut got = crate::probe::fs::blkid(std::path::Path::new(&b)).unwrap();
        for m in [&mut want, &mut got] {
            m.remove("DEVNAME");
            m.remove("UUID_SUB"); // btrfs: not settable
        }
        assert_eq!(got, want, "{make:?}");

        // A difference is reported, field by field.
        if let Some(p) = fs.ext.as_mut() {
            p.inode_count += 8;
            let diffs = verify(&fs, &b, false).unwrap();
            assert_eq!(diffs.len(), 1, "{diffs:?}");
            assert!(diffs[0].contains("inode count"), "{diffs:?}");
        }
    }

    #[test]
    fn ext_roundtrip_on_images() {
        roundtrip(
            "ext4",
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "root",
                "-O",
                "^metadata_csum",
            ],
            64,
        );
        roundtrip(
            "ext4",
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-I",
                "128",
                "-N",
                "5000",
                "-m",
                "1",
            ],
            48,
        );
        roundtrip("ext3", &["mkfs.ext3", "-q", "-F", "-L", "old"], 32);
        roundtrip("ext2", &["mkfs.ext2", "-q", "-F", "-b", "2048"], 32);
    }

    #[test]
    fn xfs_roundtrip_on_images() {
        roundtrip(
            "xfs",
            &[
                "mkfs.xfs",
                "-q",
                "-f",
                "-L",
                "data",
                "-i",
                "size=1024",
                "-d",
                "agcount=2",
            ],
            320,
        );
        roundtrip(
            "xfs",
            &[
                "mkfs.xfs",
                "-q",
                "-f",
                "-m",
                "crc=0",
                "-b",
                "size=1024",
                "-n",
                "ftype=0",
            ],
            320,
        );
    }

    #[test]
    fn vfat_and_btrfs_roundtrip_on_images() {
        roundtrip(
            "vfat",
            &["mkfs.fat", "-F", "32", "-s", "1", "-n", "ESP"],
            64,
        );
        roundtrip("vfat", &["mkfs.fat", "-F", "16", "-r", "1024"], 32);
        roundtrip("vfat", &["mkfs.fat", "-F", "12", "-f", "1"], 4);
        roundtrip(
            "btrfs",
            &["mkfs.btrfs", "-q", "-f", "-n", "32768", "-L", "home"],
            128,
        );
    }
}
