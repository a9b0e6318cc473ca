//! Logging to `logFile` or stderr at `logLevel`. Never stdout: the runtime reads only the result or
//! error JSON there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::netconf::LogLevel;

/// A line logger with the attachment's identity on every line.
#[derive(Debug)]
pub struct Logger {
    level: LogLevel,
    file: Option<File>,
    context: String,
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
    /// says so there) rather than failing the attachment.
    pub fn configure(&mut self, level: LogLevel, file: Option<&str>, context: String) {
        self.level = level;
        self.context = context;
        if let Some(path) = file {
            match OpenOptions::new().create(true).append(true).open(path) {
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
        let line = format!("vfpool-cni: [warning] {} {msg}", self.context);
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
            .map(|d| format!("{}.{:03}", d.as_secs(), d.subsec_millis()))
            .unwrap_or_default();
        let line = format!("{ts} [{tag}] cniName=vfpool-cni {} {msg}", self.context);
        if let Some(lines) = &mut self.captured {
            lines.push(line);
            return;
        }
        // A failing log write must never fail the attachment.
        let _ = match &mut self.file {
            Some(f) => writeln!(f, "{line}"),
            None => writeln!(std::io::stderr(), "{line}"),
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
