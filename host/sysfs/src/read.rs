//! Small, forgiving readers for sysfs attribute files.
//!
//! sysfs is an external input: any file may be missing (older kernels, drivers that don't implement
//! it), unreadable (`carrier` on a down link returns `EINVAL`, `phys_port_name` returns `EOPNOTSUPP`)
//! or hold something unexpected. Every reader here turns that into `None` instead of an error, and
//! logs at debug level when the reason is more than "the file is not there".

use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use rustix::fs::{CWD, FileType, Mode, OFlags, RawDir, openat, readlinkat};
use rustix::io::Errno;

/// sysfs attributes are at most a page; one read returns the whole value.
const ATTRIBUTE_MAX: usize = 4096;
/// Room for a few hundred directory entries per `getdents64` call.
const DIRENT_BUFFER: usize = 16 * 1024;

/// An open sysfs directory. Attributes are read relative to its descriptor (`openat`), so the
/// kernel resolves one path component per read instead of the whole path through every symlink,
/// and directories are listed with raw `getdents64` (no `opendir` bookkeeping): on a node with a
/// thousand VFs, syscalls are nearly all of discovery's cost.
pub(crate) struct SysDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SysDir {
    /// Opens `path` (following symlinks); `None` if it is missing or not a directory.
    pub(crate) fn open(path: &Path) -> Option<SysDir> {
        match SysDir::open_or_error(path) {
            Ok(dir) => Some(dir),
            Err(err) => {
                note_unreadable(path, err);
                None
            }
        }
    }

    /// Like [`SysDir::open`], but reports why the directory could not be opened.
    pub(crate) fn open_or_error(path: &Path) -> Result<SysDir, Errno> {
        let fd = openat(CWD, path, dir_flags(), Mode::empty())?;
        Ok(SysDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens the subdirectory (or directory symlink) `name`.
    pub(crate) fn sub(&self, name: &str) -> Option<SysDir> {
        match openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => Some(SysDir {
                fd,
                path: self.path.join(name),
            }),
            Err(err) => {
                note_unreadable(&self.path.join(name), err);
                None
            }
        }
    }

    /// The path this directory was opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The entry names, sorted (`.` and `..` left out). Reads from the descriptor's position, so a
    /// handle is listed once.
    pub(crate) fn names(&self) -> Vec<String> {
        self.entries().into_iter().map(|e| e.name).collect()
    }

    /// The entries with their types, sorted by name (`.` and `..` left out); names that are not
    /// UTF-8 are left out too (see [`SysDir::os_names`] where they matter). Like
    /// [`SysDir::names`], a handle is listed once.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        self.each_entry(|name, file_type| {
            if let Ok(name) = std::str::from_utf8(name) {
                out.push(Entry {
                    name: name.to_owned(),
                    // getdents reports the type for free; a file system that does not
                    // (DT_UNKNOWN) leaves the entry a possible directory.
                    maybe_dir: matches!(file_type, FileType::Directory | FileType::Unknown),
                });
            }
        });
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The entry names as the kernel gave them, UTF-8 or not, sorted bytewise (`.` and `..` left
    /// out). For names that are user-chosen bytes, such as netdev names, where leaving one out
    /// would hide a device's netdev. Like [`SysDir::names`], a handle is listed once.
    pub(crate) fn os_names(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        self.each_entry(|name, _| out.push(OsStr::from_bytes(name).to_owned()));
        out.sort_unstable();
        out
    }

    fn each_entry(&self, mut visit: impl FnMut(&[u8], FileType)) {
        let mut buf = [MaybeUninit::<u8>::uninit(); DIRENT_BUFFER];
        let mut entries = RawDir::new(&self.fd, &mut buf);
        while let Some(entry) = entries.next() {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." {
                        visit(name, entry.file_type());
                    }
                }
                Err(err) => {
                    note_unreadable(&self.path, err);
                    break;
                }
            }
        }
    }

    /// The attribute `name` (a path relative to this directory) with surrounding whitespace and
    /// NULs trimmed; `None` if unreadable or empty. Some drivers end a value with a NUL before the
    /// newline (`4\0\n`), which would otherwise make a number unparsable.
    pub(crate) fn trimmed(&self, name: impl AsRef<Path>) -> Option<String> {
        let mut buf = [0u8; ATTRIBUTE_MAX];
        let len = self.read_into(name.as_ref(), &mut buf)?;
        let text = std::str::from_utf8(&buf[..len])
            .ok()?
            .trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!text.is_empty()).then(|| text.to_owned())
    }

    /// A PCI id attribute (`0x15b3`) as lower-case hex without the `0x` (`15b3`).
    pub(crate) fn hex_id(&self, name: &str) -> Option<String> {
        self.trimmed(name).and_then(|text| normalize_hex(&text))
    }

    /// A decimal attribute. Negative values (the kernel's "unknown", e.g. `numa_node` = -1) and
    /// garbage are `None`.
    pub(crate) fn unsigned(&self, name: impl AsRef<Path>) -> Option<u32> {
        self.trimmed(name).and_then(|text| text.parse::<u32>().ok())
    }

    /// A `0`/`1` attribute.
    pub(crate) fn flag(&self, name: impl AsRef<Path>) -> Option<bool> {
        match self.trimmed(name)?.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    /// The directory the symlink `name` points into, as the link says it (relative links stay
    /// relative): `bus/pci/devices/<address>` → `../../../devices/pci0000:3a/0000:3a:00.0`.
    pub(crate) fn link_parent(&self, name: &str) -> Option<PathBuf> {
        match readlinkat(&self.fd, name, Vec::new()) {
            Ok(target) => Path::new(OsStr::from_bytes(target.as_bytes()))
                .parent()
                .map(Path::to_path_buf),
            Err(err) => {
                note_unreadable(&self.path.join(name), err);
                None
            }
        }
    }

    /// The last path component of the symlink `name`'s target (`driver` → `mlx5_core`).
    pub(crate) fn link_name(&self, name: &str) -> Option<String> {
        match readlinkat(&self.fd, name, Vec::new()) {
            Ok(target) => Path::new(OsStr::from_bytes(target.as_bytes()))
                .file_name()
                .and_then(OsStr::to_str)
                .map(str::to_owned),
            Err(err) => {
                note_unreadable(&self.path.join(name), err);
                None
            }
        }
    }

    fn read_into(&self, name: &Path, buf: &mut [u8]) -> Option<usize> {
        // NONBLOCK: no effect on a sysfs attribute, but a FIFO in a hand-built tree would block the
        // `open` (and the whole discovery) until a writer appeared; this way it reads as empty.
        let fd = match openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(err) => {
                note_unreadable(&self.path.join(name), err);
                return None;
            }
        };
        match rustix::io::read(&fd, buf) {
            Ok(len) => Some(len),
            Err(err) if is_exhaustion(err) => {
                note_unreadable(&self.path.join(name), err);
                None
            }
            Err(err) => {
                // `carrier` of a down link, `phys_port_name` of a non-representor: expected.
                tracing::trace!(path = %self.path.join(name).display(), error = %err, "sysfs attribute unreadable");
                None
            }
        }
    }
}

/// One directory entry: its name, and whether it may be a directory (not a symlink or a file).
pub(crate) struct Entry {
    pub name: String,
    pub maybe_dir: bool,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn note_unreadable(path: &Path, err: Errno) {
    if is_exhaustion(err) {
        LAST_EXHAUSTION.store(err.raw_os_error(), Ordering::Relaxed);
        // Release: whoever sees the count move sees the errno stored before it.
        EXHAUSTIONS.fetch_add(1, Ordering::Release);
    }
    if err != Errno::NOENT {
        tracing::debug!(path = %path.display(), error = %err, "sysfs entry unreadable");
    }
}

/// Reads that failed because the process or the system ran out of descriptors or memory, ever.
/// Every other failure is the file's (missing, refused by the driver) and makes a `None`; these
/// are not, and a discovery that met one has not seen the node: it would report devices missing
/// or without their driver, and the agent would withdraw them from their pools. A counter rather
/// than a flag per scan: discovery reads with several threads, and a process out of descriptors
/// is so for every scan running in it.
static EXHAUSTIONS: AtomicU64 = AtomicU64::new(0);
/// The errno of the latest of [`EXHAUSTIONS`].
static LAST_EXHAUSTION: AtomicI32 = AtomicI32::new(0);

/// Whether `err` says the process or the system ran out of descriptors or memory.
pub(crate) fn is_exhaustion(err: Errno) -> bool {
    matches!(err, Errno::MFILE | Errno::NFILE | Errno::NOMEM)
}

/// A mark to compare with [`exhausted_since`].
pub(crate) fn exhaustion_mark() -> u64 {
    EXHAUSTIONS.load(Ordering::Acquire)
}

/// The error of a read that ran out of descriptors or memory after `mark`, if any did.
pub(crate) fn exhausted_since(mark: u64) -> Option<std::io::Error> {
    (EXHAUSTIONS.load(Ordering::Acquire) != mark)
        .then(|| std::io::Error::from_raw_os_error(LAST_EXHAUSTION.load(Ordering::Relaxed)))
}

/// `0x15B3` or `15b3` to `15b3`; `None` if it is not hex.
pub(crate) fn normalize_hex(text: &str) -> Option<String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

/// The ids a PCI `modalias` carries: `pci:v000015B3d00001018sv000015B3sd00000001bc02sc00i00`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Modalias {
    pub vendor: Option<String>,
    pub device: Option<String>,
    pub subsystem_vendor: Option<String>,
    pub subsystem_device: Option<String>,
    /// Base class, subclass and programming interface as six hex digits.
    pub class: Option<String>,
}

impl Modalias {
    /// Parses a PCI modalias; fields that are absent or malformed are `None`.
    pub(crate) fn parse(text: &str) -> Modalias {
        let Some(mut rest) = text.trim().strip_prefix("pci:") else {
            return Modalias::default();
        };
        let mut out = Modalias::default();
        let (mut base, mut sub, mut iface) = (None, None, None);
        // Keys in the order the kernel writes them; longer keys first where one prefixes another.
        const KEYS: [(&str, usize); 8] = [
            ("sv", 8),
            ("sd", 8),
            ("bc", 2),
            ("sc", 2),
            ("v", 8),
            ("d", 8),
            ("i", 2),
            ("", 0),
        ];
        while !rest.is_empty() {
            let Some((key, width)) = KEYS
                .iter()
                .copied()
                .find(|(key, _)| !key.is_empty() && rest.starts_with(key))
            else {
                break;
            };
            let value_start = key.len();
            let Some(value) = rest.get(value_start..value_start + width) else {
                break;
            };
            let hex = normalize_hex(value);
            // 32-bit ids carry the 16-bit PCI id in their low four digits.
            let short = hex
                .as_deref()
                .and_then(|h| h.get(h.len().saturating_sub(4)..));
            match key {
                "v" => out.vendor = short.map(str::to_owned),
                "d" => out.device = short.map(str::to_owned),
                "sv" => out.subsystem_vendor = short.map(str::to_owned),
                "sd" => out.subsystem_device = short.map(str::to_owned),
                "bc" => base = hex,
                "sc" => sub = hex,
                "i" => iface = hex,
                _ => {}
            }
            rest = &rest[value_start + width..];
        }
        if let (Some(base), Some(sub), Some(iface)) = (base, sub, iface) {
            out.class = Some(format!("{base}{sub}{iface}"));
        }
        out
    }
}

/// The name of a link type, as `ip link` and upstream's netlink library call it, from its ARPHRD code.
pub(crate) fn link_type_name(arphrd: &str) -> Option<&'static str> {
    Some(match arphrd.parse::<u32>().ok()? {
        1 => "ether",
        2 => "eether",
        32 => "infiniband",
        512 => "ppp",
        768 => "ipip",
        769 => "tunnel6",
        772 => "loopback",
        776 => "sit",
        778 => "gre",
        801 => "ieee802.11",
        823 => "gre6",
        824 => "netlink",
        65534 => "none",
        65535 => "void",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalias_gives_lower_case_ids_and_class() {
        let m = Modalias::parse("pci:v000015B3d00001018sv000015B3sd00000001bc02sc00i00\n");
        assert_eq!(m.vendor.as_deref(), Some("15b3"));
        assert_eq!(m.device.as_deref(), Some("1018"));
        assert_eq!(m.subsystem_vendor.as_deref(), Some("15b3"));
        assert_eq!(m.subsystem_device.as_deref(), Some("0001"));
        assert_eq!(m.class.as_deref(), Some("020000"));
    }

    #[test]
    fn modalias_garbage_gives_nothing_and_never_panics() {
        for text in [
            "",
            "pci:",
            "usb:v1234",
            "pci:v0000",
            "pci:vZZZZZZZZd00001018",
            "pci:v000015b3dé",
        ] {
            let m = Modalias::parse(text);
            assert_eq!(m.class, None, "{text:?}");
        }
        assert_eq!(
            Modalias::parse("pci:vZZZZZZZZd00001018").device.as_deref(),
            Some("1018")
        );
    }

    #[test]
    fn hex_ids_are_normalized() {
        assert_eq!(normalize_hex("0x15B3").as_deref(), Some("15b3"));
        assert_eq!(normalize_hex("020000").as_deref(), Some("020000"));
        assert_eq!(normalize_hex("0x").as_deref(), None);
        assert_eq!(normalize_hex("0xzz").as_deref(), None);
    }

    #[test]
    fn link_types_by_arphrd() {
        assert_eq!(link_type_name("1"), Some("ether"));
        assert_eq!(link_type_name("32"), Some("infiniband"));
        assert_eq!(link_type_name("9999"), None);
        assert_eq!(link_type_name("eth"), None);
    }
}
