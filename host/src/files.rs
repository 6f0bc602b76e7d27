//! Small files in the data directory (keys, tokens, certificates): written
//! so a crash at any moment leaves either the old file or the whole new
//! one, never a part.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` readable only by its owner: to a temporary
/// file first, synced, then renamed over `path`, and the directory synced
/// so the rename itself survives a power cut.
pub fn write_owner_only(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, making a rename or create in it
/// durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}
