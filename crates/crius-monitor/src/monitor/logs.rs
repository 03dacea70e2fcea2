//! The CRI log format kubelet reads (`kubelet/kuberuntime/logs`):
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <message>\n`. A line longer than
//! [`MAX_LINE`] is written as `P` (partial) pieces; the piece that ends the line is `F`.
//! Output left without a newline at EOF is written as `F`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest message of one log entry (16 KiB, as containerd and CRI-O).
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One container's log file with the unfinished line of each stream.
#[derive(Debug)]
pub(crate) struct LogWriter {
    path: PathBuf,
    /// None when the container has no log path: output is read and dropped.
    file: Option<File>,
    pending: [Vec<u8>; 2],
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl LogWriter {
    /// Opens (appending, creating) the log file; an empty path logs nothing.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = if path.as_os_str().is_empty() {
            None
        } else {
            Some(open(path)?)
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Reopens the file at the same path (kubelet rotated it).
    pub(crate) fn reopen(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            self.file = Some(open(&self.path)?);
        }
        Ok(())
    }

    fn append(&mut self, out: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(out),
            None => Ok(()),
        }
    }

    /// Appends `data` from `stream`: complete lines as `F`, 16 KiB pieces as `P`.
    pub(crate) fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let ts = rfc3339_nano(SystemTime::now());
        let pending = &mut self.pending[stream.index()];
        pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + nl];
            let mut chunks = line.chunks(MAX_LINE).peekable();
            if line.is_empty() {
                entry(&mut out, &ts, stream, false, b"");
            }
            while let Some(chunk) = chunks.next() {
                entry(&mut out, &ts, stream, chunks.peek().is_some(), chunk);
            }
            start += nl + 1;
        }
        while pending.len() - start >= MAX_LINE {
            entry(
                &mut out,
                &ts,
                stream,
                true,
                &pending[start..start + MAX_LINE],
            );
            start += MAX_LINE;
        }
        pending.drain(..start);
        self.append(&out)
    }

    /// The stream ended: writes what is left of its last line as `F`.
    pub(crate) fn finish(&mut self, stream: Stream) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream.index()]);
        if rest.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        entry(
            &mut out,
            &rfc3339_nano(SystemTime::now()),
            stream,
            false,
            &rest,
        );
        self.append(&out)
    }
}

fn entry(out: &mut Vec<u8>, ts: &str, stream: Stream, partial: bool, msg: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(msg);
    out.push(b'\n');
}

/// `2006-01-02T15:04:05.999999999Z` in UTC with all nine fraction digits.
pub(crate) fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days` algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lines(path: &Path) -> Vec<(String, String, Vec<u8>)> {
        let data = std::fs::read(path).unwrap();
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.splitn(4, |b| *b == b' ');
                let _ts = parts.next().unwrap();
                let stream = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
                let tag = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
                (stream, tag, parts.next().unwrap().to_vec())
            })
            .collect()
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339_nano(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn an_empty_log_path_discards_output() {
        let mut w = LogWriter::open(Path::new("")).unwrap();
        w.write(Stream::Stdout, b"dropped\n").unwrap();
        w.finish(Stream::Stdout).unwrap();
        w.reopen().unwrap();
    }

    #[test]
    fn lines_are_split_across_writes_and_at_16k() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\n\nx").unwrap();
        let long = vec![b'a'; MAX_LINE + 10];
        w.write(Stream::Stdout, &long).unwrap();
        w.write(Stream::Stdout, b"\n").unwrap();
        w.write(Stream::Stdout, b"tail").unwrap();
        w.finish(Stream::Stdout).unwrap();
        let got = lines(&path);
        let tags: Vec<(&str, &str)> = got
            .iter()
            .map(|(s, t, _)| (s.as_str(), t.as_str()))
            .collect();
        assert_eq!(
            tags,
            [
                ("stderr", "F"),
                ("stdout", "F"),
                ("stdout", "F"),
                ("stdout", "P"),
                ("stdout", "F"),
                ("stdout", "F")
            ]
        );
        assert_eq!(got[1].2, b"hello");
        assert_eq!(got[2].2, b"");
        assert_eq!(got[3].2.len(), MAX_LINE);
        assert_eq!(got[4].2.len(), 11);
        assert_eq!(got[5].2, b"tail");
    }
}
