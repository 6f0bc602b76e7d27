//! Storage budget: appends are refused with [`StorageError::StorageFull`]
//! before the disk itself runs out, because fjall poisons itself after a
//! failed journal write (every later write fails until it is reopened).
//!
//! Two limits, both checked before an append is queued:
//! - `storage_bytes_max`: record bytes (partition keys and data) stored in
//!   all streams — exact, kept by the writer as it commits and trims, so
//!   writes resume the moment retention removes records;
//! - `disk_free_bytes_min`: free space the filesystem must keep, sampled
//!   by the background thread and reduced by what was appended since.
//!
//! Reads, subscriptions, checkpoints and control-plane writes (small) are
//! never refused; processors wait while storage is full.
//!
//! If a write fails anyway (another program filled the disk between two
//! samples, an I/O error), the gauge records the failure: every write is
//! refused until the background thread has reopened the engine, which it
//! does once the disk has more than `disk_free_bytes_min` free.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Result, StorageError};

pub(super) struct SpaceGauge {
    dir: PathBuf,
    storage_bytes_max: Option<u64>,
    disk_free_bytes_min: u64,
    stored_bytes: AtomicU64,
    /// Free bytes on the data directory's filesystem at the last sample.
    disk_free_bytes: AtomicU64,
    /// Record bytes appended since that sample.
    appended_since_sample: AtomicU64,
    /// Why fjall stopped taking writes, until it has been reopened.
    engine_failure: Mutex<Option<String>>,
}

impl SpaceGauge {
    pub fn new(
        dir: &Path,
        storage_bytes_max: Option<u64>,
        disk_free_bytes_min: u64,
        stored_bytes: u64,
    ) -> Self {
        let gauge = Self {
            dir: dir.to_owned(),
            storage_bytes_max,
            disk_free_bytes_min,
            stored_bytes: AtomicU64::new(stored_bytes),
            disk_free_bytes: AtomicU64::new(u64::MAX),
            appended_since_sample: AtomicU64::new(0),
            engine_failure: Mutex::new(None),
        };
        gauge.sample_disk();
        gauge
    }

    /// A shard's stored bytes went from `before` to `after`.
    pub fn changed(&self, before: u64, after: u64) {
        if after >= before {
            self.stored_bytes
                .fetch_add(after - before, Ordering::Relaxed);
            self.appended_since_sample
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.stored_bytes
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Replaces the total after the shards' states were read back from disk.
    pub fn reset_stored_bytes(&self, bytes: u64) {
        self.stored_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A write failed and fjall takes no more until it is reopened.
    pub fn engine_failed(&self, error: &str) {
        let mut failure = self
            .engine_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(
                %error,
                "a write to disk failed; writes are refused until storage is reopened"
            );
            *failure = Some(error.to_owned());
        }
    }

    pub fn engine_recovered(&self) {
        *self
            .engine_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn engine_failure(&self) -> Option<String> {
        self.engine_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the disk has room to reopen the engine and take writes again.
    pub fn disk_has_room(&self) -> bool {
        self.disk_free_bytes() > self.disk_free_bytes_min
    }

    /// Re-reads the filesystem's free space (statvfs).
    pub fn sample_disk(&self) {
        match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => {
                self.appended_since_sample.store(0, Ordering::Relaxed);
                self.disk_free_bytes.store(
                    stat.f_bavail.saturating_mul(stat.f_frsize),
                    Ordering::Relaxed,
                );
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot read free disk space");
            }
        }
    }

    /// Free bytes on the filesystem, as last sampled minus appends since.
    pub fn disk_free_bytes(&self) -> u64 {
        self.disk_free_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.appended_since_sample.load(Ordering::Relaxed))
    }

    /// Why appends are refused now, if they are.
    pub fn full_reason(&self) -> Option<String> {
        if let Some(reason) = self.engine_failure_reason() {
            return Some(reason);
        }
        let stored = self.stored_bytes();
        if let Some(max) = self.storage_bytes_max
            && stored >= max
        {
            return Some(format!(
                "streams hold {stored} record bytes, storage_bytes_max is {max}; \
                 writes resume once retention frees space"
            ));
        }
        let free = self.disk_free_bytes();
        (free < self.disk_free_bytes_min).then(|| {
            format!(
                "the disk has {free} bytes free, disk_free_bytes_min is {}; \
                 writes resume once space is freed",
                self.disk_free_bytes_min
            )
        })
    }

    /// Fails with `StorageFull` while fjall takes no writes (until reopened).
    pub fn check_engine(&self) -> Result<()> {
        match self.engine_failure_reason() {
            Some(reason) => Err(StorageError::StorageFull { reason }),
            None => Ok(()),
        }
    }

    fn engine_failure_reason(&self) -> Option<String> {
        self.engine_failure().map(|error| {
            format!(
                "a write to disk failed ({error}); writes resume once the disk has more \
                 than disk_free_bytes_min ({}) bytes free and storage has been reopened",
                self.disk_free_bytes_min
            )
        })
    }

    /// Fails with `StorageFull` when more records may not be appended.
    pub fn check(&self) -> Result<()> {
        match self.full_reason() {
            Some(reason) => Err(StorageError::StorageFull { reason }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_fills_and_frees() {
        let dir = tempfile::tempdir().expect("dir");
        let gauge = SpaceGauge::new(dir.path(), Some(100), 0, 0);
        assert!(gauge.check().is_ok());
        gauge.changed(0, 100);
        let error = gauge.check().expect_err("full");
        assert!(
            error.to_string().contains("storage_bytes_max is 100"),
            "{error}"
        );
        gauge.changed(100, 40);
        assert!(gauge.check().is_ok());
        assert_eq!(gauge.stored_bytes(), 40);
    }

    #[test]
    fn a_failed_write_refuses_writes_until_recovered() {
        let dir = tempfile::tempdir().expect("dir");
        let gauge = SpaceGauge::new(dir.path(), None, 0, 0);
        gauge.engine_failed("No space left on device (os error 28)");
        gauge.engine_failed("a later error is not the cause");
        for error in [gauge.check(), gauge.check_engine()] {
            let message = error.expect_err("refused").to_string();
            assert!(message.contains("os error 28"), "{message}");
            assert!(message.contains("disk_free_bytes_min (0)"), "{message}");
        }
        gauge.engine_recovered();
        assert!(gauge.check().is_ok());
        assert!(gauge.check_engine().is_ok());
    }

    #[test]
    fn a_disk_reserve_larger_than_the_disk_is_full() {
        let dir = tempfile::tempdir().expect("dir");
        let gauge = SpaceGauge::new(dir.path(), None, u64::MAX, 0);
        let error = gauge.check().expect_err("full");
        assert!(error.to_string().contains("disk_free_bytes_min"), "{error}");
    }
}
