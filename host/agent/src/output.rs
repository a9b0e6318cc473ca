//! Standard output for the commands' results. `print!` panics when a write fails, so a reader
//! that stops early (`vfpool discover | head -1`) or a full disk ended a command with a backtrace
//! (exit 101).
//!
//! A broken pipe ends the output quietly and the command exits as it would have (0 when it
//! succeeded), as the Rust ports of the Unix tools do: the reader chose to stop reading, which is
//! no failure of the command, and `policy check`'s verdict still reaches the exit code. Any other
//! write error (ENOSPC, EIO) is a failure: exit 1, with the reason on stderr.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

use crate::exit::{Code, Failure};

/// Where a command writes its results.
pub struct Output<W> {
    writer: W,
    /// The reader went away: what would follow is dropped.
    closed: bool,
}

impl Output<io::StdoutLock<'static>> {
    /// Standard output, locked for the command's lifetime.
    pub fn stdout() -> Self {
        Output::new(io::stdout().lock())
    }
}

impl<W: Write> Output<W> {
    pub fn new(writer: W) -> Self {
        Output {
            writer,
            closed: false,
        }
    }

    /// Writes `text` as it is (no newline added), and flushes it: a report printed per file must
    /// reach the reader before the next, slow, check.
    pub fn print(&mut self, text: &str) -> Result<(), Failure> {
        if self.closed {
            return Ok(());
        }
        let written = self
            .writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush());
        match written {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(write_failure(e)),
        }
    }
}

fn write_failure(error: io::Error) -> Failure {
    Failure {
        code: Code::Failure,
        error: anyhow::Error::new(error).context("cannot write to standard output"),
    }
}

/// The first write error of [`say_line`] other than a broken pipe.
static SAY_FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// A line of the demo's narration. The demo prints from many places while it owns processes,
/// sockets and network namespaces, and a failed write must not skip their clean-up: it is
/// remembered for [`said`] instead of returned.
pub fn say_line(line: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out
        .write_fmt(format_args!("{line}\n"))
        .and_then(|()| out.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        SAY_FAILED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(e);
    }
}

/// The failure of the narration so far, if a line could not be written (other than to a reader
/// that went away).
pub fn said() -> Result<(), Failure> {
    match SAY_FAILED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        Some(e) => Err(write_failure(e)),
        None => Ok(()),
    }
}

/// `println!` that never panics, for the demo's narration ([`say_line`]).
macro_rules! say {
    () => {
        $crate::output::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// A line to standard error that never panics. `eprintln!` panics when stderr is closed or full
/// (a container runtime's log pipe gone, `2>/dev/full`), which turned a clean exit — or the very
/// message explaining a failure — into a backtrace and exit 101. There is nowhere left to report
/// a failed write to stderr, so it is dropped; the exit code still tells.
pub fn complain_line(line: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(format_args!("{line}\n"));
}

/// `eprintln!` that never panics ([`complain_line`]).
macro_rules! complain {
    ($($arg:tt)*) => {
        $crate::output::complain_line(format_args!($($arg)*))
    };
}
pub(crate) use complain;

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    use super::Output;
    use crate::exit::Code;

    /// Accepts `accept` writes, then fails every write with `error`.
    struct Failing {
        accept: usize,
        error: io::ErrorKind,
        written: Vec<u8>,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.accept == 0 {
                return Err(self.error.into());
            }
            self.accept -= 1;
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader that stops early used to make `println!` panic (exit 101).
    #[test]
    fn a_broken_pipe_ends_the_output_quietly() {
        let mut out = Output::new(Failing {
            accept: 1,
            error: io::ErrorKind::BrokenPipe,
            written: Vec::new(),
        });
        assert!(out.print("first\n").is_ok());
        assert!(out.print("second\n").is_ok());
        assert!(out.print("third\n").is_ok());
        assert_eq!(out.writer.written, b"first\n");
    }

    #[test]
    fn other_write_errors_are_failures() {
        let mut out = Output::new(Failing {
            accept: 0,
            error: io::ErrorKind::StorageFull,
            written: Vec::new(),
        });
        let failure = out.print("text\n").unwrap_err();
        assert_eq!(failure.code, Code::Failure);
        let message = format!("{:#}", failure.error);
        assert!(
            message.contains("cannot write to standard output"),
            "{message}"
        );
    }
}
