//! The precompiled-module cache: compiled policy components kept on disk so that an agent restart
//! or a hot swap of a large component (a Python or JavaScript policy is 12–18 MB of WebAssembly
//! and takes seconds to compile) loads it in milliseconds instead.
//!
//! Why it is safe to load machine code from disk here, and what keeps it so:
//! - The key is the module's SHA-256 *and* a SHA-256 of `Engine::precompile_compatibility_hash`
//!   (wasmtime version, compiler and its settings, target): an entry is only ever used for the
//!   exact module bytes and engine that produced it.
//! - Only our uid writes entries: the directory is created `0700`, and before every use it must
//!   still be a real directory (not a symlink), owned by our effective uid, and not writable by
//!   group or others (`0700` or `0755`; a Kubernetes `hostPath` created `DirectoryOrCreate` is
//!   `0755`). An entry file must be a regular file owned by us with no group/other write
//!   permission. Anything else is ignored (and logged), never deserialized. The digests detect
//!   corruption, not forgery: another process running as our uid with the directory in reach
//!   could write an entry, and the entry is native code run outside the sandbox. So the directory
//!   must be the agent's alone: in Kubernetes a `hostPath` no other pod mounts (another container
//!   running as root could not replace the agent's binary, which is in its image, but could
//!   plant an entry in a shared directory). The operator docs say so; entries are not signed.
//! - Each entry carries a header — magic, format version, module digest, engine digest and the
//!   SHA-256 of the artifact — checked against the in-memory bytes before they are deserialized, so
//!   a truncated, corrupted or renamed file is recompiled rather than trusted.
//! - The directory and the entry are opened without following symlinks and checked through their
//!   open descriptors (the entry relative to the directory's), so what was checked is what is
//!   read, even if the paths are swapped in between.
//! - Entries are written to a temporary file in the same directory and renamed into place, so a
//!   reader never sees half an entry. The file is read whole into memory (not mapped), so a later
//!   change to the file cannot change code that is already loaded.
//!
//! - The directory does not grow without bound: after each write, entries made by another engine
//!   (a wasmtime upgrade makes them unloadable), temporary files a killed process left behind and
//!   all but the [`MAX_ENTRIES`] most recently used entries are removed.
//!
//! Every failure here is a cache miss: the module is compiled as if there were no cache.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Identifies the entry format; bump it when the header changes.
const MAGIC: &[u8; 8] = b"VFPCWv01";
/// Magic, module digest, engine digest, artifact digest.
const HEADER_LEN: usize = 8 + 32 + 32 + 32;
/// Entries kept for this engine. A node runs one selector and one allocator at a time; the rest
/// are recent versions an operator may roll back to. Python and JavaScript entries are 50–70 MB.
pub const MAX_ENTRIES: usize = 8;
/// A temporary file older than this is left over from a process killed while writing.
const STALE_TEMP: Duration = Duration::from_secs(600);
const TEMP_PREFIX: &str = ".tmp-";
const ENTRY_SUFFIX: &str = ".cwasm";

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory could not be created or inspected.
    #[error("policy cache directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The directory exists but another user could have written into it.
    #[error(
        "policy cache directory {path} is not safe to load compiled code from: {reason} (it must be a directory owned by uid {uid} that group and others cannot write, e.g. mode 0700; fix it, remove it or pick another)"
    )]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Our effective uid.
        uid: u32,
    },
}

/// A directory of precompiled policy components. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Opens `dir`, creating it (and missing parents) with mode 0700, and checks that only our uid
    /// can write into it.
    pub fn open(dir: &Path) -> Result<CompileCache, CacheError> {
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => {}
            Err(source) => {
                return Err(CacheError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        let cache = CompileCache {
            dir: dir.to_path_buf(),
        };
        cache.open_dir()?;
        Ok(cache)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the directory (not following a symlink in its place) and checks, through the open
    /// descriptor, that it is still ours alone: checked before every read and write, as it may
    /// have changed. Entries are then opened relative to this descriptor, so swapping the
    /// directory after the check cannot redirect the read.
    fn open_dir(&self) -> Result<OwnedFd, CacheError> {
        let uid = rustix::process::geteuid().as_raw();
        let unsafe_dir = |reason: String| CacheError::Unsafe {
            path: self.dir.clone(),
            reason,
            uid,
        };
        let dir = rfs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::LOOP | Errno::NOTDIR => unsafe_dir("not a directory (a symlink?)".to_string()),
            errno => CacheError::Io {
                path: self.dir.clone(),
                source: errno.into(),
            },
        })?;
        let stat = rfs::fstat(&dir).map_err(|errno| CacheError::Io {
            path: self.dir.clone(),
            source: errno.into(),
        })?;
        if stat.st_uid != uid {
            return Err(unsafe_dir(format!("owned by uid {}", stat.st_uid)));
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "mode {mode:04o} lets group or others write into it"
            )));
        }
        Ok(dir)
    }

    fn entry_path(&self, module_sha256: &[u8; 32], engine_sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(entry_name(module_sha256, engine_sha256))
    }

    /// The cached component for `bytes`, or `None` on any miss (absent, foreign, corrupt, made by
    /// another engine). Never fails: a problem is logged and the caller compiles.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> Option<Component> {
        let module = sha256(bytes);
        let engine_digest = engine_digest(engine);
        let path = self.entry_path(&module, &engine_digest);
        let dir = match self.open_dir() {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!("not using the policy cache: {e}");
                return None;
            }
        };
        let entry = match read_entry(
            &dir,
            &entry_name(&module, &engine_digest),
            &module,
            &engine_digest,
        ) {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(reason) => {
                tracing::warn!(path = %path.display(), "ignoring policy cache entry: {reason}");
                return None;
            }
        };
        // Most recently used first when pruning; best effort.
        if let Err(e) = entry.file.set_modified(SystemTime::now()) {
            tracing::debug!(path = %path.display(), "could not mark the policy cache entry used: {e}");
        }
        match deserialize(engine, &entry.data[HEADER_LEN..]) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring policy cache entry: {e:#}");
                None
            }
        }
    }

    /// Stores `component`, compiled from `bytes`. Best effort: a failure is logged, not returned,
    /// because the component is already compiled and usable.
    pub(crate) fn store(&self, engine: &Engine, bytes: &[u8], component: &Component) {
        if let Err(e) = self.try_store(engine, bytes, component) {
            tracing::warn!(dir = %self.dir.display(), "could not write the policy cache: {e:#}");
        }
    }

    fn try_store(
        &self,
        engine: &Engine,
        bytes: &[u8],
        component: &Component,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.open_dir()?;
        let module = sha256(bytes);
        let engine_digest = engine_digest(engine);
        let artifact = component.serialize()?;
        let mut file = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        // tempfile creates the file 0600; say so explicitly, as the loader insists on it.
        file.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(MAGIC)?;
        file.write_all(&module)?;
        file.write_all(&engine_digest)?;
        file.write_all(&sha256(&artifact))?;
        file.write_all(&artifact)?;
        file.as_file().sync_all()?;
        file.persist(self.entry_path(&module, &engine_digest))?;
        self.prune(&engine_digest);
        Ok(())
    }

    /// Removes what can never be loaded again or has not been used for longest: entries of other
    /// engines, stale temporary files, and this engine's entries beyond [`MAX_ENTRIES`] (oldest
    /// modification time first; a hit refreshes it). Only regular files of ours with the cache's
    /// own name shapes are touched. Best effort: a failure is logged.
    fn prune(&self, engine_digest: &[u8; 32]) {
        let suffix = engine_suffix(engine_digest);
        let uid = rustix::process::geteuid().as_raw();
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "could not prune the policy cache: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        let mut current = Vec::new();
        let mut doomed = Vec::new();
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.file_type().is_file() || meta.uid() != uid {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                let age = now.duration_since(modified).unwrap_or_default();
                if age > STALE_TEMP {
                    doomed.push(entry.path());
                }
            } else if name.ends_with(&suffix) {
                current.push((modified, entry.path()));
            } else if name.ends_with(ENTRY_SUFFIX) {
                doomed.push(entry.path());
            }
        }
        if current.len() > MAX_ENTRIES {
            current.sort_unstable_by_key(|(modified, _)| std::cmp::Reverse(*modified));
            doomed.extend(current.drain(MAX_ENTRIES..).map(|(_, path)| path));
        }
        for path in doomed {
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "pruned from the policy cache"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "could not prune the policy cache: {e}")
                }
            }
        }
    }
}

/// An entry's file name: the module's digest and the engine's.
fn entry_name(module_sha256: &[u8; 32], engine_sha256: &[u8; 32]) -> String {
    format!("{}{}", hex(module_sha256), engine_suffix(engine_sha256))
}

/// The end of an entry's file name for `engine_digest`: entries of other engines never load.
fn engine_suffix(engine_digest: &[u8; 32]) -> String {
    format!("-{}{ENTRY_SUFFIX}", hex(&engine_digest[..8]))
}

/// An entry read and checked: its open file and its whole content, header included (the artifact
/// is `data[HEADER_LEN..]`, not copied out).
struct Entry {
    file: fs::File,
    data: Vec<u8>,
}

/// Reads and checks the entry `name` of the directory `dir`; `Ok(None)` when there is none. The
/// file is opened without following a symlink and checked through its descriptor, so what is
/// checked is what is read.
fn read_entry(
    dir: &OwnedFd,
    name: &str,
    module: &[u8; 32],
    engine_digest: &[u8; 32],
) -> Result<Option<Entry>, String> {
    let fd = match rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err("not a regular file (a symlink)".to_string()),
        Err(errno) => return Err(io::Error::from(errno).to_string()),
    };
    let stat = rfs::fstat(&fd).map_err(|e| io::Error::from(e).to_string())?;
    let uid = rustix::process::geteuid().as_raw();
    if rfs::FileType::from_raw_mode(stat.st_mode) != rfs::FileType::RegularFile {
        return Err("not a regular file".to_string());
    }
    if stat.st_uid != uid {
        return Err(format!("owned by uid {}, not {uid}", stat.st_uid));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err("writable by group or others".to_string());
    }
    let mut file = fs::File::from(fd);
    let mut data = Vec::with_capacity(usize::try_from(stat.st_size).unwrap_or(0));
    file.read_to_end(&mut data).map_err(|e| e.to_string())?;
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err("not a vfpool cache entry (bad header)".to_string());
    }
    if &data[8..40] != module || &data[40..72] != engine_digest {
        return Err("made for another module or engine".to_string());
    }
    if sha256(&data[HEADER_LEN..]) != data[72..HEADER_LEN] {
        return Err("artifact digest mismatch (corrupted or truncated)".to_string());
    }
    Ok(Some(Entry { file, data }))
}

/// Turns cached machine code back into a component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be wasmtime's own output. These bytes
    // are: they come from a file in a directory only our uid can write (checked just before the
    // read), written by `CompileCache::store` from `Component::serialize`, and their SHA-256 was
    // checked against the digest stored with them, for this module's digest and this engine's
    // compatibility hash. They are an in-memory copy, so the file changing later cannot affect
    // them. wasmtime itself also refuses an artifact from another version or configuration.
    unsafe { Component::deserialize(engine, artifact) }
}

/// The SHA-256 of the engine's compatibility hash: what must match for an artifact to load.
fn engine_digest(engine: &Engine) -> [u8; 32] {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// Feeds `Hash` into SHA-256 (std's `DefaultHasher` is not stable across Rust releases).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Unused: the digest is taken from the inner SHA-256.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{Limits, Policy, PolicyEngine, defaults};

    fn engine_with(dir: &Path) -> PolicyEngine {
        let cache = CompileCache::open(dir).unwrap();
        PolicyEngine::with_cache(Limits::default(), Some(cache)).unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        v.sort();
        v
    }

    fn cache_of(engine: &PolicyEngine) -> &CompileCache {
        engine.inner.cache.as_ref().unwrap()
    }

    const MODULE: &[u8] = defaults::PACKED_ALLOCATOR;

    /// A module the host refuses after compiling it (it exports neither interface, or imports
    /// what the host does not provide) was stored all the same, pushing useful entries out of
    /// the bounded cache; a module accepted is stored.
    #[test]
    fn only_accepted_modules_are_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        let wrong = std::fs::read(
            Path::new(crate::defaults::BUILT_COMPONENTS_DIR).join("wrong_exports.wasm"),
        )
        .unwrap();
        assert!(Policy::compile(&engine, "wrong.wasm", &wrong).is_err());
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
        Policy::compile(&engine, "packed", MODULE).unwrap();
        assert_eq!(entries(&dir).len(), 1);
    }

    #[test]
    fn a_compiled_module_is_stored_and_loaded_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let engine_raw = &engine.inner.engine;
        assert!(
            cache_of(&engine).load(engine_raw, MODULE).is_none(),
            "empty cache"
        );
        let policy = Policy::compile(&engine, "packed", MODULE).unwrap();
        assert!(policy.roles().allocator);
        let stored = entries(&dir);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(
            fs::metadata(&stored[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(cache_of(&engine).load(engine_raw, MODULE).is_some(), "hit");
        // A policy loaded from the cache works like a compiled one.
        let again = Policy::compile(&engine, "packed", MODULE).unwrap();
        assert!(again.roles().allocator && !again.roles().selector);
    }

    #[test]
    fn a_corrupted_entry_is_ignored_and_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        Policy::compile(&engine, "packed", MODULE).unwrap();
        let entry = entries(&dir).remove(0);
        let good = fs::read(&entry).unwrap();
        // A flipped byte in the artifact, then a truncated file.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        for corrupt in [bad, good[..HEADER_LEN + 10].to_vec(), b"junk".to_vec()] {
            fs::write(&entry, &corrupt).unwrap();
            assert!(
                cache_of(&engine)
                    .load(&engine.inner.engine, MODULE)
                    .is_none()
            );
            // Compiling again works and replaces the entry with a good one.
            Policy::compile(&engine, "packed", MODULE).unwrap();
            assert_eq!(fs::read(&entry).unwrap(), good);
        }
    }

    #[test]
    fn another_modules_entry_under_this_name_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        Policy::compile(&engine, "selector", defaults::UPSTREAM_SELECTOR).unwrap();
        let foreign = entries(&dir).remove(0);
        // A valid entry for another module, renamed to this module's key.
        let key =
            cache_of(&engine).entry_path(&sha256(MODULE), &engine_digest(&engine.inner.engine));
        fs::copy(&foreign, &key).unwrap();
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_none()
        );
    }

    #[test]
    fn entries_and_directories_others_can_write_are_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        Policy::compile(&engine, "packed", MODULE).unwrap();
        let entry = entries(&dir).remove(0);
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_none()
        );
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_some()
        );
        // A symlink in place of the entry, even to a good copy of it, is not followed.
        let copy = tmp.path().join("copy.cwasm");
        fs::rename(&entry, &copy).unwrap();
        std::os::unix::fs::symlink(&copy, &entry).unwrap();
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_none()
        );
        fs::remove_file(&entry).unwrap();
        fs::rename(&copy, &entry).unwrap();

        // Readable by others (a hostPath created 0755) is fine: nobody else can write.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(CompileCache::open(&dir).is_ok());
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_some()
        );

        // The directory opened to others: refused at open and ignored by a running cache.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_none()
        );
        let error = CompileCache::open(&dir).unwrap_err();
        assert!(matches!(error, CacheError::Unsafe { .. }), "{error}");
        assert!(error.to_string().contains("0777"), "{error}");

        // A symlink in place of the directory is refused too.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            CompileCache::open(&link),
            Err(CacheError::Unsafe { .. })
        ));
    }

    #[test]
    fn storing_prunes_other_engines_stale_temporaries_and_the_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with(&dir);
        let suffix = engine_suffix(&engine_digest(&engine.inner.engine));
        let long_ago = |path: &Path, seconds: u64| {
            fs::File::open(path)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(seconds))
                .unwrap();
        };
        // Entries of this engine, each older than the last; an old wasmtime's entry; a stale and a
        // fresh temporary file; a file that is none of the cache's.
        let mut ours = Vec::new();
        for i in 0..MAX_ENTRIES + 2 {
            let path = dir.join(format!("{:064x}{suffix}", i));
            fs::write(&path, b"x").unwrap();
            long_ago(&path, 1000 + 100 * i as u64);
            ours.push(path);
        }
        let other_engine = dir.join(format!("{:064x}-0123456789abcdef.cwasm", 1));
        let stale_temp = dir.join(".tmp-stale");
        let fresh_temp = dir.join(".tmp-fresh");
        let unrelated = dir.join("README");
        for path in [&other_engine, &stale_temp, &fresh_temp, &unrelated] {
            fs::write(path, b"x").unwrap();
        }
        long_ago(&other_engine, 10);
        long_ago(&stale_temp, 3600);

        Policy::compile(&engine, "packed", MODULE).unwrap();

        let stored = dir.join(format!("{}{suffix}", hex(&sha256(MODULE))));
        assert!(stored.exists(), "the new entry is kept");
        assert!(!other_engine.exists(), "another engine's entry is removed");
        assert!(!stale_temp.exists(), "a stale temporary file is removed");
        assert!(
            fresh_temp.exists(),
            "a temporary file being written is kept"
        );
        assert!(
            unrelated.exists(),
            "files that are not the cache's are kept"
        );
        // The new entry and the MAX_ENTRIES - 1 most recent of the others.
        let kept: Vec<bool> = ours.iter().map(|p| p.exists()).collect();
        let mut expected = vec![true; MAX_ENTRIES - 1];
        expected.extend([false; 3]);
        assert_eq!(kept, expected);
        assert_eq!(entries(&dir).len(), MAX_ENTRIES);

        // A hit makes an entry the most recent: it survives the next prune.
        long_ago(&stored, 100_000);
        assert!(
            cache_of(&engine)
                .load(&engine.inner.engine, MODULE)
                .is_some()
        );
        Policy::compile(&engine, "selector", defaults::UPSTREAM_SELECTOR).unwrap();
        assert!(stored.exists());
        assert_eq!(entries(&dir).len(), MAX_ENTRIES);
    }
}
