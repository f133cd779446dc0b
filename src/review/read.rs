//! Reading access logs for the review: open each file, recognise gzip by its
//! magic bytes, split it into lines of bounded length, and parse each line
//! into a [`Record`] that borrows from the line buffer.
//!
//! Owns what counts as a sluice record and what is skipped (and why); each
//! record goes to the [`Tally`] (tally.rs) as soon as it is parsed. Not
//! here: what the tally turns into (`report`).

use std::borrow::Cow;
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use flate2::bufread::MultiGzDecoder;
use serde::Deserialize;
use serde_json::error::Category;

use super::ReviewError;
use super::tally::Tally;

/// Longest line kept, in bytes. A sluice line is a few hundred bytes; the
/// longest fields (path, query) come from a request head capped at 16 KiB
/// by default, so 64 KiB leaves room for a raised `limits.head_size` while
/// keeping one runaway line (a foreign program's dump) from growing the
/// buffer without bound. Longer lines are skipped as `too_long`.
const MAX_LINE: usize = 64 * 1024;

/// Read buffer per file, for both the file and the decompressed stream.
const BUF_SIZE: usize = 256 * 1024;

/// Show progress only for inputs this large: smaller ones finish in about a
/// second and a progress line would only flicker.
const PROGRESS_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// The gzip magic (RFC 1952 §2.3.1): ID1, ID2.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What became of one file's lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileStats {
    pub(crate) path: PathBuf,
    pub(crate) gzip: bool,
    /// Non-blank lines read.
    pub(crate) lines: u64,
    /// Sluice records counted (at or after `since`).
    pub(crate) records: u64,
    /// Sluice records before `since`.
    pub(crate) before_since: u64,
    pub(crate) skipped: SkipCounts,
    /// The gzip stream ended before its trailer (a file still being
    /// compressed, or cut short).
    pub(crate) gzip_truncated: bool,
}

/// Skipped lines by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SkipCounts {
    /// Not JSON at all (another program's text output).
    pub(crate) not_json: u64,
    /// JSON, but without the sluice fields (`ts`, `decision`) or with
    /// fields of the wrong type.
    pub(crate) not_sluice: u64,
    /// Longer than [`MAX_LINE`].
    pub(crate) too_long: u64,
    /// The file's last line, cut off before its newline.
    pub(crate) truncated: u64,
}

impl SkipCounts {
    pub(crate) fn total(&self) -> u64 {
        self.not_json + self.not_sluice + self.too_long + self.truncated
    }
}

/// A log record's `decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Report,
    Deny,
    Error,
}

/// The fields of one access-log line the review uses.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub(crate) ts: SystemTime,
    pub(crate) agent: Option<Cow<'a, str>>,
    pub(crate) host: Option<Cow<'a, str>>,
    pub(crate) port: Option<u16>,
    pub(crate) decision: Decision,
    pub(crate) rule: Option<Cow<'a, str>>,
    pub(crate) reason: Option<Cow<'a, str>>,
    pub(crate) bytes_up: Option<u64>,
    pub(crate) bytes_down: Option<u64>,
    /// The ClientHello's server_name, on tunnels.
    pub(crate) sni: Option<Cow<'a, str>>,
}

/// The line as serde sees it: every field optional, so that the checks of
/// what makes a sluice record live in [`parse`], not in serde errors.
/// Unknown fields (`ips`, `path`, timings…) are skipped without allocating.
#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow)]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host: Option<Cow<'a, str>>,
    port: Option<u16>,
    #[serde(borrow)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    bytes_up: Option<u64>,
    bytes_down: Option<u64>,
    #[serde(borrow)]
    sni: Option<Cow<'a, str>>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    NotJson,
    NotSluice,
}

/// Parses one line (without its newline).
pub(crate) fn parse(line: &[u8]) -> Result<Record<'_>, Skip> {
    let raw: RawLine<'_> = serde_json::from_slice(line).map_err(|e| match e.classify() {
        Category::Data => Skip::NotSluice,
        Category::Io | Category::Syntax | Category::Eof => Skip::NotJson,
    })?;
    let decision = match raw.decision.as_deref() {
        Some("allow") => Decision::Allow,
        Some("report") => Decision::Report,
        Some("deny") => Decision::Deny,
        Some("error") => Decision::Error,
        _ => return Err(Skip::NotSluice),
    };
    let ts = raw.ts.as_deref().ok_or(Skip::NotSluice)?;
    let ts = humantime::parse_rfc3339_weak(ts).map_err(|_| Skip::NotSluice)?;
    Ok(Record {
        ts,
        agent: raw.agent,
        host: raw.host,
        port: raw.port,
        decision,
        rule: raw.rule,
        reason: raw.reason,
        bytes_up: raw.bytes_up,
        bytes_down: raw.bytes_down,
        sni: raw.sni,
    })
}

/// Reads every file in order into `tally`; returns per-file statistics.
pub(crate) fn read_logs(
    logs: &[PathBuf],
    since: Option<SystemTime>,
    tally: &mut Tally,
) -> Result<Vec<FileStats>, ReviewError> {
    let mut progress = Progress::new(logs);
    let mut stats = Vec::with_capacity(logs.len());
    for path in logs {
        stats.push(read_file(path, since, tally, &mut progress)?);
    }
    progress.finish();
    Ok(stats)
}

fn read_file(
    path: &Path,
    since: Option<SystemTime>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> Result<FileStats, ReviewError> {
    let read_error = |source| ReviewError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let counted = Counted {
        inner: file,
        count: progress.file_counter(),
    };
    let mut raw = BufReader::with_capacity(BUF_SIZE, counted);
    let gzip = peek(&mut raw, GZIP_MAGIC.len()).map_err(read_error)? == GZIP_MAGIC;
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(BUF_SIZE, MultiGzDecoder::new(raw)))
    } else {
        Box::new(raw)
    };
    let mut stats = FileStats {
        path: path.to_path_buf(),
        gzip,
        ..FileStats::default()
    };
    let mut buf = Vec::with_capacity(4096);
    loop {
        let end = match next_line(&mut reader, &mut buf, MAX_LINE) {
            Ok(Some(end)) => end,
            Ok(None) => break,
            Err(e) if gzip && e.kind() == io::ErrorKind::UnexpectedEof => {
                // The stream stopped mid-member: count what was decoded of
                // the last line as truncated and keep everything before it.
                stats.gzip_truncated = true;
                if !buf.is_empty() {
                    stats.lines += 1;
                    stats.skipped.truncated += 1;
                }
                break;
            }
            Err(source) if gzip && is_corrupt(&source) => {
                return Err(ReviewError::CorruptGzip {
                    path: path.to_path_buf(),
                    line: stats.lines,
                    source,
                });
            }
            Err(source) => return Err(read_error(source)),
        };
        if end != LineEnd::TooLong && buf.trim_ascii().is_empty() {
            continue;
        }
        stats.lines += 1;
        count_line(&buf, end, since, tally, &mut stats);
        progress.tick();
    }
    Ok(stats)
}

fn count_line(
    buf: &[u8],
    end: LineEnd,
    since: Option<SystemTime>,
    tally: &mut Tally,
    stats: &mut FileStats,
) {
    if end == LineEnd::TooLong {
        stats.skipped.too_long += 1;
        return;
    }
    match parse(buf) {
        Ok(rec) if since.is_some_and(|since| rec.ts < since) => stats.before_since += 1,
        Ok(rec) => {
            stats.records += 1;
            tally.add(&rec);
        }
        // A last line without its newline that does not parse was cut off
        // by a writer that had not finished (or a copy taken mid-write).
        Err(_) if end == LineEnd::Eof => stats.skipped.truncated += 1,
        Err(Skip::NotJson) => stats.skipped.not_json += 1,
        Err(Skip::NotSluice) => stats.skipped.not_sluice += 1,
    }
}

/// flate2 reports a bad header, bad deflate data or a bad checksum as one
/// of these; errors from the file itself keep their own kinds.
fn is_corrupt(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    )
}

/// Returns up to `n` leading bytes without consuming them.
fn peek<R: Read>(r: &mut BufReader<R>, n: usize) -> io::Result<Vec<u8>> {
    let buf = loop {
        match r.fill_buf() {
            Ok(buf) => break buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    Ok(buf.get(..n).unwrap_or(buf).to_vec())
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineEnd {
    /// At a newline (not included in the buffer).
    Newline,
    /// At the end of input, without a newline.
    Eof,
    /// Over the limit; the buffer is empty and the rest of the line was
    /// consumed without being stored.
    TooLong,
}

/// Reads the next line into `buf` (cleared first), storing at most `max`
/// bytes. `None` at the end of input.
pub(crate) fn next_line(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<LineEnd>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Some(LineEnd::TooLong),
                (false, true) => None,
                (false, false) => Some(LineEnd::Eof),
            });
        }
        let newline = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(Some(if too_long {
                LineEnd::TooLong
            } else {
                LineEnd::Newline
            }));
        }
    }
}

/// Counts the bytes read from a file (compressed bytes for gzip), for the
/// progress line.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

// === impl Progress ===

/// A percentage on stderr, by bytes of input read. Off unless stderr is a
/// terminal (so logs and pipes never see carriage returns) and the input is
/// large enough to take a while.
struct Progress {
    enabled: bool,
    total: u64,
    /// Bytes of the files already finished.
    done: u64,
    current: Rc<Cell<u64>>,
    shown: u64,
}

impl Progress {
    fn new(logs: &[PathBuf]) -> Self {
        // Sizes are only an estimate for the display: a file that cannot be
        // stat'ed here fails properly when it is opened.
        let total: u64 = logs
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Self {
            enabled: total > PROGRESS_MIN_BYTES && io::stderr().is_terminal(),
            total,
            done: 0,
            current: Rc::new(Cell::new(0)),
            shown: 0,
        }
    }

    fn file_counter(&mut self) -> Rc<Cell<u64>> {
        self.done += self.current.get();
        self.current = Rc::new(Cell::new(0));
        Rc::clone(&self.current)
    }

    fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let percent = (self.done + self.current.get()) * 100 / self.total.max(1);
        if percent > self.shown {
            self.shown = percent;
            let mut err = io::stderr().lock();
            let _ = write!(err, "\rsluice review: {percent:>3}% read");
            let _ = err.flush();
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!("\rsluice review: 100% read");
        }
    }
}
