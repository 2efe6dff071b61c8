//! Positional file I/O as `Read` and `Write`: a byte range read, or a stream written at an
//! offset, with no shared file cursor for another user of the descriptor to disturb.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

/// Reads `pos..end` of a file.
pub struct RangeReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl<'f> RangeReader<'f> {
    /// A reader of `start..end` of `file`.
    pub fn new(file: &'f File, start: u64, end: u64) -> Self {
        RangeReader {
            file,
            pos: start,
            end,
        }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than the range read from it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes a stream into a file from an offset on (put a `BufWriter` in front).
pub struct WriterAt<'f> {
    file: &'f File,
    pos: u64,
}

impl<'f> WriterAt<'f> {
    /// A writer into `file` starting at `pos`.
    pub fn new(file: &'f File, pos: u64) -> Self {
        WriterAt { file, pos }
    }

    /// Cuts the file off where the writing got to.
    pub fn truncate_here(&self) -> io::Result<()> {
        self.file.set_len(self.pos)
    }
}

impl Write for WriterAt<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(buf, self.pos)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_and_writes_land_where_asked() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(b"0123456789", 0).unwrap();
        let mut s = String::new();
        RangeReader::new(&f, 2, 5).read_to_string(&mut s).unwrap();
        assert_eq!(s, "234");
        let mut w = WriterAt::new(&f, 8);
        w.write_all(b"abcd").unwrap();
        w.truncate_here().unwrap();
        assert_eq!(f.metadata().unwrap().len(), 12);
        let mut all = Vec::new();
        RangeReader::new(&f, 0, 12).read_to_end(&mut all).unwrap();
        assert_eq!(all, b"01234567abcd");
        let mut short = Vec::new();
        let e = RangeReader::new(&f, 10, 20)
            .read_to_end(&mut short)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
