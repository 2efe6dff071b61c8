//! One SMTP conversation of the development intake, generic over `BufRead + Write` so that
//! it is tested without sockets. A message is spooled as it arrives (dots unstuffed, CRLF made
//! LF as an MTA stores it) and handed to the [`Intake`] only once its final dot has come and
//! its size is within the limit: a message cut off or too big is never appended.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Seek, SeekFrom, Write};

use super::command::{Command, CommandError, parse};

/// The longest command line taken, without its line end: RFC 5321's 512 leaves no room for
/// a few MAIL parameters, and anything longer is a client bug or an attack.
pub const MAX_COMMAND: usize = 2048;

/// Data lines are read in pieces of at most this many octets, however long the line.
const DATA_PIECE: usize = 8192;

/// Errors in a row after which the conversation ends with 421.
const MAX_ERRORS: u32 = 20;

/// Where accepted mail goes.
pub trait Intake {
    /// The mailbox for a recipient address, or why there can be none (a 550 reply).
    fn recipient(&self, address: &str) -> Result<String, String>;
    /// A file to hold a message while it arrives (unnamed or already unlinked).
    fn spool(&self) -> io::Result<File>;
    /// Appends the first `len` octets of `spool` once to each mailbox, with `sender` in its
    /// From_ line; returns the mailboxes that failed, each with why.
    fn deliver(
        &self,
        sender: &str,
        mailboxes: &[String],
        spool: &mut File,
        len: u64,
    ) -> Vec<(String, String)>;
}

/// The fixed settings of a conversation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The name in the greeting and EHLO reply.
    pub hostname: String,
    /// The largest message taken, in octets as sent (SIZE).
    pub max_size: u64,
    /// The most recipients of one message.
    pub max_recipients: usize,
}

/// What a conversation did, for its log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages accepted (250 after DATA).
    pub messages: u64,
    /// Copies appended, one per recipient mailbox.
    pub copies: u64,
    /// Messages refused or failed after DATA.
    pub refused: u64,
    /// Whether the client ended with QUIT.
    pub quit: bool,
}

/// Runs the conversation after the greeting until QUIT, end of input or too many errors.
pub fn serve<R: BufRead, W: Write>(
    reader: &mut R,
    writer: &mut W,
    intake: &dyn Intake,
    limits: &Limits,
) -> io::Result<Summary> {
    let mut c = Conversation {
        out: writer,
        intake,
        limits,
        hello: false,
        sender: None,
        mailboxes: Vec::new(),
        summary: Summary::default(),
    };
    c.reply(
        220,
        &format!("{} poplar development ESMTP", limits.hostname),
    )?;
    let mut errors = 0;
    let mut line = Vec::with_capacity(256);
    loop {
        let ok = match read_command(reader, &mut line)? {
            Line::End => return Ok(c.summary),
            Line::TooLong => {
                c.reply(500, "5.5.6 line too long")?;
                false
            }
            Line::Complete => match parse(&line) {
                Ok(Command::Quit) => {
                    c.reply(221, "2.0.0 bye")?;
                    c.summary.quit = true;
                    return Ok(c.summary);
                }
                Ok(cmd) => c.command(reader, cmd)?,
                Err(e) => {
                    c.refuse(e)?;
                    false
                }
            },
        };
        errors = if ok { 0 } else { errors + 1 };
        if errors >= MAX_ERRORS {
            c.reply(421, "4.7.0 too many errors, closing")?;
            return Ok(c.summary);
        }
    }
}

enum Line {
    Complete,
    TooLong,
    End,
}

/// Reads a command line into `line` without its line end; a longer one is read to its end
/// and dropped.
fn read_command<R: BufRead>(reader: &mut R, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let n = Read::take(&mut *reader, MAX_COMMAND as u64 + 2).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if line.last() != Some(&b'\n') {
        if n < MAX_COMMAND + 2 {
            // The input ended inside a line: the client is gone.
            return Ok(Line::End);
        }
        loop {
            line.clear();
            let n = Read::take(&mut *reader, DATA_PIECE as u64).read_until(b'\n', line)?;
            if n == 0 {
                return Ok(Line::End);
            }
            if line.last() == Some(&b'\n') {
                return Ok(Line::TooLong);
            }
        }
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Line::Complete)
}

struct Conversation<'a, W: Write> {
    out: &'a mut W,
    intake: &'a dyn Intake,
    limits: &'a Limits,
    hello: bool,
    /// MAIL's sender, once given.
    sender: Option<String>,
    /// RCPT's mailboxes, each once.
    mailboxes: Vec<String>,
    summary: Summary,
}

impl<W: Write> Conversation<'_, W> {
    fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        write!(self.out, "{code} {text}\r\n")?;
        self.out.flush()
    }

    fn reset(&mut self) {
        self.sender = None;
        self.mailboxes.clear();
    }

    fn refuse(&mut self, e: CommandError) -> io::Result<()> {
        match e {
            CommandError::Unknown => self.reply(500, "5.5.2 command not recognized"),
            CommandError::Syntax(why) => self.reply(501, &format!("5.5.4 {why}")),
            CommandError::Parameter(p) => {
                let p: String = p.chars().take(64).collect();
                self.reply(555, &format!("5.5.4 parameter not supported: {p}"))
            }
        }
    }

    /// Answers a command other than QUIT; whether it succeeded.
    fn command<R: BufRead>(&mut self, reader: &mut R, cmd: Command) -> io::Result<bool> {
        match cmd {
            Command::Data => return self.data(reader),
            Command::Auth { mechanism, initial } => return self.auth(reader, &mechanism, initial),
            Command::Ehlo(_) => {
                self.reset();
                self.hello = true;
                let lines = [
                    format!("{} greets you", self.limits.hostname),
                    format!("SIZE {}", self.limits.max_size),
                    "8BITMIME".into(),
                    "PIPELINING".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "AUTH PLAIN LOGIN".into(),
                    "HELP".into(),
                ];
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    write!(self.out, "250{sep}{l}\r\n")?;
                }
                self.out.flush()?;
            }
            Command::Helo(_) => {
                self.reset();
                self.hello = true;
                let text = format!("{} greets you", self.limits.hostname);
                self.reply(250, &text)?;
            }
            Command::Mail { from, size } => {
                if !self.hello {
                    self.reply(503, "5.5.1 say EHLO first")?;
                    return Ok(false);
                }
                if self.sender.is_some() {
                    self.reply(503, "5.5.1 MAIL already given (RSET starts over)")?;
                    return Ok(false);
                }
                if size.is_some_and(|n| n > self.limits.max_size) {
                    let text = format!(
                        "5.3.4 message larger than the {} octets this server takes",
                        self.limits.max_size
                    );
                    self.reply(552, &text)?;
                    return Ok(false);
                }
                self.sender = Some(from);
                self.reply(250, "2.1.0 sender ok")?;
            }
            Command::Rcpt(address) => {
                if self.sender.is_none() {
                    self.reply(503, "5.5.1 MAIL first")?;
                    return Ok(false);
                }
                if self.mailboxes.len() >= self.limits.max_recipients {
                    self.reply(452, "4.5.3 too many recipients")?;
                    return Ok(false);
                }
                match self.intake.recipient(&address) {
                    Ok(mailbox) => {
                        if !self.mailboxes.contains(&mailbox) {
                            self.mailboxes.push(mailbox);
                        }
                        self.reply(250, "2.1.5 recipient ok")?;
                    }
                    Err(why) => {
                        self.reply(550, &format!("5.1.3 {why}"))?;
                        return Ok(false);
                    }
                }
            }
            Command::Rset => {
                self.reset();
                self.reply(250, "2.0.0 reset")?;
            }
            Command::Noop => self.reply(250, "2.0.0 ok")?,
            Command::Vrfy => self.reply(252, "2.5.2 send some mail, it will be delivered")?,
            Command::Help => self.reply(
                214,
                "2.0.0 poplar's development intake: mail to any address lands in the mailbox of its local part",
            )?,
            Command::NotOffered(verb) => {
                self.reply(502, &format!("5.5.1 {verb} is not offered"))?;
                return Ok(false);
            }
            Command::Quit => {
                self.reply(221, "2.0.0 bye")?;
                self.summary.quit = true;
            }
        }
        Ok(true)
    }

    /// AUTH PLAIN and LOGIN: any credentials are accepted (and neither kept nor logged), so
    /// that applications configured with some can send.
    fn auth<R: BufRead>(
        &mut self,
        reader: &mut R,
        mechanism: &str,
        initial: bool,
    ) -> io::Result<bool> {
        if !self.hello {
            self.reply(503, "5.5.1 say EHLO first")?;
            return Ok(false);
        }
        // The challenges still to send: "Username:" and "Password:" for LOGIN (RFC 4616's
        // PLAIN has one empty challenge), fewer for what the initial response gave.
        let prompts: &[&str] = match (mechanism, initial) {
            ("PLAIN", true) => &[],
            ("PLAIN", false) => &[""],
            ("LOGIN", true) => &["UGFzc3dvcmQ6"],
            ("LOGIN", false) => &["VXNlcm5hbWU6", "UGFzc3dvcmQ6"],
            _ => {
                self.reply(504, "5.5.4 mechanism not offered (PLAIN, LOGIN)")?;
                return Ok(false);
            }
        };
        let mut line = Vec::new();
        for prompt in prompts {
            self.reply(334, prompt)?;
            match read_command(reader, &mut line)? {
                Line::End => return Ok(false),
                Line::TooLong => {
                    self.reply(500, "5.5.6 line too long")?;
                    return Ok(false);
                }
                Line::Complete if line == b"*" => {
                    self.reply(501, "5.0.0 authentication cancelled")?;
                    return Ok(false);
                }
                Line::Complete => {}
            }
        }
        line.fill(0);
        self.reply(235, "2.7.0 accepted (any credentials are)")?;
        Ok(true)
    }

    /// DATA: the message up to its lone dot, then one copy per mailbox.
    fn data<R: BufRead>(&mut self, reader: &mut R) -> io::Result<bool> {
        let Some(sender) = self.sender.clone() else {
            self.reply(503, "5.5.1 MAIL first")?;
            return Ok(false);
        };
        if self.mailboxes.is_empty() {
            self.reply(554, "5.5.1 no valid recipients")?;
            return Ok(false);
        }
        let mut spool = match self.intake.spool() {
            Ok(f) => f,
            Err(e) => {
                log::warn!("smtp: cannot make a spool file: {e}");
                self.reply(451, "4.3.0 cannot store mail now")?;
                return Ok(false);
            }
        };
        self.reply(354, "end data with <CR><LF>.<CR><LF>")?;
        let received = receive(reader, &mut spool, self.limits.max_size)?;
        let mailboxes = std::mem::take(&mut self.mailboxes);
        self.sender = None;
        let (len, size) = match received {
            Received::Cut => return Err(io::ErrorKind::UnexpectedEof.into()),
            Received::TooBig(size) => {
                self.summary.refused += 1;
                let text = format!(
                    "5.3.4 message of {size} octets or more; this server takes {}",
                    self.limits.max_size
                );
                self.reply(552, &text)?;
                return Ok(false);
            }
            Received::SpoolFailed(e) => {
                log::warn!("smtp: writing the spool failed: {e}");
                self.summary.refused += 1;
                self.reply(451, "4.3.0 cannot store mail now")?;
                return Ok(false);
            }
            Received::Whole { stored, size } => (stored, size),
        };
        if len == 0 {
            self.summary.refused += 1;
            self.reply(554, "5.6.0 empty message")?;
            return Ok(false);
        }
        let failed = self.intake.deliver(&sender, &mailboxes, &mut spool, len);
        if failed.is_empty() {
            self.summary.messages += 1;
            self.summary.copies += mailboxes.len() as u64;
            let to = match mailboxes.len() {
                1 => "1 mailbox".to_owned(),
                n => format!("{n} mailboxes"),
            };
            self.reply(250, &format!("2.0.0 {size} octets delivered to {to}"))?;
            return Ok(true);
        }
        // Copies already appended stay: a retry duplicates them, which loses nothing.
        self.summary.copies += (mailboxes.len() - failed.len()) as u64;
        self.summary.refused += 1;
        let names: Vec<String> = failed
            .iter()
            .map(|(m, why)| format!("{m} ({why})"))
            .collect();
        self.reply(451, &format!("4.3.0 not delivered to {}", names.join(", ")))?;
        Ok(false)
    }
}

enum Received {
    /// The final dot came: octets stored (LF line ends) and octets as sent.
    Whole { stored: u64, size: u64 },
    /// The final dot came after more than the limit: nothing is kept.
    TooBig(u64),
    /// The input ended first.
    Cut,
    /// The spool could not be written: the rest was read and dropped.
    SpoolFailed(io::Error),
}

/// Reads the message up to the line holding a lone dot into `spool`: a leading dot taken off
/// each line, CRLF stored as LF. Past `max_size` nothing more is written, and the rest is
/// read only to find the end.
fn receive<R: BufRead>(reader: &mut R, spool: &mut File, max_size: u64) -> io::Result<Received> {
    let mut out = BufWriter::new(&mut *spool);
    let mut piece = Vec::with_capacity(DATA_PIECE);
    let mut line_start = true;
    // A CR that ended the last piece, held back in case the next starts with LF.
    let mut held_cr = false;
    let (mut size, mut stored) = (0u64, 0u64);
    let mut failed: Option<io::Error> = None;
    loop {
        piece.clear();
        let n = Read::take(&mut *reader, DATA_PIECE as u64).read_until(b'\n', &mut piece)?;
        if n == 0 {
            return Ok(Received::Cut);
        }
        let complete = piece.last() == Some(&b'\n');
        if line_start && (piece == b".\r\n" || piece == b".\n") {
            break;
        }
        let mut body: &[u8] = &piece;
        if line_start && body.first() == Some(&b'.') {
            body = &body[1..];
        }
        size += body.len() as u64;
        let mut chunk: Vec<u8> = Vec::new();
        let mut text = body;
        if held_cr {
            if text.first() != Some(&b'\n') {
                chunk.push(b'\r');
            }
            held_cr = false;
        }
        if complete {
            text = &text[..text.len() - 1];
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
        } else if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
            held_cr = true;
        }
        chunk.extend_from_slice(text);
        if complete {
            chunk.push(b'\n');
        }
        if size <= max_size && failed.is_none() {
            match out.write_all(&chunk) {
                Ok(()) => stored += chunk.len() as u64,
                Err(e) => failed = Some(e),
            }
        }
        line_start = complete;
    }
    if let Some(e) = failed {
        return Ok(Received::SpoolFailed(e));
    }
    if size > max_size {
        return Ok(Received::TooBig(size));
    }
    if held_cr {
        // A CR right before the final line: content, as sent.
        stored += 1;
        if let Err(e) = out.write_all(b"\r") {
            return Ok(Received::SpoolFailed(e));
        }
    }
    if let Err(e) = out.flush() {
        return Ok(Received::SpoolFailed(e));
    }
    drop(out);
    spool.seek(SeekFrom::Start(0))?;
    Ok(Received::Whole { stored, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::Mutex;

    /// A copy as kept: sender, mailbox, octets.
    type Copy = (String, String, Vec<u8>);

    /// An intake that keeps what it is given, refuses names starting with `bad`, and fails
    /// delivery to `broken`.
    #[derive(Default)]
    struct Kept {
        copies: Mutex<Vec<Copy>>,
    }

    impl Intake for Kept {
        fn recipient(&self, address: &str) -> Result<String, String> {
            let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
            if local.starts_with("bad") {
                Err("no such user name".into())
            } else {
                Ok(local.to_owned())
            }
        }

        fn spool(&self) -> io::Result<File> {
            tempfile::tempfile()
        }

        fn deliver(
            &self,
            sender: &str,
            mailboxes: &[String],
            spool: &mut File,
            len: u64,
        ) -> Vec<(String, String)> {
            let mut bytes = Vec::new();
            spool.seek(SeekFrom::Start(0)).unwrap();
            spool.take(len).read_to_end(&mut bytes).unwrap();
            let mut failed = Vec::new();
            for m in mailboxes {
                if m == "broken" {
                    failed.push((m.clone(), "disk on fire".into()));
                } else {
                    self.copies
                        .lock()
                        .unwrap()
                        .push((sender.into(), m.clone(), bytes.clone()));
                }
            }
            failed
        }
    }

    fn talk(input: &[u8], max_size: u64) -> (String, Summary, Vec<Copy>) {
        let kept = Kept::default();
        let limits = Limits {
            hostname: "dev.test".into(),
            max_size,
            max_recipients: 3,
        };
        let mut out = Vec::new();
        let summary = serve(&mut Cursor::new(input), &mut out, &kept, &limits).unwrap();
        let copies = kept.copies.into_inner().unwrap();
        (String::from_utf8(out).unwrap(), summary, copies)
    }

    fn codes(replies: &str) -> Vec<&str> {
        replies
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| &l[..3])
            .collect()
    }

    #[test]
    fn a_pipelined_message_to_two_recipients_is_stored_unstuffed_with_lf() {
        let (replies, summary, copies) = talk(
            b"EHLO c\r\nMAIL FROM:<a@x> SIZE=40\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@y>\r\n\
              RCPT TO:<alice@z>\r\nDATA\r\nSubject: s\r\n\r\n..dot\r\n..\r\nbare\rcr\r\n.\r\nQUIT\r\n",
            1000,
        );
        assert_eq!(
            codes(&replies),
            [
                "220", "250", "250", "250", "250", "250", "354", "250", "221"
            ]
        );
        assert!(replies.contains("250-SIZE 1000\r\n250-8BITMIME\r\n250-PIPELINING\r\n"));
        assert_eq!(copies.len(), 2, "alice once, bob once");
        assert_eq!(copies[0].0, "a@x");
        assert_eq!(copies[0].2, b"Subject: s\n\n.dot\n.\nbare\rcr\n");
        assert_eq!(
            summary,
            Summary {
                messages: 1,
                copies: 2,
                refused: 0,
                quit: true
            }
        );
    }

    #[test]
    fn too_big_is_refused_before_and_after_data_and_nothing_is_stored() {
        let (replies, _, copies) = talk(b"EHLO c\r\nMAIL FROM:<> SIZE=11\r\nQUIT\r\n", 10);
        assert_eq!(codes(&replies), ["220", "250", "552", "221"]);
        let (replies, summary, copies2) = talk(
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x>\r\nDATA\r\n0123456789\r\n.\r\nQUIT\r\n",
            10,
        );
        assert_eq!(
            codes(&replies),
            ["220", "250", "250", "250", "354", "552", "221"]
        );
        assert!(copies.is_empty() && copies2.is_empty());
        assert_eq!(summary.refused, 1);
    }

    #[test]
    fn a_message_cut_off_before_its_dot_is_never_delivered() {
        let kept = Kept::default();
        let limits = Limits {
            hostname: "h".into(),
            max_size: 100,
            max_recipients: 3,
        };
        let mut out = Vec::new();
        let input = b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nSubject: half\r\n";
        let r = serve(&mut Cursor::new(&input[..]), &mut out, &kept, &limits);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(kept.copies.into_inner().unwrap().is_empty());
    }

    #[test]
    fn sequence_errors_refused_names_and_failed_copies_get_their_codes() {
        let (replies, summary, copies) = talk(
            b"MAIL FROM:<a@x>\r\nEHLO c\r\nRCPT TO:<b@x>\r\nDATA\r\nMAIL FROM:<a@x>\r\n\
              RCPT TO:<bad1@x>\r\nDATA\r\nRCPT TO:<ok@x>\r\nRCPT TO:<broken@x>\r\nDATA\r\nhi\r\n.\r\n\
              STARTTLS\r\nBDAT 1\r\nXYZ\r\nRSET\r\nQUIT\r\n",
            100,
        );
        assert_eq!(
            codes(&replies),
            [
                "220", "503", "250", "503", "503", "250", "550", "554", "250", "250", "354", "451",
                "502", "502", "500", "250", "221"
            ]
        );
        assert!(replies.contains("451 4.3.0 not delivered to broken (disk on fire)"));
        assert_eq!(
            copies.len(),
            1,
            "the good copy stays: a retry duplicates, never loses"
        );
        assert_eq!(summary.copies, 1);
    }

    #[test]
    fn auth_accepts_any_credentials_and_can_be_cancelled() {
        let (replies, _, _) = talk(
            b"EHLO c\r\nAUTH PLAIN AGEAYg==\r\nAUTH LOGIN\r\ndQ==\r\ncA==\r\nAUTH PLAIN\r\n*\r\n\
              AUTH CRAM-MD5\r\nAUTH LOGIN dQ==\r\ncA==\r\nQUIT\r\n",
            100,
        );
        assert_eq!(
            codes(&replies),
            [
                "220", "250", "235", "334", "334", "235", "334", "501", "504", "334", "235", "221"
            ]
        );
        assert!(replies.contains("334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"));
    }

    #[test]
    fn long_lines_are_refused_as_commands_and_kept_in_data() {
        let mut input = b"EHLO c\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'N', MAX_COMMAND + 10));
        input.extend_from_slice(b"\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
        let long = vec![b'x'; DATA_PIECE * 2 + 1];
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let (replies, _, copies) = talk(&input, 1 << 20);
        assert_eq!(
            codes(&replies),
            ["220", "250", "500", "250", "250", "354", "250", "221"]
        );
        let mut want = long.clone();
        want.push(b'\n');
        assert_eq!(copies[0].2, want);
    }

    #[test]
    fn a_crlf_split_across_pieces_is_still_one_line_end() {
        let mut input = b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n".to_vec();
        // The CR is the last octet of a full piece, its LF the first of the next.
        input.extend(std::iter::repeat_n(b'y', DATA_PIECE - 1));
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, _, copies) = talk(&input, 1 << 20);
        let body = &copies[0].2;
        assert_eq!(body.len(), DATA_PIECE);
        assert!(body.ends_with(b"y\n"));
    }

    #[test]
    fn twenty_errors_in_a_row_end_the_conversation() {
        let input = b"XYZ\r\n".repeat(25);
        let (replies, summary, _) = talk(&input, 100);
        assert!(replies.ends_with("421 4.7.0 too many errors, closing\r\n"));
        assert_eq!(replies.matches("500 ").count(), 20);
        assert!(!summary.quit);
    }
}
