//! Values for log fields, in words a person reads: a `?` (Debug) field prints Rust syntax
//! (`Some(..)`, `{"Healthy": 4}`, quoted strings), which nobody greps a log for.

use std::fmt;
use std::time::Duration;

/// How many ids a log line lists before it says how many more there are: a PF going down takes
/// hundreds of VFs with it, and a line naming them all is unreadable.
pub(crate) const SHOWN_IDS: usize = 8;

/// Device ids (or pool names) as `a, b, c`, at most [`SHOWN_IDS`] of them, then `and N more`:
/// for log fields here and in the agent.
pub struct Ids<'a, T>(pub &'a [T]);

impl<T: AsRef<str>> fmt::Display for Ids<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, id) in self.0.iter().take(SHOWN_IDS).enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            f.write_str(id.as_ref())?;
        }
        if self.0.len() > SHOWN_IDS {
            write!(f, " and {} more", self.0.len() - SHOWN_IDS)?;
        }
        Ok(())
    }
}

/// A duration as `250ms`, `1.5s`, `5m12s`, `2h3m`: Debug gives `300s` for five minutes and
/// `1.000000001s` where a person wants a rounded figure.
pub(crate) struct Took(pub(crate) Duration);

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if secs == 0 {
            write!(f, "{}ms", d.as_millis())
        } else if secs < 60 {
            let tenths = d.as_millis() / 100;
            if tenths.is_multiple_of(10) {
                write!(f, "{secs}s")
            } else {
                write!(f, "{}.{}s", tenths / 10, tenths % 10)
            }
        } else if secs < 3600 {
            write!(f, "{}m{}s", secs / 60, secs % 60)
        } else {
            write!(f, "{}h{}m", secs / 3600, secs % 3600 / 60)
        }
    }
}

#[cfg(test)]
pub(crate) mod capture {
    //! Captures what a closure or the current thread logs, for tests of log lines.

    use std::sync::{Arc, Mutex, PoisonError};

    /// Log text written so far.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        }
    }

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// This crate's logs at every level, on this thread, go to the returned buffer while the guard lives (a
    /// current-thread runtime runs every task on this thread).
    pub(crate) fn start() -> (Buffer, tracing::subscriber::DefaultGuard) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("vfpool_deviceplugin=debug")
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    /// The lines of `text` at `level` (`INFO`, `WARN`, ...) that contain `needle`.
    pub(crate) fn lines<'a>(text: &'a str, level: &str, needle: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.trim_start().starts_with(level) && l.contains(needle))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_capped() {
        let ids: Vec<String> = (0..11).map(|n| format!("d{n}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(Ids(&ids[..2]).to_string(), "d0, d1");
        assert_eq!(
            Ids(&ids).to_string(),
            "d0, d1, d2, d3, d4, d5, d6, d7 and 3 more"
        );
    }

    #[test]
    fn durations_read_as_words() {
        let cases = [
            (Duration::from_millis(100), "100ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(312), "5m12s"),
            (Duration::from_secs(7380), "2h3m"),
        ];
        for (d, text) in cases {
            assert_eq!(Took(d).to_string(), text);
        }
    }
}
