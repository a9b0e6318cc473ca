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

/// The error and its causes, `: `-separated, each cause once: many error types name their cause in
/// their own message too (`cannot read the sysfs root /x: No such file or directory`), and printing
/// the chain as it is repeated it (`...: No such file or directory (os error 2)` twice).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

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

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the sysfs root /x: {source}")]
    struct NamesItsCause {
        #[source]
        source: std::io::Error,
    }

    /// The exit message printed a cause its error had already named (`... (os error 2): No such
    /// file or directory (os error 2)`).
    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let named = NamesItsCause {
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let cause = named.source.to_string();
        let text = error_chain(&named);
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        let wrapped = anyhow::Error::new(named).context("vfpool discover");
        let text = error_chain(wrapped.as_ref());
        assert!(text.starts_with("vfpool discover: cannot read"), "{text}");
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
        // A cause the message does not name is kept.
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::StorageFull))
            .context("cannot write to standard output");
        assert!(error_chain(io.as_ref()).contains(": "), "{io:#}");
    }
}
