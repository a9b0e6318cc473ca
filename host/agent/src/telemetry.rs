//! Logging setup: `tracing` to stderr, filtered by `--log-level` / `VFPOOL_LOG` / `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Quiet by default (`warn`) for the one-shot commands so that their
/// stdout stays machine-readable and their stderr readable; the daemon raises it to `info`.
pub fn init(level: Option<&str>) {
    let filter = level
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("RUST_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("warn"))
        // wasmtime's compiler is chatty at debug level and never interesting to an operator.
        .add_directive("cranelift_codegen=warn".parse().unwrap_or_default())
        .add_directive("wasmtime_cranelift=warn".parse().unwrap_or_default());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
