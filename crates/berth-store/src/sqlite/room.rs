//! Keeps puts from filling the disk: a put is refused while the room left is under the
//! floor, so that gets, deletes and checkpoints still find room to write. The room is the
//! free space on the database's file system, plus the database's own free pages, less the
//! WAL's size: a checkpoint may need that much again to copy the WAL into the database.
//! Deleting messages frees pages for new ones, so puts resume once consumers catch up, as
//! they do once an operator frees space on the disk.

use std::path::PathBuf;

use berth_core::error::StoreError;
use rusqlite::Connection;

/// Free space past which the room is not worked out further: more than a WAL grows to
/// between checkpoints (`wal_autocheckpoint`, 64 MiB) plus its commit batches.
const PLENTY: u64 = 128 << 20;

pub(crate) struct Room {
    dir: PathBuf,
    wal: PathBuf,
    floor: u64,
}

impl Room {
    /// Watches the file system holding `database`; a `floor` of 0 never refuses.
    pub(crate) fn new(database: &std::path::Path, floor: u64) -> Room {
        let dir = database.parent().map_or_else(|| PathBuf::from("."), |p| p.to_path_buf());
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Room { dir, wal: wal.into(), floor }
    }

    /// Refuses a put while the room is under the floor.
    pub(crate) fn check(&self, conn: &Connection) -> Result<(), StoreError> {
        if self.floor == 0 {
            return Ok(());
        }
        let free = self.fs_free();
        if free >= self.floor.saturating_add(PLENTY) {
            return Ok(());
        }
        let reusable = free_pages_bytes(conn).map_err(super::backend)?;
        let wal = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if free.saturating_add(reusable).saturating_sub(wal) >= self.floor {
            return Ok(());
        }
        Err(StoreError::Full(format!(
            "{free} bytes free on the disk and {reusable} in the database, less a WAL of {wal}, \
             is under the floor of {} bytes",
            self.floor
        )))
    }

    /// Whether space is short enough that checkpoints should give the WAL's space back.
    pub(crate) fn is_tight(&self) -> bool {
        self.floor > 0 && self.fs_free() < self.floor.saturating_add(PLENTY)
    }

    /// Read at every put: one statvfs call (about a microsecond) per up to 20 messages, where
    /// a cached reading let a burst of puts run the disk full between two readings.
    fn fs_free(&self) -> u64 {
        match rustix::fs::statvfs(&self.dir) {
            Ok(stats) => stats.f_bavail.saturating_mul(stats.f_frsize),
            Err(e) => {
                // Not knowing is no reason to refuse puts; SQLite's own full-disk error remains.
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read free disk space");
                u64::MAX
            }
        }
    }
}

fn free_pages_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: u64 = conn.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    let size: u64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    Ok(pages * size)
}
