//! The AUTHORIZATION state: USER, PASS, APOP, AUTH (SASL), CAPA, STLS and QUIT; the
//! cleartext policy, failure counting, delays and the bad-command cutoff.

use std::time::Instant;

use crate::auth::guard::UserSlot;
use crate::auth::sasl::{Credentials, Exchange, Mechanism, Step};
use crate::auth::{CheckError, sasl};
use crate::limits::MAX_AUTH_FAILURES_PER_SESSION;
use crate::logline::{Event, emit};
use crate::mailbox::UserName;
use crate::metrics;
use crate::protocol::command::Command;
use crate::protocol::wire::{Reply, RespCode};

use super::errors::{Whose, login_delay_reply};
use super::transaction::Transaction;
use super::{
    Channel, Context, Ending, Tag, apop_timestamp, capabilities, mailbox_reply, wrong_state,
};

/// What the client has told us so far in AUTHORIZATION.
pub(super) struct Authorization {
    /// The name from the last USER, until PASS uses it.
    user: Option<Vec<u8>>,
    /// Failed logins in this session.
    failures: u32,
    /// Commands that were malformed, unknown or not valid here.
    bad_commands: u32,
    /// The AUTH exchange under way: the next line is its response, not a command.
    exchange: Option<Exchange>,
    /// A refused OAuth login, already counted and delayed: its error challenge has gone out
    /// and the client's next line, whatever it is, gets this (RFC 7628 §3.2.3).
    refusal: Option<AuthStep>,
    /// The APOP timestamp in our greeting; `None` when APOP is off.
    timestamp: Option<String>,
    /// What the connection allows.
    channel: Channel,
}

/// What a command (or SASL response) in AUTHORIZATION leads to.
pub(super) enum AuthStep {
    /// Stay in AUTHORIZATION.
    Reply(Reply),
    /// Logged in and the maildrop is locked: TRANSACTION from now on, holding the user's slot.
    LoggedIn(Box<Transaction>, UserSlot, Reply),
    /// QUIT: reply and close without UPDATE.
    Quit(Reply),
    /// Too many failures or bad commands: reply and close.
    Close(Reply, Ending),
    /// STLS: reply, then run the TLS handshake and call [`Authorization::tls_started`].
    StartTls(Reply),
}

impl Authorization {
    pub(super) fn new(channel: Channel, timestamp: Option<String>) -> Self {
        Authorization {
            user: None,
            failures: 0,
            bad_commands: 0,
            exchange: None,
            refusal: None,
            timestamp,
            channel,
        }
    }

    /// TLS is up after STLS: forget what the client said before it (RFC 2595 §4).
    pub(super) fn tls_started(&mut self, channel: Channel) {
        self.user = None;
        self.exchange = None;
        self.refusal = None;
        self.channel = channel;
    }

    /// The cleartext policy: whether USER/PASS and the SASL mechanisms that send the password
    /// itself (PLAIN, LOGIN) or a bearer token (XOAUTH2, OAUTHBEARER) may be used on this
    /// connection.
    fn plaintext_allowed(&self) -> bool {
        self.channel.secure
    }

    /// The name from the last USER, as the client sent it, for a watch.
    pub(super) fn named(&self) -> Option<String> {
        self.user
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned())
    }

    /// Whether the next line answers a SASL challenge (and so may be longer than a command).
    pub(super) fn in_exchange(&self) -> bool {
        self.exchange.is_some() || self.refusal.is_some()
    }

    /// The mechanisms that can work on this connection now, for CAPA and `AUTH`.
    pub(super) fn mechanisms(&self, ctx: &Context) -> Vec<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .filter(|m| self.mechanism_usable(ctx, *m))
            .collect()
    }

    /// The CAPA reply for this connection now.
    pub(super) fn capabilities(&self, ctx: &Context) -> Reply {
        capabilities(
            self.channel,
            &self.mechanisms(ctx),
            ctx.settings.login_delay,
        )
    }

    fn mechanism_usable(&self, ctx: &Context, m: Mechanism) -> bool {
        match m {
            Mechanism::Plain | Mechanism::Login => self.plaintext_allowed(),
            // CRAM-MD5 needs plain secrets, like APOP, and goes with it.
            Mechanism::CramMd5 => ctx.settings.apop && ctx.users.current().any_plain(),
            // A bearer token is as secret as a password; only `--dev` has tokens to check.
            Mechanism::XOAuth2 | Mechanism::OAuthBearer => {
                self.plaintext_allowed() && ctx.users.current().takes_bearer_tokens()
            }
        }
    }

    /// The refusal for a password sent in the clear where that is not allowed.
    fn cleartext_refused(&self) -> Option<Reply> {
        (!self.plaintext_allowed())
            .then(|| Reply::err_code(RespCode::Auth, "cleartext login refused without TLS"))
    }

    /// Counts a bad command; past the limit, the reply becomes a close.
    pub(super) fn bad_command(&mut self, ctx: &Context, reply: Reply) -> AuthStep {
        self.bad_commands += 1;
        if self.bad_commands > ctx.settings.max_bad_commands {
            AuthStep::Close(
                Reply::err("too many bad commands; closing"),
                Ending::BadCommands,
            )
        } else {
            AuthStep::Reply(reply)
        }
    }

    pub(super) fn handle(&mut self, ctx: &Context, tag: &Tag, cmd: Command) -> AuthStep {
        match cmd {
            Command::User(name) => {
                if let Some(r) = self.cleartext_refused() {
                    self.user = None;
                    return AuthStep::Reply(r);
                }
                // Always +OK: the answer must not tell whether the user exists.
                self.user = Some(name);
                AuthStep::Reply(Reply::ok("send PASS"))
            }
            Command::Pass(password) => {
                if let Some(r) = self.cleartext_refused() {
                    self.user = None;
                    return AuthStep::Reply(r);
                }
                let Some(name) = self.user.take() else {
                    return self.bad_command(ctx, Reply::err("send USER first"));
                };
                let creds = Credentials::Password {
                    user: name,
                    password,
                };
                self.check(ctx, tag, &creds, "PASS")
            }
            Command::Apop { name, digest } => {
                self.user = None;
                let Some(ts) = &self.timestamp else {
                    return self.bad_command(ctx, Reply::err("APOP is not offered"));
                };
                account_wait(ctx, tag, &name, "APOP");
                let verified = ctx.users.current().verify_apop(&name, ts, &digest);
                self.finish_login(ctx, tag, &name, Ok(verified), "APOP")
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                let mut lines = String::new();
                for m in self.mechanisms(ctx) {
                    lines.push_str(m.name());
                    lines.push_str("\r\n");
                }
                AuthStep::Reply(Reply::Multi {
                    first: "SASL mechanisms follow".into(),
                    lines,
                })
            }
            Command::Auth {
                mechanism: Some(name),
                initial,
            } => {
                self.user = None;
                // Bearer tokens only where there are tokens to check them against (`--dev`).
                let served = |m: &Mechanism| {
                    !m.takes_bearer_token() || ctx.users.current().takes_bearer_tokens()
                };
                let Some(m) = Mechanism::from_name(&name).filter(served) else {
                    return self.bad_command(ctx, Reply::err("unsupported SASL mechanism"));
                };
                if let Some(r) = self.cleartext_refused().filter(|_| m.sends_password()) {
                    return AuthStep::Reply(r);
                }
                if !self.mechanism_usable(ctx, m) {
                    return self.bad_command(ctx, Reply::err("unsupported SASL mechanism"));
                }
                let challenge = apop_timestamp(tag.id, &ctx.settings.hostname);
                let (ex, step) = Exchange::start(m, &challenge, initial.as_deref());
                self.exchange = Some(ex);
                self.sasl_step(ctx, tag, step, m)
            }
            Command::Stls if self.channel.stls => {
                AuthStep::StartTls(Reply::ok("begin TLS negotiation"))
            }
            Command::Stls if self.channel.tls => {
                AuthStep::Reply(Reply::err("TLS is already active"))
            }
            Command::Stls => AuthStep::Reply(Reply::err("TLS is not configured")),
            Command::Capa => AuthStep::Reply(self.capabilities(ctx)),
            Command::Quit => AuthStep::Quit(Reply::ok("bye")),
            other => self.bad_command(ctx, wrong_state(&other)),
        }
    }

    /// Takes the line answering a SASL challenge (`None`: it was too long).
    pub(super) fn sasl_response(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        line: Option<&[u8]>,
    ) -> AuthStep {
        if let Some(refused) = self.refusal.take() {
            return refused;
        }
        let Some(mut ex) = self.exchange.take() else {
            return AuthStep::Reply(Reply::err("no authentication under way"));
        };
        let Some(line) = line else {
            return self.bad_command(
                ctx,
                Reply::err_code(RespCode::Auth, "SASL response too long"),
            );
        };
        let step = ex.respond(line);
        let mechanism = ex.mechanism();
        self.exchange = Some(ex);
        self.sasl_step(ctx, tag, step, mechanism)
    }

    fn sasl_step(&mut self, ctx: &Context, tag: &Tag, step: Step, m: Mechanism) -> AuthStep {
        match step {
            Step::Challenge(bytes) => AuthStep::Reply(Reply::Challenge(sasl::encode(&bytes))),
            Step::Failed(e) => {
                self.exchange = None;
                log::debug!("{tag} AUTH {} failed: {e}", m.name());
                let code = match e {
                    sasl::SaslError::Cancelled => None,
                    _ => Some(RespCode::Auth),
                };
                self.bad_command(ctx, Reply::Err(code, e.to_string()))
            }
            Step::Done(creds) => {
                self.exchange = None;
                let failures = self.failures;
                let step = self.check(ctx, tag, &creds, m.name());
                match m.error_challenge() {
                    // Refused (not busy, not locked): say why first, as RFC 7628 §3.2.2 does.
                    Some(error) if self.failures > failures => {
                        self.refusal = Some(step);
                        AuthStep::Reply(Reply::Challenge(sasl::encode(error)))
                    }
                    _ => step,
                }
            }
        }
    }

    /// Checks credentials against the users table in force.
    fn check(&mut self, ctx: &Context, tag: &Tag, creds: &Credentials, how: &str) -> AuthStep {
        account_wait(ctx, tag, creds.user(), how);
        let users = ctx.users.current();
        let verified = match creds {
            Credentials::Password { user, password } => {
                users.verify_password(user, password, &ctx.guards.gate)
            }
            Credentials::CramMd5 {
                user,
                challenge,
                digest,
            } => Ok(users.verify_cram_md5(user, challenge, digest)),
            Credentials::Bearer { user, token } => Ok(users.verify_bearer(user, token)),
        };
        self.finish_login(ctx, tag, creds.user(), verified, how)
    }

    /// Ends a login attempt: on failure the same delay and reply whatever the cause (and a
    /// close after the last allowed failure); on success, locks and scans the maildrop.
    fn finish_login(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        name: &[u8],
        verified: Result<Option<UserName>, CheckError>,
        how: &str,
    ) -> AuthStep {
        let shown = crate::logsafe::escape(name);
        let user = match verified {
            Ok(Some(user)) => user,
            Ok(None) => return self.failed(ctx, tag, name, &shown, how),
            Err(CheckError::Busy) => {
                metrics::refused(metrics::Refusal::HashingBusy);
                emit!(
                    log::Level::Warn,
                    login_event(tag, "login-refused", &shown, how).text("cap", "hashing-busy"),
                    "{tag} {how} login for {shown} not checked: every hashing slot busy"
                );
                return AuthStep::Reply(Reply::err_code(
                    RespCode::SysTemp,
                    "server busy, try again later",
                ));
            }
        };
        // The password was right: this network is the user's, whatever happens next.
        ctx.guards.throttle.logged_in(name, peer_ip(tag));
        let Some(slot) = ctx.guards.users.acquire(&user) else {
            metrics::refused(metrics::Refusal::PerUser);
            emit!(
                log::Level::Warn,
                login_event(tag, "login-refused", &shown, how).text("cap", "max-per-user"),
                "{tag} {how} login for {shown} refused: too many sessions for this user"
            );
            return AuthStep::Reply(Reply::err_code(
                RespCode::InUse,
                "too many sessions for this user",
            ));
        };
        // Checked only now, after the password: an unauthenticated client learns nothing.
        if let Err(wait) = ctx.guards.spacing.admit(&user, Instant::now()) {
            return AuthStep::Reply(login_delay_reply(tag, &shown, how, wait));
        }
        let location = ctx.store.location(&user);
        match ctx.store.open(&user) {
            Ok(maildrop) => {
                let t = Transaction::new(
                    user,
                    location,
                    maildrop,
                    self.channel,
                    self.mechanisms(ctx),
                    ctx.settings.login_delay,
                );
                let (count, octets) = t.totals();
                metrics::login(how, true);
                emit!(
                    log::Level::Info,
                    login_event(tag, "login", &shown, how)
                        .num("messages", count as u64)
                        .num("octets", octets),
                    "{tag} login user={shown} method={how} messages={count} octets={octets}"
                );
                AuthStep::LoggedIn(
                    Box::new(t),
                    slot,
                    Reply::ok(format!(
                        "{} ({})",
                        crate::plural::plural(count as u64, "message"),
                        crate::plural::plural(octets, "octet")
                    )),
                )
            }
            Err(e) => {
                ctx.guards.spacing.forget(&user);
                let whose = Whose {
                    user: user.as_str(),
                    location: &location,
                };
                AuthStep::Reply(mailbox_reply(tag, &whose, &e))
            }
        }
    }

    /// A failed login for `name`: counted against the account, then wait out the delay for
    /// this client's network, then reply.
    fn failed(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        name: &[u8],
        shown: &str,
        how: &str,
    ) -> AuthStep {
        self.failures += 1;
        ctx.guards.throttle.account_failed(name);
        let delay = ctx
            .guards
            .throttle
            .fail(peer_ip(tag), ctx.settings.auth_failure_delay);
        metrics::login(how, false);
        metrics::auth_delayed(delay);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        emit!(
            log::Level::Warn,
            login_event(tag, "login-failed", shown, how)
                .num("failures", u64::from(self.failures))
                .num("delay_ms", delay_ms),
            "{tag} {how} login failed for {shown} (failure {} in this session, delay {delay_ms} ms)",
            self.failures,
        );
        std::thread::sleep(delay);
        let reply = Reply::err_code(RespCode::Auth, "authentication failed");
        if self.failures >= MAX_AUTH_FAILURES_PER_SESSION {
            AuthStep::Close(reply, Ending::AuthFailures)
        } else {
            AuthStep::Reply(reply)
        }
    }
}

/// The fields every line about a login attempt has: the session, the user as the client named
/// them (escaped) and the method.
pub(super) fn login_event<'a>(
    tag: &Tag,
    name: &'static str,
    user: &'a str,
    how: &'a str,
) -> Event<'a> {
    tag.event(name).text("user", user).text("method", how)
}

fn peer_ip(tag: &Tag) -> Option<std::net::IpAddr> {
    tag.peer.map(|p| p.ip())
}

/// Before the check of a login for `name`: the per-account wait, when the account has had
/// many recent failures and this client's network has not logged in as it (see
/// `auth::guard::Throttle`). Before the check, not after, so that a guesser gains nothing by
/// hanging up early: the answer comes only after the wait.
fn account_wait(ctx: &Context, tag: &Tag, name: &[u8], how: &str) {
    let throttle = &ctx.guards.throttle;
    if let Some((wait, failures)) =
        throttle.account_wait(name, peer_ip(tag), ctx.settings.auth_failure_delay)
    {
        log::warn!(
            "{tag} {how} login for {} waits {} ms before its check: {failures} recent failures \
             for this user",
            crate::logsafe::escape(name),
            wait.as_millis()
        );
        std::thread::sleep(wait);
    }
}
