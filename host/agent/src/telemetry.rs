//! Logging setup: `tracing` to stderr, filtered by `--log-level` / `VFPOOL_LOG` / `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Without a filter: `default` (the daemon runs at `info`, quiet in
/// steady state; the one-shot commands at `warn`, so that their stdout stays machine-readable and
/// their stderr readable).
pub fn init(level: Option<&str>, default: &str) {
    let filter = level
        .map(|level| EnvFilter::new(directives(level)))
        .or_else(|| EnvFilter::try_from_env("RUST_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new(default))
        // wasmtime's compiler is chatty at debug level and never interesting to an operator.
        .add_directive("cranelift_codegen=warn".parse().unwrap_or_default())
        .add_directive("wasmtime_cranelift=warn".parse().unwrap_or_default());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The filter directives for `--log-level`: a `tracing` filter as given, or — a bare number — the
/// upstream plugin's glog verbosity (its DaemonSet passes `--log-level=10`), which as a filter
/// would enable nothing but a target named "10" and silence every log line, errors included.
pub fn directives(level: &str) -> String {
    match level.trim().parse::<u32>() {
        Ok(0..=2) => "info".to_string(),
        Ok(3..=9) => "info,vfpool=debug".to_string(),
        Ok(_) => "info,vfpool=trace".to_string(),
        Err(_) => level.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn glog_verbosity_numbers_become_levels() {
        assert_eq!(directives("0"), "info");
        assert_eq!(directives("2"), "info");
        assert_eq!(directives("5"), "info,vfpool=debug");
        assert_eq!(directives("10"), "info,vfpool=trace");
        assert_eq!(directives(" 10 "), "info,vfpool=trace");
        assert_eq!(directives("vfpool=debug"), "vfpool=debug");
        assert_eq!(directives("warn"), "warn");
    }
}
