//! `vfpool-cni`: the CNI binary (installed as `/opt/cni/bin/sriov`). Reads the CNI environment and
//! stdin, runs the command, prints the result or the error JSON on stdout, and exits non-zero on
//! error. All logic lives in the library.

use std::io::{Read, Write};
use std::process::ExitCode;

use vfpool_cni::env::CniEnv;
use vfpool_cni::error::{CniError, code};
use vfpool_cni::ipam::ExecIpam;
use vfpool_cni::log::Logger;
use vfpool_cni::plugin::{self, Deps, LazyRealNetlink};

/// Stdin larger than this is not a network configuration.
const MAX_STDIN: u64 = 4 << 20;

fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    // Nothing sensible is left to do when stdout is gone.
    let _ = out.write_all(text.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn fail(err: CniError) -> ExitCode {
    print(&err.to_json());
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // Read stdin first, whatever happens next: a runtime writing the config into a plugin that
    // already exited would get EPIPE. Every command gets its config there (VERSION too).
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_STDIN).read_to_end(&mut stdin) {
        return fail(CniError::from_error(code::IO_FAILURE, &e));
    }
    let env = match CniEnv::from_lookup(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => return fail(CniError::from_error(code::INVALID_ENV, &e)),
    };
    let mut netlink = LazyRealNetlink::default();
    let mut ipam = ExecIpam;
    let mut log = Logger::stderr();
    let mut deps = Deps {
        netlink: &mut netlink,
        ipam: &mut ipam,
        log: &mut log,
        lock_timeout: plugin::LOCK_TIMEOUT,
    };
    match plugin::run(&env, &stdin, &mut deps) {
        Ok(Some(out)) => {
            print(&out);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
