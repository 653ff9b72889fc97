//! LVM: `vgs`/`pvs`/`lvs --reportformat json` and `vgcfgbackup` into a
//! `<vg>` element; the command lines that make the group again with every
//! UUID: `pvcreate --uuid --restorefile`, `vgcfgrestore`, and for thin
//! pools (whose metadata `vgcfgrestore` cannot recreate) `lvcreate`
//! followed by a second `vgcfgrestore` of the new metadata carrying the
//! captured LV UUIDs.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;

use super::{Argv, argv};
use crate::manifest::{LogicalVolume, PhysicalVolume, StackRef, VolumeGroup};

/// The fields each report asks for (`-o`), in the order the parsers read them.
pub const VGS_FIELDS: &str = "vg_name,vg_uuid,vg_extent_size,vg_extent_count,vg_tags";
pub const PVS_FIELDS: &str = "pv_name,vg_name,pv_uuid,dev_size,pv_size,pe_start,pv_pe_count";
pub const LVS_FIELDS: &str = "vg_name,lv_name,lv_uuid,lv_attr,lv_size,lv_active,lv_skip_activation,lv_tags,pool_lv,lv_metadata_size,segtype,seg_start_pe,seg_size_pe,stripes,stripe_size,chunk_size";

/// A report command: `vgs`, `pvs` or `lvs -a`, JSON, sizes in bytes.
pub fn report_command(tool: &str) -> Argv {
    let fields = match tool {
        "vgs" => VGS_FIELDS,
        "pvs" => PVS_FIELDS,
        _ => LVS_FIELDS,
    };
    let mut cmd = argv(&[tool]);
    if tool == "lvs" {
        cmd.push("-a".into());
    }
    cmd.extend(argv(&[
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        fields,
    ]));
    cmd
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<BTreeMap<String, Vec<T>>>,
}

/// Rows of one `--reportformat json` report (`vg`, `pv` or `lv`).
fn rows<T: for<'de> Deserialize<'de>>(json: &str, kind: &str) -> Result<Vec<T>> {
    let r: Report<T> = serde_json::from_str(json)
        .with_context(|| format!("the {kind}s JSON report does not parse"))?;
    Ok(r.report
        .into_iter()
        .filter_map(|mut m| m.remove(kind))
        .flatten()
        .collect())
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct VgRow {
    pub vg_name: String,
    pub vg_uuid: String,
    pub vg_extent_size: String,
    pub vg_extent_count: String,
    pub vg_tags: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PvRow {
    pub pv_name: String,
    pub vg_name: String,
    pub pv_uuid: String,
    pub dev_size: String,
    pub pv_size: String,
    pub pe_start: String,
    pub pv_pe_count: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LvRow {
    pub vg_name: String,
    pub lv_name: String,
    pub lv_uuid: String,
    pub lv_attr: String,
    pub lv_size: String,
    pub lv_active: String,
    pub lv_skip_activation: String,
    pub lv_tags: String,
    pub pool_lv: String,
    pub lv_metadata_size: String,
    pub segtype: String,
    pub stripes: String,
    pub stripe_size: String,
    pub chunk_size: String,
}

pub fn parse_vgs(json: &str) -> Result<Vec<VgRow>> {
    rows(json, "vg")
}
pub fn parse_pvs(json: &str) -> Result<Vec<PvRow>> {
    rows(json, "pv")
}
pub fn parse_lvs(json: &str) -> Result<Vec<LvRow>> {
    rows(json, "lv")
}

fn number(what: &str, v: &str) -> Result<u64> {
    v.trim()
        .parse()
        .with_context(|| format!("{what} {v:?} is not a number of bytes"))
}

fn tags(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// The `<vg>` element of group `name` from the three reports and its
/// vgcfgbackup text; `pv_ref` maps a PV's device path to the block device
/// it is. Hidden LVs (`[pool_tdata]`, RAID images) are left to the text.
pub fn to_element(
    name: &str,
    vgs: &[VgRow],
    pvs: &[PvRow],
    lvs: &[LvRow],
    metadata: &str,
    pv_ref: impl Fn(&str) -> Option<StackRef>,
) -> Result<VolumeGroup> {
    let vg = vgs
        .iter()
        .find(|v| v.vg_name == name)
        .with_context(|| format!("vgs does not report volume group {name}"))?;
    let extent_size = number("vg_extent_size", &vg.vg_extent_size)?;
    let pvs = pvs
        .iter()
        .filter(|p| p.vg_name == name)
        .map(|p| {
            Ok(PhysicalVolume {
                device: pv_ref(&p.pv_name).with_context(|| {
                    format!(
                        "volume group {name}: PV {} is not a captured disk, partition or volume",
                        p.pv_name
                    )
                })?,
                uuid: p.pv_uuid.clone(),
                size: number("dev_size", &p.dev_size)?,
                pe_start: number("pe_start", &p.pe_start)?,
                extents: number("pv_pe_count", &p.pv_pe_count)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // One row per segment: an LV's type and geometry are its first
    // segment's, and its segments must agree on the type.
    let mut out: Vec<LogicalVolume> = Vec::new();
    for row in lvs.iter().filter(|l| l.vg_name == name) {
        if row.lv_name.starts_with('[') {
            continue;
        }
        // lvs names a one-stripe segment `linear` (vgcfgbackup: "striped").
        let lv_type = row.segtype.clone();
        if let Some(prev) = out.iter().find(|l| l.uuid == row.lv_uuid) {
            if prev.lv_type != lv_type {
                bail!(
                    "LV {name}/{} mixes {} and {lv_type} segments, which rewind cannot recreate",
                    row.lv_name,
                    prev.lv_type
                );
            }
            continue;
        }
        let thin_pool = lv_type == "thin-pool";
        let opt = |what: &str, v: &str| -> Result<Option<u64>> {
            match v.trim() {
                "" | "0" => Ok(None),
                v => number(what, v).map(Some),
            }
        };
        let stripes = row.stripes.trim().parse::<u32>().ok().filter(|&s| s > 1);
        out.push(LogicalVolume {
            name: row.lv_name.clone(),
            uuid: row.lv_uuid.clone(),
            size: number("lv_size", &row.lv_size)?,
            stripes: if lv_type == "striped" { stripes } else { None },
            stripe_size: if lv_type == "striped" {
                opt("stripe_size", &row.stripe_size)?
            } else {
                None
            },
            pool: (lv_type == "thin" && !row.pool_lv.is_empty()).then(|| row.pool_lv.clone()),
            chunk_size: if thin_pool {
                opt("chunk_size", &row.chunk_size)?
            } else {
                None
            },
            metadata_size: if thin_pool {
                opt("lv_metadata_size", &row.lv_metadata_size)?
            } else {
                None
            },
            active: row.lv_active == "active",
            skip_activation: row.lv_skip_activation == "skip activation"
                || row.lv_attr.as_bytes().get(9) == Some(&b'k'),
            tags: tags(&row.lv_tags),
            lv_type,
        });
    }
    Ok(VolumeGroup {
        name: name.to_string(),
        uuid: vg.vg_uuid.clone(),
        extent_size,
        tags: tags(&vg.vg_tags),
        pvs,
        lvs: out,
        metadata: metadata.to_string(),
    })
}

/// Whether the group the reports show (after `vgscan`, before anything is
/// activated) is `want`: each difference, described. `pv_ref` maps a PV's
/// device path as `pvs` names it to the block device the plan puts it on.
/// Compared: the group's UUID and extent size, each PV's UUID, device and
/// extents, and each LV's UUID, size and type, a thin pool's chunk and
/// metadata size, a thin volume's pool; an LV the plan does not have is a
/// difference too.
pub fn open_diffs(
    want: &VolumeGroup,
    vgs: &[VgRow],
    pvs: &[PvRow],
    lvs: &[LvRow],
    pv_ref: impl Fn(&str) -> Option<StackRef>,
) -> Vec<String> {
    let got = match to_element(&want.name, vgs, pvs, lvs, "", pv_ref) {
        Ok(g) => g,
        Err(e) => return vec![format!("{e:#}")],
    };
    let mut diffs = Vec::new();
    let mut d = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{what} is {got}, the plan's {want}"));
        }
    };
    d("the UUID", want.uuid.clone(), got.uuid.clone());
    d(
        "the extent size",
        want.extent_size.to_string(),
        got.extent_size.to_string(),
    );
    d(
        "the PV count",
        want.pvs.len().to_string(),
        got.pvs.len().to_string(),
    );
    for pv in &want.pvs {
        match got.pvs.iter().find(|p| p.uuid == pv.uuid) {
            Some(p) => {
                d(
                    &format!("PV {}'s device", pv.uuid),
                    pv.device.to_string(),
                    p.device.to_string(),
                );
                d(
                    &format!("PV {}'s extents", pv.uuid),
                    pv.extents.to_string(),
                    p.extents.to_string(),
                );
            }
            None => d(&format!("PV {}", pv.uuid), "there".into(), "missing".into()),
        }
    }
    for lv in &want.lvs {
        let Some(g) = got.lvs.iter().find(|l| l.name == lv.name) else {
            d(&format!("LV {}", lv.name), "there".into(), "missing".into());
            continue;
        };
        let n = &lv.name;
        d(&format!("LV {n}'s UUID"), lv.uuid.clone(), g.uuid.clone());
        d(
            &format!("LV {n}'s size"),
            lv.size.to_string(),
            g.size.to_string(),
        );
        d(
            &format!("LV {n}'s type"),
            lv.lv_type.clone(),
            g.lv_type.clone(),
        );
        d(
            &format!("LV {n}'s pool"),
            format!("{:?}", lv.pool),
            format!("{:?}", g.pool),
        );
        d(
            &format!("LV {n}'s chunk size"),
            format!("{:?}", lv.chunk_size),
            format!("{:?}", g.chunk_size),
        );
        d(
            &format!("LV {n}'s metadata size"),
            format!("{:?}", lv.metadata_size),
            format!("{:?}", g.metadata_size),
        );
        d(
            &format!("LV {n}'s stripes"),
            format!("{:?}/{:?}", lv.stripes, lv.stripe_size),
            format!("{:?}/{:?}", g.stripes, g.stripe_size),
        );
    }
    for g in &got.lvs {
        if !want.lvs.iter().any(|l| l.name == g.name) {
            diffs.push(format!("LV {} is not in the plan", g.name));
        }
    }
    diffs
}

/// `pvcreate` giving `device` the PV's UUID and the captured label
/// geometry (from the group's vgcfgbackup file).
pub fn pvcreate_command(pv: &PhysicalVolume, device: &str, restore_file: &str) -> Argv {
    argv(&[
        "pvcreate",
        "--yes",
        "--force",
        "--uuid",
        &pv.uuid,
        "--restorefile",
        restore_file,
        device,
    ])
}

/// `vgcfgrestore` of a group from a vgcfgbackup file (`--force` when the
/// file holds thin pools: LVM insists, since it cannot vouch for the pool's
/// own metadata).
pub fn vgcfgrestore_command(vg: &str, file: &str, force: bool) -> Argv {
    let mut cmd = argv(&["vgcfgrestore", "--file", file]);
    if force {
        cmd.push("--force".into());
    }
    cmd.push(vg.into());
    cmd
}

/// The thin pools and thin volumes of a group, made by `lvcreate` (which
/// also writes the pool's own metadata): pools first, then their volumes.
pub fn thin_commands(vg: &VolumeGroup) -> Vec<Argv> {
    let mut cmds = Vec::new();
    for p in vg.lvs.iter().filter(|l| l.lv_type == "thin-pool") {
        let mut cmd = argv(&[
            "lvcreate",
            "--yes",
            "--type",
            "thin-pool",
            "--name",
            &p.name,
            "--size",
            &format!("{}b", p.size),
        ]);
        if let Some(c) = p.chunk_size {
            cmd.extend(argv(&["--chunksize", &format!("{}k", c / 1024)]));
        }
        if let Some(m) = p.metadata_size {
            cmd.extend(argv(&["--poolmetadatasize", &format!("{}b", m)]));
        }
        cmd.push(vg.name.clone());
        cmds.push(cmd);
    }
    for t in vg.lvs.iter().filter(|l| l.lv_type == "thin") {
        let pool = t.pool.as_deref().unwrap_or_default();
        cmds.push(argv(&[
            "lvcreate",
            "--yes",
            "--thin",
            "--name",
            &t.name,
            "--virtualsize",
            &format!("{}b", t.size),
            &format!("{}/{pool}", vg.name),
        ]));
    }
    cmds
}

/// Does the group need the thin-pool path (`thin_commands`)?
pub fn has_thin(vg: &VolumeGroup) -> bool {
    vg.lvs.iter().any(|l| l.lv_type == "thin-pool")
}

/// One LV section of the `logical_volumes` block of a vgcfgbackup text:
/// its name and the byte range of the whole section (name line to `}`).
fn lv_sections(text: &str) -> Result<Vec<(String, std::ops::Range<usize>)>> {
    let start = text
        .find("logical_volumes {")
        .context("the vgcfgbackup text has no logical_volumes section")?;
    let body = start + "logical_volumes {".len();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut section: Option<(String, usize)> = None;
    let mut line_start = body;
    for line in text[body..].split_inclusive('\n') {
        let trimmed = line.trim();
        if depth == 0 && trimmed == "}" {
            break;
        }
        if let Some(name) = trimmed.strip_suffix('{') {
            if depth == 0 {
                section = Some((name.trim().to_string(), line_start));
            }
            depth += 1;
        } else if trimmed == "}" {
            depth -= 1;
            if depth == 0
                && let Some((name, from)) = section.take()
            {
                out.push((name, from..line_start + line.len()));
            }
        }
        line_start += line.len();
    }
    Ok(out)
}

/// The LV whose extents end last on the PV with UUID `pv_uuid`, from a
/// vgcfgbackup text: its name and whether every segment of it is linear
/// (`striped` with one stripe), the only kind `--grow` extends (issue 13:
/// grow what is at the end of the stack, where that is safe). None when
/// nothing is allocated on that PV.
pub fn last_lv_on_pv(text: &str, pv_uuid: &str) -> Result<Option<(String, bool)>> {
    // The PV's key in this text (`pv0`): the section whose id is the UUID.
    let pvs_at = text
        .find("physical_volumes {")
        .context("the vgcfgbackup text has no physical_volumes section")?;
    let mut key = None;
    let mut section = None;
    for line in text[pvs_at..].lines().skip(1) {
        let t = line.trim();
        if let Some(name) = t.strip_suffix('{') {
            section = Some(name.trim().to_string());
        } else if t.starts_with("id = ") && t.contains(&format!("\"{pv_uuid}\"")) {
            key = section.clone();
            break;
        } else if t == "}" && section.is_none() {
            break;
        } else if t == "}" {
            section = None;
        }
    }
    let Some(key) = key else {
        bail!("PV {pv_uuid} is not in the group's vgcfgbackup text");
    };
    let quoted = format!("\"{key}\"");
    let mut last: Option<(u64, String, bool)> = None;
    for (name, range) in lv_sections(text)? {
        let lines: Vec<&str> = text[range].lines().map(str::trim).collect();
        let mut linear = true;
        let mut end_on_pv = None;
        // Each segment: extent_count, type, stripe_count, then its stripes.
        let (mut count, mut stripes) = (0u64, 1u64);
        for (i, l) in lines.iter().enumerate() {
            let value = |k: &str| {
                l.strip_prefix(k)
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .map(|v| {
                        v.split('#')
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .trim_matches('"')
                    })
            };
            if let Some(v) = value("extent_count") {
                count = v.parse().context("a segment's extent_count")?;
            } else if let Some(v) = value("stripe_count") {
                stripes = v.parse().context("a segment's stripe_count")?;
                linear &= stripes == 1;
            } else if let Some(v) = value("type") {
                linear &= v == "striped";
            } else if l.starts_with("stripes = [") {
                for s in lines[i + 1..].iter().take_while(|s| !s.starts_with(']')) {
                    let mut parts = s.split(',').map(str::trim);
                    if parts.next() == Some(quoted.as_str())
                        && let Some(Ok(start)) = parts.next().map(str::parse::<u64>)
                    {
                        let end = start + count / stripes.max(1);
                        end_on_pv = end_on_pv.max(Some(end));
                    }
                }
            }
        }
        if let Some(end) = end_on_pv
            && last.as_ref().is_none_or(|(e, _, _)| end > *e)
        {
            last = Some((end, name, linear));
        }
    }
    Ok(last.map(|(_, name, linear)| (name, linear)))
}

/// `pvresize` of a PV on a device that grew, then `lvextend` of `lv` by
/// `extents` onto the new extents of that PV only.
pub fn grow_commands(vg: &str, device: &str, lv: Option<(&str, u64)>) -> Vec<Argv> {
    let mut cmds = vec![argv(&["pvresize", "--yes", device])];
    if let Some((lv, extents)) = lv {
        cmds.push(argv(&[
            "lvextend",
            "--yes",
            "--extents",
            &format!("+{extents}"),
            &format!("{vg}/{lv}"),
            device,
        ]));
    }
    cmds
}

/// The vgcfgbackup text without the thin pools, their thin volumes and
/// hidden parts (`_tdata`, `_tmeta`, `lvol0_pmspare`): what the first
/// `vgcfgrestore` puts back before `thin_commands` make them.
pub fn metadata_without_thin(vg: &VolumeGroup) -> Result<String> {
    let thin: Vec<&str> = vg
        .lvs
        .iter()
        .filter(|l| l.lv_type == "thin-pool" || l.lv_type == "thin")
        .map(|l| l.name.as_str())
        .collect();
    let pools: Vec<&str> = vg
        .lvs
        .iter()
        .filter(|l| l.lv_type == "thin-pool")
        .map(|l| l.name.as_str())
        .collect();
    let drop = |name: &str| {
        thin.contains(&name)
            || name.starts_with("lvol") && name.ends_with("_pmspare")
            || pools.iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|rest| rest == "_tdata" || rest == "_tmeta")
            })
    };
    let mut text = vg.metadata.clone();
    for (name, range) in lv_sections(&vg.metadata)?.into_iter().rev() {
        if drop(&name) {
            text.replace_range(range, "");
        }
    }
    Ok(text)
}

/// A vgcfgbackup text (of the group as `thin_commands` made it) with each
/// named LV's `id` set back to the captured UUID, for the second
/// `vgcfgrestore`. Every LV of `vg` must be in the text.
pub fn with_captured_lv_ids(text: &str, vg: &VolumeGroup) -> Result<String> {
    let mut out = text.to_string();
    for (name, range) in lv_sections(text)?.into_iter().rev() {
        let Some(lv) = vg.lvs.iter().find(|l| l.name == name) else {
            continue;
        };
        let section = &text[range.clone()];
        let id_at = section
            .find("id = \"")
            .with_context(|| format!("LV {name} has no id in the vgcfgbackup text"))?;
        let id_start = range.start + id_at + "id = \"".len();
        let id_end = id_start
            + text[id_start..]
                .find('"')
                .with_context(|| format!("LV {name}'s id is not closed"))?;
        out.replace_range(id_start..id_end, &lv.uuid);
    }
    for lv in &vg.lvs {
        if !out.contains(&lv.uuid) {
            bail!(
                "LV {}/{} is not in the new vgcfgbackup text",
                vg.name,
                lv.name
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/stack")
                .join(name),
        )
        .unwrap()
    }

    fn vg0() -> VolumeGroup {
        let vgs = parse_vgs(&fixture("lvm-vgs.json")).unwrap();
        let pvs = parse_pvs(&fixture("lvm-pvs.json")).unwrap();
        let lvs = parse_lvs(&fixture("lvm-lvs.json")).unwrap();
        let text = fixture("lvm-vg0-thin.vg");
        to_element("vg0", &vgs, &pvs, &lvs, &text, |dev| {
            (dev == "/dev/loop0").then(|| StackRef::Luks("cryptroot".into()))
        })
        .unwrap()
    }

    #[test]
    fn the_last_lv_on_a_pv_is_found_with_whether_it_is_linear() {
        let pv = "Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn";
        // lvol0_pmspare holds extent 243, after root, swap, secret and the
        // pool's parts.
        assert_eq!(
            last_lv_on_pv(&fixture("lvm-vg0-thin.vg"), pv).unwrap(),
            Some(("lvol0_pmspare".to_string(), true))
        );
        // secret (1794..1858) ends after pool_tdata and pool_tmeta.
        assert_eq!(
            last_lv_on_pv(&fixture("vg0.vg"), pv).unwrap(),
            Some(("secret".to_string(), true))
        );
        let err = last_lv_on_pv(&fixture("vg0.vg"), "no-such-pv").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-pv"), "{err:#}");
        // A striped LV is not linear.
        let striped = fixture("vg0.vg").replacen("stripe_count = 1", "stripe_count = 2", 1);
        let text = striped.replacen("\"pv0\", 0\n", "\"pv0\", 0,\n\t\t\t\t\t\"pv0\", 4000\n", 1);
        assert_eq!(
            last_lv_on_pv(&text, pv).unwrap(),
            Some(("root".to_string(), false))
        );
        assert_eq!(
            grow_commands("vg0", "/dev/sda2", Some(("root", 25))),
            vec![
                argv(&["pvresize", "--yes", "/dev/sda2"]),
                argv(&[
                    "lvextend",
                    "--yes",
                    "--extents",
                    "+25",
                    "vg0/root",
                    "/dev/sda2"
                ]),
            ]
        );
    }

    #[test]
    fn reports_of_a_group_with_a_thin_pool() {
        let vg = vg0();
        assert_eq!(vg.uuid, "WWzS2m-Fgfi-scg5-qBKf-fc6V-gR6w-Cz4Fxk");
        assert_eq!(vg.extent_size, 4 << 20);
        assert_eq!(vg.tags, ["site-a"]);
        assert_eq!(vg.pvs.len(), 1);
        let pv = &vg.pvs[0];
        assert_eq!(pv.device, StackRef::Luks("cryptroot".into()));
        assert_eq!(pv.uuid, "Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn");
        assert_eq!(
            (pv.size, pv.pe_start, pv.extents),
            (2_147_483_648, 1 << 20, 511)
        );
        let names: Vec<(&str, &str)> = vg
            .lvs
            .iter()
            .map(|l| (l.name.as_str(), l.lv_type.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("home", "thin"),
                ("pool", "thin-pool"),
                ("root", "linear"),
                ("secret", "linear"),
                ("swap", "linear")
            ]
        );
        let pool = &vg.lvs[1];
        assert_eq!(pool.chunk_size, Some(64 << 10));
        assert_eq!(pool.metadata_size, Some(4 << 20));
        assert_eq!(pool.size, 256 << 20);
        let home = &vg.lvs[0];
        assert_eq!((home.size, home.pool.as_deref()), (1 << 30, Some("pool")));
        assert_eq!(vg.lvs[3].tags, ["backup"]);
        // What validation would say of it inside a manifest.
        assert!(vg.metadata.contains(&vg.uuid));
        for lv in &vg.lvs {
            assert!(vg.metadata.contains(&lv.uuid), "{}", lv.name);
        }
    }

    #[test]
    fn a_pv_on_an_uncaptured_device_is_an_error() {
        let vgs = parse_vgs(&fixture("lvm-vgs.json")).unwrap();
        let pvs = parse_pvs(&fixture("lvm-pvs.json")).unwrap();
        let e = to_element("vg0", &vgs, &pvs, &[], "", |_| None).unwrap_err();
        assert!(e.to_string().contains("PV /dev/loop0"), "{e}");
        let e = to_element("vg9", &vgs, &pvs, &[], "", |_| None).unwrap_err();
        assert!(e.to_string().contains("vg9"), "{e}");
    }

    #[test]
    fn commands_that_make_the_group_again() {
        let vg = vg0();
        assert_eq!(
            report_command("lvs")[..4],
            ["lvs", "-a", "--reportformat", "json"]
        );
        assert_eq!(
            pvcreate_command(&vg.pvs[0], "/dev/mapper/cryptroot", "/run/vg0.vg").join(" "),
            "pvcreate --yes --force --uuid Tq5wEr-Yu7i-Op9a-Sd2f-Gh4j-Kl6z-Xc8vBn \
             --restorefile /run/vg0.vg /dev/mapper/cryptroot"
        );
        assert!(has_thin(&vg));
        assert_eq!(
            vgcfgrestore_command("vg0", "/run/vg0.vg", false).join(" "),
            "vgcfgrestore --file /run/vg0.vg vg0"
        );
        let thin: Vec<String> = thin_commands(&vg).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            thin,
            [
                "lvcreate --yes --type thin-pool --name pool --size 268435456b --chunksize 64k \
                 --poolmetadatasize 4194304b vg0",
                "lvcreate --yes --thin --name home --virtualsize 1073741824b vg0/pool",
            ]
        );
    }

    #[test]
    fn thin_pools_are_taken_out_then_given_their_ids_back() {
        let vg = vg0();
        let first = metadata_without_thin(&vg).unwrap();
        for gone in [
            "pool {",
            "home {",
            "pool_tdata {",
            "pool_tmeta {",
            "lvol0_pmspare {",
        ] {
            assert!(!first.contains(gone), "{gone} still in:\n{first}");
        }
        for kept in ["root {", "swap {", "secret {", "physical_volumes {"] {
            assert!(first.contains(kept), "{kept} lost:\n{first}");
        }
        // Braces still balance.
        assert_eq!(first.matches('{').count(), first.matches('}').count());
        // The group as lvcreate made it again: the same text with other LV ids.
        let remade = vg.lvs.iter().fold(vg.metadata.clone(), |t, lv| {
            t.replace(&lv.uuid, &format!("NEW{}", &lv.uuid[3..]))
        });
        assert!(!remade.contains(&vg.lvs[0].uuid));
        let fixed = with_captured_lv_ids(&remade, &vg).unwrap();
        assert_eq!(fixed, vg.metadata);
        // An LV lvcreate did not make is an error, not a silent loss.
        let e = with_captured_lv_ids(&first, &vg).unwrap_err();
        assert!(
            e.to_string().contains("is not in the new vgcfgbackup text"),
            "{e}"
        );
    }
}
