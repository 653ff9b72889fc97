//! rewind as PID 1 of the recovery image.
//!
//! PID 1 is a small supervisor that must never exit or panic (the kernel
//! panics when init dies): it mounts /proc, /sys, /dev and /run, makes sure
//! the console is stdin/stdout/stderr, then runs the recovery as a child
//! process (`rewind recover --live`: modules, network, the staged pipeline)
//! and reaps every process while it waits. What follows depends on how the
//! child ended and on the kernel command line ([`cmdline`]): reboot or power
//! off after a recovery, an emergency shell on the console when asked, or a
//! console left as it is, error on screen, after a failure. Signals from
//! busybox's `reboot` (TERM), `poweroff` (USR2) and `halt` (USR1), and
//! Ctrl-Alt-Del (INT), work as on any init.

pub mod clock;
pub mod cmdline;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::console::{say, uptime};
use crate::kmod;
use crate::stage::Stage;
use cmdline::{Action, Done, OnFail, Settings};

/// Exit status of `rewind recover --live` asking PID 1 for a shell.
pub const EXIT_SHELL: i32 = 3;
/// Exit status of `rewind recover --live` when there is nothing more to do
/// and the console should stay as it is (a plan was shown).
pub const EXIT_HOLD: i32 = 4;
/// Where the recovery writes the stage it is in ([`Stage::as_str`]), for
/// PID 1 to name it when the recovery process dies without saying.
pub const STAGE_FILE: &str = "/run/rewind/stage";

/// Called first thing by `main`: become PID 1 or `/sbin/modprobe` when this
/// process is one of them; return otherwise.
pub fn dispatch() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "modprobe" {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(kmod::modprobe_main(&rest));
    }
    if std::process::id() == 1 || name.ends_with("init") {
        pid1();
    }
}

fn mount(source: &str, target: &str, fstype: &str, data: Option<&str>) {
    use nix::mount::MsFlags;
    let _ = std::fs::create_dir_all(target);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let flags = if fstype == "devtmpfs" || fstype == "devpts" {
        MsFlags::MS_NOSUID
    } else {
        flags
    };
    match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => say(&format!("warning: cannot mount {fstype} on {target}: {e}")),
    }
}

fn early_mounts() {
    mount("proc", "/proc", "proc", None);
    mount("sysfs", "/sys", "sysfs", None);
    mount("devtmpfs", "/dev", "devtmpfs", Some("mode=0755"));
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        Some("gid=5,mode=620,ptmxmode=0666"),
    );
    mount("tmpfs", "/dev/shm", "tmpfs", Some("mode=1777"));
    mount("tmpfs", "/run", "tmpfs", Some("mode=0755"));
    if Path::new("/sys/firmware/efi").exists() {
        mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", None);
    }
    let _ = std::fs::create_dir_all("/run/rewind");
}

/// Without /dev/console in the initramfs the kernel starts init with no
/// descriptors: open the console now that devtmpfs is there.
#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
fn console() {
    use std::os::fd::IntoRawFd;
    // SAFETY: fcntl(F_GETFD) only asks whether descriptor 1 is open.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        let fd = f.into_raw_fd();
        for target in 0..3 {
            if target != fd {
                // SAFETY: dup2 onto the standard descriptors, which are closed.
                unsafe {
                    libc::dup2(fd, target);
                }
            }
        }
        if fd > 2 {
            // SAFETY: fd is ours (from into_raw_fd) and no longer needed.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
        Signal::SIGPWR,
    ] {
        set.add(s);
    }
    set
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Recovery(Pid),
    Shell(Pid),
    Hold,
}

/// The supervisor. Never returns.
#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
fn pid1() -> ! {
    early_mounts();
    console();
    // SAFETY: single-threaded here; nothing else reads the environment yet.
    unsafe {
        std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        std::env::set_var("HOME", "/root");
        std::env::set_var("TERM", "linux");
    }
    let _ = nix::unistd::sethostname("rewind");
    let settings = cmdline::read();
    say(&format!(
        "recovery image, rewind {} (PID 1, {:.1} s since boot)",
        env!("CARGO_PKG_VERSION"),
        uptime()
    ));
    for w in &settings.warnings {
        say(&format!("warning: {w}"));
    }
    let set = supervised_signals();
    if let Err(e) = set.thread_block() {
        say(&format!("warning: cannot block signals: {e}"));
    }
    // Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once.
    let _ = nix::sys::reboot::set_cad_enabled(false);

    let mut phase = match start_recovery() {
        Some(pid) => Phase::Recovery(pid),
        None => after_failure(&settings),
    };
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match sig {
            Signal::SIGCHLD => phase = reap(phase, &settings),
            Signal::SIGTERM | Signal::SIGINT => finish(Done::Reboot),
            Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGPWR => finish(Done::Poweroff),
            _ => {}
        }
    }
}

fn start_recovery() -> Option<Pid> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    let result = Command::new(&exe)
        .arg0("rewind")
        .args(["recover", "--live"])
        .stdin(Stdio::inherit())
        .spawn();
    match result {
        Ok(child) => Some(Pid::from_raw(child.id() as i32)),
        Err(e) => {
            say(&format!(
                "cannot start the recovery ({}): {e}",
                exe.display()
            ));
            None
        }
    }
}

/// Reap every child that ended; act when the recovery or the shell did.
fn reap(mut phase: Phase, settings: &Settings) -> Phase {
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return phase,
            Ok(s) => s,
        };
        let Some(pid) = status.pid() else {
            return phase;
        };
        match phase {
            Phase::Recovery(p) if p == pid => {
                phase = after_recovery(status, settings);
            }
            Phase::Shell(p) if p == pid => {
                say("the shell exited; starting another (`reboot` or `poweroff` to leave)");
                std::thread::sleep(Duration::from_secs(1));
                phase = start_shell().map_or(Phase::Hold, Phase::Shell);
            }
            _ => {}
        }
    }
}

/// Record the stage the recovery enters in `path` ([`STAGE_FILE`]): its
/// name, as on the console. Best effort: a recovery whose stage cannot be
/// recorded still runs, and PID 1 then names the stage before.
pub fn write_stage_file(path: &Path, stage: Stage) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, stage.as_str());
}

/// The stage the recovery last recorded in `path` ([`STAGE_FILE`]), if any.
pub fn read_stage_file(path: &Path) -> Option<Stage> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The stage to name when the recovery process ended: `start` when it died
/// before announcing any.
fn current_stage() -> &'static str {
    read_stage_file(Path::new(STAGE_FILE)).map_or("start", Stage::as_str)
}

fn after_recovery(status: WaitStatus, settings: &Settings) -> Phase {
    match status {
        WaitStatus::Exited(_, 0) => match settings.action {
            Action::Recover => finish(settings.done.unwrap_or(Done::Reboot)),
            _ => hold(settings),
        },
        WaitStatus::Exited(_, EXIT_SHELL) => start_shell().map_or(Phase::Hold, Phase::Shell),
        WaitStatus::Exited(_, EXIT_HOLD) => hold(settings),
        WaitStatus::Exited(_, code) => {
            say(&format!(
                "the recovery stopped in stage {} (exit status {code}); the error is above",
                current_stage()
            ));
            after_failure(settings)
        }
        WaitStatus::Signaled(_, sig, _) => {
            say(&format!(
                "the recovery process was killed by {sig:?} in stage {}",
                current_stage()
            ));
            after_failure(settings)
        }
        _ => Phase::Hold,
    }
}

fn hold(settings: &Settings) -> Phase {
    if let Some(done) = settings.done {
        finish(done);
    }
    say("nothing more to do; the console stays as it is (rewind.action=shell gives a shell)");
    Phase::Hold
}

fn after_failure(settings: &Settings) -> Phase {
    match settings.on_fail {
        OnFail::Shell => start_shell().map_or(Phase::Hold, Phase::Shell),
        OnFail::Reboot => finish(Done::Reboot),
        OnFail::Poweroff => finish(Done::Poweroff),
        OnFail::Wait => {
            say("the machine waits here with the error on screen; nothing more will be written");
            say(
                "(rewind.onfail=shell gives a shell after a failure, rewind.action=shell one at once)",
            );
            Phase::Hold
        }
    }
}

/// The device behind /dev/console (the last of the active consoles).
fn console_tty() -> String {
    std::fs::read_to_string("/sys/class/tty/console/active")
        .ok()
        .and_then(|s| s.split_whitespace().last().map(str::to_string))
        .map_or_else(|| "/dev/console".into(), |t| format!("/dev/{t}"))
}

#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
fn start_shell() -> Option<Pid> {
    let tty = console_tty();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
    {
        Ok(f) => f,
        Err(e) => {
            say(&format!("cannot open {tty} for a shell: {e}"));
            return None;
        }
    };
    let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) else {
        return None;
    };
    say(&format!(
        "emergency shell on {tty}: `rewind recover --live` runs the recovery again, `poweroff` or `reboot` leave"
    ));
    let mut cmd = Command::new("/bin/sh");
    cmd.env("PS1", "rewind# ")
        .stdin(Stdio::from(file))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: setsid and ioctl are async-signal-safe; they make the console
    // the shell's controlling terminal so that job control and ^C work.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => Some(Pid::from_raw(child.id() as i32)),
        Err(e) => {
            say(&format!("cannot start /bin/sh: {e}"));
            None
        }
    }
}

/// Stop every process, flush, and reboot or power off. If the kernel
/// refuses, hold.
fn finish(how: Done) -> ! {
    let what = match how {
        Done::Reboot => "rebooting",
        Done::Poweroff => "powering off",
    };
    say(what);
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
    nix::unistd::sync();
    let mode = match how {
        Done::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        Done::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
    };
    let e = nix::sys::reboot::reboot(mode);
    say(&format!("{what} failed: {e:?}; holding"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_file_names_a_stage() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run/rewind/stage");
        assert_eq!(read_stage_file(&file), None, "no file yet");
        for stage in Stage::ALL {
            write_stage_file(&file, stage);
            // The stage's name, as on the console.
            assert_eq!(std::fs::read_to_string(&file).unwrap(), stage.as_str());
            assert_eq!(read_stage_file(&file), Some(stage));
        }
        std::fs::write(&file, "bootloader\n").unwrap();
        assert_eq!(read_stage_file(&file), Some(Stage::Bootloader));
        std::fs::write(&file, "").unwrap();
        assert_eq!(read_stage_file(&file), None);
    }
}
