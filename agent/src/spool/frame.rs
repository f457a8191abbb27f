//! The on-disk record framing: `[len: u32 LE][crc32: u32 LE][payload: len bytes]`.
//!
//! The CRC (CRC-32/ISO-HDLC, as `crc32fast`) covers the four length bytes *and* the payload, so
//! a bit flip in the length is caught as surely as one in the payload. A zero length is never
//! written, which makes zero-filled regions (what a file system may leave after a crash that
//! extended the file before writing it) invalid rather than an endless run of empty records.
//!
//! [`SegmentScanner`] walks a segment file frame by frame. On an invalid frame it searches
//! forward byte by byte for the next valid one ("resync"); if there is none, the invalid bytes
//! are the segment's tail. Whether such a tail is a torn write (newest segment) or corruption
//! (older segments) is the caller's decision.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Bytes of the frame header (length + CRC).
pub const HEADER_BYTES: u64 = 8;

/// Largest payload accepted, so that a corrupt length can never make us allocate gigabytes.
pub const MAX_PAYLOAD_BYTES: u32 = 4 * 1024 * 1024;

/// Encodes one frame around `payload` and appends it to `out`.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    // Callers check the payload size against MAX_PAYLOAD_BYTES first; this keeps the cast exact.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&checksum(&len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn checksum(len_bytes: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// What the scanner found at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// A valid frame starting at `offset`; its payload is in the scanner's buffer.
    Frame { offset: u64, next: u64 },
    /// Invalid bytes `[offset, next)` followed by a valid frame at `next`.
    Corrupt { offset: u64, next: u64 },
    /// Invalid bytes from `offset` to the end of the segment, with no valid frame after them.
    InvalidTail { offset: u64 },
}

/// Reads frames of one segment file sequentially, with resynchronisation after damage.
pub struct SegmentScanner {
    file: File,
    len: u64,
    pos: u64,
    payload: Vec<u8>,
}

impl SegmentScanner {
    /// Opens a scanner positioned at `offset`, treating `len` as the end of the segment (the
    /// caller's view of the file size; bytes beyond it are ignored).
    pub fn new(mut file: File, len: u64, offset: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            len,
            pos: offset,
            payload: Vec::new(),
        })
    }

    /// The payload of the last [`Scanned::Frame`].
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Current position (start of the next thing to scan).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Scans the next frame; `None` at the end of the segment.
    pub fn next_frame(&mut self) -> io::Result<Option<Scanned>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let start = self.pos;
        if let Some(next) = self.frame_at(start)? {
            self.pos = next;
            return Ok(Some(Scanned::Frame {
                offset: start,
                next,
            }));
        }
        // Damage: look for the next position where a valid frame starts. Headers are checked
        // for plausibility in a read-ahead window so a long damaged stretch costs one read per
        // window, not one per byte; only plausible headers get their CRC verified.
        let mut window = vec![0u8; 64 * 1024];
        let mut base = start + 1;
        while base + HEADER_BYTES <= self.len {
            let want =
                usize::try_from((self.len - base).min(window.len() as u64)).unwrap_or(window.len());
            self.file.seek(SeekFrom::Start(base))?;
            let got = read_up_to(&mut self.file, &mut window[..want])?;
            if got < HEADER_BYTES as usize {
                break;
            }
            let last = got - HEADER_BYTES as usize;
            for i in 0..=last {
                let len =
                    u32::from_le_bytes([window[i], window[i + 1], window[i + 2], window[i + 3]]);
                let candidate = base + i as u64;
                if len == 0
                    || len > MAX_PAYLOAD_BYTES
                    || candidate + HEADER_BYTES + u64::from(len) > self.len
                {
                    continue;
                }
                if self.frame_at(candidate)?.is_some() {
                    self.pos = candidate;
                    return Ok(Some(Scanned::Corrupt {
                        offset: start,
                        next: candidate,
                    }));
                }
            }
            base += last as u64 + 1;
        }
        self.pos = self.len;
        Ok(Some(Scanned::InvalidTail { offset: start }))
    }

    /// Checks whether a valid frame starts at `offset`; on success its payload is loaded and the
    /// offset just after it is returned.
    fn frame_at(&mut self, offset: u64) -> io::Result<Option<u64>> {
        if offset + HEADER_BYTES > self.len {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        self.file.seek(SeekFrom::Start(offset))?;
        if !read_full(&mut self.file, &mut header)? {
            return Ok(None);
        }
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = offset + HEADER_BYTES + u64::from(len);
        if len == 0 || len > MAX_PAYLOAD_BYTES || end > self.len {
            return Ok(None);
        }
        self.payload.resize(len as usize, 0);
        if !read_full(&mut self.file, &mut self.payload)? {
            return Ok(None);
        }
        if checksum(&len_bytes, &self.payload) != crc {
            return Ok(None);
        }
        if self.payload.capacity() > 256 * 1024 && self.payload.len() < 64 * 1024 {
            // Do not keep a huge buffer alive after one large record: the agent must stay small.
            self.payload.shrink_to(64 * 1024);
        }
        Ok(Some(end))
    }
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Reads exactly `buf.len()` bytes; `false` if the file ended first (it may have been truncated
/// under us, which the caller treats like an invalid frame).
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn segment(frames: &[&[u8]]) -> (tempfile::NamedTempFile, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for payload in frames {
            offsets.push(bytes.len() as u64);
            encode_into(payload, &mut bytes);
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        (file, offsets)
    }

    fn scan_all(path: &std::path::Path) -> Vec<(Scanned, Vec<u8>)> {
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut scanner = SegmentScanner::new(file, len, 0).unwrap();
        let mut out = Vec::new();
        while let Some(found) = scanner.next_frame().unwrap() {
            let payload = match found {
                Scanned::Frame { .. } => scanner.payload().to_vec(),
                _ => Vec::new(),
            };
            out.push((found, payload));
        }
        out
    }

    #[test]
    fn frames_round_trip() {
        let (file, offsets) = segment(&[b"alpha", b"b", b"gamma-gamma"]);
        let found = scan_all(file.path());
        assert_eq!(
            found,
            vec![
                (
                    Scanned::Frame {
                        offset: 0,
                        next: offsets[1]
                    },
                    b"alpha".to_vec()
                ),
                (
                    Scanned::Frame {
                        offset: offsets[1],
                        next: offsets[2]
                    },
                    b"b".to_vec()
                ),
                (
                    Scanned::Frame {
                        offset: offsets[2],
                        next: offsets[2] + 8 + 11
                    },
                    b"gamma-gamma".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn flipped_length_bit_is_corruption_and_scan_resyncs() {
        let (file, offsets) = segment(&[b"alpha", b"bravo", b"charlie"]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        bytes[offsets[1] as usize] ^= 0x01; // length of the middle frame
        std::fs::write(file.path(), &bytes).unwrap();
        let found = scan_all(file.path());
        assert_eq!(found.len(), 3);
        assert_eq!(
            found[1].0,
            Scanned::Corrupt {
                offset: offsets[1],
                next: offsets[2]
            }
        );
        assert_eq!(found[2].1, b"charlie".to_vec());
    }

    #[test]
    fn zero_filled_tail_is_invalid() {
        let (file, offsets) = segment(&[b"alpha"]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        bytes.extend_from_slice(&[0u8; 40]);
        std::fs::write(file.path(), &bytes).unwrap();
        let found = scan_all(file.path());
        assert_eq!(
            found[1].0,
            Scanned::InvalidTail {
                offset: offsets[0] + 13
            }
        );
    }
}
