//! The order journal: what makes the in-memory order state durable, as Redis' append-only file
//! does.
//!
//! Each applied batch appends one record — the new state of every order the batch touched —
//! to the current segment file, before the batch's outcome is returned. A record is framed
//! `[length: u32 LE][crc32 of payload: u32 LE][payload]`, the payload being
//! `(touched_ms, [(order id, state)])` in postcard. Replaying every segment in order, later
//! records overriding earlier ones, gives back the live state.
//!
//! - **Crashes.** Writes go to the OS at once, so a killed process loses nothing; the file is
//!   flushed to the disk at most a second later in the background (Redis' `appendfsync
//!   everysec`). A record cut short by a crash is at the very end of the last segment: replay
//!   drops it and truncates the file there. A bad record anywhere else is corruption, and
//!   opening fails rather than silently losing state.
//! - **Expiry.** Segments roll at a size or an age, and a segment whose newest record is older
//!   than the expiry cutoff is deleted whole, as Kafka deletes log segments. The cutoff itself
//!   is kept in `expired-before`, so that states older than it, still in a segment that also
//!   holds newer ones, are skipped on replay: an order reported as expired is never reported
//!   again.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brewline_core::assembly::OrderState;
use rustc_hash::FxHashMap;

/// A segment is closed once it holds this many bytes…
const SEGMENT_BYTES: u64 = 64 << 20;
/// …and the file is flushed to the disk this often.
const SYNC_EVERY: Duration = Duration::from_secs(1);
const HEADER: usize = 8;
const EXTENSION: &str = "journal";
const EXPIRED_BEFORE: &str = "expired-before";

/// Why the journal cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt at byte {at}: {reason} (it is not the end of the last segment, so this is not an interrupted write; restore the state directory or delete it to start with empty order state)")]
    Corrupt {
        path: PathBuf,
        at: u64,
        reason: String,
    },
    #[error("cannot encode order state: {0}")]
    Encode(postcard::Error),
}

type Result<T> = std::result::Result<T, JournalError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A closed segment and the time of its newest record.
struct Sealed {
    path: PathBuf,
    newest_ms: i64,
}

/// The segment being appended to.
struct Current {
    path: PathBuf,
    file: File,
    bytes: u64,
    oldest_ms: Option<i64>,
    newest_ms: i64,
}

/// The journal of one state directory.
pub struct Journal {
    dir: PathBuf,
    sealed: Vec<Sealed>,
    current: Current,
    next_seq: u64,
    /// States older than this were reported expired: replay skips them.
    expired_before: i64,
    /// A segment older than this is closed, so that it can expire whole.
    max_segment_age: Duration,
    last_sync: Instant,
    /// The record being encoded, kept to reuse its memory.
    buffer: Vec<u8>,
}

/// The order states a journal holds, each with the time it was last changed.
pub type Replayed = FxHashMap<String, (OrderState, i64)>;

impl Journal {
    /// Opens the journal in `dir` (creating it), and replays it. Segments are closed after a
    /// quarter of `ttl`, so expired state leaves the disk within about 1.25 × `ttl`.
    pub fn open(dir: &Path, ttl: Duration) -> Result<(Journal, Replayed)> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let watermark = dir.join(EXPIRED_BEFORE);
        let expired_before = match fs::read_to_string(&watermark) {
            Ok(text) => text.trim().parse().map_err(|e| JournalError::Corrupt {
                path: watermark.clone(),
                at: 0,
                reason: format!("not a time in milliseconds: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => i64::MIN,
            Err(e) => return Err(io(&watermark)(e)),
        };
        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let seq = path
                .extension()
                .filter(|e| *e == EXTENSION)
                .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
            if let Some(seq) = seq {
                paths.push((seq, path));
            }
        }
        paths.sort();
        let mut states = Replayed::default();
        let mut sealed = Vec::new();
        let count = paths.len();
        for (i, (_, path)) in paths.iter().enumerate() {
            let newest_ms = replay(path, i + 1 == count, expired_before, &mut states)?;
            sealed.push(Sealed {
                path: path.clone(),
                newest_ms,
            });
        }
        let next_seq = paths.last().map_or(0, |(seq, _)| seq + 1);
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            current: Current::create(dir, next_seq)?,
            sealed,
            next_seq: next_seq + 1,
            expired_before,
            max_segment_age: ttl / 4,
            last_sync: Instant::now(),
            buffer: Vec::new(),
        };
        journal.sync_now()?;
        Ok((journal, states))
    }

    /// Appends the new states of one batch's orders, all changed at `touched_ms`. When the
    /// write fails, the segment is cut back to before it: the journal holds all of a record or
    /// none of it.
    pub fn append<'a>(
        &mut self,
        touched_ms: i64,
        states: impl Iterator<Item = (&'a str, &'a OrderState)>,
    ) -> Result<()> {
        let states: Vec<(&str, &OrderState)> = states.collect();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer.extend_from_slice(&[0; HEADER]);
        let mut buffer =
            postcard::to_extend(&(touched_ms, states), buffer).map_err(JournalError::Encode)?;
        let payload_len = buffer.len() - HEADER;
        let crc = crc32fast::hash(&buffer[HEADER..]);
        buffer[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        buffer[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        let written = self.current.write(&buffer, touched_ms);
        self.buffer = buffer;
        written?;
        if self.current.bytes >= SEGMENT_BYTES
            || self.current.oldest_ms.is_some_and(|oldest| {
                touched_ms - oldest >= self.max_segment_age.as_millis() as i64
            })
        {
            self.roll()?;
        } else if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync_in_background();
        }
        Ok(())
    }

    /// Records that states changed before `cutoff` have expired, and deletes the segments
    /// that hold nothing newer.
    pub fn expire(&mut self, cutoff: i64) -> Result<()> {
        if cutoff > self.expired_before {
            let path = self.dir.join(EXPIRED_BEFORE);
            let temporary = path.with_extension("new");
            let mut file = File::create(&temporary).map_err(io(&temporary))?;
            file.write_all(cutoff.to_string().as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(io(&temporary))?;
            fs::rename(&temporary, &path).map_err(io(&path))?;
            self.expired_before = cutoff;
        }
        let mut kept = Vec::with_capacity(self.sealed.len());
        for segment in std::mem::take(&mut self.sealed) {
            if segment.newest_ms < cutoff {
                fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            } else {
                kept.push(segment);
            }
        }
        self.sealed = kept;
        Ok(())
    }

    /// Replays the whole journal again (after a failed append, to rebuild the live state).
    pub fn reload(&self) -> Result<Replayed> {
        let mut states = Replayed::default();
        for segment in &self.sealed {
            replay(&segment.path, false, self.expired_before, &mut states)?;
        }
        replay(&self.current.path, true, self.expired_before, &mut states)?;
        Ok(states)
    }

    /// Closes the current segment and starts the next one.
    fn roll(&mut self) -> Result<()> {
        let next = Current::create(&self.dir, self.next_seq)?;
        let done = std::mem::replace(&mut self.current, next);
        self.next_seq += 1;
        done.file.sync_data().map_err(io(&done.path))?;
        self.sealed.push(Sealed {
            path: done.path,
            newest_ms: done.newest_ms,
        });
        self.sync_now()
    }

    fn sync_now(&mut self) -> Result<()> {
        self.last_sync = Instant::now();
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }

    /// Flushes the current segment to the disk on a blocking thread; a failure is logged, as
    /// Redis logs a failed background fsync (the data is still in the OS's cache).
    fn sync_in_background(&mut self) {
        self.last_sync = Instant::now();
        let path = self.current.path.clone();
        match self.current.file.try_clone() {
            Ok(file) => {
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = file.sync_data() {
                        tracing::warn!(path = %path.display(), error = %e, "flushing the order journal to disk failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "flushing the order journal to disk failed")
            }
        }
    }
}

impl Current {
    fn create(dir: &Path, seq: u64) -> Result<Current> {
        let path = dir.join(format!("{seq:020}.{EXTENSION}"));
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Current {
            path,
            file,
            bytes: 0,
            oldest_ms: None,
            newest_ms: i64::MIN,
        })
    }

    fn write(&mut self, record: &[u8], touched_ms: i64) -> Result<()> {
        if let Err(e) = self.file.write_all(record) {
            // Cut off whatever part was written; if even that fails, replay drops it as an
            // interrupted write.
            let _ = self.file.set_len(self.bytes);
            return Err(io(&self.path)(e));
        }
        self.bytes += record.len() as u64;
        self.oldest_ms.get_or_insert(touched_ms);
        self.newest_ms = self.newest_ms.max(touched_ms);
        Ok(())
    }
}

/// Replays one segment into `states`, skipping states changed before `expired_before`, and
/// returns the time of its newest record. In the `last` segment a record cut short is an
/// interrupted write: the file is truncated before it.
fn replay(path: &Path, last: bool, expired_before: i64, states: &mut Replayed) -> Result<i64> {
    let bytes = fs::read(path).map_err(io(path))?;
    let mut at = 0usize;
    let mut newest_ms = i64::MIN;
    while at < bytes.len() {
        let problem = match record_at(&bytes, at) {
            Ok((payload, next)) => {
                match postcard::from_bytes::<(i64, Vec<(String, OrderState)>)>(payload) {
                    Ok((touched_ms, changed)) => {
                        newest_ms = newest_ms.max(touched_ms);
                        if touched_ms >= expired_before {
                            for (id, state) in changed {
                                states.insert(id, (state, touched_ms));
                            }
                        }
                        at = next;
                        continue;
                    }
                    Err(e) => (format!("undecodable record: {e}"), next),
                }
            }
            Err((reason, next)) => (reason, next),
        };
        let (reason, end) = problem;
        if last && end >= bytes.len() {
            tracing::warn!(path = %path.display(), at, %reason, "dropping a journal record cut short by a crash");
            File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(at as u64))
                .map_err(io(path))?;
            break;
        }
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            at: at as u64,
            reason,
        });
    }
    Ok(newest_ms)
}

/// The payload of the record at `at` and where the next one starts; or why it is bad and
/// where it claims to end.
fn record_at(bytes: &[u8], at: usize) -> std::result::Result<(&[u8], usize), (String, usize)> {
    let Some(header) = bytes.get(at..at + HEADER) else {
        return Err(("a record header cut short".into(), bytes.len()));
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&header[4..]);
    let end = at + HEADER + u32::from_le_bytes(len) as usize;
    let Some(payload) = bytes.get(at + HEADER..end) else {
        return Err(("a record cut short".into(), end));
    };
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(("checksum mismatch".into(), end));
    }
    Ok((payload, end))
}
