//! RETR and TOP: a message streamed from the maildrop through the renderer to the client.

use std::io::{self, Read, Write};

use crate::limits::RETR_CHUNK;
use crate::mailbox::{MailboxError, Maildrop};
use crate::protocol::message::{MessageWriter, Portion};
use crate::protocol::wire;

/// Why a message could not be sent.
pub(super) enum SendError {
    /// The mailbox refused before anything was written: the client gets `-ERR`.
    Refused(MailboxError),
    /// The client connection failed.
    Client(io::Error),
    /// The mailbox failed after `+OK` went out: the session cannot go on.
    Midway(io::Error),
}

/// Streams a message: `+OK`, the stuffed body, and the terminator in the same flush. Returns
/// the octets of the body as sent, terminator excluded.
pub(super) fn send_message<W: Write>(
    out: &mut W,
    maildrop: &mut dyn Maildrop,
    index: usize,
    portion: Portion,
    status: &str,
) -> Result<u64, SendError> {
    // The listed size (CRLF counted) is never below the stored size, so a small message is
    // read in one call into a buffer its own size, instead of zeroing a whole chunk per RETR.
    let listed = maildrop.messages().get(index).map_or(0, |m| m.size);
    let mut buf = vec![0u8; listed.clamp(1, RETR_CHUNK as u64) as usize];
    let mut reader = maildrop.reader(index).map_err(SendError::Refused)?;
    wire::write_ok(out, status).map_err(SendError::Client)?;
    let mut counted = Counted {
        inner: out,
        octets: 0,
    };
    let mut writer = MessageWriter::new(&mut counted, portion);
    while !writer.is_done() {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Midway(e)),
        };
        writer.write(&buf[..n]).map_err(SendError::Client)?;
    }
    writer.finish().map_err(SendError::Client)?;
    // The terminator `.` CRLF is the last thing finish() writes.
    let body = counted.octets.saturating_sub(3);
    out.flush().map_err(SendError::Client)?;
    Ok(body)
}

/// Counts the octets that pass through to the client.
struct Counted<'w, W: Write> {
    inner: &'w mut W,
    octets: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.octets += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
