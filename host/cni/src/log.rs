//! Logging to `logFile` or stderr at `logLevel`. Never stdout: the runtime reads only the result or
//! error JSON there.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::statfs;

use crate::netconf::LogLevel;

/// The size past which a `logFile` is moved aside to `<logFile>.1` (sriov-cni's cni-log rotates
/// through lumberjack at 100 MB): a node runs the plugin for every pod, for years.
pub const MAX_LOG_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// A line logger with the attachment's identity on every line.
#[derive(Debug)]
pub struct Logger {
    level: LogLevel,
    file: Option<File>,
    context: String,
    /// The rotation threshold (a field so tests can use a small one).
    max_file_bytes: u64,
    /// Lines kept in memory instead of written (tests).
    pub captured: Option<Vec<String>>,
}

impl Logger {
    /// Logs to stderr at `info` until [`Logger::configure`] is called with the NetConf's settings.
    pub fn stderr() -> Self {
        Logger {
            level: LogLevel::Info,
            file: None,
            context: String::new(),
            max_file_bytes: MAX_LOG_FILE_BYTES,
            captured: None,
        }
    }

    /// Keeps lines in memory (for tests).
    pub fn capture() -> Self {
        Logger {
            captured: Some(Vec::new()),
            level: LogLevel::Verbose,
            ..Logger::stderr()
        }
    }

    /// Applies `logLevel`/`logFile`; a log file that cannot be opened falls back to stderr (and
    /// says so there) rather than failing the attachment. As with sriov-cni's cni-log, missing
    /// parent directories are created (0755) and the file is created 0644.
    pub fn configure(&mut self, level: LogLevel, file: Option<&str>, context: String) {
        self.level = level;
        self.context = context;
        if let Some(path) = file {
            match open_log_file(Path::new(path), self.max_file_bytes) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "vfpool-cni: cannot open logFile {path}: {e}; logging to stderr"
                    );
                }
            }
        }
    }

    /// A warning about the logging settings themselves: always on stderr, whatever the level
    /// and file, so a bad `logLevel`/`logFile` is seen where the logs are looked for by default.
    pub fn settings_warning(&mut self, msg: &str) {
        let line = format!(
            "vfpool-cni: [warning] {} {}",
            one_line(&self.context),
            one_line(msg)
        );
        match &mut self.captured {
            Some(lines) => lines.push(line),
            // A failing log write must never fail the attachment.
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn write(&mut self, level: LogLevel, tag: &str, msg: &str) {
        if level > self.level {
            return;
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(rfc3339)
            .unwrap_or_default();
        // One line per message whatever it quotes (a NetConf value, a plugin's output): a line
        // break in it could forge lines of their own.
        let line = format!(
            "{ts} [{tag}] cniName=vfpool-cni {} {}",
            one_line(&self.context),
            one_line(msg)
        );
        if let Some(lines) = &mut self.captured {
            lines.push(line);
            return;
        }
        // One write per line: with O_APPEND, lines of plugins logging to the same file at once
        // do not interleave. A failing log write must never fail the attachment.
        let line = line + "\n";
        let _ = match &mut self.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    /// Error.
    pub fn error(&mut self, msg: &str) {
        self.write(LogLevel::Error, "error", msg);
    }

    /// Warning.
    pub fn warn(&mut self, msg: &str) {
        self.write(LogLevel::Warning, "warning", msg);
    }

    /// Info.
    pub fn info(&mut self, msg: &str) {
        self.write(LogLevel::Info, "info", msg);
    }

    /// Debug.
    pub fn debug(&mut self, msg: &str) {
        self.write(LogLevel::Debug, "debug", msg);
    }
}

/// Opens (or creates) the regular file `path` for appending. `logFile` comes from the
/// NetworkAttachmentDefinition and the plugin runs as root: a symlink at the path (pointing at a
/// file whoever wrote the NetConf could not touch) is not followed, and a FIFO or device is not
/// written to (a FIFO nobody reads would hang every ADD): both are errors, so the caller logs to
/// stderr instead.
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => io::Error::other(format!(
                "{} is a symlink, which is not followed (give the real path)",
                path.display()
            )),
            Some(nix::libc::ENXIO) => {
                io::Error::other(format!("{} is not a regular file", path.display()))
            }
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    // A "file" of the kernel's (/proc/sys/..., /sys/...) is a setting: the plugin runs as root,
    // and whoever writes a NetworkAttachmentDefinition must not make it append there.
    let kind = statfs::fstatfs(&file)
        .map_err(io::Error::from)?
        .filesystem_type();
    if KERNEL_FILESYSTEMS.contains(&kind) {
        return Err(io::Error::other(format!(
            "{} is a kernel interface (procfs, sysfs, cgroup, debugfs, ...), not a log file",
            path.display()
        )));
    }
    Ok(file)
}

/// The kernel's own filesystems, where a write sets something.
const KERNEL_FILESYSTEMS: [statfs::FsType; 8] = [
    statfs::PROC_SUPER_MAGIC,
    statfs::SYSFS_MAGIC,
    statfs::CGROUP_SUPER_MAGIC,
    statfs::CGROUP2_SUPER_MAGIC,
    statfs::DEBUGFS_MAGIC,
    statfs::TRACEFS_MAGIC,
    statfs::SECURITYFS_MAGIC,
    statfs::BPF_FS_MAGIC,
];

/// `<path>.1`, where a full log file goes.
fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Opens `path` for appending, creating its parent directories, and first moves it to
/// `<path>.1` (replacing an older one) when it has grown past `max_bytes`.
///
/// Several plugin processes may find the same full file at once: each locks the file it opened
/// and moves it aside only if the path still names that very file, so exactly one of them
/// rotates it and the others append to the fresh file (a lock on the rotated file, released by
/// the rename's winner, never blocks a writer of the new one).
fn open_log_file(path: &Path, max_bytes: u64) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    rotate_if_full(path, open_append(path)?, max_bytes)
}

/// `file` (opened at `path`), or a fresh file at `path` after moving `file` to `<path>.1` when
/// it has grown past `max_bytes` and `path` still names it.
fn rotate_if_full(path: &Path, file: File, max_bytes: u64) -> io::Result<File> {
    let meta = file.metadata()?;
    if meta.len() <= max_bytes {
        return Ok(file);
    }
    let locked = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let still_here = fs::metadata(path)
        .map(|now| now.dev() == meta.dev() && now.ino() == meta.ino())
        .unwrap_or(false);
    if still_here {
        fs::rename(path, backup_path(path))?;
    }
    // The lock goes with the rotated file; the new one is opened unlocked.
    drop(locked);
    open_append(path)
}

/// `text` with its control characters (line breaks, escapes) written as `\n`, `\u{1b}`, ...;
/// the rest, quotes included, as it is.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `since_epoch` as an RFC 3339 UTC time with milliseconds (`2026-12-07T03:52:23.123Z`), as
/// the agent's log and cni-log (sriov-cni's) write it: epoch seconds could not be lined up with
/// either by eye.
fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `logFile` on a kernel filesystem (here /proc/self/comm: harmless to write) is refused:
    /// the plugin runs as root, and a NetworkAttachmentDefinition could make it append log lines
    /// to a setting such as /proc/sys/kernel/core_pattern.
    #[test]
    fn a_kernel_interface_is_no_log_file() {
        let error = open_append(Path::new("/proc/self/comm")).unwrap_err();
        assert!(error.to_string().contains("kernel interface"), "{error}");
    }

    /// A message is one line whatever it quotes: a line break in a NetConf value or a plugin's
    /// output used to forge lines of its own.
    #[test]
    fn a_message_stays_on_one_line() {
        let mut log = Logger::capture();
        log.error("bad value \"x\n2026-01-01T00:00:00.000Z [info] forged\r\"");
        let lines = log.captured.clone().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            !lines[0].contains('\n') && !lines[0].contains('\r'),
            "{lines:?}"
        );
        assert!(lines[0].contains("\\n2026-01-01"), "{lines:?}");
        // Quotes are not escaped: messages quote names and values everywhere.
        assert!(lines[0].contains("bad value \"x"), "{lines:?}");
    }

    /// Log times are RFC 3339 in UTC, as the agent's and cni-log's (they were epoch seconds).
    #[test]
    fn log_times_are_rfc3339() {
        use std::time::Duration;
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        // 2026-12-07T03:52:23.123Z; a leap day; the last millisecond of a century year.
        assert_eq!(
            rfc3339(Duration::from_millis(1_796_615_543_123)),
            "2026-12-07T03:52:23.123Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(Duration::from_millis(4_102_444_799_999)),
            "2099-12-31T23:59:59.999Z"
        );
    }

    fn file_logger(path: &Path, max_file_bytes: u64) -> Logger {
        let mut log = Logger {
            max_file_bytes,
            ..Logger::stderr()
        };
        log.configure(
            LogLevel::Info,
            Some(&path.display().to_string()),
            "containerID=c1".into(),
        );
        log
    }

    /// logFile comes from the NetworkAttachmentDefinition and the plugin runs as root: a symlink
    /// there used to be followed (appending to whatever it named, and rotating it away once
    /// large), and a FIFO blocked the plugin until someone read it.
    #[test]
    fn a_log_file_that_is_a_symlink_or_a_fifo_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("cni.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut log = file_logger(&link, MAX_LOG_FILE_BYTES);
        assert!(log.file.is_none(), "the symlink was opened");
        log.info("hello");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");

        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let log = file_logger(&fifo, MAX_LOG_FILE_BYTES);
        assert!(log.file.is_none(), "the FIFO was opened");
    }

    #[test]
    fn missing_parent_directories_of_the_log_file_are_created() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/log/sriov/cni.log");
        let mut log = file_logger(&path, MAX_LOG_FILE_BYTES);
        log.info("hello");
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("[info]") && text.ends_with("hello\n"),
            "{text}"
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The process umask may take bits away, never add them.
        assert_eq!(mode(&dir.path().join("var/log")) & !0o755, 0);
        assert_eq!(mode(&path) & !0o644, 0);
    }

    #[test]
    fn a_log_file_past_the_limit_is_moved_to_dot_1_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.log");
        let backup = dir.path().join("cni.log.1");
        fs::write(&backup, "oldest\n").unwrap();
        fs::write(&path, "0123456789abcdef\n").unwrap();
        // Below or at the limit: appended to.
        file_logger(&path, 64).info("first");
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("0123456789abcdef\n")
        );
        assert_eq!(fs::read_to_string(&backup).unwrap(), "oldest\n");
        // Past it: moved aside (replacing the older backup), and a fresh file is started.
        let before = fs::read_to_string(&path).unwrap();
        assert!(before.len() > 16);
        file_logger(&path, 16).info("second");
        assert_eq!(fs::read_to_string(&backup).unwrap(), before);
        let fresh = fs::read_to_string(&path).unwrap();
        assert_eq!(fresh.lines().count(), 1, "{fresh}");
        assert!(fresh.ends_with("second\n"), "{fresh}");
    }

    #[test]
    fn a_full_log_file_already_rotated_by_another_process_is_not_rotated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni.log");
        let full = "x".repeat(200);
        fs::write(&path, &full).unwrap();
        // Two plugins open the same full file; the first rotates it and writes to a new one.
        let second = open_append(&path).unwrap();
        file_logger(&path, 150).info("first");
        // The second finds its file full, but no longer at the path: it appends to the new
        // one and leaves the backup alone.
        let mut second = rotate_if_full(&path, second, 150).unwrap();
        second.write_all(b"second\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("cni.log.1")).unwrap(),
            full
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("first\nsecond\n"), "{text}");
    }
}
