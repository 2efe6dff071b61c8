//! Every limit poplar enforces, in one place: what it bounds, and why it has its value.

use std::time::Duration;

/// Longest command line accepted, CRLF included (RFC 2449 §4: at least 255 octets).
pub const MAX_COMMAND_LINE: usize = 255;

/// Longest first line of any response, CRLF included (RFC 2449 §4).
pub const MAX_RESPONSE_LINE: usize = 512;

/// Longest user name, and so the longest path component a name can produce.
pub const MAX_USER_NAME: usize = 255;

/// Longest password that is checked at all, in octets; a longer one is a failed login without
/// any hashing. SHA-crypt and MD5-crypt cost grows with the password (a 6,000-octet password
/// for a `{SHA512-CRYPT}` user took 380-615 ms of hashing against 3-5 ms for 8 octets), and
/// SASL PLAIN and LOGIN carry up to [`MAX_SASL_LINE`]. Far above any real password
/// (passphrases and password managers stay under 128).
pub const MAX_PASSWORD: usize = 1024;

/// Default inactivity timeout. RFC 1939 §3 says an autologout timer, if any, MUST be at least
/// 10 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Default cap on simultaneous sessions; each costs one thread and its buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default delay before a failed login is answered, the same for unknown users and wrong
/// passwords, so that guessing is slow and timing reveals nothing.
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(2);

/// How long open sessions may go on after SIGTERM/SIGINT before they are cut off.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After the grace period, how long to wait for cut-off sessions (and any commit under way).
pub const SHUTDOWN_JOIN_DEADLINE: Duration = Duration::from_secs(30);

/// Stack of a session thread. Only the pages a session has touched cost memory, so a smaller
/// stack would save address space, not memory. The deepest paths measured touch 24-28 KiB
/// (a TLS handshake with an RSA key, an Argon2id login: hashing runs on the session thread),
/// a plain `{PLAIN}` login 16 KiB: 128 KiB leaves four times the deepest.
pub const SESSION_STACK_SIZE: usize = 128 * 1024;

/// Read buffer per session: commands are short, and a message body never passes through it.
pub const SESSION_READ_BUFFER: usize = 1024;

/// Write buffer per session: large enough that a RETR streams in few, large writes.
pub const SESSION_WRITE_BUFFER: usize = 64 * 1024;

/// Chunk size for reading message bytes from the mailbox file.
pub const FILE_CHUNK: usize = 64 * 1024;

/// The smallest buffer a message filter (bookkeeping headers hidden, `>From ` unquoted) reads
/// through: a message shorter than [`FILE_CHUNK`] gets a buffer of its own length, but never
/// less than this.
pub const MIN_FILTER_BUFFER: usize = 256;

/// RETR reads and renders a large message this many stored octets at a time, and sends each
/// rendered chunk in one write. A RETR of a large message holds this plus its rendering (up to
/// twice this) for as long as it runs: 768 KiB, nothing while idle. On a 256 MiB message
/// (loopback, 1 client) 64 KiB chunks gave 1.65-1.9 GB/s, 128 KiB 1.7-2.6, 256 KiB 2.0-2.7,
/// 1 MiB 1.7-1.9 (the chunk and its rendering no longer stay in the core's cache).
pub const RETR_CHUNK: usize = 256 * 1024;

/// Queue of connections the kernel holds until they are accepted (capped by
/// net.core.somaxconn): deep enough that a burst of connections waits briefly instead of
/// having its SYNs dropped.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Most connections accepted per readiness event before the accept loop looks at its other
/// sources (the stop waker, signals) again.
pub const MAX_ACCEPTS_PER_POLL: usize = 64;

/// Pause after an accept error such as EMFILE, so the loop does not spin.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A scan of at least this many bytes (a first login, or an index rebuilt) is split in two at
/// a message boundary near its middle, and the halves are scanned on two threads: a first
/// login on a 100 MiB mbox is mostly this scan, and a second core is usually idle then.
pub const SPLIT_SCAN_MIN: u64 = 16 * 1024 * 1024;

/// How far past the middle a split scan looks for a message boundary before it gives up and
/// scans in one go (a message longer than this straddles the middle).
pub const SPLIT_SCAN_SEARCH: u64 = 4 * 1024 * 1024;

/// Most header bytes of one message that feed its UID: enough for any real MTA's headers, and
/// a bound on work for a hostile one.
pub const MAX_UID_HEADER_BYTES: usize = 64 * 1024;

/// Octets of each header line the scanner keeps however long the headers are: enough for the
/// name of any bookkeeping header (`Content-Length:`, `X-IMAPbase:`, ...) and its numbers, and
/// for the pseudo-message's subject, so a message with huge headers is framed and sized like
/// any other.
pub const HEADER_PEEK: usize = 80;

/// Longest failed-login delay: failures from one address double the delay up to this
/// (unless `--auth-delay` itself is longer).
pub const MAX_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(15);

/// How long an address's failures are remembered after its last one.
pub const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Most client addresses (IPv4 addresses, IPv6 /48s) whose failures are remembered: a bound
/// on memory however many addresses an attacker uses. They are kept in buckets of 8 by a
/// salted hash; a newcomer takes an expired place in its bucket, and when all 8 are still
/// active it waits the longest delay rather than pushing a recent attacker out.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Most account names whose recent failures are remembered (for the per-account throttle);
/// in a full bucket the entry with the fewest failures makes room.
pub const MAX_TRACKED_ACCOUNTS: usize = 16_384;

/// Most (client network, user) pairs remembered as having logged in, which the per-account
/// throttle does not slow; in a full bucket the oldest makes room.
pub const MAX_TRUSTED_LOGINS: usize = 16_384;

/// Failures of one account (from anywhere) within [`AUTH_FAILURE_MEMORY`] before logins to
/// it from networks it has not logged in from wait before their check: a user mistyping a
/// few times is not slowed, a guesser soon is.
pub const ACCOUNT_FREE_FAILURES: u32 = 5;

/// How long a successful login keeps its client network trusted for that user: longer than
/// any holiday between two mail checks.
pub const TRUSTED_LOGIN_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Session slots in the shared state file (`--inetd`): each session holds at most two (its
/// address and, once logged in, its user), so twice the default total of connections.
pub const MAX_SHARED_SLOTS: usize = 2 * DEFAULT_MAX_CONNECTIONS;

/// The longest wait for a lock on a bucket or on the slots of the shared state file; holders
/// keep one for a read and a write, so a longer wait means something is wrong, and the guard
/// falls back (warned) rather than hang the login.
pub const GUARD_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How far in the future a record's time may be before it is taken for garbage: the clock
/// steps a little now and then, a record from next week is not a real one.
pub const GUARD_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How often a login waiting for a hashing slot held by another process looks again.
pub const SHARED_GATE_POLL: Duration = Duration::from_millis(10);

/// Most users whose last login `--login-delay` remembers: a bound on memory however many
/// users log in. Entries older than the delay are dropped first when it is reached; if every
/// entry is still recent, further logins go unrecorded (the delay is a courtesy to the host,
/// never a reason to refuse someone it has not seen).
pub const MAX_LOGIN_DELAY_USERS: usize = 65_536;

/// Failed logins in one session before it is closed.
pub const MAX_AUTH_FAILURES_PER_SESSION: u32 = 3;

/// Allocations from this size up get their own mapping, returned to the system when freed
/// (glibc's M_MMAP_THRESHOLD). Left to itself glibc raises the threshold to the largest such
/// block freed, up to 32 MiB: after one Argon2id login (19 MiB of blocks) every later one hashed
/// in the shared heap, where the session's small allocations pinned it, and 500 idle sessions
/// that had logged in with Argon2id held 11-12 MiB each. Fixed at glibc's own starting value,
/// a RETR's buffers (up to 768 KiB) are mapped and unmapped once per message, not per chunk.
pub const MALLOC_MMAP_THRESHOLD: usize = 128 * 1024;

/// Most glibc malloc arenas (M_ARENA_MAX): one per core. glibc's default, eight per core,
/// spreads a thousand session threads over more heaps, each keeping its own freed pages:
/// 500 idle sessions took 16.2 MiB with the default, 13.5 MiB with two arenas on two cores,
/// with no change in sessions or RETR octets per second measured.
pub fn malloc_arenas() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Default cap on simultaneous connections from one client address (IPv6: one /64). Users
/// behind one NAT share it, so it is not tiny.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 20;

/// Default cap on simultaneous logged-in sessions of one user.
pub const DEFAULT_MAX_PER_USER: usize = 4;

/// Default number of unknown or malformed commands (or commands of the wrong state) allowed
/// before login; the next one closes the connection. Real clients make one or two at most.
pub const DEFAULT_MAX_BAD_COMMANDS: u32 = 10;

/// Default AUTHORIZATION timeout: a client must have logged in this long after connecting,
/// however it trickles its bytes in. Short, because an unauthenticated connection is worth
/// little waiting; TRANSACTION keeps the RFC 1939 ten minutes of idle time.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// Default write timeout: a client that stops reading (say, in the middle of RETR) is cut off
/// after this long without progress, freeing its thread and buffers.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest SASL continuation line, CRLF included (RFC 5034 §4 lets responses exceed the
/// command limit; Dovecot allows 8 KiB, which fits OAuth-sized tokens).
pub const MAX_SASL_LINE: usize = 8 * 1024 + 2;

/// Longest OAuth bearer token the `--dev` API takes for a user: what a [`MAX_SASL_LINE`] of
/// base64 decodes to at most, so any longer token could never be sent. Real ones fit easily
/// (Google's run to a few hundred octets, Microsoft's JWTs to a few KiB).
pub const MAX_BEARER_TOKEN: usize = (MAX_SASL_LINE - 2) / 4 * 3;

/// Longest wait for a free password-hashing slot before a login is refused `[SYS/TEMP]`.
pub const HASH_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// How many password hashes may run at once: half the cores (at least one), so a flood of
/// logins against expensive hashes always leaves cores for sessions already logged in.
pub fn hash_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
/// The longest time any flag may set (timeouts, delays, grace, lock ages): one day. Far above
/// any sensible value, and far below what would overflow a deadline computed from it.
pub const MAX_FLAG_SECONDS: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `--keep-deleted DAYS`: ten years, for "keep them for ever" without a date
/// computed from it ever leaving the clock's range.
pub const MAX_KEEP_DELETED_DAYS: u32 = 3653;

/// Bcrypt cost of the hashes `poplar pw -s BLF-CRYPT` makes: 2^10 rounds, about Dovecot's and
/// OpenBSD's choice (tens of milliseconds per login on a small host).
pub const BCRYPT_COST: u32 = 10;

/// Salt octets of a new `{SSHA}`-kind value from `poplar pw`: twice Dovecot's 4 (it reads any
/// length).
pub const DIGEST_SALT: usize = 8;

/// Longest client string shown in a log line, in input bytes (`logsafe`): enough to recognise
/// a command or a user name, too little for a client to flood the log.
pub const MAX_LOGGED: usize = 64;

/// RETR's renderer copies a line up to this long with one fixed-size copy instead of one of
/// its exact length: most mail lines are shorter, and a fixed size compiles to a few vector
/// moves.
pub const RENDER_COPY_WINDOW: usize = 80;

/// How long a login waits for another session of the same mailbox in this process to end
/// before answering `[IN-USE]`. A poller that QUITs and logs in again at once (curl, fetchmail,
/// Zammad) can otherwise race its own previous session's last steps.
pub const IN_USE_WAIT: Duration = Duration::from_secs(1);

/// Default longest wait for the locks toward delivery agents (dotlock, fcntl) at login, at
/// QUIT and in `poplar deliver`; a timeout answers "mailbox busy" (or EX_TEMPFAIL).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Default age after which a dotlock is stale when neither it nor the mbox changed: a few
/// minutes, like Postfix's `stale_lock_time`, far above any scan or commit poplar holds it for.
pub const DEFAULT_STALE_LOCK_AGE: Duration = Duration::from_secs(300);

/// How long a trusted proxy has to send its PROXY header. Proxies send it at once with the
/// connection; a bound keeps a stuck one from holding a session slot.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has for the whole TLS handshake (implicit or after STLS), however slowly
/// it sends: a client that connects and says nothing holds only its own thread, and only this
/// long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Times a login or a delivery opens the mbox again when, once it held the locks, the path
/// named another file (a mail reader replaced the mbox by rename, or removed it, meanwhile).
/// Each round waits for the locks, so a few rounds cover any real mail reader; a path that
/// keeps changing under us is answered "changed" (or EX_TEMPFAIL) rather than chased forever.
pub const REOPEN_TRIES: usize = 5;

/// Times a commit applies its journal to the mbox before it gives up (the first try and the
/// retries), holding the locks throughout: a replay resumes where the failed one stopped, so
/// a passing failure (space freed meanwhile, one bad write) ends as `+OK` instead of a mailbox
/// left part rewritten until the next login. Few, since a delivery waits on the locks.
pub const APPLY_ATTEMPTS: u32 = 3;

/// Pause before each retry of a failed apply: long enough for a passing shortage to clear,
/// short enough that a delivery waiting on the locks does not notice.
pub const APPLY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// First pause between tries for a lock held by someone else (dotlock, fcntl).
pub const LOCK_RETRY_FIRST: Duration = Duration::from_millis(10);

/// How often the pause between lock tries doubles (10 ms to 160 ms): quick when the holder is
/// quick, quiet when it is not. `--lock-timeout` bounds the whole wait.
pub const LOCK_RETRY_DOUBLINGS: u32 = 4;

/// Most octets of a dotlock read to learn its owner (`<pid> <host>`): a host name is at most
/// 255 octets, and a foreign lock file must not make us read much.
pub const MAX_DOTLOCK_TEXT: u64 = 256;

/// Most octets of a dotlock's text `poplar check` shows.
pub const DOTLOCK_SHOWN: usize = 100;

/// Most octets of a delivery note (`<mbox>.poplar-append`) read: a note is a few dozen octets,
/// so anything longer is not ours.
pub const MAX_DELIVERY_NOTE: u64 = 512;

/// Longest first line of a delivered message taken as its envelope From_ line (RFC 5322's
/// line limit); a longer one is message text, and gets a From_ line of ours.
pub const MAX_ENVELOPE_LINE: usize = 998;

/// Most octets of the sender `poplar deliver` writes on a From_ line, escapes included; a
/// longer one is cut and ends in `...`. RFC 5321 bounds a reverse-path at 256 octets, escaping
/// can make it up to four times longer, and the line must stay well inside the 998 octets
/// that mail readers (and `MAX_ENVELOPE_LINE`) take as one From_ line.
pub const MAX_FROM_LINE_SENDER: usize = 512;

/// Longest From_ line `poplar check` reads to check its date.
pub const MAX_FROM_LINE_CHECKED: usize = 1000;

/// Index records written between two starts of write-back (about 1 MiB): often enough that
/// the `fsync` at the end of a big index finds little left to write, rarely enough that the
/// advice costs nothing.
pub const INDEX_WRITE_BACK_RECORDS: u64 = 6 * 1024;

/// The longest a `trickle` fault of the dev server (`--dev-faults`) spends on one answer; the
/// rest then goes at once, so a rule with a large delay cannot hold a test forever.
pub const MAX_FAULT_TRICKLE: Duration = Duration::from_secs(30);

/// The longest `delay` a dev server fault rule may ask for: longer than any client timeout
/// worth testing, short enough that a typo does not hang a test suite.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(120);

/// Sessions the dev server's sessions log keeps (`GET /api/v1/sessions`); the oldest go first.
pub const DEV_SESSIONS_KEPT: usize = 100;

/// Commands kept per session in the dev server's sessions log; later ones are only counted.
pub const DEV_SESSION_COMMANDS_KEPT: usize = 200;

/// Rules a fault document may hold: far more than a test needs, few enough that matching a
/// line against all of them costs nothing.
pub const MAX_FAULT_RULES: usize = 100;

/// The largest fault document read from `--dev-faults` or taken by `PUT /api/v1/faults`.
pub const MAX_FAULT_DOCUMENT: u64 = 64 * 1024;
