//! The one command runner: every external tool goes through here so that a
//! failure names the full command line, its exit status and its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Render argv the way a sysadmin would retype it.
pub fn display_argv(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run a command to completion and return its stdout; a non-zero exit is an
/// error carrying the command line and stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let line = display_argv(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}` (is {program} installed?)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], but an exit status in `ok_codes` is a normal outcome (blkid
/// exits 2 when a device holds nothing it recognises).
pub fn run_allowing(program: &str, args: &[&str], ok_codes: &[i32]) -> Result<(i32, String)> {
    let line = display_argv(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}` (is {program} installed?)"))?;
    let code = out.status.code().unwrap_or(-1);
    if !out.status.success() && !ok_codes.contains(&code) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed ({}): {}", out.status, stderr.trim());
    }
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Run `program` (a path inside `root`) with `root` as its root directory
/// and a plain PATH, as [`run`] does: a failure names the command and its
/// stderr. For the restored system's own tools (grub-install).
#[allow(unsafe_code)] // reviewed: each unsafe block has its SAFETY note
pub fn run_chroot(root: &std::path::Path, program: &str, args: &[&str]) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let line = format!("chroot {} {}", root.display(), display_argv(program, args));
    let root_c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .with_context(|| format!("{} holds a NUL byte", root.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C");
    // SAFETY: chroot(2) and chdir(2) are async-signal-safe; the closure
    // touches nothing but the CString prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{line}` (is {program} installed there?)"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bind /dev, /proc and /sys into `root` for `f`, and unmount them after,
/// whatever `f` returned.
pub fn with_chroot_binds<T>(root: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use nix::mount::{MntFlags, MsFlags};
    let mut bound: Vec<PathBuf> = Vec::new();
    let mut failed = None;
    for d in ["dev", "proc", "sys"] {
        let target = root.join(d);
        let r = std::fs::create_dir_all(&target)
            .with_context(|| format!("cannot create {}", target.display()))
            .and_then(|_| {
                nix::mount::mount(
                    Some(Path::new("/").join(d).as_path()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| format!("cannot bind-mount /{d} on {}", target.display()))
            });
        match r {
            Ok(()) => bound.push(target),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let result = match failed {
        Some(e) => Err(e),
        None => f(),
    };
    for target in bound.iter().rev() {
        // Recursive binds carry submounts (/dev/pts, efivarfs): detach them all.
        if let Err(e) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            crate::console::say(&format!(
                "warning: cannot unmount {}: {e}",
                target.display()
            ));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run("sh", &["-c", "echo boom >&2; exit 3"]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c 'echo boom >&2; exit 3'"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run("no-such-tool-rewind", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("is no-such-tool-rewind installed"));
    }

    #[test]
    fn chroot_failure_names_root_command_and_stderr() {
        if !nix::unistd::geteuid().is_root() {
            return; // chroot(2) needs root
        }
        let out = run_chroot(std::path::Path::new("/"), "/bin/sh", &["-c", "echo $PATH"]).unwrap();
        assert!(out.starts_with("/usr/local/sbin:"), "{out}");
        let err = run_chroot(
            std::path::Path::new("/"),
            "/bin/sh",
            &["-c", "echo boom >&2; exit 3"],
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("chroot / /bin/sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let err = run_chroot(dir.path(), "/usr/sbin/grub-install", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("grub-install"));
    }

    #[test]
    fn allowed_codes_pass() {
        let (code, _) = run_allowing("sh", &["-c", "exit 2"], &[2]).unwrap();
        assert_eq!(code, 2);
    }
}
