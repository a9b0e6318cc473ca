//! The agent child process: `vfpool run` started from the current executable, its log in a file,
//! stopped with SIGTERM (the way a kubelet stops a DaemonSet pod).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the agent gets to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running agent; dropping it stops it.
pub struct AgentChild {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl AgentChild {
    /// Starts `exe run args...` with its stderr in `log`, in its own process group so that a
    /// Ctrl-C in the terminal reaches only the demo, which then stops the agent in order.
    ///
    /// Being in its own group, the agent gets no signal from the terminal at all: should the demo
    /// die without stopping it (SIGKILL, a crash), the kernel sends it SIGTERM (the parent-death
    /// signal), on which it cleans up and exits instead of serving forever. That signal follows the
    /// thread that spawned the agent: call this from the thread that lives as long as the demo
    /// (`block_on`'s, the main thread), never from a pool thread that may exit early.
    pub fn spawn(exe: &Path, args: &[std::ffi::OsString], log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let stderr =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("run")
            .args(args)
            .env("NO_COLOR", "1")
            // The demo reads the agent's log lines as text, whatever the caller's environment asks.
            .env("VFPOOL_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        let parent = nix::unistd::getpid();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
        // calls are allowed: it makes two system calls (prctl, getppid) and builds its error from
        // an errno, allocating nothing and taking no lock.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                // The demo died between fork and prctl: the signal will never come, so do not
                // start an agent that nobody stops.
                if nix::unistd::getppid() != parent {
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} run", exe.display()))?;
        Ok(AgentChild {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far, without terminal colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Fails when the agent has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().context("cannot check on the agent")?
        {
            bail!("the agent exited ({status})");
        }
        Ok(())
    }

    /// Waits until a log line after byte `from` satisfies `pick`, and returns what it picked.
    pub async fn wait_for_log<T>(
        &mut self,
        what: &str,
        from: usize,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log();
            let new = text.get(from..).unwrap_or_default();
            if let Some(found) = new.lines().find_map(&pick) {
                return Ok(found);
            }
            self.check_alive()
                .with_context(|| format!("while waiting for {what}"))?;
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the agent with SIGTERM (SIGKILL after a grace period) and returns how it ended;
    /// `None` when it was already stopped.
    pub fn stop(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let pid = Pid::from_raw(i32::try_from(self.pid).context("process id out of range")?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().context("cannot kill the agent")?;
        let status = child.wait().context("cannot reap the agent")?;
        bail!("the agent did not stop within {STOP_GRACE:?} of SIGTERM and was killed ({status})")
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Removes terminal escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// From a `policies activated` log line: the allocator's name (`policy "NAME" (sha256:...)`).
pub fn activated_allocator(line: &str) -> Option<String> {
    if !line.contains("policies activated") {
        return None;
    }
    quoted_after(line, "allocator=policy \"")
}

fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let start = line.find(marker)? + marker.len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stripped_and_the_allocator_is_found() {
        let line = "2026-11-28T01:00:00Z \u{1b}[32m INFO\u{1b}[0m policies activated \u{1b}[3mgeneration\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 \u{1b}[3mallocator\u{1b}[0m\u{1b}[2m=\u{1b}[0mpolicy \"spread.wasm\" (sha256:abc) pools=3";
        let clean = strip_ansi(line);
        assert!(clean.contains("generation=2"));
        assert_eq!(activated_allocator(&clean).as_deref(), Some("spread.wasm"));
        assert_eq!(activated_allocator("something else"), None);
    }
}
