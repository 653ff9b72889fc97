//! Application hooks: the admin's commands run around the capture and around
//! each filesystem's snapshot (a database flush, `pg_backup_start`), each with
//! a time limit, its output logged line by line on stderr. A pre-hook that
//! fails fails the capture with its message unless it says `on-failure =
//! "continue"`; once any pre-hook of a stage has started, every post-hook of
//! that stage runs, whatever happened in between.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::config::{self, Config, Hook, OnFailure, When};

/// What a hook is told in its environment.
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    /// Snapshot hooks: the mount point of the filesystem.
    pub mount_point: Option<String>,
    /// after-snapshot: how the filesystem is read (`btrfs`, `lvm`, `live`...).
    pub read: Option<String>,
    /// after-capture: `success` or `failed`.
    pub outcome: Option<String>,
}

/// Run every hook of `when` (snapshot hooks: those for `env.mount_point`).
/// Errors of `on-failure = "fail"` hooks are returned (after the other hooks
/// of the stage ran, so that post-hooks never stop early); others become
/// warnings.
pub fn run_stage(
    config: &Config,
    when: When,
    env: &HookEnv,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut first_error = None;
    let pre = matches!(when, When::BeforeCapture | When::BeforeSnapshot);
    for hook in config.hooks(when) {
        if let Some(point) = &env.mount_point
            && !hook.applies_to(point)
        {
            continue;
        }
        if let Err(e) = run_hook(hook, hook.time_limit(&config.hooks), when, env) {
            let msg = format!("{e:#}");
            if hook.on_failure == OnFailure::Continue || !pre {
                eprintln!("rewind: warning: {msg}");
                warnings.push(msg);
            } else if first_error.is_none() {
                first_error = Some(e);
                // A failed pre-hook stops the stage: the next pre-hooks
                // would prepare for a capture that will not happen.
                break;
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Run one hook to completion within `limit`; its output goes to stderr as
/// `rewind: hook NAME: LINE`. An error names the hook, its file, its exit
/// status and its last output lines.
pub fn run_hook(hook: &Hook, limit: Duration, when: When, env: &HookEnv) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let label = hook.label();
    let mut cmd = match &hook.run {
        config::Command::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        config::Command::Argv(a) => {
            let mut c = Command::new(&a[0]);
            c.args(&a[1..]);
            c
        }
    };
    cmd.env("REWIND_HOOK", when.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0);
    if let Some(p) = &env.mount_point {
        cmd.env("REWIND_MOUNT_POINT", p);
    }
    if let Some(r) = &env.read {
        cmd.env("REWIND_READ", r);
    }
    if let Some(o) = &env.outcome {
        cmd.env("REWIND_OUTCOME", o);
    }
    let whence = format!("{} hook {label} ({})", when.name(), hook.source.display());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("{whence} cannot start: {e}"))?;
    eprintln!("rewind: running {} hook {label}", when.name());
    let out = log_lines(child.stdout.take(), label.clone());
    let err = log_lines(child.stderr.take(), label.clone());
    let status = wait_within(&mut child, limit);
    let mut lines = out.join().unwrap_or_default();
    lines.extend(err.join().unwrap_or_default());
    let tail = lines
        .iter()
        .rev()
        .take(5)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(" / ");
    let shown = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("{whence} failed ({s}){shown}"),
        None => bail!(
            "{whence} did not finish within {}s and was killed{shown}",
            limit.as_secs()
        ),
    }
}

/// Log a pipe's lines as they come; the lines, for the error message.
fn log_lines(
    pipe: Option<impl Read + Send + 'static>,
    label: String,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(pipe) = pipe else {
            return kept;
        };
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            eprintln!("rewind: hook {label}: {line}");
            kept.push(line);
            if kept.len() > 20 {
                kept.remove(0);
            }
        }
        kept
    })
}

/// Wait for `child`; past `limit`, kill its process group and return None.
fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    kill_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// SIGKILL to the hook's process group (it was made its own leader).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn a_failing_pre_hook_fails_with_its_message() {
        let c = config(
            r#"
[[hook]]
name = "flush"
when = "before-capture"
run = "echo database busy >&2; exit 3"
"#,
        );
        let mut w = Vec::new();
        let e = run_stage(&c, When::BeforeCapture, &HookEnv::default(), &mut w).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("before-capture hook flush (test.toml) failed"),
            "{msg}"
        );
        assert!(
            msg.contains("exit status: 3") && msg.contains("database busy"),
            "{msg}"
        );
    }

    #[test]
    fn continue_and_post_hooks_only_warn() {
        let c = config(
            r#"
[[hook]]
when = "before-capture"
run = ["false"]
on-failure = "continue"

[[hook]]
when = "after-capture"
run = "test \"$REWIND_OUTCOME\" = success"
"#,
        );
        let mut w = Vec::new();
        run_stage(&c, When::BeforeCapture, &HookEnv::default(), &mut w).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        let env = HookEnv {
            outcome: Some("failed".into()),
            ..HookEnv::default()
        };
        run_stage(&c, When::AfterCapture, &env, &mut w).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("after-capture hook"), "{w:?}");
    }

    #[test]
    fn a_hook_past_its_limit_is_killed() {
        let c = config(
            r#"
[[hook]]
when = "before-snapshot"
filesystem = "/srv"
run = "echo started; sleep 30"
timeout = 1
"#,
        );
        let start = Instant::now();
        let env = HookEnv {
            mount_point: Some("/srv".into()),
            ..HookEnv::default()
        };
        let e = run_stage(&c, When::BeforeSnapshot, &env, &mut Vec::new()).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let msg = format!("{e:#}");
        assert!(msg.contains("within 1s and was killed: started"), "{msg}");
        // Another filesystem: the hook does not apply.
        let env = HookEnv {
            mount_point: Some("/".into()),
            ..HookEnv::default()
        };
        run_stage(&c, When::BeforeSnapshot, &env, &mut Vec::new()).unwrap();
    }
}
