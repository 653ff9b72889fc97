//! Tier 2 (root): recreate captured layouts on loop devices, as data. Each
//! case is a set of disks (an sfdisk script and how each partition is
//! prepared) and a target size; one function builds the disks, captures
//! them with `rewind capture --manifest-only`, zeroes the images, runs
//! `rewind recreate --disk CAPTURED=PRESENT --yes`, and compares
//! `sfdisk --dump` and `blkid -p` field by field with the original (the
//! grown cases: everything but the grown sizes and the GPT's end).
//!
//! This host's kernel cannot mount vfat, so every run passes
//! `--skip-mount vfat`: the ESP is made and compared, not mounted.

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// How a partition (or the disk) is prepared before the capture.
enum Prep {
    /// Run a mkfs-like tool on partition N; `{}` in the args is the node.
    Make(u32, &'static str, &'static [&'static str]),
    /// Fill partition N with a byte pattern: content no filesystem explains.
    Pattern(u32),
    /// 440 bytes of boot code in LBA 0.
    BootCode,
    /// Bytes in the sectors between the MBR and the first partition.
    BootGap,
    /// A btrfs subvolume on partition N.
    Subvolume(u32, &'static str),
    /// Mount partition N at a point under the test's source root, with
    /// options (`""` for none); `root` is a btrfs subvolume or `/`.
    Mount(u32, &'static str, &'static str),
}

struct DiskSpec {
    image: &'static str,
    mib: u64,
    table: &'static str,
    prep: &'static [Prep],
}

struct Case {
    name: &'static str,
    disks: &'static [DiskSpec],
    /// Target size as a multiple of the captured size.
    scale: u64,
    grow: bool,
}

const UEFI: DiskSpec = DiskSpec {
    image: "uefi.img",
    mib: 800,
    // Swap in slot 5: the gap in the entry array is kept.
    table: "label: gpt\nlabel-id: A0B1C2D3-E4F5-4607-8819-2A3B4C5D6E7F\nfirst-lba: 2048\n\
        start=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\"\n\
        start=67584, size=262144, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=11111111-2222-4333-8444-555555555502, name=root, attrs=\"GUID:59\"\n\
        start=329728, size=655360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=home\n\
        5: start=985088, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=swap\n",
    prep: &[
        Prep::Make(
            1,
            "mkfs.fat",
            &["-F", "32", "-s", "1", "-i", "1234ABCD", "-n", "ESP", "{}"],
        ),
        Prep::Make(
            2,
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "root",
                "-O",
                "^metadata_csum",
                "{}",
            ],
        ),
        Prep::Make(
            3,
            "mkfs.xfs",
            &["-q", "-f", "-L", "home", "-i", "size=1024", "{}"],
        ),
        Prep::Make(5, "mkswap", &["-L", "swap", "{}"]),
        Prep::Mount(2, "/", ""),
        Prep::Mount(3, "/home", "noatime"),
        Prep::Mount(1, "/boot/efi", ""), // vfat: not mountable here, skipped in the mount
    ],
};

const BIOS: DiskSpec = DiskSpec {
    image: "bios.img",
    mib: 128,
    table: "label: gpt\nfirst-lba: 34\n\
        start=34, size=2014, type=21686148-6449-6E6F-744E-656564454649, name=grub\n\
        start=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, attrs=LegacyBIOSBootable\n",
    prep: &[
        Prep::Pattern(1),
        Prep::BootCode,
        Prep::Make(2, "mkfs.ext4", &["-q", "-F", "-L", "root", "{}"]),
        Prep::Mount(2, "/", "ro"),
    ],
};

const MBR: DiskSpec = DiskSpec {
    image: "mbr.img",
    mib: 512,
    table: "label: dos\nlabel-id: 0x1a2b3c4d\n\
        start=2048, size=131072, type=83, bootable\n\
        start=133120, size=65536, type=82\n\
        start=198656, type=5\n\
        start=200704, size=131072, type=83\n\
        start=333824, size=65536, type=c\n\
        start=401408, type=83\n",
    prep: &[
        Prep::BootCode,
        Prep::BootGap,
        Prep::Make(
            1,
            "mkfs.ext4",
            &["-q", "-F", "-b", "1024", "-I", "128", "-L", "boot", "{}"],
        ),
        Prep::Make(2, "mkswap", &["{}"]),
        Prep::Make(5, "mkfs.ext2", &["-q", "-F", "-L", "scratch", "{}"]),
        Prep::Make(
            6,
            "mkfs.vfat",
            &["-F", "16", "-i", "C0FFEE01", "-n", "SHARED", "{}"],
        ),
        Prep::Make(7, "mkfs.ext3", &["-q", "-F", "-L", "data", "{}"]),
        Prep::Mount(1, "/", ""),
        Prep::Mount(5, "/srv", "nodev"),
        Prep::Mount(7, "/srv/data", ""),
    ],
};

/// Two disks of one machine: a GPT root and an MBR disk with btrfs
/// subvolumes (one mounted as /home) and swap.
const TWO_A: DiskSpec = DiskSpec {
    image: "a.img",
    mib: 96,
    table: "label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n",
    prep: &[
        Prep::Make(1, "mkfs.ext4", &["-q", "-F", "-L", "root", "{}"]),
        Prep::Mount(1, "/", ""),
    ],
};
const TWO_B: DiskSpec = DiskSpec {
    image: "b.img",
    mib: 256,
    table: "label: dos\nstart=2048, size=32768, type=82\nstart=34816, type=83\n",
    prep: &[
        Prep::Make(1, "mkswap", &["-L", "swap2", "{}"]),
        Prep::Make(2, "mkfs.btrfs", &["-q", "-f", "-L", "data", "{}"]),
        Prep::Subvolume(2, "@home"),
        Prep::Mount(2, "/home", "subvol=@home,noatime"),
    ],
};

/// The last partition is ext4, so growing it runs resize2fs.
const GROWABLE_GPT: DiskSpec = DiskSpec {
    image: "grow.img",
    mib: 128,
    table: "label: gpt\nstart=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
        start=67584, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    prep: &[
        Prep::Make(1, "mkswap", &["{}"]),
        Prep::Make(2, "mkfs.ext4", &["-q", "-F", "-L", "root", "{}"]),
        Prep::Mount(2, "/", ""),
    ],
};
/// The last partition is a logical one: growing it grows the extended too.
const GROWABLE_MBR: DiskSpec = DiskSpec {
    image: "growm.img",
    mib: 96,
    table: "label: dos\nstart=2048, size=32768, type=83\nstart=34816, type=5\nstart=36864, type=83\n",
    prep: &[
        Prep::Make(1, "mkfs.ext2", &["-q", "-F", "{}"]),
        Prep::Make(5, "mkfs.ext4", &["-q", "-F", "-L", "last", "{}"]),
    ],
};

const CASES: &[Case] = &[
    Case {
        name: "gpt-uefi",
        disks: &[UEFI],
        scale: 1,
        grow: false,
    },
    Case {
        name: "gpt-bios",
        disks: &[BIOS],
        scale: 1,
        grow: false,
    },
    Case {
        name: "mbr-logicals",
        disks: &[MBR],
        scale: 1,
        grow: false,
    },
    Case {
        name: "two-disks",
        disks: &[TWO_A, TWO_B],
        scale: 1,
        grow: false,
    },
    Case {
        name: "twice-the-size",
        disks: &[GROWABLE_GPT, GROWABLE_MBR],
        scale: 2,
        grow: false,
    },
    Case {
        name: "twice-the-size-grown",
        disks: &[GROWABLE_GPT, GROWABLE_MBR],
        scale: 2,
        grow: true,
    },
];

fn rewind(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rewind"));
    c.args(args);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_at(path: &str, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn write_at(path: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn part_bytes(dev: &str) -> u64 {
    sh("blockdev", &["--getsize64", dev])
        .trim()
        .parse()
        .unwrap()
}

/// What the test compares, for one disk.
#[derive(Debug)]
struct State {
    dump: SfdiskDump,
    blkid: BTreeMap<u32, BTreeMap<String, String>>,
    lba0_code: Vec<u8>,
}

fn state(disk: &LoopDisk) -> State {
    let dump = sfdisk_dump(&disk.image);
    let blkid = dump
        .partitions
        .keys()
        .map(|&n| {
            let mut m = blkid_export(&disk.part(n));
            m.remove("UUID_SUB"); // btrfs device UUID: mkfs.btrfs cannot set it
            (n, m)
        })
        .collect();
    State {
        dump,
        blkid,
        lba0_code: read_at(&disk.dev, 0, 440),
    }
}

fn is_extended(fields: &BTreeMap<String, String>) -> bool {
    matches!(
        fields.get("type").map(String::as_str),
        Some("5" | "f" | "85")
    )
}

/// The original state turned into what a target `scale` times as big must
/// show: a GPT ends later, and with --grow the last partition (and the
/// extended one around a last logical) is bigger by the added sectors.
fn expected(mut s: State, sectors: u64, scale: u64, grow: bool) -> State {
    let delta = sectors * (scale - 1);
    if delta == 0 {
        return s;
    }
    if let Some(last) = s.dump.header.get_mut("last-lba") {
        *last = (last.parse::<u64>().unwrap() + delta).to_string();
    }
    if grow {
        let start = |f: &BTreeMap<String, String>| f["start"].parse::<u64>().unwrap();
        let last = *s
            .dump
            .partitions
            .iter()
            .filter(|(_, f)| !is_extended(f))
            .max_by_key(|(_, f)| start(f))
            .unwrap()
            .0;
        let mut grown = vec![last];
        if last >= 5 && s.dump.header["label"] == "dos" {
            grown.extend(
                s.dump
                    .partitions
                    .iter()
                    .filter(|(_, f)| is_extended(f))
                    .map(|(n, _)| *n),
            );
        }
        for n in grown {
            let size = s
                .dump
                .partitions
                .get_mut(&n)
                .unwrap()
                .get_mut("size")
                .unwrap();
            *size = (size.parse::<u64>().unwrap() + delta).to_string();
            if let Some(ps) = s
                .blkid
                .get_mut(&n)
                .and_then(|b| b.get_mut("PART_ENTRY_SIZE"))
            {
                *ps = (ps.parse::<u64>().unwrap() + delta).to_string();
            }
        }
    }
    s
}

/// sfdisk pads numbers to a column; compare values, not spacing.
fn normalized(d: &SfdiskDump) -> SfdiskDump {
    let mut d = d.clone();
    for f in d.partitions.values_mut() {
        for v in f.values_mut() {
            *v = v.trim().to_string();
        }
    }
    d
}

fn assert_same(case: &str, disk: &str, want: &State, got: &State) {
    assert_eq!(
        normalized(&want.dump).header,
        normalized(&got.dump).header,
        "{case} {disk}: table header"
    );
    let (w, g) = (normalized(&want.dump), normalized(&got.dump));
    assert_eq!(
        w.partitions.keys().collect::<Vec<_>>(),
        g.partitions.keys().collect::<Vec<_>>(),
        "{case} {disk}: partition numbers"
    );
    for (n, wf) in &w.partitions {
        for (k, v) in wf {
            assert_eq!(
                Some(v),
                g.partitions[n].get(k),
                "{case} {disk}: partition {n} field {k}"
            );
        }
        assert_eq!(
            wf.len(),
            g.partitions[n].len(),
            "{case} {disk}: partition {n} fields"
        );
    }
    for (n, wb) in &want.blkid {
        for (k, v) in wb {
            assert_eq!(
                Some(v),
                got.blkid[n].get(k),
                "{case} {disk}: blkid of partition {n}: {k}"
            );
        }
        assert_eq!(
            wb.keys().collect::<Vec<_>>(),
            got.blkid[n].keys().collect::<Vec<_>>(),
            "{case} {disk}: blkid keys of partition {n}"
        );
    }
    assert_eq!(want.lba0_code, got.lba0_code, "{case} {disk}: boot code");
}

/// Mounts undone in reverse order (children before parents), also when a
/// test panics.
struct Stack(Vec<Mounted>);

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(m) = self.0.pop() {
            drop(m);
        }
    }
}

/// Whatever is mounted under a target root is unmounted when the test
/// ends, also when it panics.
struct TargetRoot(PathBuf);

impl Drop for TargetRoot {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = rewind::layout::mount::unmount_below(&self.0);
        }
    }
}

/// Source of the pattern written to partition N / the boot gap.
fn seed_of(n: u32) -> u8 {
    0x40 + n as u8
}

/// Build, capture, wipe, recreate, compare.
fn run_case(case: &Case) {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let src_root = dir.join("src");
    let raw_dir = dir.join("raw");
    std::fs::create_dir_all(&raw_dir).unwrap();

    // --- build and capture
    let mut disks = Vec::new();
    let mut mounts = Stack(Vec::new());
    let mut mount_plan = Vec::new(); // (disk index, partition, point, root, type)
    for (i, spec) in case.disks.iter().enumerate() {
        let disk = LoopDisk::new(dir, spec.image, spec.mib, spec.table);
        for p in spec.prep {
            match p {
                Prep::Make(n, tool, args) => {
                    let node = disk.part(*n);
                    let args: Vec<&str> = args
                        .iter()
                        .map(|a| if *a == "{}" { node.as_str() } else { a })
                        .collect();
                    sh(tool, &args);
                }
                Prep::Pattern(n) => {
                    let node = disk.part(*n);
                    let len = part_bytes(&node) as usize;
                    write_at(&node, 0, &pattern(seed_of(*n), len));
                }
                Prep::BootCode => write_at(&disk.dev, 0, &pattern(0xb0, 440)),
                Prep::BootGap => write_at(&disk.dev, 512 * 5, &pattern(0x9a, 4096)),
                Prep::Subvolume(n, name) => {
                    let top = dir.join(format!("top{i}"));
                    let m = Mounted::new(&disk.part(*n), &top, &[]);
                    sh(
                        "btrfs",
                        &["subvolume", "create", top.join(name).to_str().unwrap()],
                    );
                    drop(m);
                }
                Prep::Mount(n, point, options) => {
                    let fs_type = blkid_export(&disk.part(*n))
                        .get("TYPE")
                        .cloned()
                        .unwrap_or_default();
                    let root = options
                        .split(',')
                        .find_map(|o| o.strip_prefix("subvol="))
                        .map(|s| format!("/{s}"));
                    mount_plan.push((
                        i,
                        *n,
                        *point,
                        root.unwrap_or_else(|| "/".into()),
                        fs_type.clone(),
                    ));
                    if fs_type != "vfat" {
                        let at = src_root.join(point.trim_start_matches('/'));
                        let opts: Vec<&str> = if options.is_empty() {
                            vec![]
                        } else {
                            vec![options]
                        };
                        mounts.0.push(Mounted::new(&disk.part(*n), &at, &opts));
                    }
                }
            }
        }
        disks.push(disk);
    }
    let manifest = dir.join("manifest.xml");
    let mut args = vec![
        "capture",
        "--manifest-only",
        "-o",
        manifest.to_str().unwrap(),
    ];
    for d in &disks {
        args.extend(["--disk", d.dev.as_str()]);
    }
    let out = rewind(&args, None);
    assert!(
        out.status.success(),
        "{}: capture: {}",
        case.name,
        text(&out.stderr)
    );
    // vfat cannot be mounted on this host, so nothing recorded the ESP's
    // mount point: add it, as a capture on a real machine would have it.
    let mut m = rewind::manifest::load(&manifest).unwrap();
    for (i, n, point, _, fs_type) in &mount_plan {
        if fs_type == "vfat" {
            let fs = m
                .filesystems
                .iter_mut()
                .find(|f| {
                    f.disk.as_deref() == Some(disks[*i].name().as_str()) && f.partition == Some(*n)
                })
                .unwrap();
            fs.mounts.push(rewind::manifest::Mount {
                point: src_root
                    .join(point.trim_start_matches('/'))
                    .display()
                    .to_string(),
                options: "rw,relatime".into(),
                root: "/".into(),
            });
        }
    }
    std::fs::write(&manifest, rewind::manifest::to_xml(&m).unwrap()).unwrap();

    // --- what must come back
    let names: Vec<String> = disks.iter().map(|d| d.name()).collect();
    let mut wanted = Vec::new();
    let mut raws: Vec<(usize, u32, Vec<u8>)> = Vec::new();
    let mut gaps: Vec<(usize, Vec<u8>)> = Vec::new();
    drop(mounts); // mounted, ext3/4 carry needs_recovery and blkid reports less
    for (i, (spec, d)) in case.disks.iter().zip(&disks).enumerate() {
        let s = state(d);
        let sectors = spec.mib << 11;
        wanted.push(expected(s, sectors, case.scale, case.grow));
        for p in spec.prep {
            match p {
                Prep::Pattern(n) => {
                    let bytes = read_at(&d.part(*n), 0, part_bytes(&d.part(*n)) as usize);
                    std::fs::write(raw_dir.join(format!("{}.p{n}.raw", names[i])), &bytes).unwrap();
                    raws.push((i, *n, bytes));
                }
                Prep::BootGap => {
                    let bytes = read_at(&d.dev, 512, 2047 * 512);
                    std::fs::write(raw_dir.join(format!("{}.boot-gap.raw", names[i])), &bytes)
                        .unwrap();
                    gaps.push((i, bytes));
                }
                _ => {}
            }
        }
    }

    // --- wipe: detach, zero the images at the target size, attach anew
    let images: Vec<PathBuf> = disks.iter().map(|d| d.image.clone()).collect();
    drop(disks);
    let targets: Vec<LoopDisk> = case
        .disks
        .iter()
        .zip(&images)
        .map(|(spec, img)| {
            let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
            f.set_len(0).unwrap();
            f.set_len((spec.mib * case.scale) << 20).unwrap();
            drop(f);
            LoopDisk::attach(img)
        })
        .collect();

    // --- recreate
    let target_root = dir.join("target");
    let mut args = vec![
        "recreate".to_string(),
        manifest.display().to_string(),
        "--target-root".into(),
        target_root.display().to_string(),
        "--raw-dir".into(),
        raw_dir.display().to_string(),
        "--skip-mount".into(),
        "vfat".into(),
        "--yes".into(),
    ];
    if case.grow {
        args.push("--grow".into());
    }
    for (name, t) in names.iter().zip(&targets) {
        args.push("--disk".into());
        args.push(format!("{name}={}", t.dev));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let target_guard = TargetRoot(target_root.clone());
    let out = rewind(&args, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        panic!("{}: recreate failed:\n{stdout}\n{stderr}", case.name);
    }
    eprintln!("{}:\n{stdout}{stderr}", case.name);
    for marker in [
        "== plan",
        "== partition",
        "== format",
        "== mount",
        "== done",
    ] {
        assert!(
            stdout.contains(marker),
            "{}: no {marker:?} in\n{stdout}",
            case.name
        );
    }
    assert!(!stderr.contains("warning"), "{}: {stderr}", case.name);

    // --- mounted under the target root, as captured
    let mountinfo = rewind::probe::fs::parse_mountinfo(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
    )
    .unwrap();
    let target_canon = std::fs::canonicalize(&target_root).unwrap();
    let src_canon = std::fs::canonicalize(dir).unwrap().join("src");
    for (i, n, point, root, fs_type) in &mount_plan {
        let captured_point = src_canon.join(point.trim_start_matches('/'));
        let at = target_canon.join(captured_point.strip_prefix("/").unwrap());
        let found = mountinfo
            .iter()
            .rev()
            .find(|mi| Path::new(&mi.mount_point) == at);
        if fs_type == "vfat" {
            assert!(found.is_none(), "{}: vfat is skipped", case.name);
            assert!(
                stdout.contains("not mounted: vfat is in --skip-mount"),
                "{stdout}"
            );
            continue;
        }
        let mi =
            found.unwrap_or_else(|| panic!("{}: nothing mounted at {}", case.name, at.display()));
        assert_eq!(
            mi.source,
            targets[*i].part(*n),
            "{}: source of {}",
            case.name,
            at.display()
        );
        assert_eq!(
            &mi.root,
            root,
            "{}: subvolume at {}",
            case.name,
            at.display()
        );
        assert!(
            mi.mount_options.starts_with("rw"),
            "{}: {} is {}",
            case.name,
            at.display(),
            mi.mount_options
        );
    }
    // Unmounted by rewind's own unmount, children first.
    rewind::layout::mount::unmount_below(&target_root).unwrap();
    assert!(
        rewind::layout::mount::mounts_below(&target_canon)
            .unwrap()
            .is_empty()
    );

    drop(target_guard);

    // --- the same layout, filesystems and raw bytes
    for (i, t) in targets.iter().enumerate() {
        assert_same(case.name, &names[i], &wanted[i], &state(t));
    }
    for (i, n, bytes) in &raws {
        let node = targets[*i].part(*n);
        assert!(
            read_at(&node, 0, bytes.len()) == *bytes,
            "{}: raw partition {n}",
            case.name
        );
    }
    for (i, bytes) in &gaps {
        assert!(
            read_at(&targets[*i].dev, 512, bytes.len()) == *bytes,
            "{}: boot gap",
            case.name
        );
    }
    if case.grow {
        // The grown ext4 fills its partition.
        for t in &targets {
            let last = *sfdisk_dump(&t.image).partitions.keys().max().unwrap();
            let node = t.part(last);
            let info = sh("dumpe2fs", &["-h", &node]);
            let field = |k: &str| -> u64 {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            let fs_bytes = field("Block count:") * field("Block size:");
            let part = part_bytes(&node);
            assert!(
                part - fs_bytes < field("Block size:") * 8,
                "{}: {node}: fs {fs_bytes} in {part}",
                case.name
            );
        }
    }
    eprintln!(
        "{}: ok in {:.1} s",
        case.name,
        started.elapsed().as_secs_f32()
    );
}

#[test]
fn recreates_captured_layouts() {
    if !root_or_skip("recreates_captured_layouts") {
        return;
    }
    for case in CASES {
        run_case(case);
    }
}

fn hash(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

/// A GPT disk with an ext4 and an xfs partition, captured and zeroed; the
/// returned image is attached again as `target` with the given size.
fn captured_disk(dir: &Path, target_mib: u64) -> (PathBuf, String, LoopDisk) {
    let src = LoopDisk::new(
        dir,
        "src.img",
        400,
        &format!("label: gpt\nstart=2048, size=65536, type={LINUX}\nstart=67584, type={LINUX}\n"),
    );
    sh("mkfs.ext4", &["-q", "-F", &src.part(1)]);
    sh("mkfs.xfs", &["-q", "-f", &src.part(2)]);
    let manifest = dir.join("manifest.xml");
    let out = rewind(
        &[
            "capture",
            "--manifest-only",
            "--disk",
            &src.dev,
            "-o",
            manifest.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let name = src.name();
    drop(src);
    let img = dir.join("target.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(target_mib << 20).unwrap();
    drop(f);
    // Something to notice a write by: a pattern at both ends.
    let target = LoopDisk::attach(&img);
    write_at(&target.dev, 0, &pattern(1, 1 << 20));
    write_at(&target.dev, (target_mib - 1) << 20, &pattern(2, 1 << 20));
    (manifest, name, target)
}

#[test]
fn refuses_before_writing_anything() {
    if !root_or_skip("refuses_before_writing_anything") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (manifest, name, small) = captured_disk(dir, 200);
    let m = manifest.to_str().unwrap();
    let root = dir.join("target");
    let root = root.to_str().unwrap();
    let before = hash(&small.image);
    let map = format!("{name}={}", small.dev);

    // Too small.
    let out = rewind(
        &[
            "recreate",
            m,
            "--disk",
            &map,
            "--target-root",
            root,
            "--yes",
        ],
        None,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "captured disk {name} (400.0 MiB, 419430400 bytes) does not fit on {} (200.0 MiB, 209715200 bytes): it is too small",
            small.dev
        )),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("== partition"));
    assert_eq!(hash(&small.image), before, "the target is unchanged");

    // Big enough, but no --yes: the plan is printed, nothing written.
    drop(small);
    let big_img = dir.join("big.img");
    std::fs::File::create(&big_img)
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    let big = LoopDisk::attach(&big_img);
    let before = hash(&big.image);
    let map = format!("{name}={}", big.dev);
    let out = rewind(
        &["recreate", m, "--disk", &map, "--target-root", root],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pass --yes to write these disks"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("mkfs.xfs"), "the plan is shown");
    assert_eq!(hash(&big.image), before);

    // A missing mkfs is found before the first write.
    let path = tool_dir(dir, "nomkfs", None);
    let out = rewind(
        &[
            "recreate",
            m,
            "--disk",
            &map,
            "--target-root",
            root,
            "--yes",
        ],
        Some(&path),
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("nothing was written: mkfs.xfs not found on PATH"),
        "{err}"
    );
    assert_eq!(hash(&big.image), before);

    // A disk in use (a partition mounted) is refused even when named.
    let busy = LoopDisk::new(
        dir,
        "busy.img",
        400,
        &format!("label: gpt\nstart=2048, type={LINUX}\n"),
    );
    sh("mkfs.ext4", &["-q", "-F", &busy.part(1)]);
    // Mounted read-only: the image does not change under the test.
    let mounted = Mounted::new(&busy.part(1), &dir.join("busy"), &["ro"]);
    let before = hash(&busy.image);
    let map = format!("{name}={}", busy.dev);
    let out = rewind(
        &[
            "recreate",
            m,
            "--disk",
            &map,
            "--target-root",
            root,
            "--yes",
        ],
        None,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "{} is in use ({} is mounted at",
            busy.dev,
            busy.part(1)
        )),
        "{err}"
    );
    assert_eq!(hash(&busy.image), before);
    drop(mounted);
}

#[test]
fn plan_lists_only_mapped_disks() {
    if !root_or_skip("plan_lists_only_mapped_disks") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let a = LoopDisk::new(
        dir,
        "a.img",
        64,
        &format!("label: gpt\nstart=2048, type={LINUX}\n"),
    );
    let b = LoopDisk::new(dir, "b.img", 32, "label: dos\nstart=2048, type=83\n");
    sh("mkfs.ext4", &["-q", "-F", &a.part(1)]);
    sh("mkfs.ext2", &["-q", "-F", &b.part(1)]);
    let manifest = dir.join("m.xml");
    let out = rewind(
        &[
            "capture",
            "--manifest-only",
            "--disk",
            &a.dev,
            "--disk",
            &b.dev,
            "-o",
            manifest.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let map = format!("{}={}", b.name(), b.dev);
    for json in [false, true] {
        let mut args = vec!["plan", manifest.to_str().unwrap(), "--disk", &map];
        if json {
            args.push("--json");
        }
        let out = rewind(&args, None);
        let plan = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(mentions(&plan, &b.name()), "{plan}");
        assert!(!mentions(&plan, &a.name()), "{plan}");
    }
}

/// Whether `text` holds `word` not as part of a longer name (`loop3`
/// but not `loop30`).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// A directory of symlinks to the tools recreate runs, for a PATH where
/// mkfs.xfs is missing (`fake: None`) or is a script (`Some(body)`).
fn tool_dir(dir: &Path, name: &str, fake: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join(name);
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "wipefs",
        "mke2fs",
        "tune2fs",
        "resize2fs",
        "dumpe2fs",
        "mkfs.fat",
        "mkswap",
        "xfs_db",
        "blkid",
        "mkfs.btrfs",
        "btrfs",
    ] {
        let real = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is needed for this test"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    if let Some(body) = fake {
        let p = bin.join("mkfs.xfs");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.display().to_string()
}

#[test]
fn a_failure_halfway_names_stage_device_and_stderr() {
    if !root_or_skip("a_failure_halfway_names_stage_device_and_stderr") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (manifest, name, target) = captured_disk(dir, 400);
    let path = tool_dir(
        dir,
        "failing",
        Some("echo \"mkfs.xfs: cannot open $*: simulated failure\" >&2\nexit 1"),
    );
    let map = format!("{name}={}", target.dev);
    let root = dir.join("target");
    let out = rewind(
        &[
            "recreate",
            manifest.to_str().unwrap(),
            "--disk",
            &map,
            "--target-root",
            root.to_str().unwrap(),
            "--yes",
        ],
        Some(&path),
    );
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success());
    assert!(
        stdout.contains("== partition") && stdout.contains("== format"),
        "{stdout}"
    );
    assert!(!stdout.contains("== mount"), "{stdout}");
    let p2 = target.part(2);
    for want in [
        format!("format stage failed on {p2}"),
        "`mkfs.xfs -q -f -m uuid=".to_string(),
        "failed (exit status: 1): mkfs.xfs: cannot open".to_string(),
        "simulated failure".to_string(),
    ] {
        assert!(err.contains(&want), "{want:?} not in: {err}");
    }
    // The stage before it did its work: partition 1 holds its ext4.
    assert_eq!(
        blkid_export(&target.part(1))
            .get("TYPE")
            .map(String::as_str),
        Some("ext4")
    );
}

/// What the plan says is on a disk, on real loop devices: blank (zeros and
/// no signature), unrecognised data at either end, a partition table and
/// each partition's filesystem as blkid sees it.
#[test]
fn a_disk_is_blank_or_says_what_it_holds() {
    use rewind::layout::present::{Contents, describe, examine};
    if !root_or_skip("a_disk_is_blank_or_says_what_it_holds") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let sys = Path::new("/sys");
    let img = t.path().join("blank.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let blank = LoopDisk::attach(&img);
    let d = describe(sys, &blank.name()).unwrap();
    assert_eq!(d.transport.as_deref(), Some("loop"));
    assert_eq!(examine(sys, &d), (Contents::Blank, None));
    // One byte in the last MiB, nothing blkid knows.
    write_at(&blank.dev, (64 << 20) - 100, b"x");
    assert_eq!(
        examine(sys, &d).0,
        Contents::Holds(vec![format!(
            "data blkid does not recognise (a byte that is not zero at offset {})",
            (64u64 << 20) - 100
        )])
    );
    drop(blank);

    let used = LoopDisk::new(
        t.path(),
        "used.img",
        64,
        &format!("label: gpt\nstart=2048, size=32768, type={LINUX}\nstart=34816, type={LINUX}\n"),
    );
    sh("mkfs.ext4", &["-q", "-F", "-L", "data", &used.part(1)]);
    let d = describe(sys, &used.name()).unwrap();
    let name = used.name();
    let (contents, table_id) = examine(sys, &d);
    assert_eq!(
        contents,
        Contents::Holds(vec![
            "gpt partition table".to_string(),
            format!("{name}p1 (16.0 MiB): ext4, label \"data\""),
            format!("{name}p2 (46.0 MiB): no filesystem blkid knows"),
        ])
    );
    // The table's identifier, as a recorded disk choice compares it: the
    // GPT's disk GUID, lower case.
    let guid = sh("sfdisk", &["--disk-id", &used.dev]);
    assert_eq!(table_id, Some(guid.trim().to_ascii_lowercase()));
}

/// A smaller disk (`--shrink`): ext4, xfs and btrfs with files, captured
/// with their data into a repository (the manifest records each one's
/// bytes and entries), recreated shrunk on a disk a third smaller and the
/// files restored into it; and refused, before any write, on a disk the
/// data does not fit, naming the disk and the numbers.
#[test]
fn shrinks_onto_a_smaller_disk_when_the_data_fits() {
    if !root_or_skip("shrinks_onto_a_smaller_disk_when_the_data_fits") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let src = LoopDisk::new(
        dir,
        "src.img",
        1200,
        &format!(
            "label: gpt\nstart=2048, size=500MiB, type={LINUX}\nsize=400MiB, type={LINUX}\ntype={LINUX}\n"
        ),
    );
    sh("mkfs.ext4", &["-q", "-F", "-L", "root", &src.part(1)]);
    sh("mkfs.xfs", &["-q", "-f", "-L", "data", &src.part(2)]);
    sh("mkfs.btrfs", &["-q", "-f", "-L", "home", &src.part(3)]);
    let src_root = dir.join("src");
    let mut files = Vec::new();
    {
        let mounts = Stack(vec![
            Mounted::new(&src.part(1), &src_root, &[]),
            Mounted::new(&src.part(2), &src_root.join("srv"), &[]),
            Mounted::new(&src.part(3), &src_root.join("home"), &[]),
        ]);
        for (at, count) in [("", 24u8), ("srv", 4), ("home", 4)] {
            let d = src_root.join(at).join("files");
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..count {
                let p = d.join(format!("f{i}"));
                std::fs::write(&p, pattern(i, 1 << 20)).unwrap();
                files.push((p, i));
            }
        }
        let out = rewind(
            &[
                "capture",
                "--repo",
                dir.join("repo").to_str().unwrap(),
                "--host",
                "shrinkhost",
                "--live",
                "--disk",
                &src.dev,
            ],
            None,
        );
        assert!(out.status.success(), "capture: {}", text(&out.stderr));
        drop(mounts);
    }
    // The snapshot's manifest, as the repository holds it.
    let manifest = dir.join("manifest.xml");
    let m = rewind::repo::Repo::open(&dir.join("repo"))
        .unwrap()
        .snapshots()
        .unwrap()
        .pop()
        .expect("one snapshot");
    std::fs::write(&manifest, rewind::manifest::to_xml(&m).unwrap()).unwrap();
    let root_fs = m
        .filesystems
        .iter()
        .find(|f| f.partition == Some(1))
        .unwrap();
    let data = root_fs.data.as_ref().expect("the root's data is recorded");
    assert!(data.bytes >= 24 << 20, "{} bytes recorded", data.bytes);
    let captured = sfdisk_dump(&src.image);
    let name = src.name();
    drop(src);
    let mf = manifest.to_str().unwrap();
    let target_root = dir.join("target");
    let tr = target_root.to_str().unwrap();

    // 600 MiB: the data does not fit (xfs alone needs 300 MiB, btrfs 256).
    let small_img = dir.join("small.img");
    std::fs::File::create(&small_img)
        .unwrap()
        .set_len(600 << 20)
        .unwrap();
    let small = LoopDisk::attach(&small_img);
    write_at(&small.dev, 0, &pattern(1, 1 << 20));
    let before = hash(&small.image);
    let map = format!("{name}={}", small.dev);
    let out = rewind(
        &[
            "recreate",
            mf,
            "--disk",
            &map,
            "--target-root",
            tr,
            "--shrink",
            "--yes",
        ],
        None,
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "captured disk {name} (1.2 GiB, 1258291200 bytes) does not fit on {} (600.0 MiB, \
             629145600 bytes): it is too small even shrunk (--shrink): the data needs a disk of \
             at least",
            small.dev
        )),
        "{err}"
    );
    assert!(err.contains("partition 2 (xfs "), "{err}");
    assert!(!text(&out.stdout).contains("== partition"));
    assert_eq!(hash(&small.image), before, "nothing written");
    drop(small);

    // 800 MiB, a third smaller: refused without --shrink, shrunk with it.
    let img = dir.join("target.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(800 << 20)
        .unwrap();
    let target = LoopDisk::attach(&img);
    let map = format!("{name}={}", target.dev);
    let out = rewind(
        &["recreate", mf, "--disk", &map, "--target-root", tr, "--yes"],
        None,
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("it is too small"));
    let guard = TargetRoot(target_root.clone());
    let out = rewind(
        &[
            "recreate",
            mf,
            "--disk",
            &map,
            "--target-root",
            tr,
            "--shrink",
            "--yes",
        ],
        None,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}{stderr}");
    assert!(
        stdout.contains(
            "shrink (--shrink): the captured layout needs 1.2 GiB, this disk has 800.0 MiB"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("partition 1 (ext4 "), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");

    // The table: same numbers, order, types and GUIDs, aligned, smaller,
    // the backup header at the new end.
    let got = sfdisk_dump(&img);
    assert_eq!(
        got.header.get("last-lba").map(String::as_str),
        Some("1638366")
    );
    assert_eq!(
        got.partitions.keys().collect::<Vec<_>>(),
        captured.partitions.keys().collect::<Vec<_>>()
    );
    let mut prev_end = 0;
    for (n, p) in &got.partitions {
        let c = &captured.partitions[n];
        let (start, size): (u64, u64) = (p["start"].parse().unwrap(), p["size"].parse().unwrap());
        let csize: u64 = c["size"].parse().unwrap();
        assert_eq!(start % 2048, 0, "partition {n} aligned");
        assert!(start >= prev_end, "order kept");
        assert!(size < csize, "partition {n} shrunk: {size} of {csize}");
        assert_eq!((&p["type"], &p["uuid"]), (&c["type"], &c["uuid"]));
        prev_end = start + size;
    }
    assert!(prev_end <= 1638366 + 1);
    // Each filesystem as captured (type, UUID, label) and filling its
    // partition.
    for n in 1..=3u32 {
        let b = blkid_export(&target.part(n));
        let fs = m
            .filesystems
            .iter()
            .find(|f| f.partition == Some(n))
            .unwrap();
        assert_eq!(b.get("UUID"), Some(&fs.uuid), "partition {n}");
        assert_eq!(b.get("TYPE").map(String::as_str), Some(fs.fs_type.name()));
    }
    let dump = sh("dumpe2fs", &["-h", &target.part(1)]);
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        field("Block count:") * field("Block size:"),
        part_bytes(&target.part(1))
    );

    // The files come back into the shrunk filesystems: restored at the
    // captured mount points under the target root.
    for fs in &m.filesystems {
        let point = &fs.mounts[0].point;
        let at = target_root.join(point.trim_start_matches('/'));
        let out = rewind(
            &[
                "restore",
                "--repo",
                dir.join("repo").to_str().unwrap(),
                "latest",
                "--fs",
                point,
                "--target",
                at.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "restore {point}: {}",
            text(&out.stderr)
        );
    }
    let canon_dir = std::fs::canonicalize(dir).unwrap();
    for (f, seed) in &files {
        let captured_at = canon_dir.join(f.strip_prefix(dir).unwrap());
        let back = target_root.join(captured_at.strip_prefix("/").unwrap());
        assert!(
            std::fs::read(&back).unwrap() == pattern(*seed, 1 << 20),
            "{} differs",
            back.display()
        );
    }
    drop(guard);
}
