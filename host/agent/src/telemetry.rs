//! Logging setup: `tracing` to stderr, filtered by `--log-level` / `VFPOOL_LOG_LEVEL` / `RUST_LOG`,
//! as text or JSON lines (`--log-format` / `VFPOOL_LOG_FORMAT`).

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::str::FromStr as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Directive;

/// The level names a bare directive may be (any case), as `tracing` spells them.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// What a valid `--log-level` looks like, for the messages that refuse one.
const VALID: &str = "use one of trace, debug, info, warn, error, off; a glog verbosity number on its own (e.g. 10); or TARGET=LEVEL directives (e.g. info,vfpool=debug), comma-separated";

/// Where a log level came from, for the messages that refuse one.
pub const FROM_FLAG: &str = "--log-level / VFPOOL_LOG_LEVEL";
/// See [`FROM_FLAG`].
pub const FROM_RUST_LOG: &str = "RUST_LOG";

/// Why a `--log-level` / `VFPOOL_LOG_LEVEL` (or `RUST_LOG`) value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLevelError {
    /// A bare word that is not a level name: as a filter it would name a target and silence
    /// everything else, errors included.
    #[error("{directive:?} is not a log level ({origin}): {VALID}")]
    NotALevel {
        /// The offending directive.
        directive: String,
        /// Where it came from ([`FROM_FLAG`], [`FROM_RUST_LOG`]).
        origin: &'static str,
    },
    /// A directive `tracing` cannot parse (e.g. `vfpool=warning`); it would be dropped silently.
    #[error("{directive:?} is not a valid log filter directive ({origin}): {reason}; {VALID}")]
    Invalid {
        /// The offending directive.
        directive: String,
        /// What `tracing` said.
        reason: String,
        /// Where it came from.
        origin: &'static str,
    },
    /// Nothing but commas and blanks.
    #[error("the log level is empty ({origin}): {VALID}")]
    Empty {
        /// Where it came from.
        origin: &'static str,
    },
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colour on a terminal only).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the event's fields
    /// at the top level), for log collectors that would otherwise parse the text.
    Json,
}

/// The targets of wasmtime's compiler, which logs every function it compiles (1,500 lines at
/// debug for the embedded policies, millions at trace) and is never interesting to an operator.
/// wasmtime 48 names its Cranelift glue `wasmtime_internal_cranelift`.
const COMPILER_TARGETS: [&str; 4] = [
    "cranelift_codegen",
    "cranelift_frontend",
    "wasmtime_internal_cranelift",
    "wasmtime_environ",
];

/// Installs the global subscriber with `directives` (from [`directives`]), or `RUST_LOG`, or
/// `default` (the daemon runs at `info`, quiet in steady state; the one-shot commands at `warn`, so
/// that their stdout stays machine-readable and their stderr readable), writing `format`.
pub fn init(directives: Option<&str>, default: &str, format: LogFormat) {
    let mut filter = directives
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("RUST_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    for target in COMPILER_TARGETS {
        if let Ok(directive) = format!("{target}=warn").parse() {
            filter = filter.add_directive(directive);
        }
    }
    // On a failed write the fmt layer otherwise reports it with `eprintln!`, which panics when
    // stderr is the thing that failed (a closed log pipe): a log line must never take the agent
    // down.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .with_target(false)
            .try_init(),
        // The event's fields beside the message, not under "fields"; no span context (the agent
        // logs from tasks, not spans).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    if std::env::var_os("VFPOOL_LOG").is_some() && std::env::var_os("VFPOOL_LOG_LEVEL").is_none() {
        tracing::warn!(
            "VFPOOL_LOG is not read: --log-level's environment twin is VFPOOL_LOG_LEVEL, as every flag's is VFPOOL_<FLAG>"
        );
    }
}

/// Whether log lines get colours: only on a terminal, as a container runtime or a file keeps the
/// escape codes as text, and not when `NO_COLOR` is set to anything (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The filter directives for `--log-level`: a `tracing` filter, or — a bare number — the
/// upstream plugin's glog verbosity, which as a filter would enable nothing but a target named
/// "10" and silence every log line, errors included. Any number means info: 10 is upstream's flag
/// default and its DaemonSet's value, so every drop-in deployment passes it, and it asks for
/// upstream's normal output, not for vfpool's trace lines (one per unreadable sysfs attribute per
/// rescan); `debug` and `trace` are there for more.
///
/// A typo is refused rather than passed on: `EnvFilter` reads a bare word such as `warning` or
/// `inf` as a target name and a malformed `target=level` not at all, and either way the agent
/// would run silently, without even its errors. The directives are returned trimmed, as
/// `EnvFilter` does not trim them: `" warn"` is a target named " warn" to it.
///
/// `origin` names where `level` came from ([`FROM_FLAG`], or [`FROM_RUST_LOG`]: a typo there
/// silenced the agent just the same).
pub fn directives(level: &str, origin: &'static str) -> Result<String, LogLevelError> {
    if level.trim().parse::<u32>().is_ok() {
        return Ok("info".to_string());
    }
    let mut checked = Vec::new();
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        checked.push(directive);
        let bare = !directive.contains(['=', '[']);
        if bare {
            if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
                return Err(LogLevelError::NotALevel {
                    directive: directive.to_string(),
                    origin,
                });
            }
        } else if let Err(e) = Directive::from_str(directive) {
            return Err(LogLevelError::Invalid {
                directive: directive.to_string(),
                reason: e.to_string(),
                origin,
            });
        }
    }
    if checked.is_empty() {
        return Err(LogLevelError::Empty { origin });
    }
    Ok(checked.join(","))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{FROM_FLAG, FROM_RUST_LOG, LogLevelError, colour, directives};

    /// Logs written to a file or a container runtime's pipe used to carry colour escape codes.
    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    /// Upstream's glog verbosity means info whatever the number: its default and DaemonSet value,
    /// 10, used to mean trace, a line per unreadable sysfs attribute on every rescan.
    #[test]
    fn glog_verbosity_numbers_mean_info() {
        for number in ["0", "2", "5", "10", " 10 "] {
            assert_eq!(directives(number, FROM_FLAG).unwrap(), "info", "{number}");
        }
        assert_eq!(
            directives("vfpool=debug", FROM_FLAG).unwrap(),
            "vfpool=debug"
        );
        assert_eq!(directives("warn", FROM_FLAG).unwrap(), "warn");
    }

    /// What the filter gets is what was checked: spaces around a directive used to reach
    /// `EnvFilter`, which does not trim them, so `" warn"` named a target and silenced every
    /// line, and `"info, vfpool=debug"` dropped the debug part.
    #[test]
    fn spaces_around_directives_do_not_reach_the_filter() {
        use tracing_subscriber::EnvFilter;
        use tracing_subscriber::filter::LevelFilter;
        let hint =
            |level: &str| EnvFilter::new(directives(level, FROM_FLAG).unwrap()).max_level_hint();
        assert_eq!(hint(" warn"), Some(LevelFilter::WARN));
        assert_eq!(hint("warn "), Some(LevelFilter::WARN));
        assert_eq!(hint("info, vfpool=debug"), Some(LevelFilter::DEBUG));
    }

    #[test]
    fn level_names_and_target_directives_are_accepted() {
        for good in [
            "trace",
            "debug",
            "info",
            "warn",
            "error",
            "off",
            "WARN",
            "Info",
            "info,vfpool=debug",
            "info, vfpool::cmd::run=debug",
            "vfpool_policy=trace,warn",
            "info,",
            "[reload]=debug",
        ] {
            let expected: Vec<&str> = good
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect();
            assert_eq!(
                directives(good, FROM_FLAG).as_deref(),
                Ok(expected.join(",").as_str()),
                "{good}"
            );
        }
    }

    /// A typo used to become a target directive and silence every log line, errors included.
    #[test]
    fn typos_are_refused_naming_the_flag_and_the_valid_values() {
        for (bad, directive) in [
            ("warning", "warning"),
            ("verbose", "verbose"),
            ("inf", "inf"),
            ("info,debg", "debg"),
            ("-1", "-1"),
            ("info,10", "10"),
        ] {
            let err = directives(bad, FROM_FLAG).unwrap_err();
            assert_eq!(
                err,
                LogLevelError::NotALevel {
                    directive: directive.to_string(),
                    origin: FROM_FLAG,
                },
                "{bad}"
            );
            let text = err.to_string();
            assert!(
                text.contains("--log-level")
                    && text.contains("VFPOOL_LOG_LEVEL")
                    && text.contains("trace, debug, info, warn, error, off")
                    && text.contains(directive),
                "{text}"
            );
        }
        let err = directives("vfpool=warning", FROM_FLAG).unwrap_err();
        assert!(
            matches!(&err, LogLevelError::Invalid { directive, .. } if directive == "vfpool=warning"),
            "{err:?}"
        );
        assert!(err.to_string().contains("--log-level"), "{err}");
        assert_eq!(
            directives(" , ", FROM_FLAG),
            Err(LogLevelError::Empty { origin: FROM_FLAG })
        );
        // RUST_LOG's typos are named as its own.
        let err = directives("warning", FROM_RUST_LOG)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(RUST_LOG)") && !err.contains("VFPOOL_LOG_LEVEL"),
            "{err}"
        );
    }
}
