//! Tier 3 (root, QEMU, REWIND_IMAGE): LUKS key escrow end to end, with
//! Debian's kernel and cryptsetup in the live image. A LUKS2 volume is
//! made and opened in the guest; its volume key is read from the mapping
//! and escrowed with a real `rewind serve` on the host by the capture's
//! code (`escrow::source`, through the console); a recovery of the host
//! is armed and its recovery token gets the key back; then, on a blank
//! second disk, the captured header is written back and the volume opened
//! with the escrowed key by rewind's own plan and stack executor — the
//! data written before reads back through it, and the original
//! passphrase still opens the recovered header.
//!
//!     REWIND_IMAGE=target/image cargo test --test qemu_escrow -- --nocapture

// Test code: a failed unwrap is a failed test; helpers are shared by files.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;
mod qemu_util;
mod server_util;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use qemu_util::{Boot, Console, Image, Qemu};
use rewind::escrow::source::{self, EscrowOptions, Mappings};
use rewind::layout::plan::{PlanOptions, plan};
use rewind::layout::present::PresentDisk;
use rewind::layout::stack_run::{self, StackRunner};
use rewind::manifest::{LuksHeader, from_xml, validate};
use rewind::stack::luks;

const MIB: u64 = 1 << 20;
const DISK: u64 = 48 * MIB;
const MARKER: &str = "rewind-escrow-marker-0123456789";

impl Mappings for Console<'_> {
    fn table(&mut self, mapping: &str) -> Result<String> {
        StackRunner::run(self, &luks::show_keys_command(mapping))
    }
}

#[test]
fn an_escrowed_volume_key_opens_the_restored_header_with_no_passphrase() {
    let Some(img) =
        Image::get("an_escrowed_volume_key_opens_the_restored_header_with_no_passphrase")
    else {
        return;
    };
    let _vm_lock = qemu_util::one_vm();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disks: Vec<PathBuf> = ["source.img", "blank.img"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::File::create(&p).unwrap().set_len(DISK).unwrap();
            p
        })
        .collect();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("escrow.log");
    let started = std::time::Instant::now();
    let mut vm = Qemu::start(
        Boot::Direct(
            &img,
            "console=ttyS0,115200 rewind.action=shell rewind.done=poweroff rewind.onfail=poweroff"
                .into(),
        ),
        &[&disks[0], &disks[1]],
        "52:54:00:ab:cd:e1",
        &log,
    );
    let t = vm.expect("emergency shell on /dev/ttyS0", Duration::from_secs(180));
    eprintln!("shell after {t:.1} s (log: {})", log.display());
    std::thread::sleep(Duration::from_secs(2));

    // The source machine: a LUKS2 volume with a passphrase, opened (the
    // key in the dm table, as LUKS1 and --disable-keyring keep it), data
    // written through it.
    vm.run_ok(
        "printf %s 'correct horse battery' > /tmp/pp && \
         cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
           --label escrowtest --key-file /tmp/pp /dev/vda && \
         cryptsetup open --disable-keyring --key-file /tmp/pp /dev/vda cryptroot && \
         cryptsetup luksHeaderBackup /dev/vda --header-backup-file /tmp/header",
        Duration::from_secs(120),
    );
    vm.run_ok(
        &format!("printf %s {MARKER} | dd of=/dev/mapper/cryptroot conv=fsync 2>/dev/null"),
        Duration::from_secs(60),
    );

    // What capture records: the header's fields, the mapping's size.
    let head = Console(&mut vm).read_head("/dev/vda", 16384).unwrap();
    let h = luks::parse_header(&head).unwrap();
    let size: u64 = vm
        .run_ok(
            "blockdev --getsize64 /dev/mapper/cryptroot",
            Duration::from_secs(30),
        )
        .trim()
        .parse()
        .unwrap();
    let mut luks_el = luks::to_element("cryptroot", "disk/vda".parse().unwrap(), size, &h).unwrap();
    luks_el.header = Some(LuksHeader {
        tree: "7d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6"
            .parse()
            .unwrap(),
        bytes: h.data_offset,
    });
    let mut m = from_xml(&format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest schema="2">
  <snapshot id="qemu-escrow" host="qemu-escrow" time="2026-11-30T12:00:00Z" tool="rewind test"/>
  <system>
    <hostname>qemu-escrow</hostname>
    <kernel release="6.1.0" arch="x86_64"/>
    <firmware>bios</firmware>
  </system>
  <disk name="vda" path="/dev/vda" size="{DISK}" logical-sector-size="512" physical-sector-size="512"/>
</manifest>
"#
    ))
    .unwrap();
    m.luks.push(luks_el);

    // The server, with its master key; the capture escrows the key.
    let sdir = tempfile::tempdir().unwrap();
    let data = sdir.path().join("data");
    let key_file = sdir.path().join("master.key");
    let s = server_util::ServerProc::start_with(
        &data,
        "127.0.0.1:0",
        false,
        None,
        &[
            "--key-file",
            key_file.to_str().unwrap(),
            "--create-key-file",
        ],
    );
    let host_token = s.host_token("qemu-escrow");
    let opts = EscrowOptions {
        vault: Arc::new(rewind::client::ServerVault {
            client: Arc::new(s.client(&host_token)),
            host: "qemu-escrow".into(),
        }),
        key_files: vec![],
    };
    let (mut warnings, mut notes) = (vec![], vec![]);
    source::escrow_luks_keys(
        &mut m,
        &opts,
        &mut Console(&mut vm),
        &mut warnings,
        &mut notes,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let key_id = m.luks[0].escrow.as_ref().unwrap().key_id.clone();
    validate(&m).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("escrowed {key_id}");

    // The same volume opened the default way (LUKS2: the key in the
    // kernel keyring, unreadable): capture names the key the server holds.
    let mut again = m.clone();
    again.luks[0].escrow = None;
    again.luks[0].name = "kr".into();
    let shown = vm.run_ok(
        "cryptsetup close cryptroot && cryptsetup open --key-file /tmp/pp /dev/vda kr && dmsetup table --showkeys kr | cut -d' ' -f5 | cut -c1-10",
        Duration::from_secs(60),
    );
    eprintln!("the default open's table key starts {}", shown.trim());
    let (mut w2, mut n2) = (vec![], vec![]);
    source::escrow_luks_keys(&mut again, &opts, &mut Console(&mut vm), &mut w2, &mut n2);
    assert!(w2.is_empty(), "{w2:?}");
    assert_eq!(again.luks[0].escrow.as_ref().unwrap().key_id, key_id);
    vm.run_ok("cryptsetup close kr", Duration::from_secs(60));

    // The machine is lost; its data lands on a blank disk (here: the
    // encrypted area copied, as a block-level restore would), and a
    // recovery is armed: its token gets the key.
    let off_mib = h.data_offset / MIB;
    vm.run_ok(
        &format!(
            "dd if=/dev/vda of=/dev/vdb bs=1M skip={off_mib} seek={off_mib} conv=fsync 2>/dev/null"
        ),
        Duration::from_secs(120),
    );
    let (st, body) = server_util::put_snapshot(
        &s,
        &host_token,
        "qemu-escrow",
        "s1",
        "2026-11-30T12:00:00Z",
        "52:54:00:ab:cd:e1",
    );
    assert!(st.is_success(), "{body}");
    let armed = s
        .client(&s.admin)
        .create_request("qemu-escrow", &rewind::api::NewRequest::default())
        .unwrap();
    // The machine the request allows claims it (issue 15); keys go only to
    // the claim's token.
    let claimed = s
        .client(&armed.token)
        .claim(&rewind::api::ClaimRequest {
            request: None,
            host: None,
            machine: server_util::example_machine("52:54:00:ab:cd:e1"),
        })
        .unwrap();
    let released = s
        .client(&claimed.token)
        .escrowed_key("qemu-escrow", &key_id)
        .unwrap();
    assert_eq!(released.volume_uuid, h.uuid);
    let key = rewind::util::hex::decode(&released.key).unwrap();
    assert_eq!(key.len() * 8, h.key_size as usize);

    // The recovery's files, as its plan stage stages them
    // (escrow::staging, unit-tested): the key in a 0600 file, the header.
    // Here they cross the test's console; in a recovery they never do.
    let octal: String = key.iter().map(|b| format!("\\{b:03o}")).collect();
    vm.run_ok(
        &format!(
            "mkdir -p -m 700 /run/rewind/stack && (umask 077; printf '{octal}' > /run/rewind/stack/cryptroot.key) && \
             cp /tmp/header /run/rewind/stack/cryptroot.header && stat -c %a /run/rewind/stack/cryptroot.key"
        ),
        Duration::from_secs(60),
    );
    let present = vec![PresentDisk::bare("vdb", DISK)];
    let the_plan = plan(
        &m,
        &present,
        &PlanOptions {
            mapping: vec![("vda".into(), "/dev/vdb".into())],
            ..PlanOptions::default()
        },
    )
    .unwrap();
    eprintln!("{the_plan}");
    assert_eq!(the_plan.stack.len(), 1);
    let t = std::time::Instant::now();
    {
        let mut console = Console(&mut vm);
        stack_run::run(&the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
        stack_run::verify(&the_plan, &mut console).unwrap_or_else(|e| panic!("{e:#}"));
    }
    eprintln!(
        "header restored and volume opened in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The key file is gone; the data reads back through the escrowed key.
    let left = vm.run_ok("ls /run/rewind/stack/ | wc -l", Duration::from_secs(30));
    assert_eq!(left.trim(), "0", "files left: {left}");
    let read = vm.run_ok(
        &format!("head -c {} /dev/mapper/cryptroot", MARKER.len()),
        Duration::from_secs(30),
    );
    assert!(read.contains(MARKER), "{read}");
    // The machine's own passphrase still opens the recovered header.
    let dump = vm.run_ok(
        "cryptsetup close cryptroot && cryptsetup open --test-passphrase --key-file /tmp/pp /dev/vdb && echo PASSPHRASE-OK && cryptsetup luksUUID /dev/vdb",
        Duration::from_secs(60),
    );
    assert!(dump.contains("PASSPHRASE-OK"), "{dump}");
    assert!(dump.contains(&h.uuid), "{dump}");
    vm.type_line("exit");
    vm.expect("starting another", Duration::from_secs(30));
    vm.type_line("poweroff");
    vm.expect("rewind: powering off", Duration::from_secs(60));
    assert!(vm.wait_exit(Duration::from_secs(60)).success());
    eprintln!("qemu_escrow took {:.0} s", started.elapsed().as_secs_f64());
}
