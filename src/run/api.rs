//! `--dev-http ADDR`: the development server's HTTP API (`/api/v1`, JSON) and its page, for
//! test suites in any language and for a developer's browser. Every read and change of a
//! mailbox goes through the same store, session lock and delivery locks as POP3 sessions: a
//! mailbox that a session holds answers 409 with the reason, never a torn file.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::SystemTime;

use tiny_http::{Header, Request, Response, Server};

use super::dev::DevStore;
use super::faults::Faults;
use super::page;
use super::sessions::SessionLog;
use crate::auth::oauth::{self, BearerTokens};
use crate::fault_rules;
use crate::json;
use crate::limits::MAX_BEARER_TOKEN;
use crate::limits::MAX_FAULT_DOCUMENT;
use crate::mailbox::append::{AppendError, append};
use crate::mailbox::mbox::MboxOptions;
use crate::mailbox::template::MailTemplate;
use crate::mailbox::{MailStore, MailboxError, Maildrop, UserName, files};

/// The most header octets read from a message for its summary.
const MAX_SUMMARY_HEADER: u64 = 64 * 1024;

/// Requests handled at once; each is a thread of its own.
const MAX_REQUESTS: usize = 16;

/// A request, routed.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /livez`.
    Livez,
    /// `GET /readyz`.
    Readyz,
    /// `GET /`.
    Page,
    /// `GET /api/v1/mailboxes`.
    Mailboxes,
    /// `GET /api/v1/mailboxes/{user}/messages`.
    Messages(String),
    /// `GET /api/v1/mailboxes/{user}/messages/{uidl}`.
    Message(String, String),
    /// `POST /api/v1/mailboxes/{user}/messages`.
    Append(String),
    /// `DELETE /api/v1/mailboxes/{user}/messages/{uidl}`.
    DeleteMessage(String, String),
    /// `DELETE /api/v1/mailboxes/{user}`.
    DeleteMailbox(String),
    /// `POST /api/v1/reset`.
    Reset,
    /// `GET /api/v1/mailboxes/{user}/token`: whether the user has a token of their own.
    Token(String),
    /// `PUT /api/v1/mailboxes/{user}/token`: only the token in the body logs the user in.
    SetToken(String),
    /// `DELETE /api/v1/mailboxes/{user}/token`: any token logs the user in again.
    ClearToken(String),
    /// `GET /api/v1/sessions`.
    Sessions,
    /// `GET /api/v1/faults`.
    Faults,
    /// `PUT /api/v1/faults`.
    PutFaults,
    /// A path with no route.
    NotFound,
    /// A path whose route takes other methods: those.
    Method(&'static str),
    /// A path segment that is not valid percent-encoded UTF-8.
    BadPath,
}

/// Routes a method and a path (with any query string).
pub fn route(method: &str, url: &str) -> Route {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    let Some(segments) = raw
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Option<Vec<String>>>()
    else {
        return Route::BadPath;
    };
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (get, post, delete) = (method == "GET", method == "POST", method == "DELETE");
    let put = method == "PUT";
    match s.as_slice() {
        [""] if get => Route::Page,
        [""] => Route::Method("GET"),
        ["livez"] if get => Route::Livez,
        ["readyz"] if get => Route::Readyz,
        ["livez" | "readyz"] => Route::Method("GET"),
        ["api", "v1", "mailboxes"] if get => Route::Mailboxes,
        ["api", "v1", "mailboxes"] => Route::Method("GET"),
        ["api", "v1", "mailboxes", user] if delete => Route::DeleteMailbox(user.to_string()),
        ["api", "v1", "mailboxes", _] => Route::Method("DELETE"),
        ["api", "v1", "mailboxes", user, "messages"] if get => Route::Messages(user.to_string()),
        ["api", "v1", "mailboxes", user, "messages"] if post => Route::Append(user.to_string()),
        ["api", "v1", "mailboxes", _, "messages"] => Route::Method("GET, POST"),
        ["api", "v1", "mailboxes", user, "messages", uidl] if get => {
            Route::Message(user.to_string(), uidl.to_string())
        }
        ["api", "v1", "mailboxes", user, "messages", uidl] if delete => {
            Route::DeleteMessage(user.to_string(), uidl.to_string())
        }
        ["api", "v1", "mailboxes", _, "messages", _] => Route::Method("GET, DELETE"),
        ["api", "v1", "mailboxes", user, "token"] if get => Route::Token(user.to_string()),
        ["api", "v1", "mailboxes", user, "token"] if put => Route::SetToken(user.to_string()),
        ["api", "v1", "mailboxes", user, "token"] if delete => Route::ClearToken(user.to_string()),
        ["api", "v1", "mailboxes", _, "token"] => Route::Method("GET, PUT, DELETE"),
        ["api", "v1", "reset"] if post => Route::Reset,
        ["api", "v1", "reset"] => Route::Method("POST"),
        ["api", "v1", "sessions"] if get => Route::Sessions,
        ["api", "v1", "sessions"] => Route::Method("GET"),
        ["api", "v1", "faults"] if get => Route::Faults,
        ["api", "v1", "faults"] if method == "PUT" => Route::PutFaults,
        ["api", "v1", "faults"] => Route::Method("GET, PUT"),
        _ => Route::NotFound,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One message as the API and the page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Its UIDL.
    pub uidl: String,
    /// Octets as RETR sends them.
    pub size: u64,
    /// The From, To, Subject and Date headers, unfolded, as written (empty when absent).
    pub from: String,
    /// `To:`.
    pub to: String,
    /// `Subject:`.
    pub subject: String,
    /// `Date:`.
    pub date: String,
}

impl Summary {
    fn json(&self) -> String {
        format!(
            "{{\"uidl\":{},\"size\":{},\"from\":{},\"to\":{},\"subject\":{},\"date\":{}}}",
            json::quote(&self.uidl),
            self.size,
            json::quote(&self.from),
            json::quote(&self.to),
            json::quote(&self.subject),
            json::quote(&self.date)
        )
    }
}

/// A mailbox as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The user name.
    pub user: String,
    /// Messages and their octets as RETR sends them; `None` while a session holds it.
    pub counts: Option<(usize, u64)>,
}

/// What a handler answers.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
            allow: None,
        }
    }

    fn error(status: u16, why: &str) -> Reply {
        Reply::json(status, format!("{{\"error\":{}}}", json::quote(why)))
    }
}

/// The API over the dev server's mailboxes.
pub struct Api {
    dir: PathBuf,
    template: MailTemplate,
    store: Arc<DevStore>,
    options: MboxOptions,
    /// Where the mailboxes as `--dev` started are kept for `POST /api/v1/reset`.
    seed: PathBuf,
    max_size: u64,
    /// The users' own OAuth bearer tokens, shared with the POP3 sessions.
    tokens: BearerTokens,
    /// The recent POP3 sessions.
    sessions: Arc<SessionLog>,
    /// The fault rules in force.
    faults: Arc<Faults>,
}

/// Why an API call could not go on: the HTTP status it answers (400 a bad name or message,
/// 404 no such mailbox or message, 409 a mailbox in a session or a delivery, 413 over the
/// size limit, 500 a failure of the store) and the reason it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

impl Refusal {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        self.0
    }

    /// The reason, as the API's `{"error": ...}` gives it.
    pub fn reason(&self) -> &str {
        &self.1
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.1, self.0)
    }
}

impl std::error::Error for Refusal {}

impl From<MailboxError> for Refusal {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::InUse => Refusal(409, "the mailbox is in a POP3 session".into()),
            MailboxError::Busy => Refusal(409, "the mailbox is locked by a delivery".into()),
            other => Refusal(500, other.to_string()),
        }
    }
}

/// What the API shares with the POP3 sessions of the same server.
#[derive(Clone, Default)]
pub struct Shared {
    /// The users' own OAuth bearer tokens.
    pub tokens: BearerTokens,
    /// The log of the recent sessions.
    pub sessions: Arc<SessionLog>,
    /// The fault rules in force.
    pub faults: Arc<Faults>,
}

impl Api {
    /// The API over the mailboxes in `dir`, served through `store`, and over what it `shared`
    /// with the POP3 sessions; the mailboxes there now are copied aside as the seed that reset
    /// restores.
    pub fn new(
        dir: PathBuf,
        template: MailTemplate,
        store: Arc<DevStore>,
        options: MboxOptions,
        max_size: u64,
        shared: Shared,
    ) -> io::Result<Api> {
        let Shared {
            tokens,
            sessions,
            faults,
        } = shared;
        // A dot-name is never a user's mailbox (user names cannot start with a dot).
        let seed = dir.join(".poplar-dev-seed");
        if seed.exists() {
            fs::remove_dir_all(&seed)?;
        }
        fs::create_dir(&seed)?;
        let api = Api {
            dir,
            template,
            store,
            options,
            seed,
            max_size,
            tokens,
            sessions,
            faults,
        };
        for user in api.users()? {
            fs::copy(api.path(&user), api.seed.join(user.as_str()))?;
        }
        Ok(api)
    }

    fn path(&self, user: &UserName) -> PathBuf {
        self.template.expand(user)
    }

    /// The user names that have a mailbox file in the directory, sorted.
    fn users(&self) -> io::Result<Vec<UserName>> {
        users_in(&self.dir)
    }

    fn user(&self, name: &str) -> Result<UserName, Refusal> {
        UserName::new(name.as_bytes())
            .map_err(|e| Refusal(400, format!("'{name}' is not a user name: {e}")))
    }

    /// The user's maildrop, opened as a session opens it; 404 when there is no mailbox.
    fn open(&self, name: &str) -> Result<(UserName, Box<dyn Maildrop>), Refusal> {
        let user = self.user(name)?;
        if !self.path(&user).is_file() {
            return Err(Refusal(404, format!("no mailbox '{name}'")));
        }
        let drop = self.store.open(&user)?;
        Ok((user, drop))
    }

    /// Every mailbox with its counts (none while a session holds it).
    fn mailboxes(&self) -> io::Result<Vec<MailboxInfo>> {
        let mut out = Vec::new();
        for user in self.users()? {
            let counts = match self.store.open(&user) {
                Ok(drop) => {
                    let m = drop.messages();
                    Some((m.len(), m.iter().map(|i| i.size).sum()))
                }
                Err(_) => None,
            };
            out.push(MailboxInfo {
                user: user.as_str().to_owned(),
                counts,
            });
        }
        Ok(out)
    }

    /// Each message of the user's mailbox, summarized, in POP3 order.
    pub fn messages(&self, name: &str) -> Result<Vec<Summary>, Refusal> {
        let (_, mut drop) = self.open(name)?;
        let infos = drop.messages().to_vec();
        let mut out = Vec::with_capacity(infos.len());
        for (i, info) in infos.iter().enumerate() {
            let reader = drop.reader(i)?;
            let mut s = summarize(reader).map_err(|e| Refusal(500, e.to_string()))?;
            s.uidl = info.uid.to_string();
            s.size = info.size;
            out.push(s);
        }
        Ok(out)
    }

    /// Answers one request; the status, for the log.
    fn serve(&self, mut req: Request) -> io::Result<u16> {
        if let Route::Message(user, uidl) = route(req.method().as_str(), req.url()) {
            return self.raw(req, &user, &uidl);
        }
        let reply = self.handle(&mut req);
        let status = reply.status;
        req.respond(to_response(reply))?;
        Ok(status)
    }

    fn handle(&self, req: &mut Request) -> Reply {
        let result = match route(req.method().as_str(), req.url()) {
            Route::Livez | Route::Readyz => Ok(Reply::json(200, "{\"status\":\"ok\"}".into())),
            Route::Page => self.page(),
            Route::Mailboxes => self.list_json(),
            Route::Messages(user) => self.messages(&user).map(|list| {
                let items: Vec<String> = list.iter().map(Summary::json).collect();
                Reply::json(200, format!("[{}]", items.join(",")))
            }),
            Route::Message(..) => Err(Refusal(500, "a message is streamed by serve".into())),
            Route::Append(user) => self
                .append(&user, req.as_reader())
                .map(|uidl| Reply::json(201, format!("{{\"uidl\":{}}}", json::quote(&uidl)))),
            Route::DeleteMessage(user, uidl) => self.delete_message(&user, &uidl),
            Route::DeleteMailbox(user) => self.delete_mailbox(&user),
            Route::Reset => self
                .reset()
                .map(|n| Reply::json(200, format!("{{\"mailboxes\":{n}}}"))),
            Route::Token(user) => self.user(&user).map(|u| self.token_state(&u)),
            Route::SetToken(user) => self.set_token(&user, req.as_reader()),
            Route::ClearToken(user) => self.user(&user).map(|u| {
                self.tokens.clear(&u);
                self.token_state(&u)
            }),
            Route::Sessions => Ok(Reply::json(200, self.sessions_json())),
            Route::Faults => Ok(Reply::json(200, self.faults.json())),
            Route::PutFaults => self.put_faults(req.as_reader()),
            Route::NotFound => Err(Refusal(404, "no such route (see docs/dev.md)".into())),
            Route::BadPath => Err(Refusal(
                400,
                "the path is not valid percent-encoded UTF-8".into(),
            )),
            Route::Method(allowed) => {
                let mut r = Reply::error(405, &format!("this route takes {allowed}"));
                r.allow = Some(allowed);
                return r;
            }
        };
        result.unwrap_or_else(|Refusal(status, why)| Reply::error(status, &why))
    }

    fn list_json(&self) -> Result<Reply, Refusal> {
        let list = self.mailboxes().map_err(|e| Refusal(500, e.to_string()))?;
        let items: Vec<String> = list
            .iter()
            .map(|m| match m.counts {
                Some((n, octets)) => format!(
                    "{{\"user\":{},\"messages\":{n},\"octets\":{octets},\"in_session\":false}}",
                    json::quote(&m.user)
                ),
                None => format!(
                    "{{\"user\":{},\"messages\":null,\"octets\":null,\"in_session\":true}}",
                    json::quote(&m.user)
                ),
            })
            .collect();
        Ok(Reply::json(200, format!("[{}]", items.join(","))))
    }

    fn page(&self) -> Result<Reply, Refusal> {
        let mailboxes = self.mailboxes().map_err(|e| Refusal(500, e.to_string()))?;
        let mut messages = Vec::new();
        for m in &mailboxes {
            if m.counts.is_some() {
                messages.push((m.user.clone(), self.messages(&m.user).unwrap_or_default()));
            }
        }
        Ok(Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page::render(&mailboxes, &messages, &self.sessions.records()).into_bytes(),
            allow: None,
        })
    }

    /// The message as stored, streamed from the maildrop while the session lock is held.
    fn raw(&self, req: Request, name: &str, uidl: &str) -> io::Result<u16> {
        let opened = self.open(name).and_then(|(_, drop)| {
            let i = find(drop.as_ref(), uidl)?;
            Ok((drop, i))
        });
        let (mut drop, i) = match opened {
            Ok(found) => found,
            Err(Refusal(status, why)) => {
                req.respond(to_response(Reply::error(status, &why)))?;
                return Ok(status);
            }
        };
        let reader = match drop.reader(i) {
            Ok(r) => r,
            Err(e) => {
                let Refusal(status, why) = e.into();
                req.respond(to_response(Reply::error(status, &why)))?;
                return Ok(status);
            }
        };
        let mut headers = vec![];
        if let Ok(h) = Header::from_bytes("Content-Type", "message/rfc822") {
            headers.push(h);
        }
        req.respond(Response::new(200.into(), headers, reader, None, None))?;
        Ok(200)
    }

    /// Appends a message (the request body) to the user's mailbox, created if needed, as
    /// `poplar deliver` appends; returns its UIDL. It is spooled first, so that one over the
    /// limit, or cut off, is never stored.
    pub fn append(&self, name: &str, body: &mut dyn Read) -> Result<String, Refusal> {
        let user = self.user(name)?;
        let path = self.path(&user);
        let too_big = || Refusal(413, format!("the message is over {} octets", self.max_size));
        let mut spool = spool_file(&self.dir).map_err(|e| Refusal(500, e.to_string()))?;
        let n = io::copy(&mut body.take(self.max_size + 1), &mut spool)
            .map_err(|e| Refusal(400, format!("reading the message: {e}")))?;
        if n > self.max_size {
            return Err(too_big());
        }
        spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| Refusal(500, e.to_string()))?;
        // Held across the append, so that no session logs in between and the new message is
        // the last one the reopened maildrop shows.
        let before = self.store.open(&user)?;
        let appended = append(
            &path,
            None,
            &mut spool,
            &self.options.locks,
            self.options.trust,
            SystemTime::now(),
        );
        match appended {
            Ok(_) => {}
            Err(AppendError::Data(why)) => return Err(Refusal(400, why.to_owned())),
            Err(AppendError::Busy) => {
                return Err(Refusal(409, "the mailbox is locked by a delivery".into()));
            }
            Err(e) => return Err(Refusal(500, e.to_string())),
        }
        drop(before);
        let (_, after) = self.open(name)?;
        after
            .messages()
            .last()
            .map(|m| m.uid.to_string())
            .ok_or_else(|| Refusal(500, "the message is not in the mailbox".into()))
    }

    /// Whether `user` has a token of their own (never the token).
    fn token_state(&self, user: &UserName) -> Reply {
        Reply::json(
            200,
            format!(
                "{{\"user\":{},\"token_set\":{}}}",
                json::quote(user.as_str()),
                self.tokens.is_set(user)
            ),
        )
    }

    /// Sets the user's own token from the request body: the token itself, one line end after
    /// it dropped (as `echo` leaves one). A user name needs no mailbox yet: the token is ready
    /// for the login that creates it.
    fn set_token(&self, name: &str, body: &mut dyn Read) -> Result<Reply, Refusal> {
        let user = self.user(name)?;
        let mut token = Vec::new();
        body.take(MAX_BEARER_TOKEN as u64 + 3)
            .read_to_end(&mut token)
            .map_err(|e| Refusal(400, format!("reading the token: {e}")))?;
        let line = token.strip_suffix(b"\n").unwrap_or(&token);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(why) = oauth::token_problem(line) {
            return Err(Refusal(400, why));
        }
        self.tokens.set(&user, line);
        Ok(self.token_state(&user))
    }

    fn delete_message(&self, name: &str, uidl: &str) -> Result<Reply, Refusal> {
        let (_, drop) = self.open(name)?;
        let i = find(drop.as_ref(), uidl)?;
        let mut deleted = vec![false; drop.messages().len()];
        deleted[i] = true;
        drop.commit(&deleted)?;
        Ok(Reply::json(200, "{\"deleted\":1}".into()))
    }

    fn delete_mailbox(&self, name: &str) -> Result<Reply, Refusal> {
        let (user, held) = self.open(name)?;
        let path = self.path(&user);
        remove_mailbox(&path).map_err(|e| Refusal(500, e.to_string()))?;
        drop(held);
        Ok(Reply::json(200, "{\"deleted\":true}".into()))
    }

    /// Puts the rules in the body in force, the counts and the generator started afresh;
    /// a document that does not parse changes nothing.
    fn put_faults(&self, body: &mut dyn Read) -> Result<Reply, Refusal> {
        let mut text = Vec::new();
        body.take(MAX_FAULT_DOCUMENT + 1)
            .read_to_end(&mut text)
            .map_err(|e| Refusal(400, format!("reading the rules: {e}")))?;
        if text.len() as u64 > MAX_FAULT_DOCUMENT {
            return Err(Refusal(
                413,
                format!("the rules are over {MAX_FAULT_DOCUMENT} octets"),
            ));
        }
        self.set_faults(&text)?;
        Ok(Reply::json(200, self.faults.json()))
    }

    /// Puts the fault rules of the JSON document `text` in force (docs/dev.md), the counts and
    /// draws afresh; a document that does not parse is refused with 400 and the rules in force
    /// stay.
    pub fn set_faults(&self, text: &[u8]) -> Result<(), Refusal> {
        let rules = fault_rules::parse(text).map_err(|why| Refusal(400, why))?;
        log::info!("http: {} fault rules in force", rules.rules.len());
        self.faults.replace(rules);
        Ok(())
    }

    /// The recent POP3 sessions as `GET /api/v1/sessions` answers them (JSON).
    pub fn sessions_json(&self) -> String {
        self.sessions.json()
    }

    /// Every mailbox back to what `--dev` started with: all are held first, so that either
    /// none is touched (one is in a session: 409) or all are. Every user's own bearer token is
    /// forgotten too, as `--dev` starts with none. Returns how many mailboxes the seed holds.
    pub fn reset(&self) -> Result<usize, Refusal> {
        let mut names = self.users().map_err(|e| Refusal(500, e.to_string()))?;
        for user in users_in(&self.seed).map_err(|e| Refusal(500, e.to_string()))? {
            if !names.contains(&user) {
                names.push(user);
            }
        }
        let mut held = Vec::new();
        for user in &names {
            match self.store.open(user) {
                Ok(d) => held.push(d),
                Err(e) => {
                    let Refusal(status, why) = e.into();
                    return Err(Refusal(status, format!("{user}: {why}")));
                }
            }
        }
        for user in &names {
            let path = self.path(user);
            remove_mailbox(&path).map_err(|e| Refusal(500, e.to_string()))?;
            let seeded = self.seed.join(user.as_str());
            if seeded.exists() {
                fs::copy(&seeded, &path).map_err(|e| Refusal(500, e.to_string()))?;
            }
        }
        drop(held);
        self.tokens.clear_all();
        Ok(users_in(&self.seed).map_or(0, |u| u.len()))
    }
}

/// The valid user names with a mailbox file in `dir`, sorted.
fn users_in(dir: &Path) -> io::Result<Vec<UserName>> {
    let mut users = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if entry.file_type()?.is_file()
            && let Ok(user) = UserName::new(name.as_bytes())
        {
            users.push(user);
        }
    }
    users.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(users)
}

/// Removes an mbox and the sidecars that describe it (its index, journals, kept messages);
/// the session lock file stays, as it is held.
fn remove_mailbox(path: &Path) -> io::Result<()> {
    for p in [
        path.to_owned(),
        files::index(path),
        files::journal(path),
        files::delivery_note(path),
        files::deleted(path),
    ] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn find(drop: &dyn Maildrop, uidl: &str) -> Result<usize, Refusal> {
    drop.messages()
        .iter()
        .position(|m| m.uid.to_string() == uidl)
        .ok_or_else(|| Refusal(404, format!("no message with UIDL '{uidl}'")))
}

/// A file in `dir` to hold a message while it arrives, unlinked at once so that nothing is
/// left behind and no session ever sees it.
pub fn spool_file(dir: &Path) -> io::Result<fs::File> {
    static SPOOLS: AtomicU64 = AtomicU64::new(0);
    let n = SPOOLS.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".poplar-spool-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// The From, To, Subject and Date of a message, from its header (read up to its blank line,
/// at most `MAX_SUMMARY_HEADER` octets).
fn summarize(reader: Box<dyn Read + '_>) -> io::Result<Summary> {
    let mut head = Vec::new();
    let mut r = io::BufReader::new(reader.take(MAX_SUMMARY_HEADER));
    loop {
        let start = head.len();
        if io::BufRead::read_until(&mut r, b'\n', &mut head)? == 0 {
            break;
        }
        let line = &head[start..];
        if line == b"\n" || line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut s = Summary {
        uidl: String::new(),
        size: 0,
        from: String::new(),
        to: String::new(),
        subject: String::new(),
        date: String::new(),
    };
    let mut current: Option<&mut String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_deref_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        current = None;
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let field = match name.to_ascii_lowercase().as_str() {
            "from" => &mut s.from,
            "to" => &mut s.to,
            "subject" => &mut s.subject,
            "date" => &mut s.date,
            _ => continue,
        };
        if field.is_empty() {
            field.push_str(value.trim());
            current = Some(field);
        }
    }
    Ok(s)
}

/// The API served on its own threads; dropping it stops taking requests (those being
/// answered finish on their threads, and tiny_http closes the listening socket on its own
/// thread a moment later).
pub struct Http {
    addr: SocketAddr,
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Http {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `api` at `addr` until the returned `Http` is dropped.
pub fn start(addr: SocketAddr, api: Arc<Api>) -> io::Result<Http> {
    let server = Arc::new(Server::http(addr).map_err(io::Error::other)?);
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("the HTTP server has no IP address"))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let (accepting, stop) = (server.clone(), stopping.clone());
    let thread = thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept(&accepting, &api, &stop))?;
    Ok(Http {
        addr: bound,
        server,
        stopping,
        thread: Some(thread),
    })
}

/// Hands each request to a thread of its own, at most `MAX_REQUESTS` at once, until `stop`.
fn accept(server: &Server, api: &Arc<Api>, stop: &AtomicBool) {
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        use std::sync::atomic::Ordering::SeqCst;
        let req = match server.recv() {
            Ok(req) => req,
            // `unblock` and a failed accept both come here: only the first ends the loop.
            Err(_) if stop.load(SeqCst) => return,
            Err(e) => {
                log::warn!("http: accept failed: {e}");
                // Out of descriptors, say: do not spin.
                thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if busy.fetch_add(1, SeqCst) >= MAX_REQUESTS {
            busy.fetch_sub(1, SeqCst);
            let _ = req.respond(to_response(Reply::error(503, "too many requests at once")));
            continue;
        }
        let (api, slot) = (api.clone(), busy.clone());
        let spawned = thread::Builder::new().name("http".into()).spawn(move || {
            let what = format!(
                "{} {}",
                req.method(),
                crate::logsafe::escape(req.url().as_bytes())
            );
            match api.serve(req) {
                Ok(status) => log::info!("http: {what} -> {status}"),
                Err(e) => log::info!("http: {what}: {e}"),
            }
            slot.fetch_sub(1, SeqCst);
        });
        if let Err(e) = spawned {
            busy.fetch_sub(1, SeqCst);
            log::warn!("http: cannot start a thread: {e}");
        }
    }
}

fn to_response(reply: Reply) -> Response<io::Cursor<Vec<u8>>> {
    let mut r = Response::from_data(reply.body).with_status_code(reply.status);
    if let Ok(h) = Header::from_bytes("Content-Type", reply.content_type) {
        r.add_header(h);
    }
    if let Some(allow) = reply.allow
        && let Ok(h) = Header::from_bytes("Allow", allow)
    {
        r.add_header(h);
    }
    // The page and the API are for this machine's own tools: no other origin reads them.
    if let Ok(h) = Header::from_bytes("X-Content-Type-Options", "nosniff") {
        r.add_header(h);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path_with_percent_decoding() {
        assert_eq!(route("GET", "/"), Route::Page);
        assert_eq!(route("GET", "/livez"), Route::Livez);
        assert_eq!(route("GET", "/api/v1/mailboxes?x=1"), Route::Mailboxes);
        assert_eq!(
            route("GET", "/api/v1/mailboxes/bob%40x.test/messages"),
            Route::Messages("bob@x.test".into())
        );
        assert_eq!(
            route("DELETE", "/api/v1/mailboxes/bob/messages/00ab"),
            Route::DeleteMessage("bob".into(), "00ab".into())
        );
        assert_eq!(
            route("POST", "/api/v1/mailboxes/bob/messages"),
            Route::Append("bob".into())
        );
        assert_eq!(
            route("DELETE", "/api/v1/mailboxes/bob"),
            Route::DeleteMailbox("bob".into())
        );
        assert_eq!(route("POST", "/api/v1/reset"), Route::Reset);
        assert_eq!(route("GET", "/api/v1/sessions"), Route::Sessions);
        assert_eq!(route("GET", "/api/v1/faults"), Route::Faults);
        assert_eq!(route("PUT", "/api/v1/faults"), Route::PutFaults);
        assert_eq!(route("POST", "/api/v1/faults"), Route::Method("GET, PUT"));
        assert_eq!(route("DELETE", "/api/v1/sessions"), Route::Method("GET"));
        assert_eq!(route("GET", "/api/v1/reset"), Route::Method("POST"));
        assert_eq!(
            route("PUT", "/api/v1/mailboxes/bob/messages"),
            Route::Method("GET, POST")
        );
        assert_eq!(route("GET", "/api/v2/mailboxes"), Route::NotFound);
        assert_eq!(
            route("PUT", "/api/v1/mailboxes/bob%40x.test/token"),
            Route::SetToken("bob@x.test".into())
        );
        assert_eq!(
            route("GET", "/api/v1/mailboxes/bob/token"),
            Route::Token("bob".into())
        );
        assert_eq!(
            route("DELETE", "/api/v1/mailboxes/bob/token"),
            Route::ClearToken("bob".into())
        );
        assert_eq!(
            route("POST", "/api/v1/mailboxes/bob/token"),
            Route::Method("GET, PUT, DELETE")
        );
        assert_eq!(
            route("GET", "/api/v1/mailboxes/%zz/messages"),
            Route::BadPath
        );
        assert_eq!(
            route("GET", "/api/v1/mailboxes/%ff/messages"),
            Route::BadPath
        );
    }

    #[test]
    fn a_summary_unfolds_headers_and_stops_at_the_body() {
        let m: &[u8] =
            b"From: A <a@x>\nSubject: one\n two\nTO: b@y\nDate: Mon, 1 Jan 2024\n\nFrom: body\n";
        let s = summarize(Box::new(m)).unwrap();
        assert_eq!(
            (
                s.from.as_str(),
                s.to.as_str(),
                s.subject.as_str(),
                s.date.as_str()
            ),
            ("A <a@x>", "b@y", "one two", "Mon, 1 Jan 2024")
        );
    }
}
