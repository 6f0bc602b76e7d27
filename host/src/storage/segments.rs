//! Segment files: where a shard's record chunks live.
//!
//! Each shard appends its chunks to files of about `segment_bytes_max`,
//! named by the first sequence they hold, under
//! `{data}/db/segments/{stream id}_{shard}/`. fjall keeps only each chunk's
//! summary and location, so a record's bytes are written to disk once (an
//! LSM writes every value twice: to its journal, then to a table, and
//! rewrites it at compactions).
//!
//! Crash safety comes from the order of writes in a group commit: the
//! chunks are written to their segments and synced (with the directory when
//! a segment was created) before the fjall batch that refers to them
//! commits. Bytes past the last chunk fjall knows of are from a commit that
//! did not finish: they are overwritten by the next write, and cut off when
//! the writer first opens the segment again. Files are never rewritten,
//! only appended to and removed whole once retention removed every chunk
//! in them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::chunk::{ChunkLocation, ChunkSummary};

const EXTENSION: &str = "seg";

/// The segment files of every shard, for reading and removing.
pub(super) struct Segments {
    root: PathBuf,
}

impl Segments {
    pub fn new(db_dir: &Path) -> Self {
        Self {
            root: db_dir.join("segments"),
        }
    }

    fn shard_dir(&self, stream_id: u64, shard: u32) -> PathBuf {
        self.root.join(format!("{stream_id}_{shard}"))
    }

    fn path(&self, stream_id: u64, shard: u32, segment: u64) -> PathBuf {
        self.shard_dir(stream_id, shard)
            .join(format!("{segment:020}.{EXTENSION}"))
    }

    /// A stored chunk's bytes.
    pub fn read(&self, stream_id: u64, shard: u32, location: ChunkLocation) -> io::Result<Bytes> {
        let mut file = File::open(self.path(stream_id, shard, location.segment))?;
        file.seek(io::SeekFrom::Start(location.offset))?;
        // Read into spare capacity: zero-filling megabytes first that the
        // read overwrites cost as much as copying them (profile of
        // `weir bench consume`).
        let len = location.len as usize;
        let mut value = Vec::with_capacity(len);
        file.take(u64::from(location.len)).read_to_end(&mut value)?;
        if value.len() < len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(value))
    }

    /// The shard's segments, oldest first, by first sequence.
    fn list(&self, stream_id: u64, shard: u32) -> io::Result<Vec<u64>> {
        let mut segments = Vec::new();
        let entries = match fs::read_dir(self.shard_dir(stream_id, shard)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(segments),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let name = entry?.file_name();
            let first = name
                .to_str()
                .and_then(|name| name.strip_suffix(EXTENSION)?.strip_suffix('.'))
                .and_then(|first| first.parse::<u64>().ok());
            segments.extend(first);
        }
        segments.sort_unstable();
        Ok(segments)
    }

    /// Removes the segments whose every chunk is below `first_sequence`
    /// (those followed by a segment that starts at or before it).
    pub fn remove_before(&self, stream_id: u64, shard: u32, first_sequence: u64) -> io::Result<()> {
        let segments = self.list(stream_id, shard)?;
        for pair in segments.windows(2) {
            if pair[1] > first_sequence {
                break;
            }
            fs::remove_file(self.path(stream_id, shard, pair[0]))?;
        }
        Ok(())
    }

    /// Removes a deleted stream's shard and all its segments.
    pub fn remove_shard(&self, stream_id: u64, shard: u32) -> io::Result<()> {
        match fs::remove_dir_all(self.shard_dir(stream_id, shard)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Removes the segments of shards that are not `live` (left by a crash
    /// while their stream was deleted).
    pub fn remove_orphans(&self, live: &std::collections::HashSet<(u64, u32)>) -> io::Result<()> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let shard = entry.file_name().to_str().and_then(|name| {
                let (stream_id, shard) = name.split_once('_')?;
                Some((stream_id.parse::<u64>().ok()?, shard.parse::<u32>().ok()?))
            });
            if shard.is_some_and(|shard| !live.contains(&shard)) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Bytes all segment files take.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(shards) = fs::read_dir(&self.root) else {
            return 0;
        };
        shards
            .flatten()
            .filter_map(|shard| fs::read_dir(shard.path()).ok())
            .flat_map(|files| files.flatten())
            .filter_map(|file| file.metadata().ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

/// The segment a shard appends to, owned by the writer thread.
struct Appender {
    file: File,
    segment: u64,
    /// Bytes that committed groups refer to.
    committed: u64,
    /// Bytes written for the group being committed, after `committed`.
    pending: u64,
    /// Written since the last sync.
    dirty: bool,
    /// The file was created since the directory was last synced.
    created: bool,
}

/// The writer's side: appends chunks to each shard's last segment.
pub(super) struct SegmentWriter {
    segments: std::sync::Arc<Segments>,
    segment_bytes_max: u64,
    appenders: HashMap<(u64, u32), Appender>,
}

impl SegmentWriter {
    pub fn new(segments: std::sync::Arc<Segments>, segment_bytes_max: u64) -> Self {
        Self {
            segments,
            segment_bytes_max,
            appenders: HashMap::new(),
        }
    }

    /// Writes a chunk after the shard's committed chunks (and those pending
    /// in this group) and says where it went. `last` is the summary of the
    /// shard's newest committed chunk, for opening its segment again.
    pub fn append(
        &mut self,
        stream_id: u64,
        shard: u32,
        first_sequence: u64,
        chunk: &[u8],
        last: impl FnOnce() -> io::Result<Option<ChunkSummary>>,
    ) -> io::Result<ChunkLocation> {
        let key = (stream_id, shard);
        if !self.appenders.contains_key(&key) {
            let appender = self.reopen(stream_id, shard, first_sequence, last()?)?;
            self.appenders.insert(key, appender);
        }
        let full = self.appenders.get(&key).is_some_and(|appender| {
            appender.committed + appender.pending >= self.segment_bytes_max
                && appender.committed + appender.pending > 0
        });
        if full {
            let file = self.create(stream_id, shard, first_sequence)?;
            let appender = self.appenders.get_mut(&key).ok_or_else(unexpected)?;
            if appender.dirty {
                // The old segment leaves the map, and so every later sync:
                // its unsynced chunks (this group's, or in buffered mode
                // earlier ones too) are synced now.
                appender.file.sync_data()?;
            }
            *appender = Appender {
                file,
                segment: first_sequence,
                committed: 0,
                pending: 0,
                dirty: false,
                created: true,
            };
        }
        let appender = self.appenders.get_mut(&key).ok_or_else(unexpected)?;
        let offset = appender.committed + appender.pending;
        appender.file.write_all_at(chunk, offset)?;
        appender.pending += chunk.len() as u64;
        appender.dirty = true;
        Ok(ChunkLocation {
            segment: appender.segment,
            offset,
            len: chunk.len() as u32,
        })
    }

    /// Opens the segment the shard's newest chunk is in (cutting off what
    /// an unfinished commit left after it), or starts one at `next` when
    /// the shard holds no chunk; segments no chunk refers to are removed.
    fn reopen(
        &self,
        stream_id: u64,
        shard: u32,
        next: u64,
        last: Option<ChunkSummary>,
    ) -> io::Result<Appender> {
        let keep = last.map(|summary| summary.location.segment);
        for segment in self.segments.list(stream_id, shard)? {
            if keep.is_none_or(|keep| segment > keep) {
                fs::remove_file(self.segments.path(stream_id, shard, segment))?;
            }
        }
        let Some(last) = last else {
            return Ok(Appender {
                file: self.create(stream_id, shard, next)?,
                segment: next,
                committed: 0,
                pending: 0,
                dirty: false,
                created: true,
            });
        };
        let location = last.location;
        let file = OpenOptions::new().write(true).open(self.segments.path(
            stream_id,
            shard,
            location.segment,
        ))?;
        let committed = location.offset + u64::from(location.len);
        file.set_len(committed)?;
        Ok(Appender {
            file,
            segment: location.segment,
            committed,
            pending: 0,
            dirty: false,
            created: false,
        })
    }

    fn create(&self, stream_id: u64, shard: u32, first_sequence: u64) -> io::Result<File> {
        fs::create_dir_all(self.segments.shard_dir(stream_id, shard))?;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.segments.path(stream_id, shard, first_sequence))
    }

    /// Syncs every segment written since the last sync, in parallel, and
    /// the directories of new ones: before the fjall commit that refers
    /// to them.
    pub fn sync(&mut self) -> io::Result<()> {
        fn sync_data(appender: &mut Appender) -> io::Result<()> {
            appender.file.sync_data()?;
            appender.dirty = false;
            Ok(())
        }
        let mut dirty: Vec<&mut Appender> = self
            .appenders
            .values_mut()
            .filter(|appender| appender.dirty || appender.created)
            .collect();
        let segments = &self.segments;
        // One sync runs on this thread, the others beside it: a commit
        // that touched one shard starts no thread at all.
        let here = dirty.pop();
        let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
            let syncs: Vec<_> = dirty
                .into_iter()
                .map(|appender| scope.spawn(move || sync_data(appender)))
                .collect();
            let mut results = vec![here.map_or(Ok(()), sync_data)];
            results.extend(
                syncs
                    .into_iter()
                    .map(|sync| sync.join().unwrap_or_else(|_| Err(unexpected()))),
            );
            results
        });
        results.into_iter().collect::<io::Result<()>>()?;
        for (&(stream_id, shard), appender) in &mut self.appenders {
            if appender.created {
                // The file's name in its directory, the shard's directory
                // in the root, the root in the database directory.
                let segment = segments.path(stream_id, shard, appender.segment);
                crate::files::sync_parent(&segment)?;
                crate::files::sync_parent(&segments.shard_dir(stream_id, shard))?;
                crate::files::sync_parent(&segments.root)?;
                appender.created = false;
            }
        }
        Ok(())
    }

    /// The group committed: its chunks are now referred to.
    pub fn committed(&mut self) {
        for appender in self.appenders.values_mut() {
            appender.committed += std::mem::take(&mut appender.pending);
        }
    }

    /// The group failed: its chunks will be overwritten.
    pub fn abandoned(&mut self) {
        for appender in self.appenders.values_mut() {
            appender.pending = 0;
        }
    }

    pub fn remove_shard(&self, stream_id: u64, shard: u32) -> io::Result<()> {
        self.segments.remove_shard(stream_id, shard)
    }

    pub fn remove_before(&self, stream_id: u64, shard: u32, first_sequence: u64) -> io::Result<()> {
        self.segments
            .remove_before(stream_id, shard, first_sequence)
    }

    /// Forgets a deleted stream's shards.
    pub fn forget_stream(&mut self, stream_id: u64) {
        self.appenders.retain(|(id, _), _| *id != stream_id);
    }
}

fn unexpected() -> io::Error {
    io::Error::other("segment writer: a sync thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_read_by_its_location_and_a_short_or_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let segments = Segments::new(dir.path());
        fs::create_dir_all(segments.shard_dir(7, 1)).expect("shard dir");
        fs::write(segments.path(7, 1, 100), b"0123456789").expect("segment");
        let at = |segment, offset, len| ChunkLocation {
            segment,
            offset,
            len,
        };

        let chunk = segments.read(7, 1, at(100, 3, 4)).expect("read");
        assert_eq!(&chunk[..], b"3456");
        let short = segments
            .read(7, 1, at(100, 8, 4))
            .expect_err("past the end");
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let missing = segments
            .read(7, 1, at(200, 0, 4))
            .expect_err("no such segment");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
