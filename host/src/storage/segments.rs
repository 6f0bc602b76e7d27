//! Segment files: where a stream's record chunks live.
//!
//! Each stream appends the chunks of all its shards to one log of files
//! of about `segment_bytes_max`, numbered in order, under
//! `{data}/db/segments/{stream id}/`: a group commit that touches several
//! shards of a stream writes one file and syncs it once (four files
//! synced in parallel cost two to four times one of the same bytes on
//! this kind of disk, BENCHMARKS.md). fjall keeps only each chunk's
//! summary and location, so a record's bytes are written to disk once (an
//! LSM writes every value twice: to its journal, then to a table, and
//! rewrites it at compactions).
//!
//! Crash safety comes from the order of writes in a group commit: the
//! chunks are written to their segments and synced (with the directory when
//! a segment was created) before the fjall batch that refers to them
//! commits. Bytes past the newest chunk fjall knows of are from a commit
//! that did not finish: they are overwritten by the next write, and cut off
//! when the writer first opens the stream's log again. Files are never
//! rewritten, only appended to and removed whole once no chunk is in them:
//! fjall counts each segment's chunks (`segment/{stream id}/{segment}` in
//! `meta`, changed in the batch that adds or removes chunks), so a rarely
//! written shard's old chunk keeps only its own segment, not the ones after.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::chunk::ChunkLocation;

const EXTENSION: &str = "seg";

/// The segment files of every stream, for reading and removing.
pub(super) struct Segments {
    root: PathBuf,
}

impl Segments {
    pub fn new(db_dir: &Path) -> Self {
        Self {
            root: db_dir.join("segments"),
        }
    }

    fn stream_dir(&self, stream_id: u64) -> PathBuf {
        self.root.join(stream_id.to_string())
    }

    fn path(&self, stream_id: u64, segment: u64) -> PathBuf {
        self.stream_dir(stream_id)
            .join(format!("{segment:020}.{EXTENSION}"))
    }

    /// A stored chunk's bytes.
    pub fn read(&self, stream_id: u64, location: ChunkLocation) -> io::Result<Bytes> {
        let mut file = File::open(self.path(stream_id, location.segment))?;
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

    /// The stream's segments, oldest first.
    fn list(&self, stream_id: u64) -> io::Result<Vec<u64>> {
        let mut segments = Vec::new();
        let entries = match fs::read_dir(self.stream_dir(stream_id)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(segments),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let name = entry?.file_name();
            let number = name
                .to_str()
                .and_then(|name| name.strip_suffix(EXTENSION)?.strip_suffix('.'))
                .and_then(|number| number.parse::<u64>().ok());
            segments.extend(number);
        }
        segments.sort_unstable();
        Ok(segments)
    }

    fn remove(&self, stream_id: u64, segment: u64) -> io::Result<()> {
        match fs::remove_file(self.path(stream_id, segment)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Removes a deleted stream's log.
    pub fn remove_stream(&self, stream_id: u64) -> io::Result<()> {
        match fs::remove_dir_all(self.stream_dir(stream_id)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Removes the logs of streams that are not `live` (left by a crash
    /// while their stream was deleted).
    pub fn remove_orphans(&self, live: &HashSet<u64>) -> io::Result<()> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let stream_id = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok());
            if stream_id.is_some_and(|stream_id| !live.contains(&stream_id)) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Bytes all segment files take.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(streams) = fs::read_dir(&self.root) else {
            return 0;
        };
        streams
            .flatten()
            .filter_map(|stream| fs::read_dir(stream.path()).ok())
            .flat_map(|files| files.flatten())
            .filter_map(|file| file.metadata().ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

/// The segment a stream appends to, owned by the writer thread.
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

impl Appender {
    /// Starts `segment`, a new, empty file.
    fn start(segments: &Segments, stream_id: u64, segment: u64) -> io::Result<Self> {
        Ok(Self {
            file: create(segments, stream_id, segment)?,
            segment,
            committed: 0,
            pending: 0,
            dirty: false,
            created: true,
        })
    }
}

/// The writer's side: appends chunks to each stream's newest segment and
/// removes segments once no chunk is left in them.
pub(super) struct SegmentWriter {
    segments: Arc<Segments>,
    segment_bytes_max: u64,
    appenders: HashMap<u64, Appender>,
    /// Chunks per segment, by stream, as committed (the streams the writer
    /// has read them for; see [`SegmentWriter::load_chunk_counts`]).
    chunk_counts: HashMap<u64, BTreeMap<u64, u64>>,
    /// Segments the pending group left for a new one: removed after the
    /// commit if no chunk is in them (all trimmed while they were newest).
    left: Vec<(u64, u64)>,
    /// Segments the last commit left without a chunk, to remove.
    emptied: Vec<(u64, u64)>,
}

impl SegmentWriter {
    pub fn new(segments: Arc<Segments>, segment_bytes_max: u64) -> Self {
        Self {
            segments,
            segment_bytes_max,
            appenders: HashMap::new(),
            chunk_counts: HashMap::new(),
            left: Vec::new(),
            emptied: Vec::new(),
        }
    }

    /// Writes a chunk after the stream's committed chunks (and those
    /// pending in this group) and says where it went. `newest` finds where
    /// the stream's newest committed chunk is, for opening its log again.
    pub fn append(
        &mut self,
        stream_id: u64,
        chunk: &[u8],
        newest: impl FnOnce() -> io::Result<Option<ChunkLocation>>,
    ) -> io::Result<ChunkLocation> {
        if !self.appenders.contains_key(&stream_id) {
            let appender = self.reopen(stream_id, newest()?)?;
            self.appenders.insert(stream_id, appender);
        }
        let full = self.appenders.get(&stream_id).is_some_and(|appender| {
            appender.committed + appender.pending >= self.segment_bytes_max
                && appender.committed + appender.pending > 0
        });
        if full {
            let appender = self.appenders.get_mut(&stream_id).ok_or_else(unexpected)?;
            let next = Appender::start(&self.segments, stream_id, appender.segment + 1)?;
            if appender.dirty {
                // The old segment is no longer synced with the newest: its
                // unsynced chunks (this group's, or in buffered mode
                // earlier ones too) are synced now.
                appender.file.sync_data()?;
            }
            self.left.push((stream_id, appender.segment));
            *appender = next;
        }
        let appender = self.appenders.get_mut(&stream_id).ok_or_else(unexpected)?;
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

    /// Opens the segment the stream's newest chunk is in (cutting off what
    /// an unfinished commit left after it), or starts a segment after the
    /// last one when the stream holds no chunk; newer segments, which no
    /// chunk refers to, are removed.
    fn reopen(&self, stream_id: u64, newest: Option<ChunkLocation>) -> io::Result<Appender> {
        let listed = self.segments.list(stream_id)?;
        let keep = newest.map(|location| location.segment);
        for &segment in &listed {
            if keep.is_none_or(|keep| segment > keep) {
                self.segments.remove(stream_id, segment)?;
            }
        }
        let Some(newest) = newest else {
            let segment = listed.last().map_or(0, |last| last + 1);
            return Appender::start(&self.segments, stream_id, segment);
        };
        let committed = newest.offset + u64::from(newest.len);
        let file = match OpenOptions::new()
            .write(true)
            .open(self.segments.path(stream_id, newest.segment))
        {
            Ok(file) => Some(file),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        let file = match file {
            Some(file) if file.metadata()?.len() >= committed => file,
            // The newest chunks never reached the disk though their
            // summaries did (buffered mode, a power cut before the sync):
            // they read as damaged, and new chunks go to a segment of
            // their own, so the stream takes writes again.
            _ => {
                tracing::error!(
                    stream_id,
                    segment = newest.segment,
                    "the segment holding the stream's newest records ends before them or is gone (the machine stopped before they were synced); they read as damaged, and new records go to a new segment"
                );
                return Appender::start(&self.segments, stream_id, newest.segment + 1);
            }
        };
        // Cuts off what an unfinished commit left after the newest chunk.
        file.set_len(committed)?;
        Ok(Appender {
            file,
            segment: newest.segment,
            committed,
            pending: 0,
            dirty: false,
            created: false,
        })
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
        // that touched one stream starts no thread at all.
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
        for (&stream_id, appender) in &mut self.appenders {
            if appender.created {
                // The file's name in its directory, the stream's directory
                // in the root, the root in the database directory.
                let segment = segments.path(stream_id, appender.segment);
                crate::files::sync_parent(&segment)?;
                crate::files::sync_parent(&segments.stream_dir(stream_id))?;
                crate::files::sync_parent(&segments.root)?;
                appender.created = false;
            }
        }
        Ok(())
    }

    /// Whether the stream's chunk counts have been read.
    pub fn has_chunk_counts(&self, stream_id: u64) -> bool {
        self.chunk_counts.contains_key(&stream_id)
    }

    /// Takes the stream's committed chunk counts, as read from fjall, and
    /// removes segments no chunk is in (left by a crash between a trim and
    /// the removal that follows it) — all but the newest, which the stream
    /// may still append to.
    pub fn load_chunk_counts(
        &mut self,
        stream_id: u64,
        counts: BTreeMap<u64, u64>,
    ) -> io::Result<()> {
        let listed = self.segments.list(stream_id)?;
        if let Some((_, older)) = listed.split_last() {
            for &segment in older {
                if !counts.contains_key(&segment) {
                    self.segments.remove(stream_id, segment)?;
                }
            }
        }
        self.chunk_counts.insert(stream_id, counts);
        Ok(())
    }

    /// The committed chunks in a segment (the stream's counts must have
    /// been loaded).
    pub fn chunk_count(&self, stream_id: u64, segment: u64) -> u64 {
        self.chunk_counts
            .get(&stream_id)
            .and_then(|counts| counts.get(&segment))
            .copied()
            .unwrap_or(0)
    }

    /// The group committed: its chunks are now referred to, and `counts`
    /// (the segments whose chunk count it changed) are the new counts.
    pub fn committed(&mut self, counts: &[((u64, u64), u64)]) {
        for appender in self.appenders.values_mut() {
            appender.committed += std::mem::take(&mut appender.pending);
        }
        self.emptied.append(&mut self.left);
        for &((stream_id, segment), count) in counts {
            let stream_counts = self.chunk_counts.entry(stream_id).or_default();
            if count == 0 {
                stream_counts.remove(&segment);
                self.emptied.push((stream_id, segment));
            } else {
                stream_counts.insert(segment, count);
            }
        }
    }

    /// Removes the segments the last commit left with no chunk, but never
    /// one a stream appends to (after the commit's answers: it is tidying).
    pub fn remove_emptied(&mut self) {
        for (stream_id, segment) in std::mem::take(&mut self.emptied) {
            let appending = self
                .appenders
                .get(&stream_id)
                .is_some_and(|appender| appender.segment == segment);
            if appending || self.chunk_count(stream_id, segment) > 0 {
                continue;
            }
            if !self.chunk_counts.contains_key(&stream_id) {
                // Not known to be empty: left for `load_chunk_counts`.
                continue;
            }
            if let Err(error) = self.segments.remove(stream_id, segment) {
                tracing::warn!(%error, stream_id, segment, "removing a segment with no chunk left failed; removed at the next start");
            }
        }
    }

    /// The group failed: its chunks will be overwritten.
    pub fn abandoned(&mut self) {
        for appender in self.appenders.values_mut() {
            appender.pending = 0;
        }
        self.left.clear();
    }

    /// Forgets what it knew of the stored state (after storage was
    /// reopened, which may have kept a write that seemed to fail): logs
    /// are opened again and chunk counts read again when next used.
    pub fn forget_all(&mut self) {
        if let Err(error) = self.sync() {
            tracing::warn!(%error, "syncing segments before reopening them failed");
        }
        self.appenders.clear();
        self.chunk_counts.clear();
        self.left.clear();
        self.emptied.clear();
    }

    /// Forgets a deleted stream and removes its log.
    pub fn remove_stream(&mut self, stream_id: u64) -> io::Result<()> {
        self.appenders.remove(&stream_id);
        self.chunk_counts.remove(&stream_id);
        self.segments.remove_stream(stream_id)
    }
}

fn create(segments: &Segments, stream_id: u64, segment: u64) -> io::Result<File> {
    fs::create_dir_all(segments.stream_dir(stream_id))?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(segments.path(stream_id, segment))
}

fn unexpected() -> io::Error {
    io::Error::other("segment writer: a sync thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64, len: u32) -> ChunkLocation {
        ChunkLocation {
            segment,
            offset,
            len,
        }
    }

    #[test]
    fn a_chunk_is_read_by_its_location_and_a_short_or_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let segments = Segments::new(dir.path());
        fs::create_dir_all(segments.stream_dir(7)).expect("stream dir");
        fs::write(segments.path(7, 100), b"0123456789").expect("segment");

        let chunk = segments.read(7, at(100, 3, 4)).expect("read");
        assert_eq!(&chunk[..], b"3456");
        let short = segments.read(7, at(100, 8, 4)).expect_err("past the end");
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let missing = segments
            .read(7, at(200, 0, 4))
            .expect_err("no such segment");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    /// Appends to a stream (7) whose log was read already.
    fn append(writer: &mut SegmentWriter, chunk: &[u8]) -> ChunkLocation {
        writer.append(7, chunk, || Ok(None)).expect("append")
    }

    #[test]
    fn a_stream_appends_to_one_log_and_a_segment_goes_when_its_last_chunk_does() {
        let dir = tempfile::tempdir().expect("dir");
        let segments = Arc::new(Segments::new(dir.path()));
        let mut writer = SegmentWriter::new(segments.clone(), 10);
        writer
            .load_chunk_counts(7, BTreeMap::new())
            .expect("counts");

        // Two shards' chunks of one commit go to one file, one after the other.
        assert_eq!(append(&mut writer, b"aaaa"), at(0, 0, 4));
        assert_eq!(append(&mut writer, b"bbbb"), at(0, 4, 4));
        writer.sync().expect("sync");
        writer.committed(&[((7, 0), 2)]);
        // A full segment is left for the next one.
        assert_eq!(append(&mut writer, b"cccc"), at(0, 8, 4));
        assert_eq!(append(&mut writer, b"dddd"), at(1, 0, 4));
        writer.sync().expect("sync");
        writer.committed(&[((7, 0), 3), ((7, 1), 1)]);
        assert_eq!(segments.list(7).expect("list"), [0, 1]);

        // Trimming one chunk keeps the segment; trimming the last removes it.
        writer.committed(&[((7, 0), 1)]);
        writer.remove_emptied();
        assert_eq!(segments.list(7).expect("list"), [0, 1]);
        writer.committed(&[((7, 0), 0)]);
        writer.remove_emptied();
        assert_eq!(segments.list(7).expect("list"), [1]);
        // The segment appended to stays even with no chunk left in it.
        writer.committed(&[((7, 1), 0)]);
        writer.remove_emptied();
        assert_eq!(segments.list(7).expect("list"), [1]);

        // Opened again, the log is cut after the newest committed chunk
        // (bytes of an unfinished commit) and appended to from there.
        let path = segments.path(7, 1);
        fs::write(&path, b"ddddleftover").expect("unfinished commit");
        let mut reopened = SegmentWriter::new(segments.clone(), 10);
        let newest = || Ok(Some(at(1, 0, 4)));
        assert_eq!(
            reopened.append(7, b"ee", newest).expect("append"),
            at(1, 4, 2)
        );
        assert_eq!(fs::read(&path).expect("segment"), b"ddddee");

        // With no chunk left at all, a new log starts after the old one.
        let mut emptied = SegmentWriter::new(segments.clone(), 10);
        assert_eq!(append(&mut emptied, b"ff"), at(2, 0, 2));
        assert_eq!(segments.list(7).expect("list"), [2]);
    }

    #[test]
    fn segments_with_no_chunk_but_the_newest_go_when_the_counts_are_loaded() {
        let dir = tempfile::tempdir().expect("dir");
        let segments = Arc::new(Segments::new(dir.path()));
        fs::create_dir_all(segments.stream_dir(3)).expect("stream dir");
        for segment in [4, 5, 6, 7] {
            fs::write(segments.path(3, segment), b"x").expect("segment");
        }
        let mut writer = SegmentWriter::new(segments.clone(), 1 << 20);
        writer
            .load_chunk_counts(3, BTreeMap::from([(5, 2)]))
            .expect("counts");
        assert_eq!(segments.list(3).expect("list"), [5, 7]);
        assert_eq!(writer.chunk_count(3, 5), 2);
        assert_eq!(writer.chunk_count(3, 7), 0);
    }
}
