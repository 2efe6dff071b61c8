//! SASL for AUTH (RFC 5034): PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), and `--dev`'s
//! XOAUTH2 and OAUTHBEARER (RFC 7628) as pure state machines from the client's base64 lines to
//! credentials. No I/O, no user lookups.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::oauth;

/// A SASL mechanism poplar can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN: authzid, authcid and password in one response.
    Plain,
    /// LOGIN: user name and password in two responses (Outlook and many libraries).
    Login,
    /// CRAM-MD5: an HMAC-MD5 of our challenge keyed with the plain secret.
    CramMd5,
    /// XOAUTH2: Google's OAuth 2.0 bearer-token login (Gmail, Microsoft 365).
    XOAuth2,
    /// OAUTHBEARER: the standard OAuth 2.0 bearer-token login (RFC 7628).
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order CAPA and `AUTH` list them.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::XOAuth2,
        Mechanism::OAuthBearer,
    ];

    /// The mechanism named `name` (already upper-cased by the parser).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Whether the password (or a bearer token, as much a secret) crosses the wire as is (so
    /// a cleartext policy applies).
    pub fn sends_password(self) -> bool {
        !matches!(self, Mechanism::CramMd5)
    }

    /// Whether it logs in with a bearer token, which only a token table can check.
    pub fn takes_bearer_token(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }

    /// What a refused login is told in a last challenge before the `-ERR`, for the
    /// mechanisms that say why (RFC 7628 §3.2.2); the client's next line, whatever it is,
    /// ends the exchange.
    pub fn error_challenge(self) -> Option<&'static [u8]> {
        match self {
            Mechanism::XOAuth2 => Some(oauth::XOAUTH2_ERROR),
            Mechanism::OAuthBearer => Some(oauth::OAUTHBEARER_ERROR),
            _ => None,
        }
    }
}

/// Why an exchange failed before any credentials could be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*`.
    Cancelled,
    /// The line was not valid base64.
    BadBase64,
    /// The decoded response does not have the mechanism's shape.
    Malformed,
    /// PLAIN named an authorization identity other than the authenticated user.
    AuthzidMismatch,
    /// This mechanism does not take an initial response.
    UnexpectedInitial,
    /// OAUTHBEARER named no user (no `a=` in its GS2 header): POP3 needs one.
    NoAuthzid,
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaslError::Cancelled => "authentication cancelled",
            SaslError::BadBase64 => "response is not valid base64",
            SaslError::Malformed => "malformed SASL response",
            SaslError::AuthzidMismatch => "authorization identity must be the user's own",
            SaslError::UnexpectedInitial => "this mechanism takes no initial response",
            SaslError::NoAuthzid => "OAUTHBEARER must name the user in its authzid (a=)",
        })
    }
}

/// What the client proved it knows, still to be checked against the users table.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (PLAIN, LOGIN).
    Password {
        /// The authentication identity.
        user: Vec<u8>,
        /// The password.
        password: Vec<u8>,
    },
    /// A CRAM-MD5 answer to `challenge`.
    CramMd5 {
        /// The user name.
        user: Vec<u8>,
        /// The challenge we sent.
        challenge: Vec<u8>,
        /// The client's hex digest.
        digest: Vec<u8>,
    },
    /// An OAuth bearer token (XOAUTH2, OAUTHBEARER).
    Bearer {
        /// The user the client named.
        user: Vec<u8>,
        /// The access token.
        token: Vec<u8>,
    },
}

impl Credentials {
    /// The user the credentials are for.
    pub fn user(&self) -> &[u8] {
        match self {
            Credentials::Password { user, .. }
            | Credentials::CramMd5 { user, .. }
            | Credentials::Bearer { user, .. } => user,
        }
    }
}

impl fmt::Debug for Credentials {
    /// Shows the user, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials({} ***)",
            crate::logsafe::escape(self.user())
        )
    }
}

/// What an exchange does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `+ ` and these bytes in base64, then read another line.
    Challenge(Vec<u8>),
    /// The exchange is over: check these credentials.
    Done(Credentials),
    /// The exchange is over and failed.
    Failed(SaslError),
}

/// Where an exchange stands.
#[derive(Debug)]
enum State {
    Plain,
    LoginUser,
    LoginPassword(Vec<u8>),
    CramMd5(Vec<u8>),
    XOAuth2,
    OAuthBearer,
}

/// One running AUTH exchange.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
}

impl Exchange {
    /// Starts `mechanism`. `challenge` is the CRAM-MD5 challenge (a msg-id unique to this
    /// exchange); `initial` is the initial response from the AUTH line, if any (`=` means an
    /// empty one). Returns the exchange and its first step.
    pub fn start(
        mechanism: Mechanism,
        challenge: &str,
        initial: Option<&[u8]>,
    ) -> (Exchange, Step) {
        let mut ex = Exchange {
            mechanism,
            state: match mechanism {
                Mechanism::Plain => State::Plain,
                Mechanism::Login => State::LoginUser,
                Mechanism::CramMd5 => State::CramMd5(challenge.as_bytes().to_vec()),
                Mechanism::XOAuth2 => State::XOAuth2,
                Mechanism::OAuthBearer => State::OAuthBearer,
            },
        };
        let step = match (initial, &ex.state) {
            (Some(_), State::CramMd5(_)) => Step::Failed(SaslError::UnexpectedInitial),
            (Some(b"="), _) => ex.advance(Vec::new()),
            (Some(line), _) => ex.respond(line),
            (None, State::Plain | State::XOAuth2 | State::OAuthBearer) => {
                Step::Challenge(Vec::new())
            }
            (None, State::LoginUser) => Step::Challenge(b"Username:".to_vec()),
            (None, State::CramMd5(c)) => Step::Challenge(c.clone()),
            (None, State::LoginPassword(_)) => Step::Failed(SaslError::Malformed),
        };
        (ex, step)
    }

    /// The mechanism being run.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Takes the client's next line (without its line end).
    pub fn respond(&mut self, line: &[u8]) -> Step {
        if line == b"*" {
            return Step::Failed(SaslError::Cancelled);
        }
        match B64.decode(line) {
            Ok(bytes) => self.advance(bytes),
            Err(_) => Step::Failed(SaslError::BadBase64),
        }
    }

    fn advance(&mut self, response: Vec<u8>) -> Step {
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Plain => plain(&response),
            State::LoginUser => {
                self.state = State::LoginPassword(response);
                Step::Challenge(b"Password:".to_vec())
            }
            // An empty user name cannot log in; say so rather than look it up.
            State::LoginPassword(user) if user.is_empty() => Step::Failed(SaslError::Malformed),
            State::LoginPassword(user) => Step::Done(Credentials::Password {
                user,
                password: response,
            }),
            State::CramMd5(challenge) => cram_md5(challenge, &response),
            State::XOAuth2 => bearer(oauth::xoauth2(&response)),
            State::OAuthBearer => bearer(oauth::oauthbearer(&response)),
        }
    }
}

/// The base64 text of a challenge, for the `+ ` line.
pub fn encode(challenge: &[u8]) -> String {
    B64.encode(challenge)
}

/// The step for a parsed XOAUTH2 or OAUTHBEARER message.
fn bearer(parsed: Result<(Vec<u8>, Vec<u8>), SaslError>) -> Step {
    match parsed {
        Ok((user, token)) => Step::Done(Credentials::Bearer { user, token }),
        Err(e) => Step::Failed(e),
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn plain(response: &[u8]) -> Step {
    let mut parts = response.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failed(SaslError::Malformed);
    };
    if user.is_empty() {
        return Step::Failed(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Step::Failed(SaslError::AuthzidMismatch);
    }
    Step::Done(Credentials::Password {
        user: user.to_vec(),
        password: password.to_vec(),
    })
}

/// RFC 2195: `user SP digest`, the digest 32 hex digits.
fn cram_md5(challenge: Vec<u8>, response: &[u8]) -> Step {
    let Some(space) = response.iter().rposition(|&b| b == b' ') else {
        return Step::Failed(SaslError::Malformed);
    };
    let (user, digest) = (&response[..space], &response[space + 1..]);
    if user.is_empty() || digest.len() != 32 || !digest.iter().all(u8::is_ascii_hexdigit) {
        return Step::Failed(SaslError::Malformed);
    }
    Step::Done(Credentials::CramMd5 {
        user: user.to_vec(),
        challenge,
        digest: digest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(user: &[u8], password: &[u8]) -> Step {
        Step::Done(Credentials::Password {
            user: user.to_vec(),
            password: password.to_vec(),
        })
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        let (_, step) = Exchange::start(Mechanism::Plain, "", Some(b"AHRpbQB0YW5zdGFhZg=="));
        assert_eq!(step, pw(b"tim", b"tanstaaf"));
        let (mut ex, step) = Exchange::start(Mechanism::Plain, "", None);
        assert_eq!(step, Step::Challenge(Vec::new()));
        assert_eq!(
            ex.respond(b"dGltAHRpbQB0YW5zdGFhZg=="),
            pw(b"tim", b"tanstaaf")
        );
    }

    #[test]
    fn plain_rejects_a_foreign_authzid_and_bad_shapes() {
        let b = |s: &[u8]| B64.encode(s).into_bytes();
        let (mut ex, _) = Exchange::start(Mechanism::Plain, "", None);
        assert_eq!(
            ex.respond(&b(b"root\0tim\0pw")),
            Step::Failed(SaslError::AuthzidMismatch)
        );
        for bad in [&b"tim\0pw"[..], b"\0\0pw", b"a\0b\0c\0d", b""] {
            let (mut ex, _) = Exchange::start(Mechanism::Plain, "", None);
            assert_eq!(
                ex.respond(&b(bad)),
                Step::Failed(SaslError::Malformed),
                "{bad:?}"
            );
        }
        let (_, step) = Exchange::start(Mechanism::Plain, "", Some(b"="));
        assert_eq!(step, Step::Failed(SaslError::Malformed));
    }

    #[test]
    fn login_asks_for_user_then_password() {
        let (mut ex, step) = Exchange::start(Mechanism::Login, "", None);
        assert_eq!(step, Step::Challenge(b"Username:".to_vec()));
        assert_eq!(ex.respond(b"dGlt"), Step::Challenge(b"Password:".to_vec()));
        assert_eq!(ex.respond(b"dGFuc3RhYWY="), pw(b"tim", b"tanstaaf"));
        let (mut ex, step) = Exchange::start(Mechanism::Login, "", Some(b"dGlt"));
        assert_eq!(step, Step::Challenge(b"Password:".to_vec()));
        assert_eq!(ex.respond(b""), pw(b"tim", b""));
        // Found by the sasl fuzz target: an empty user name used to reach the lookup.
        let (mut ex, _) = Exchange::start(Mechanism::Login, "", Some(b"="));
        assert_eq!(ex.respond(b"eA=="), Step::Failed(SaslError::Malformed));
    }

    #[test]
    fn cram_md5_sends_the_challenge_and_parses_the_rfc_2195_answer() {
        let c = "<1896.697170952@postoffice.reston.mci.net>";
        let (mut ex, step) = Exchange::start(Mechanism::CramMd5, c, None);
        assert_eq!(step, Step::Challenge(c.as_bytes().to_vec()));
        assert_eq!(
            encode(c.as_bytes()),
            "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
        );
        let answer = b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw";
        assert_eq!(
            ex.respond(answer),
            Step::Done(Credentials::CramMd5 {
                user: b"tim".to_vec(),
                challenge: c.as_bytes().to_vec(),
                digest: b"b913a602c7eda7a495b4e6e7334d3890".to_vec(),
            })
        );
        let (_, step) = Exchange::start(Mechanism::CramMd5, c, Some(b"dGlt"));
        assert_eq!(step, Step::Failed(SaslError::UnexpectedInitial));
        let (mut ex, _) = Exchange::start(Mechanism::CramMd5, c, None);
        let short = B64.encode(b"tim b913a602").into_bytes();
        assert_eq!(ex.respond(&short), Step::Failed(SaslError::Malformed));
    }

    #[test]
    fn star_cancels_and_bad_base64_fails() {
        for m in Mechanism::ALL {
            let (mut ex, _) = Exchange::start(m, "<c@h>", None);
            assert_eq!(ex.respond(b"*"), Step::Failed(SaslError::Cancelled));
            let (mut ex, _) = Exchange::start(m, "<c@h>", None);
            assert_eq!(
                ex.respond(b"not base64!"),
                Step::Failed(SaslError::BadBase64)
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("XOAUTH"), None);
    }

    #[test]
    fn oauth_mechanisms_with_and_without_an_initial_response() {
        let bearer = |user: &[u8], token: &[u8]| {
            Step::Done(Credentials::Bearer {
                user: user.to_vec(),
                token: token.to_vec(),
            })
        };
        let xoauth2 = B64
            .encode(b"user=tim\x01auth=Bearer tok\x01\x01")
            .into_bytes();
        let oauthbearer = B64
            .encode(b"n,a=tim,\x01host=localhost\x01port=110\x01auth=Bearer tok\x01\x01")
            .into_bytes();
        for (m, message) in [
            (Mechanism::XOAuth2, &xoauth2),
            (Mechanism::OAuthBearer, &oauthbearer),
        ] {
            let (_, step) = Exchange::start(m, "", Some(message));
            assert_eq!(step, bearer(b"tim", b"tok"), "{m:?}");
            let (mut ex, step) = Exchange::start(m, "", None);
            assert_eq!(step, Step::Challenge(Vec::new()), "{m:?}");
            assert_eq!(ex.respond(message), bearer(b"tim", b"tok"), "{m:?}");
            let (_, step) = Exchange::start(m, "", Some(b"="));
            assert_eq!(step, Step::Failed(SaslError::Malformed), "{m:?}");
            // The dummy response RFC 7628 §3.2.3 ends a refused exchange with is no login.
            let (mut ex, _) = Exchange::start(m, "", None);
            assert_eq!(ex.respond(b"AQ=="), Step::Failed(SaslError::Malformed));
            assert!(m.sends_password() && m.takes_bearer_token());
            assert!(m.error_challenge().is_some());
        }
        let anonymous = B64.encode(b"n,,\x01auth=Bearer tok\x01\x01").into_bytes();
        let (_, step) = Exchange::start(Mechanism::OAuthBearer, "", Some(&anonymous));
        assert_eq!(step, Step::Failed(SaslError::NoAuthzid));
        for m in [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5] {
            assert!(!m.takes_bearer_token() && m.error_challenge().is_none());
        }
    }

    #[test]
    fn oauth_error_challenges_are_the_json_clients_parse() {
        let google = std::str::from_utf8(oauth::XOAUTH2_ERROR).unwrap();
        assert_eq!(
            google,
            r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#
        );
        let rfc = std::str::from_utf8(oauth::OAUTHBEARER_ERROR).unwrap();
        assert!(
            rfc.starts_with(r#"{"status":"invalid_token","scope":""#),
            "{rfc}"
        );
        assert!(rfc.contains(r#""openid-configuration":"https://"#), "{rfc}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = Credentials::Password {
            user: b"tim".to_vec(),
            password: b"hunter2".to_vec(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = Credentials::Bearer {
            user: b"tim".to_vec(),
            token: b"ya29.secret".to_vec(),
        };
        assert!(!format!("{c:?}").contains("ya29"));
    }
}
