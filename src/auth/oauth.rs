//! OAuth bearer-token logins for `--dev`: the XOAUTH2 (Google's) and OAUTHBEARER (RFC 7628)
//! client messages, the error each server sends for a refused token, and the per-user token
//! table the dev HTTP API fills. There is no token issuer to check against, so only `--dev`
//! offers them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::sasl::SaslError;
use super::scheme::ct_eq;
use crate::limits::MAX_BEARER_TOKEN;
use crate::mailbox::UserName;

/// Google's error for a refused XOAUTH2 token (its XOAUTH2 protocol page): the client answers
/// the challenge carrying it with an empty line.
pub const XOAUTH2_ERROR: &[u8] =
    br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;

/// The RFC 7628 §3.2.2 error for a refused OAUTHBEARER token, with the scope and discovery
/// document Gmail names, so that a client's Gmail path sees what it will see there; the
/// client answers with the dummy response `%x01` (RFC 7628 §3.2.3).
pub const OAUTHBEARER_ERROR: &[u8] = br#"{"status":"invalid_token","scope":"https://mail.google.com/","openid-configuration":"https://accounts.google.com/.well-known/openid-configuration"}"#;

/// The key/value separator of both messages (RFC 7628 §3.1 `kvsep`).
const KVSEP: u8 = 0x01;

/// XOAUTH2: `user=U ^A auth=Bearer T ^A ^A`, exactly these two pairs in this order (Google's
/// format has no others). Returns the user and the token.
pub fn xoauth2(message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
    let pairs = kvpairs(message)?;
    let [(b"user", user), (b"auth", auth)] = pairs.as_slice() else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok((user.to_vec(), bearer(auth)?.to_vec()))
}

/// OAUTHBEARER (RFC 7628 §3.1): a GS2 header `n,a=U,` (or `y,`; channel binding `p=` is
/// not part of the mechanism), then `^A`, key/value pairs each ended by `^A`, and a final
/// `^A`. `auth` is required; `host`, `port` and any other keys are ignored, as the RFC lets
/// clients send them. POP3 needs a user and the token names none, so the authzid `a=` is
/// required too. Returns the user and the token.
pub fn oauthbearer(message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
    let (header, rest) = gs2_header(message)?;
    let user = header.ok_or(SaslError::NoAuthzid)?;
    let rest = rest.strip_prefix(&[KVSEP]).ok_or(SaslError::Malformed)?;
    let pairs = kvpairs(rest)?;
    let mut auth = None;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(SaslError::Malformed);
        }
        if *key == b"auth" {
            auth = Some(*value);
        }
    }
    let token = bearer(auth.ok_or(SaslError::Malformed)?)?;
    Ok((user, token.to_vec()))
}

/// The GS2 header (RFC 5801 §4) up to and including its second comma: the decoded authzid,
/// if any, and what follows the header.
fn gs2_header(message: &[u8]) -> Result<(Option<Vec<u8>>, &[u8]), SaslError> {
    let rest = match message {
        [b'n' | b'y', b',', rest @ ..] => rest,
        _ => return Err(SaslError::Malformed),
    };
    let end = rest
        .iter()
        .position(|&b| b == b',')
        .ok_or(SaslError::Malformed)?;
    let (field, after) = (&rest[..end], &rest[end + 1..]);
    if field.is_empty() {
        return Ok((None, after));
    }
    let name = field.strip_prefix(b"a=").ok_or(SaslError::Malformed)?;
    Ok((Some(saslname(name)?), after))
}

/// An RFC 5801 `saslname`: `,` and `=` arrive as `=2C` and `=3D`, and no other `=` may
/// appear; empty is no name at all.
fn saslname(raw: &[u8]) -> Result<Vec<u8>, SaslError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        rest = match (b, tail) {
            (b'=', [b'2', b'C', after @ ..]) => {
                out.push(b',');
                after
            }
            (b'=', [b'3', b'D', after @ ..]) => {
                out.push(b'=');
                after
            }
            (b'=' | 0, _) => return Err(SaslError::Malformed),
            _ => {
                out.push(b);
                tail
            }
        };
    }
    if out.is_empty() {
        return Err(SaslError::NoAuthzid);
    }
    Ok(out)
}

/// One `key=value` of a message, borrowed from it.
type KvPair<'a> = (&'a [u8], &'a [u8]);

/// `*kvpair kvsep` (RFC 7628 §3.1): `key=value^A` pairs, then the closing `^A` and nothing
/// after it. Keys are letters, values printable ASCII, space, tab, CR or LF.
fn kvpairs(mut rest: &[u8]) -> Result<Vec<KvPair<'_>>, SaslError> {
    let mut pairs = Vec::new();
    loop {
        let end = rest
            .iter()
            .position(|&b| b == KVSEP)
            .ok_or(SaslError::Malformed)?;
        let (pair, after) = (&rest[..end], &rest[end + 1..]);
        if pair.is_empty() {
            return if after.is_empty() {
                Ok(pairs)
            } else {
                Err(SaslError::Malformed)
            };
        }
        let eq = pair
            .iter()
            .position(|&b| b == b'=')
            .ok_or(SaslError::Malformed)?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        let key_ok = !key.is_empty() && key.iter().all(u8::is_ascii_alphabetic);
        let value_ok = value
            .iter()
            .all(|&b| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if !key_ok || !value_ok {
            return Err(SaslError::Malformed);
        }
        pairs.push((key, value));
        rest = after;
    }
}

/// The token of an `auth` value: `Bearer` (any case, RFC 7235 §2.1) then one or more spaces
/// and an RFC 6750 `b64token`.
fn bearer(auth: &[u8]) -> Result<&[u8], SaslError> {
    let (scheme, rest) = auth.split_at_checked(6).ok_or(SaslError::Malformed)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return Err(SaslError::Malformed);
    }
    let token = rest.trim_ascii_start();
    if is_b64token(token) {
        Ok(token)
    } else {
        Err(SaslError::Malformed)
    }
}

/// Whether `token` is an RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" /
/// "~" / "+" / "/" ) *"="`. Every OAuth access token is one (JWTs and Google's `ya29.`
/// tokens alike).
pub fn is_b64token(token: &[u8]) -> bool {
    let stem_len = token.iter().take_while(|&&b| b != b'=').count();
    let (stem, pad) = token.split_at(stem_len);
    !stem.is_empty()
        && stem
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        && pad.iter().all(|&b| b == b'=')
}

/// Why the dev API refuses a token: it could never log in, so setting it would only lock the
/// user out.
pub fn token_problem(token: &[u8]) -> Option<String> {
    if token.len() > MAX_BEARER_TOKEN {
        Some(format!(
            "a bearer token is at most {MAX_BEARER_TOKEN} octets (no SASL line carries more)"
        ))
    } else if !is_b64token(token) {
        Some(
            "a bearer token is one RFC 6750 b64token: letters, digits and -._~+/ then any \
             '=' (the body is the token itself, not JSON)"
                .into(),
        )
    } else {
        None
    }
}

/// The tokens set per user through the dev API, shared by the API and every session: a user
/// with one logs in with that token only, any other user with any token.
#[derive(Clone, Default)]
pub struct BearerTokens(Arc<RwLock<HashMap<String, Vec<u8>>>>);

impl fmt::Debug for BearerTokens {
    /// Counts the tokens, never shows one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "BearerTokens({n} set)")
    }
}

impl BearerTokens {
    /// From now on only `token` logs `user` in.
    pub fn set(&self, user: &UserName, token: &[u8]) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(user.as_str().to_owned(), token.to_vec());
    }

    /// `user` logs in with any token again.
    pub fn clear(&self, user: &UserName) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(user.as_str());
    }

    /// Every user logs in with any token again.
    pub fn clear_all(&self) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Whether `user` has a token of their own.
    pub fn is_set(&self, user: &UserName) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.contains_key(user.as_str())
    }

    /// The user `name` names, if `token` logs them in: their own token when one is set (compared
    /// in constant time), else any token. A name unsafe as a path logs no one in.
    pub fn verify(&self, name: &[u8], token: &[u8]) -> Option<UserName> {
        let user = UserName::new(name).ok()?;
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let ok = match map.get(user.as_str()) {
            Some(own) => ct_eq(own, token),
            None => !token.is_empty(),
        };
        ok.then_some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(user: &str, token: &str) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
        Ok((user.as_bytes().to_vec(), token.as_bytes().to_vec()))
    }

    #[test]
    fn xoauth2_takes_googles_format_only() {
        assert_eq!(
            xoauth2(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"),
            ok("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
        );
        assert_eq!(
            xoauth2(b"user=a\x01auth=bearer  t0k==\x01\x01"),
            ok("a", "t0k==")
        );
        for bad in [
            &b""[..],
            b"\x01",
            b"user=a\x01auth=Bearer t\x01",
            b"user=a\x01auth=Bearer t\x01\x01x",
            b"auth=Bearer t\x01user=a\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=a\x01auth=Bearer \x01\x01",
            b"user=a\x01auth=Bearert\x01\x01",
            b"user=a\x01auth=Basic dDp0\x01\x01",
            b"user=a\x01auth=Bearer t t\x01\x01",
            b"user=a\x01auth=Bearer t=x\x01\x01",
            b"user=a\x01auth=Bearer t\x01host=h\x01\x01",
            b"user=a\0\x01auth=Bearer t\x01\x01",
            b"user=\xc3\xa9\x01auth=Bearer t\x01\x01",
            b"user a\x01auth=Bearer t\x01\x01",
        ] {
            assert_eq!(xoauth2(bad), Err(SaslError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn oauthbearer_takes_rfc_7628_messages_with_an_authzid() {
        // RFC 7628 §4.1's example, and curl's form with host and port.
        assert_eq!(
            oauthbearer(b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"),
            ok("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==")
        );
        assert_eq!(
            oauthbearer(b"y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"),
            ok("a,b=c", "t")
        );
        for bad in [
            &b"n,,\x01auth=Bearer t\x01\x01"[..],
            b"n,a=,\x01auth=Bearer t\x01\x01",
        ] {
            assert_eq!(oauthbearer(bad), Err(SaslError::NoAuthzid), "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"\x01",
            b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01",
            b"F,n,a=u,\x01auth=Bearer t\x01\x01",
            b"n,a=u\x01auth=Bearer t\x01\x01",
            b"n,u=u,\x01auth=Bearer t\x01\x01",
            b"n,a=u=2,\x01auth=Bearer t\x01\x01",
            b"n,a=u=41,\x01auth=Bearer t\x01\x01",
            b"n,a=u,auth=Bearer t\x01\x01",
            b"n,a=u,\x01host=h\x01\x01",
            b"n,a=u,\x01auth=Bearer t\x01auth=Bearer t\x01\x01",
            b"n,a=u,\x01host=h\x01host=h\x01auth=Bearer t\x01\x01",
            b"n,a=u,\x01auth=Bearer t\x01\x01\x01",
            b"n,a=u,\x01auth=Bearer t\x01",
            b"n,a=u,\x01au th=Bearer t\x01\x01",
        ] {
            assert_eq!(oauthbearer(bad), Err(SaslError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn b64tokens_and_what_the_api_refuses() {
        for good in [&b"t"[..], b"ya29.a0-_~+/x", b"abc==", b"eyJ0.eyJz.c2ln"] {
            assert!(is_b64token(good), "{good:?}");
            assert_eq!(token_problem(good), None);
        }
        for bad in [
            &b""[..],
            b"=",
            b"a=b",
            b"a b",
            b"a\n",
            b"{\"token\":\"x\"}",
            b"\xc3\xa9",
        ] {
            assert!(!is_b64token(bad), "{bad:?}");
            assert!(token_problem(bad).is_some());
        }
        assert!(token_problem(&vec![b'a'; MAX_BEARER_TOKEN]).is_none());
        assert!(token_problem(&vec![b'a'; MAX_BEARER_TOKEN + 1]).is_some());
    }

    #[test]
    fn a_set_token_is_the_only_one_for_its_user() {
        let tokens = BearerTokens::default();
        let alice = UserName::new(b"alice").unwrap();
        let name = |u: Option<UserName>| u.map(|u| u.as_str().to_owned());
        assert_eq!(name(tokens.verify(b"alice", b"any")), Some("alice".into()));
        assert_eq!(tokens.verify(b"alice", b""), None);
        assert_eq!(tokens.verify(b"../etc", b"any"), None);
        tokens.set(&alice, b"right");
        assert!(tokens.is_set(&alice));
        assert_eq!(tokens.verify(b"alice", b"wrong"), None);
        assert_eq!(tokens.verify(b"alice", b"righ"), None);
        assert_eq!(
            name(tokens.verify(b"alice", b"right")),
            Some("alice".into())
        );
        assert_eq!(name(tokens.verify(b"bob", b"wrong")), Some("bob".into()));
        assert!(!format!("{tokens:?}").contains("right"));
        tokens.clear(&alice);
        assert!(!tokens.is_set(&alice));
        assert!(tokens.verify(b"alice", b"wrong").is_some());
        tokens.set(&alice, b"right");
        tokens.clear_all();
        assert!(tokens.verify(b"alice", b"wrong").is_some());
    }
}
