//! Exit codes: what a script can rely on.

/// How a command failed, for the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The command ran and failed (an I/O or runtime failure).
    Failure = 1,
    /// The input was wrong: a missing or unreadable sysfs root, a bad config file, a bad fixture.
    /// clap uses the same code for usage errors.
    BadInput = 2,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: Code,
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
}

/// Result of a subcommand.
pub type CmdResult = Result<(), Failure>;

/// Attaches an exit code to an error.
pub trait WithCode<T> {
    /// Maps the error to a [`Failure`] with `code`.
    fn code(self, code: Code) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: Code) -> Result<T, Failure> {
        self.map_err(|error| Failure {
            code,
            error: error.into(),
        })
    }
}
