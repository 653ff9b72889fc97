//! GRUB scripts for a UEFI network boot under Secure Boot, where iPXE (not
//! signed) cannot run: the firmware's own PXE loads Debian's signed shim,
//! shim loads Debian's signed netboot GRUB (`grubnetx64.efi.signed`, as
//! `grubx64.efi` beside shim), and that GRUB reads `/grub/grub.cfg` from
//! the TFTP server: its prefix is built in as `/grub` and its embedded
//! configuration sources `$prefix/x86_64-efi/grub.cfg`, else
//! `$prefix/grub.cfg` (read from the image's `mods` section, Debian
//! grub2 2.06-13). Its built-in modules have `tftp` and no `http`, and
//! under Secure Boot it loads no others: everything comes over TFTP
//! (`rewind serve --boot-tftp`, super::tftp). That file is [`bootstrap`]:
//! it asks for [`recovery_script`] or [`exit_script`] by the machine's MAC
//! and UUID, as the iPXE chain does. GRUB under Secure Boot has shim verify
//! the kernel; nothing verifies the initrd or these scripts
//! (docs/security.md).

use super::ipxe::{BootParams, word};

/// Single quotes: GRUB expands nothing inside them (no `$`, and no `?` or
/// `*` wildcards, which the regexp module would otherwise expand).
fn quoted(s: &str) -> String {
    format!("'{s}'")
}

/// The script that boots the recovery image: `kernel_url` and
/// `initrd_url` are GRUB paths (`(http,backup)/boot/vmlinuz?token=T`).
/// `None` when a value cannot go on a kernel command line.
/// An empty `token` leaves `rewind.token=` out (over TFTP no token is
/// asked: the site's `DIR/boot/cmdline` carries the boot token).
pub fn recovery_script(p: &BootParams<'_>) -> Option<String> {
    let mut values = vec![p.server, p.host, p.at, p.kernel_url, p.initrd_url];
    values.extend(p.pin);
    if !p.token.is_empty() {
        values.push(p.token);
    }
    if !values.iter().all(|v| word(v)) || p.extra.contains(['\n', '\r', '\'']) {
        return None;
    }
    let mut args = vec![format!("rewind.server={}", p.server)];
    if !p.token.is_empty() {
        args.push(format!("rewind.token={}", p.token));
    }
    args.extend([
        format!("rewind.host={}", p.host),
        format!("rewind.at={}", p.at),
    ]);
    if let Some(pin) = p.pin {
        args.push(format!("rewind.pin={pin}"));
    }
    args.extend(p.extra.split_whitespace().map(str::to_string));
    let args: Vec<String> = args.iter().map(|a| quoted(a)).collect();
    Some(format!(
        "echo {echo}\n\
         linux {kernel} {args}\n\
         initrd {initrd}\n\
         boot\n",
        echo = quoted(&format!("rewind: recovering {} to {}", p.host, p.at)),
        kernel = quoted(p.kernel_url),
        initrd = quoted(p.initrd_url),
        args = args.join(" "),
    ))
}

/// Nothing to recover: say why and leave GRUB, so that the firmware boots
/// the next boot option (the local disk).
pub fn exit_script(why: &str) -> String {
    let why: String = why
        .chars()
        .map(|c| if c.is_control() || c == '\'' { ' ' } else { c })
        .collect();
    format!("echo 'rewind: {why}'\nexit\n")
}

/// The `grub/grub.cfg` the TFTP listener serves: a serial console, then
/// the server's script for this machine, asked by its MAC and SMBIOS UUID
/// (`rewind/grub?mac=...&uuid=...`, over TFTP too: Debian's signed GRUB
/// has no HTTP), and when that cannot be had, back to the firmware.
pub fn bootstrap() -> String {
    "# rewind: the first GRUB configuration of a UEFI network boot under Secure Boot\n\
     # (rewind serve --boot-tftp). Debian's signed netboot GRUB reads it from\n\
     # (tftp,SERVER)/grub/grub.cfg; it asks the server for this machine's script.\n\
     set timeout=0\n\
     serial --unit=0 --speed=115200\n\
     terminal_input console serial\n\
     terminal_output console serial\n\
     smbios --type 1 --get-uuid 8 --set rewind_uuid\n\
     echo \"rewind: asking the recovery server for mac=${net_default_mac} uuid=${rewind_uuid}\"\n\
     source \"/rewind/grub?mac=${net_default_mac}&uuid=${rewind_uuid}\"\n\
     echo 'rewind: no answer from the recovery server: booting the next device'\n\
     exit\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BootParams<'static> {
        BootParams {
            server: "https://backup.example:8443",
            token: "rwd_0123456789abcdef_00",
            host: "web1",
            at: "2026-11-25T06:00:00Z",
            pin: Some("ab12+/=="),
            kernel_url: "/vmlinuz",
            initrd_url: "/initrd.img",
            extra: "console=ttyS0,115200 ",
        }
    }

    #[test]
    fn the_recovery_script_quotes_every_word() {
        assert_eq!(
            recovery_script(&params()).unwrap(),
            "echo 'rewind: recovering web1 to 2026-11-25T06:00:00Z'\n\
             linux '/vmlinuz' \
             'rewind.server=https://backup.example:8443' 'rewind.token=rwd_0123456789abcdef_00' \
             'rewind.host=web1' 'rewind.at=2026-11-25T06:00:00Z' 'rewind.pin=ab12+/==' \
             'console=ttyS0,115200'\n\
             initrd '/initrd.img'\n\
             boot\n"
        );
    }

    #[test]
    fn values_that_would_break_out_are_refused() {
        for bad in [
            BootParams {
                host: "a'b",
                ..params()
            },
            BootParams {
                host: "a b",
                ..params()
            },
            BootParams {
                extra: "x'\nboot",
                ..params()
            },
        ] {
            assert!(recovery_script(&bad).is_none());
        }
        assert_eq!(
            exit_script("no recovery is armed\nfor 'web1'"),
            "echo 'rewind: no recovery is armed for  web1 '\nexit\n"
        );
        let no_token = recovery_script(&BootParams {
            token: "",
            ..params()
        })
        .unwrap();
        assert!(!no_token.contains("rewind.token"), "{no_token}");
    }

    #[test]
    fn the_bootstrap_asks_for_this_machine_s_script() {
        let cfg = bootstrap();
        assert!(
            cfg.contains("source \"/rewind/grub?mac=${net_default_mac}&uuid=${rewind_uuid}\"\n"),
            "{cfg}"
        );
        assert!(cfg.ends_with("exit\n"));
    }
}
