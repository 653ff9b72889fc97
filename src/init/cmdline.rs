//! The live image's settings, from the kernel command line (docs/boot.md).
//!
//! Parsing never fails: a setting that cannot be understood becomes a
//! warning printed on the console and the default is kept, because PID 1
//! must come up whatever the operator typed.

use std::time::Duration;

use crate::netcfg::{Ip, StaticIp};

/// What the image does once the hardware and the network are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Recover the machine when the server holds an armed request; without
    /// one, show the plan and wait for one.
    #[default]
    Recover,
    /// Fetch the manifest, show the plan, write nothing.
    Plan,
    /// Bring up hardware and network, then give a shell on the console.
    Shell,
}

/// What follows a successful recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Done {
    #[default]
    Reboot,
    Poweroff,
}

/// What follows a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFail {
    /// Keep the console as it is: the error stays on the screen.
    #[default]
    Wait,
    Shell,
    Reboot,
    Poweroff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub server: Option<String>,
    pub token: Option<String>,
    /// The server's public-key pins (any of them is trusted): those the
    /// image carries (`PINS_FILE`) when it carries any, else
    /// `rewind.pin=A,B` ([`parse_carrying`]).
    pub pins: Vec<String>,
    /// `rewind.insecure=1`: plain http:// allowed.
    pub insecure_http: bool,
    pub at: Option<String>,
    pub host: Option<String>,
    pub action: Action,
    /// `None` when not given: a recovery then reboots, a plan keeps the console.
    pub done: Option<Done>,
    pub on_fail: OnFail,
    pub ip: Ip,
    /// `rewind.disk=CAPTURED=PRESENT`, repeatable or comma-separated.
    pub disks: Vec<(String, String)>,
    pub grow: bool,
    /// `rewind.shrink=1`: a smaller disk takes the layout shrunk when the
    /// data fits (the recovery request's `shrink` asks for it too).
    pub shrink: bool,
    /// `rewind.overwrite=any`: any disk that is not blank may be chosen
    /// (otherwise only one matched by serial or WWN, or named).
    pub overwrite_non_blank: bool,
    /// How long to wait for a network link.
    pub link_wait: Duration,
    /// How often to ask the server whether a recovery is armed.
    pub poll: Duration,
    /// How long to keep retrying an unreachable server.
    pub retry: Duration,
    /// Modules to load besides those the hardware asks for.
    pub modules: Vec<String>,
    /// `rewind.hostname=`, `rewind.address=`: the recovered machine's
    /// identity when it differs from the captured one (another site).
    pub overrides: crate::retarget::Overrides,
    /// `rewind.grub=reinstall`: GRUB reinstalled in a chroot of the restored
    /// system rather than its captured boot code written back.
    pub reinstall_grub: bool,
    /// `rewind.initramfs=regenerate|auto|keep`: when the restored system's
    /// initramfs is rebuilt for this machine's hardware.
    pub initramfs: crate::initramfs::Mode,
    /// Settings that were not understood, for the console.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: None,
            token: None,
            pins: Vec::new(),
            insecure_http: false,
            at: None,
            host: None,
            action: Action::default(),
            done: None,
            on_fail: OnFail::default(),
            ip: Ip::default(),
            disks: Vec::new(),
            grow: false,
            shrink: false,
            overwrite_non_blank: false,
            link_wait: Duration::from_secs(30),
            poll: Duration::from_secs(10),
            retry: Duration::from_secs(120),
            modules: Vec::new(),
            overrides: Default::default(),
            reinstall_grub: false,
            initramfs: crate::initramfs::Mode::Auto,
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// How the image trusts the server: `rewind.pin=` and the pins it
    /// carries, a CA (`rewind recover --ca`), `rewind.insecure=`.
    pub fn trust(&self, ca: Option<&std::path::Path>) -> crate::client::Trust {
        crate::client::Trust {
            pins: self.pins.clone(),
            ca: ca.map(std::path::Path::to_path_buf),
            insecure_http: self.insecure_http,
        }
    }
}

/// Split a kernel command line into words; double quotes group words
/// (`a="b c"` is one word `a=b c`), as the kernel does.
pub fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

fn seconds(key: &str, value: &str, warnings: &mut Vec<String>) -> Option<Duration> {
    match value.parse::<u64>() {
        Ok(n) => Some(Duration::from_secs(n)),
        Err(_) => {
            warnings.push(format!(
                "{key}={value}: not a number of seconds; default kept"
            ));
            None
        }
    }
}

/// Read the settings from a kernel command line.
pub fn parse(cmdline: &str) -> Settings {
    let mut s = Settings::default();
    for word in split(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (word.clone(), None),
        };
        let v = value.clone().unwrap_or_default();
        let w = &mut s.warnings;
        match key.as_str() {
            "rewind.server" => s.server = Some(v.trim_end_matches('/').to_string()),
            "rewind.token" => s.token = Some(v),
            "rewind.pin" => s
                .pins
                .extend(v.split(',').filter(|p| !p.is_empty()).map(str::to_string)),
            "rewind.insecure" => s.insecure_http = !matches!(v.as_str(), "0" | "no" | "off"),
            "rewind.at" => s.at = Some(v),
            "rewind.host" => s.host = Some(v),
            "rewind.action" => match v.as_str() {
                "recover" => s.action = Action::Recover,
                "plan" => s.action = Action::Plan,
                "shell" => s.action = Action::Shell,
                _ => w.push(format!(
                    "rewind.action={v}: give recover, plan or shell; recover kept"
                )),
            },
            "rewind.done" => match v.as_str() {
                "reboot" => s.done = Some(Done::Reboot),
                "poweroff" => s.done = Some(Done::Poweroff),
                _ => w.push(format!(
                    "rewind.done={v}: give reboot or poweroff; reboot kept"
                )),
            },
            "rewind.onfail" => match v.as_str() {
                "wait" => s.on_fail = OnFail::Wait,
                "shell" => s.on_fail = OnFail::Shell,
                "reboot" => s.on_fail = OnFail::Reboot,
                "poweroff" => s.on_fail = OnFail::Poweroff,
                _ => w.push(format!(
                    "rewind.onfail={v}: give wait, shell, reboot or poweroff; wait kept"
                )),
            },
            "rewind.disk" => {
                for pair in v.split(',').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some((c, p)) if !c.is_empty() && !p.is_empty() => {
                            s.disks.push((c.to_string(), p.to_string()))
                        }
                        _ => w.push(format!(
                            "rewind.disk={pair}: give CAPTURED=PRESENT (sda=/dev/vda); ignored"
                        )),
                    }
                }
            }
            "rewind.grow" => s.grow = !matches!(v.as_str(), "0" | "no" | "off"),
            "rewind.shrink" => s.shrink = !matches!(v.as_str(), "0" | "no" | "off"),
            "rewind.overwrite" => match v.as_str() {
                "any" => s.overwrite_non_blank = true,
                "blank" => s.overwrite_non_blank = false,
                _ => w.push(format!(
                    "rewind.overwrite={v}: give any (any non-blank disk may be overwritten) or \
                     blank; only blank or identified disks are chosen"
                )),
            },
            "rewind.linkwait" => {
                if let Some(d) = seconds(&key, &v, w) {
                    s.link_wait = d;
                }
            }
            "rewind.poll" => {
                if let Some(d) = seconds(&key, &v, w) {
                    s.poll = d.max(Duration::from_secs(1));
                }
            }
            "rewind.retry" => {
                if let Some(d) = seconds(&key, &v, w) {
                    s.retry = d;
                }
            }
            "rewind.modules" => s
                .modules
                .extend(v.split(',').filter(|m| !m.is_empty()).map(str::to_string)),
            "rewind.grub" => match v.as_str() {
                "reinstall" => s.reinstall_grub = true,
                "restore" => s.reinstall_grub = false,
                _ => w.push(format!(
                    "rewind.grub={v}: give reinstall or restore; the captured boot code is restored"
                )),
            },
            "rewind.initramfs" => match v.parse() {
                Ok(mode) => s.initramfs = mode,
                Err(e) => w.push(format!("rewind.initramfs={e}")),
            },
            "rewind.hostname" => match crate::retarget::parse_hostname(&v) {
                Ok(h) => s.overrides.hostname = Some(h),
                Err(e) => w.push(format!("{word}: {e}; the captured host name kept")),
            },
            "rewind.address" => match crate::retarget::parse_address(&v) {
                Ok(a) => s.overrides.addresses.push(a),
                Err(e) => w.push(format!("{word}: {e}; the captured address kept")),
            },
            "ip" => match parse_ip(&v) {
                Ok(ip) => s.ip = ip,
                Err(e) => w.push(format!("ip={v}: {e}; DHCP kept")),
            },
            k if k.starts_with("rewind.") => {
                w.push(format!("{word}: unknown setting (docs/boot.md lists them)"))
            }
            _ => {}
        }
    }
    s
}

/// Parse `ip=`: `dhcp`, `on`, `any`, `off`, `none`, `DEVICE:dhcp`, or the
/// colon-separated static form.
pub fn parse_ip(v: &str) -> Result<Ip, String> {
    match v {
        "dhcp" | "on" | "any" | "both" => return Ok(Ip::Dhcp { device: None }),
        "off" | "none" => return Ok(Ip::Off),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    if f.len() == 2 && matches!(f[1], "dhcp" | "on" | "any") {
        return Ok(Ip::Dhcp {
            device: Some(f[0].to_string()).filter(|d| !d.is_empty()),
        });
    }
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let autoconf = field(6).unwrap_or("off");
    if matches!(autoconf, "dhcp" | "on" | "any") {
        return Ok(Ip::Dhcp {
            device: field(5).map(str::to_string),
        });
    }
    if !matches!(autoconf, "off" | "none" | "static") {
        return Err(format!(
            "autoconf {autoconf:?} is not supported (dhcp or off)"
        ));
    }
    let client = field(0).ok_or("no address")?;
    let (addr, mut prefix) = match client.split_once('/') {
        Some((a, p)) => (
            a,
            Some(
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| format!("bad prefix length {p:?}"))?,
            ),
        ),
        None => (client, None),
    };
    let ip4 = |s: &str| {
        s.parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("{s:?} is not an IPv4 address"))
    };
    let address = ip4(addr)?;
    if let Some(mask) = field(3) {
        let m = u32::from(ip4(mask)?);
        if m.leading_ones() + m.trailing_zeros() != 32 {
            return Err(format!("netmask {mask} is not contiguous"));
        }
        prefix = Some(m.leading_ones() as u8);
    }
    let prefix = prefix.unwrap_or(24);
    let gateway = field(2).map(ip4).transpose()?;
    let mut dns = Vec::new();
    for i in [7, 8] {
        if let Some(d) = field(i) {
            dns.push(ip4(d)?);
        }
    }
    Ok(Ip::Static(StaticIp {
        address,
        prefix,
        gateway,
        hostname: field(4).map(str::to_string),
        device: field(5).map(str::to_string),
        dns,
    }))
}

/// Where the image carries the server's pins: `rewind serve` appends them
/// to the initrd it serves, `scripts/build-image --pin` and
/// `scripts/sign-image` build them in (one pin a line).
pub const PINS_FILE: &str = "/etc/rewind/pins";

/// Present in an image signed for iPXE (`scripts/sign-image`, with the
/// pins): the command line's disk settings (`rewind.disk=`,
/// `rewind.overwrite=`, `rewind.shrink=`) are ignored; the recovery
/// request, fetched over the pinned connection, gives them.
pub const LOCKED_FILE: &str = "/etc/rewind/locked";

/// The settings the image runs with: the kernel command line's
/// (`/proc/cmdline`), the pins the image carries, and its lock.
pub fn read() -> Settings {
    in_image(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// The settings of `cmdline` in this image: with the pins it carries,
/// and its lock.
pub fn in_image(cmdline: &str) -> Settings {
    let mut s = parse_carrying(cmdline, carried_pins());
    if std::path::Path::new(LOCKED_FILE).exists() {
        lock_disk_settings(&mut s);
    }
    s
}

/// An image whose command line may have been rewritten on its way (a
/// signed image behind an unsigned iPXE script) takes no disk settings
/// from it: which disks may be overwritten comes from the request only.
pub fn lock_disk_settings(s: &mut Settings) {
    let mut ignored = Vec::new();
    if !s.disks.is_empty() {
        ignored.push("rewind.disk=");
        s.disks.clear();
    }
    if s.overwrite_non_blank {
        ignored.push("rewind.overwrite=");
        s.overwrite_non_blank = false;
    }
    if s.shrink {
        ignored.push("rewind.shrink=");
        s.shrink = false;
    }
    if !ignored.is_empty() {
        s.warnings.push(format!(
            "{} ignored: this image is signed and takes disk settings from the recovery request \
             only (rewind request HOST --disk CAPTURED=PRESENT --overwrite --shrink)",
            ignored.join(", ")
        ));
    }
}

/// The pins the image carries ([`PINS_FILE`]; none outside the image).
pub fn carried_pins() -> Vec<String> {
    std::fs::read_to_string(PINS_FILE)
        .map(|f| pins_in(&f))
        .unwrap_or_default()
}

/// The pins in the lines of a pins file (`#` starts a comment line).
fn pins_in(file: &str) -> Vec<String> {
    file.lines()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with('#') && !p.contains(char::is_whitespace))
        .map(str::to_string)
        .collect()
}

/// The settings of a kernel command line, for an image that carries
/// `carried` pins. Pins the image carries are the only ones trusted: the
/// command line may come over the network unverified (an iPXE script, a
/// PXE configuration), and whoever rewrites it must not be able to point
/// a signed image at a server of their own with its pin, or at plain
/// HTTP. So `rewind.pin=` and `rewind.insecure=` are then ignored, and
/// said so; a command line that lost its pins still pins.
pub fn parse_carrying(cmdline: &str, carried: Vec<String>) -> Settings {
    let mut s = parse(cmdline);
    if carried.is_empty() {
        return s;
    }
    let ignored: Vec<&String> = s.pins.iter().filter(|p| !carried.contains(p)).collect();
    if !ignored.is_empty() {
        let ignored: Vec<&str> = ignored.iter().map(|p| p.as_str()).collect();
        s.warnings.push(format!(
            "rewind.pin={} ignored: the image carries the server's pins ({PINS_FILE}), and only \
             those are trusted (build or serve the image for another server instead)",
            ignored.join(",")
        ));
    }
    if s.insecure_http {
        s.warnings.push(format!(
            "rewind.insecure ignored: the image carries the server's pins ({PINS_FILE}), so it \
             talks only to that server, over TLS"
        ));
        s.insecure_http = false;
    }
    s.pins = carried;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_any_or_blank() {
        assert!(!parse("").overwrite_non_blank);
        assert!(parse("rewind.overwrite=any").overwrite_non_blank);
        assert!(!parse("rewind.overwrite=any rewind.overwrite=blank").overwrite_non_blank);
        let s = parse("rewind.overwrite=yes");
        assert!(!s.overwrite_non_blank);
        assert!(
            s.warnings[0].starts_with("rewind.overwrite=yes: give any"),
            "{:?}",
            s.warnings
        );
    }

    /// The disk settings of a signed image's command line are ignored.
    #[test]
    fn a_locked_image_takes_no_disk_settings_from_its_command_line() {
        let mut s =
            parse("rewind.disk=vda=/dev/sdb rewind.overwrite=any rewind.shrink=1 rewind.grow=1");
        lock_disk_settings(&mut s);
        assert!(s.disks.is_empty() && !s.overwrite_non_blank && !s.shrink);
        assert!(s.grow, "growing takes nothing from another disk");
        assert_eq!(
            s.warnings,
            [
                "rewind.disk=, rewind.overwrite=, rewind.shrink= ignored: this image is signed and \
              takes disk settings from the recovery request only (rewind request HOST --disk \
              CAPTURED=PRESENT --overwrite --shrink)"
            ]
        );
        let mut quiet = parse("rewind.grow=1");
        lock_disk_settings(&mut quiet);
        assert!(quiet.warnings.is_empty());
    }

    /// A command line rewritten on its way (an unsigned iPXE script in
    /// front of a signed image) names another server with its own pin and
    /// allows plain HTTP: an image that carries pins trusts only those.
    #[test]
    fn pins_the_image_carries_are_the_only_ones_trusted() {
        let carried = pins_in("# the server's pins\nAAAA=\nBBBB=,CCCC=\n\n");
        assert_eq!(carried, ["AAAA=", "BBBB=", "CCCC="]);
        assert!(pins_in("\n").is_empty());

        let rewritten = "rewind.server=https://10.9.9.9:8443 rewind.pin=EVIL= rewind.insecure=1";
        let s = parse_carrying(rewritten, carried.clone());
        assert_eq!(s.pins, carried);
        assert!(!s.insecure_http);
        assert!(
            s.warnings[0].starts_with("rewind.pin=EVIL= ignored: the image carries"),
            "{:?}",
            s.warnings
        );
        assert!(
            s.warnings[1].starts_with("rewind.insecure ignored"),
            "{:?}",
            s.warnings
        );
        // Its own pins on the command line too: nothing to say.
        let s = parse_carrying("rewind.pin=BBBB=", carried.clone());
        assert_eq!((s.pins, s.warnings), (carried, Vec::<String>::new()));
        // An image that carries none takes the command line's.
        let s = parse_carrying("rewind.pin=DDDD= rewind.insecure=1", Vec::new());
        assert_eq!(s.pins, ["DDDD="]);
        assert!(s.insecure_http);
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            split(" a b=\"c d\" \"e f\"=g  h "),
            ["a", "b=c d", "e f=g", "h"]
        );
        assert!(split("  ").is_empty());
    }

    #[test]
    fn recovery_settings() {
        let s = parse(
            "BOOT_IMAGE=/boot/vmlinuz console=ttyS0 rewind.server=https://b:8443/ \
             rewind.token=rwd_1_2 rewind.pin=ab rewind.at=2026-11-25T06:00:00Z \
             rewind.host=web1 rewind.action=plan rewind.done=poweroff rewind.onfail=shell \
             rewind.disk=sda=/dev/vda,sdb=/dev/vdb rewind.grow rewind.linkwait=5 \
             rewind.poll=0 rewind.modules=e1000e,igb",
        );
        assert_eq!(s.server.as_deref(), Some("https://b:8443"));
        assert_eq!(s.token.as_deref(), Some("rwd_1_2"));
        assert_eq!(s.pins, ["ab"]);
        assert_eq!(s.at.as_deref(), Some("2026-11-25T06:00:00Z"));
        assert_eq!(s.host.as_deref(), Some("web1"));
        assert_eq!(s.action, Action::Plan);
        assert_eq!(s.done, Some(Done::Poweroff));
        assert_eq!(s.on_fail, OnFail::Shell);
        assert_eq!(
            s.disks,
            [
                ("sda".to_string(), "/dev/vda".to_string()),
                ("sdb".to_string(), "/dev/vdb".to_string())
            ]
        );
        assert!(s.grow);
        assert_eq!(s.link_wait, Duration::from_secs(5));
        assert_eq!(
            s.poll,
            Duration::from_secs(1),
            "the poll interval has a floor"
        );
        assert_eq!(s.modules, ["e1000e", "igb"]);
        assert_eq!(s.ip, Ip::Auto);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn defaults_and_warnings() {
        let s = parse("rewind.action=destroy rewind.done=later rewind.bogus=1 rewind.poll=x");
        assert_eq!(s.action, Action::Recover);
        assert_eq!(s.done, None);
        assert_eq!(s.poll, Duration::from_secs(10));
        assert_eq!(s.warnings.len(), 4, "{:?}", s.warnings);
        assert!(s.warnings[2].contains("unknown setting"));
    }

    #[test]
    fn initramfs_mode() {
        use crate::initramfs::Mode;
        assert_eq!(parse("").initramfs, Mode::Auto);
        assert_eq!(parse("rewind.initramfs=keep").initramfs, Mode::Keep);
        let s = parse("rewind.initramfs=maybe");
        assert_eq!(s.initramfs, Mode::Auto);
        assert!(
            s.warnings[0].contains("regenerate, auto or keep"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn ip_forms() {
        assert_eq!(parse_ip("dhcp"), Ok(Ip::Dhcp { device: None }));
        assert_eq!(parse_ip("off"), Ok(Ip::Off));
        assert_eq!(
            parse_ip("eth1:dhcp"),
            Ok(Ip::Dhcp {
                device: Some("eth1".into())
            })
        );
        assert_eq!(
            parse_ip(":::::ens3:dhcp"),
            Ok(Ip::Dhcp {
                device: Some("ens3".into())
            })
        );
        let Ok(Ip::Static(st)) =
            parse_ip("10.0.0.5::10.0.0.1:255.255.255.0:web1:eth0:off:10.0.0.53:1.1.1.1")
        else {
            panic!("static form not parsed");
        };
        assert_eq!(st.address, std::net::Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(st.prefix, 24);
        assert_eq!(st.gateway, Some(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(st.hostname.as_deref(), Some("web1"));
        assert_eq!(st.device.as_deref(), Some("eth0"));
        assert_eq!(st.dns.len(), 2);
        let Ok(Ip::Static(st)) = parse_ip("192.168.1.9/20") else {
            panic!("CIDR form not parsed");
        };
        assert_eq!((st.prefix, st.gateway, st.device), (20, None, None));
        assert!(parse_ip("10.0.0.5::1.2.3.4:255.0.255.0").is_err());
        assert!(parse_ip("x.y").is_err());
        assert!(parse_ip("10.0.0.5:::::eth0:bootp").is_err());
        let s = parse("ip=10.0.0.300");
        assert_eq!(s.ip, Ip::Auto);
        assert_eq!(s.warnings.len(), 1);
    }
}
