//! Helpers for the server tests: the real `rewind serve` as a child process
//! on 127.0.0.1 (killed on drop), and the real `rewind` client commands.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rewind");

pub struct ServerProc {
    child: Option<Child>,
    pub data: PathBuf,
    pub url: String,
    pub addr: String,
    pub admin: String,
    pub pin: Option<String>,
    pub tls: bool,
    pub log: PathBuf,
}

impl ServerProc {
    /// Start a server on a free port: TLS with its self-signed pair (the
    /// default; clients get its pin), or plain HTTP (`--insecure-http`,
    /// clients get `REWIND_INSECURE_HTTP=1`) for tests about something else.
    pub fn start(data: &Path, tls: bool) -> ServerProc {
        Self::start_on(data, "127.0.0.1:0", tls, None)
    }

    /// Start a server on `listen`; `admin` is the admin token of an earlier
    /// run on the same data (it is printed only on the first start).
    pub fn start_on(data: &Path, listen: &str, tls: bool, admin: Option<&str>) -> ServerProc {
        Self::start_with(data, listen, tls, admin, &[])
    }

    /// [`ServerProc::start_on`] with more `rewind serve` arguments.
    pub fn start_with(
        data: &Path,
        listen: &str,
        tls: bool,
        admin: Option<&str>,
        extra: &[&str],
    ) -> ServerProc {
        std::fs::create_dir_all(data).unwrap();
        let log = data.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut args = vec![
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            listen,
        ];
        if !tls {
            args.push("--insecure-http");
        }
        args.extend_from_slice(extra);
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("cannot start rewind serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep draining so that the server never blocks on stdout.
                    continue;
                }
            }
        });
        let mut admin = admin.map(str::to_string);
        let mut pin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "rewind serve did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if let Some(t) = line.split("keep it safe): ").nth(1) {
                admin = Some(t.trim().to_string());
            } else if let Some(p) = line.split("(for --pin): ").nth(1) {
                pin = Some(p.trim().to_string());
            } else if let Some(u) = line.split("listening on ").nth(1) {
                break u.trim().to_string();
            }
        };
        let addr = url.rsplit("://").next().unwrap().to_string();
        ServerProc {
            child: Some(child),
            data: data.to_path_buf(),
            url,
            addr,
            admin: admin.expect("no admin token printed"),
            pin,
            tls,
            log,
        }
    }

    /// The server process's id (to read its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// A line of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{}/status", self.pid()))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same address and data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may take a moment to be free again.
            if std::net::TcpListener::bind(&self.addr).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let again = ServerProc::start_on(&self.data, &self.addr, self.tls, Some(&self.admin));
        assert_eq!(again.url, self.url);
        *self = again;
    }

    /// Environment for a client command with `token`.
    pub fn env(&self, token: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("REWIND_SERVER".to_string(), self.url.clone()),
            ("REWIND_TOKEN".to_string(), token.to_string()),
        ];
        if let Some(p) = &self.pin {
            env.push(("REWIND_PIN".to_string(), p.clone()));
        }
        if !self.tls {
            env.push(("REWIND_INSECURE_HTTP".to_string(), "1".to_string()));
        }
        env
    }

    /// How a client trusts this server: its pin, or plain HTTP allowed.
    pub fn trust(&self) -> rewind::client::Trust {
        match &self.pin {
            Some(p) => rewind::client::Trust::pinned(&[p]),
            None => rewind::client::Trust::insecure_http(),
        }
    }

    /// Kernel command line settings that make the recovery image trust
    /// this server (`rewind.pin=` or `rewind.insecure=1`).
    pub fn image_trust(&self) -> String {
        match &self.pin {
            Some(p) => format!("rewind.pin={p}"),
            None => "rewind.insecure=1".to_string(),
        }
    }

    pub fn client(&self, token: &str) -> rewind::client::Client {
        rewind::client::Client::new(&self.url, token, &self.trust()).unwrap()
    }

    /// A host token, through the CLI.
    pub fn host_token(&self, host: &str) -> String {
        let out = rewind_ok(self, &self.admin, &["token", "create", host]);
        out.lines()
            .find(|l| l.starts_with("rwd_"))
            .expect("no token printed")
            .to_string()
    }

    pub fn stat(&self, key: &str) -> u64 {
        self.client(&self.admin).get_json("/v1/stats").unwrap()[key]
            .as_u64()
            .unwrap()
    }

    /// Snapshot files committed for a host, read from the server's disk.
    pub fn committed(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.data.join("hosts").join(host).join("snapshots"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with('.'))
                        .collect()
                })
                .unwrap_or_default();
        v.sort();
        v
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client command against `server` with `token`.
pub fn rewind_cmd(server: &ServerProc, token: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .envs(server.env(token))
        .env_remove("REWIND_REPO")
        .stdin(Stdio::null());
    c
}

pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn rewind_ok(server: &ServerProc, token: &str, args: &[&str]) -> String {
    let out = rewind_cmd(server, token, args).output().unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "rewind {} failed:\n{text}\nserver log:\n{}",
        args.join(" "),
        server.log_text()
    );
    text
}

pub fn rewind_fails(server: &ServerProc, token: &str, args: &[&str]) -> String {
    let out = rewind_cmd(server, token, args).output().unwrap();
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "rewind {} succeeded:\n{text}",
        args.join(" ")
    );
    text
}

/// The DMI system UUID and serial of the example machine whose network
/// interface is `mac`: the machine of docs/manifest.md for
/// 52:54:00:00:00:0a (most tests' machine, whose identity the recorded API
/// fixtures hold) and the docs' own MAC; any other MAC is another machine,
/// with ids of its own made from the MAC (the server refuses one machine
/// listed by two hosts).
pub fn example_dmi(mac: &str) -> (String, String) {
    if mac == "52:54:00:00:00:0a" || mac == "52:54:00:12:34:56" {
        return (
            "4c4c4544-0042-3510-8051-b7c04f4e4a31".into(),
            "CZ1234567".into(),
        );
    }
    let hex: String = mac.chars().filter(|c| *c != ':').collect();
    (
        format!("4c4c4544-0042-3510-8051-{hex}"),
        format!("CZ{}", hex.to_uppercase()),
    )
}

/// `rewind serve` arguments declaring every id of the machine the tests
/// run on shared (`--shared-identity` for its DMI UUID and serial and each
/// NIC's MAC), for a test that captures this one machine as several hosts
/// (the server refuses one machine listed by two hosts otherwise).
pub fn this_machine_shared() -> Vec<String> {
    let dmi = rewind::probe::system::read_dmi(Path::new("/sys"));
    let macs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
                .map(|a| a.trim().to_string())
                .filter(|a| a.parse::<rewind::util::mac::Mac>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    let machine = rewind::api::MachineIdentity::new(dmi.as_ref(), &macs);
    let mut ids: Vec<String> = machine.macs.iter().map(|m| format!("mac={m}")).collect();
    ids.extend(machine.system_uuid.map(|u| format!("uuid={u}")));
    ids.extend(machine.serial.map(|s| format!("serial={s}")));
    ids.into_iter()
        .flat_map(|id| ["--shared-identity".to_string(), id])
        .collect()
}

/// A MAC address of the test machine of `host`, different for each name
/// (52:54:00 and three bytes of a hash of the name).
pub fn host_mac(host: &str) -> String {
    let h = host.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) as u8,
        (h >> 8) as u8,
        h as u8
    )
}

/// The complete example manifest of docs/manifest.md, as a host's snapshot
/// taken at `time`, without data (so that committing it needs no chunks).
/// Its network interface gets `mac`, and its DMI the ids of that machine
/// ([`example_dmi`]).
pub fn example_manifest(host: &str, id: &str, time: &str, mac: &str) -> String {
    let (uuid, serial) = example_dmi(mac);
    let doc = include_str!("../../docs/manifest.md");
    let start = doc.find("```xml\n").unwrap() + 7;
    let end = start + doc[start..].find("```").unwrap();
    let xml = &doc[start..end];
    xml.lines()
        // Trees the test repository does not hold: filesystem data, raw regions.
        .filter(|l| !l.trim_start().starts_with("<data ") && !l.trim_start().starts_with("<raw "))
        .map(|l| {
            if l.trim_start().starts_with("<snapshot ") {
                format!(
                    "  <snapshot id=\"{id}\" host=\"{host}\" time=\"{time}\" tool=\"rewind 0.1.0\"/>"
                )
            } else {
                l.replace("52:54:00:12:34:56", mac)
                    .replace("4c4c4544-0042-3510-8051-b7c04f4e4a31", &uuid)
                    .replace("CZ1234567", &serial)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The machine of [`example_manifest`] with `mac` (its DMI:
/// [`example_dmi`]), as the recovery image presents itself in a claim.
pub fn example_machine(mac: &str) -> rewind::api::MachineIdentity {
    let (uuid, serial) = example_dmi(mac);
    let dmi = rewind::manifest::Dmi {
        system_uuid: Some(uuid),
        serial: Some(serial),
        vendor: Some("Dell Inc.".into()),
        product: None,
    };
    rewind::api::MachineIdentity::new(Some(&dmi), &[mac.to_string()])
}

/// A real pack, to upload: its name, bytes and index.
pub fn a_pack() -> (String, Vec<u8>, Vec<u8>) {
    let mut b = rewind::repo::pack::PackBuilder::new();
    let data = b"some chunk";
    let stored = zstd::bulk::compress(data, 3).unwrap();
    b.add(
        rewind::tree::ChunkId::of(data),
        rewind::repo::pack::BlobKind::Data,
        data.len() as u32,
        &stored,
    );
    let (name, bytes, index, _) = b.finish();
    (name, bytes, index)
}

/// An HTTP client for the tests (rustls with ring).
pub fn http_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder().build().unwrap()
}

/// PUT `example_manifest(host, id, time, mac)` as snapshot `id` of `host`.
pub fn put_snapshot(
    s: &ServerProc,
    token: &str,
    host: &str,
    id: &str,
    time: &str,
    mac: &str,
) -> (reqwest::StatusCode, String) {
    put_snapshot_xml(s, token, host, id, example_manifest(host, id, time, mac))
}

/// PUT `xml` as snapshot `id` of `host`.
pub fn put_snapshot_xml(
    s: &ServerProc,
    token: &str,
    host: &str,
    id: &str,
    xml: String,
) -> (reqwest::StatusCode, String) {
    // Any certificate: the test servers' TLS is self-signed.
    let resp = any_cert_client()
        .put(format!(
            "{}/v1/hosts/{host}/files/snapshots/{id}.xml",
            s.url
        ))
        .bearer_auth(token)
        .body(xml)
        .send()
        .unwrap();
    (resp.status(), resp.text().unwrap())
}

/// A TFTP read of `file` from `server` (RFC 1350, blksize and tsize
/// asked): its bytes and the size the server announced, or the server's
/// error message.
pub fn tftp_get(server: &str, file: &str) -> Result<(Vec<u8>, u64), String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", "1024", "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    sock.send_to(&rrq, server).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    let mut tsize = 0;
    let mut expect: u16 = 1;
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("no TFTP answer");
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            6 => {
                let opts: Vec<&[u8]> = buf[2..n].split(|b| *b == 0).collect();
                for pair in opts.chunks(2) {
                    if pair[0] == b"tsize" {
                        tsize = std::str::from_utf8(pair[1]).unwrap().parse().unwrap();
                    }
                }
                sock.send_to(&[0, 4, 0, 0], from).unwrap();
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expect {
                    out.extend_from_slice(&buf[4..n]);
                    expect = expect.wrapping_add(1);
                }
                sock.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
                if n - 4 < 1024 {
                    return Ok((out, tsize));
                }
            }
            5 => return Err(String::from_utf8_lossy(&buf[4..n - 1]).into_owned()),
            _ => panic!("unexpected TFTP opcode {op}"),
        }
    }
}

/// An HTTP client that accepts any certificate, for tests about something
/// other than trust (logs, the plain boot listener beside the TLS API).
pub fn any_cert_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
            .with_no_client_auth(),
        )
        .build()
        .unwrap()
}

#[derive(Debug)]
pub struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A free TCP port on 127.0.0.1 (bound and let go: the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on 127.0.0.1 (for the server's TFTP listener).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The recovery token `rewind request` printed (its one line saying so).
pub fn printed_recovery_token(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("recovery token (this request only): ").nth(1))
        .unwrap_or_else(|| panic!("no recovery token printed:\n{out}"))
        .trim()
        .to_string()
}

/// Arm a recovery of `host` for the QEMU guest whose NIC is `mac`: the
/// recovery image's kernel command line that reaches this server from the
/// guest (user networking: the host is 10.0.2.2) with the recovery token
/// `rewind request` printed, powering off at the end or on failure.
pub fn arm_for_guest(s: &ServerProc, host: &str, mac: &str) -> String {
    let out = rewind_ok(
        s,
        &s.admin,
        &["request", host, "--machine", &format!("mac={mac}")],
    );
    let token = printed_recovery_token(&out);
    format!(
        "console=ttyS0,115200 rewind.done=poweroff rewind.onfail=poweroff rewind.insecure=1 \
         rewind.retry=60 rewind.server={} rewind.token={token}",
        s.url.replace("127.0.0.1", "10.0.2.2")
    )
}

/// A CA and a code-signing certificate it issued, as iPXE wants them (the
/// CA with `CA:TRUE` and `keyCertSign`, the signer with `codeSigning`), as
/// `DIR/NAME-ca.{key,crt}` and `DIR/NAME-sign.{key,crt}`.
#[rustfmt::skip]
pub fn make_signing_ca(dir: &Path, name: &str) {
    let p = |f: &str| dir.join(format!("{name}-{f}")).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", output_text(&out));
    };
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-keyout", &p("ca.key"), "-out", &p("ca.crt"),
        "-subj", &format!("/CN=rewind test CA {name}"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &p("sign.key"),
        "-out", &p("sign.csr"), "-subj", &format!("/CN=rewind image signing {name}"),
    ]);
    let ext = dir.join(format!("{name}-codesign.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
    )
    .unwrap();
    openssl(&[
        "x509", "-req", "-days", "3650", "-in", &p("sign.csr"), "-CA", &p("ca.crt"),
        "-CAkey", &p("ca.key"), "-CAcreateserial", "-out", &p("sign.crt"),
        "-extfile", ext.to_str().unwrap(),
    ]);
}

/// Unpack into `out` the cpio archive appended to an initrd of
/// `initrd_len` bytes (4-byte aligned with zeros, as the server and
/// scripts/sign-image append the pins).
pub fn unpack_appended_cpio(file: &[u8], initrd_len: usize, out: &Path) {
    let pad = (4 - initrd_len % 4) % 4;
    assert!(file[initrd_len..initrd_len + pad].iter().all(|b| *b == 0));
    std::fs::create_dir_all(out).unwrap();
    let mut cpio = Command::new("cpio")
        .args(["-id", "--quiet"])
        .current_dir(out)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    cpio.stdin
        .take()
        .unwrap()
        .write_all(&file[initrd_len + pad..])
        .unwrap();
    assert!(cpio.wait().unwrap().success());
}
