//! The AUTHORIZATION state: USER, PASS, APOP, AUTH, CAPA, STLS and QUIT.

use crate::command::Command;
use crate::mailbox::UserName;
use crate::wire::{Reply, RespCode};

use super::transaction::Transaction;
use super::{Channel, Context, Tag, capabilities, mailbox_reply, wrong_state};

/// What the client has told us so far in AUTHORIZATION.
pub(super) struct Authorization {
    /// The name from the last USER, until PASS uses it.
    user: Option<Vec<u8>>,
    /// Failed logins in this session.
    failures: u32,
    /// What the connection allows.
    channel: Channel,
}

/// What a command in AUTHORIZATION leads to.
pub(super) enum AuthStep {
    /// Stay in AUTHORIZATION.
    Reply(Reply),
    /// Logged in and the maildrop is locked: TRANSACTION from now on.
    LoggedIn(Box<Transaction>, Reply),
    /// QUIT: reply and close without UPDATE.
    Quit(Reply),
    /// STLS: reply, then run the TLS handshake and call [`Authorization::tls_started`].
    StartTls(Reply),
}

impl Authorization {
    pub(super) fn new(channel: Channel) -> Self {
        Authorization {
            user: None,
            failures: 0,
            channel,
        }
    }

    /// TLS is up after STLS: forget what the client said before it (RFC 2595 §4).
    pub(super) fn tls_started(&mut self, channel: Channel) {
        self.user = None;
        self.channel = channel;
    }

    /// The cleartext policy: whether USER/PASS (and the SASL mechanisms that send the
    /// password itself) may be used on this connection.
    fn plaintext_allowed(&self) -> bool {
        self.channel.secure
    }

    pub(super) fn handle(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        timestamp: &str,
        cmd: Command,
    ) -> AuthStep {
        match cmd {
            Command::User(_) | Command::Pass(_) if !self.plaintext_allowed() => {
                self.user = None;
                AuthStep::Reply(Reply::err_code(
                    RespCode::Auth,
                    "cleartext login refused without TLS",
                ))
            }
            Command::User(name) => {
                // Always +OK: the answer must not tell whether the user exists.
                self.user = Some(name);
                AuthStep::Reply(Reply::ok("send PASS"))
            }
            Command::Pass(password) => {
                let Some(name) = self.user.take() else {
                    return AuthStep::Reply(Reply::err("send USER first"));
                };
                let verified = ctx.users.current().verify_password(&name, &password);
                self.finish_login(ctx, tag, &name, verified, "PASS")
            }
            Command::Apop { name, digest } => {
                self.user = None;
                let verified = ctx.users.current().verify_apop(&name, timestamp, &digest);
                self.finish_login(ctx, tag, &name, verified, "APOP")
            }
            Command::Auth { .. } => AuthStep::Reply(Reply::err("no SASL mechanisms are offered")),
            Command::Stls if self.channel.stls => {
                AuthStep::StartTls(Reply::ok("begin TLS negotiation"))
            }
            Command::Stls if self.channel.tls => {
                AuthStep::Reply(Reply::err("TLS is already active"))
            }
            Command::Stls => AuthStep::Reply(Reply::err("TLS is not configured")),
            Command::Capa => AuthStep::Reply(capabilities(self.channel)),
            Command::Quit => AuthStep::Quit(Reply::ok("bye")),
            other => AuthStep::Reply(wrong_state(&other)),
        }
    }

    /// Ends a login attempt: on failure the same delay and reply whatever the cause; on
    /// success, locks and scans the maildrop.
    fn finish_login(
        &mut self,
        ctx: &Context,
        tag: &Tag,
        name: &[u8],
        verified: Option<UserName>,
        how: &str,
    ) -> AuthStep {
        let shown = crate::logsafe::escape(name);
        let Some(user) = verified else {
            self.failures += 1;
            log::warn!(
                "{tag} {how} login failed for {shown} (failure {} in this session)",
                self.failures
            );
            std::thread::sleep(ctx.settings.auth_failure_delay);
            return AuthStep::Reply(Reply::err_code(RespCode::Auth, "authentication failed"));
        };
        match ctx.store.open(&user) {
            Ok(maildrop) => {
                let t = Transaction::new(user, maildrop, self.channel);
                let (count, octets) = t.totals();
                log::info!(
                    "{tag} login user={shown} method={how} messages={count} octets={octets}"
                );
                AuthStep::LoggedIn(
                    Box::new(t),
                    Reply::ok(format!("{count} messages ({octets} octets)")),
                )
            }
            Err(e) => AuthStep::Reply(mailbox_reply(tag, &e)),
        }
    }
}
