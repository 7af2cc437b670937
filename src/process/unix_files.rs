//! Unix, files: private directories (0700) and files (0600) from their creation, directories
//! for sockets that must be the user's own, durable renames, and which files to trust.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Create a directory and its missing parents, readable by the owner only.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Where a short directory for sockets may go: `$XDG_RUNTIME_DIR` (the user's own, when it is
/// set to an absolute path of a directory), else `/tmp`.
pub fn socket_roots(runtime: Option<OsString>) -> Vec<PathBuf> {
    let runtime = runtime.map(PathBuf::from).filter(|dir| dir.is_absolute() && dir.is_dir());
    runtime.into_iter().chain(Some(PathBuf::from("/tmp"))).collect()
}

/// Create `dir` (0700), or take the one there only if it is a real directory (not a symlink),
/// this user's, mode exactly 0700: in `/tmp` anyone can make that name first.
pub fn create_own_private_dir(dir: &Path) -> io::Result<()> {
    let created = match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))),
    };
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    let why = if meta.file_type().is_symlink() {
        "is a symbolic link".to_string()
    } else if !meta.is_dir() {
        "is not a directory".to_string()
    } else if meta.uid() != me {
        format!("belongs to another user (uid {})", meta.uid())
    } else if mode == 0o700 {
        return Ok(());
    } else if created {
        // The umask took bits away from the directory just made.
        return std::fs::set_permissions(dir, Permissions::from_mode(0o700));
    } else {
        format!("has mode {mode:04o}, not 0700")
    };
    Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} {why}", dir.display())))
}

/// Create a new file (failing if it exists), mode 0600 from the start.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Open (or create) a lock file, mode 0600.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// Open (or create) a log for appending, mode 0600.
pub fn open_private_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

/// Let the owner run a file (mode 0755).
#[cfg(test)]
pub fn make_executable(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
}

/// Make a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file ocx may trust: owned by this user and not writable by group or others.
pub fn is_trusted(meta: &Metadata) -> bool {
    static ME: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid cannot fail.
    let me = *ME.get_or_init(|| unsafe { libc::geteuid() });
    meta.uid() == me && meta.mode() & 0o022 == 0
}

/// A file's content if it is a regular file ocx may trust (`is_trusted`); None if it is not (a
/// symbolic link, a directory, a FIFO, another user's). One open, never following a link and
/// never blocking, and the checks made on what was opened: no second lookup of the path.
pub fn read_trusted(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        // Another user's file that this one may not read: refused as such, not unreadable.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return match std::fs::symlink_metadata(path) {
                Ok(meta) if !is_trusted(&meta) => Ok(None),
                _ => Err(e),
            };
        }
        other => other?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() || !is_trusted(&meta) {
        return Ok(None);
    }
    // Through `take`: `read_to_end` of a `File` would ask for its size again.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 64);
    file.take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}
