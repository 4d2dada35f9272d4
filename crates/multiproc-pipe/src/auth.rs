//! The authkey handshake of `multiprocessing.connection`, byte for byte.
//!
//! Both sides hold the same secret `authkey`. The side that accepts first
//! *delivers* a challenge and then *answers* one; the side that connects
//! answers first and then delivers. So each side proves it knows the key
//! and checks that the other does (`reference/python-wire.md`, "Authkey
//! handshake"). Every message is an ordinary frame read with a 256-byte
//! limit.
//!
//! ```text
//! deliverer                                   answerer
//!   "#CHALLENGE#" + message           ──▶
//!                                     ◀──     reply = response(authkey, message)
//!   "#WELCOME#" or "#FAILURE#"        ──▶
//! ```
//!
//! Two forms of `message` exist:
//!
//! | form | message | reply |
//! |---|---|---|
//! | legacy (Python ≤ 3.11) | 20 random bytes | raw HMAC-MD5 (16 bytes) |
//! | prefixed (Python ≥ 3.12) | `{sha256}` + 40 random bytes | `{sha256}` + HMAC-SHA256 over the whole message, prefix included |
//!
//! An answerer treats a 20-byte message as legacy and otherwise reads the
//! `{digest}` prefix, replying with the same digest. A deliverer accepts a
//! 16-byte (or 20-byte) reply as legacy MD5 and otherwise the digest the
//! reply names — as CPython 3.12 does, so a 3.11 peer still gets in. Replies
//! are compared in constant time ([`hmac::Mac::verify_slice`]).
//!
//! Digests: `md5`, `sha256` and `sha384` are computed with the RustCrypto
//! crates; `sha3_256` and `sha3_384`, which CPython also allows, are
//! recognised and refused as [`AuthFailure::UnsupportedDigest`].
//!
//! # Examples
//!
//! The pure functions below are what [`Listener`](crate::Listener) and
//! [`Client`](crate::Client) run over a connection:
//!
//! ```
//! use multiproc_pipe::auth::{self, Challenge};
//!
//! let message = auth::challenge_message(Challenge::default())?;
//! assert!(message.starts_with(b"{sha256}"));
//! let reply = auth::response(b"secret", &message)?;
//! assert!(auth::verify(b"secret", &message, &reply).is_ok());
//! assert!(auth::verify(b"other", &message, &reply).is_err());
//! # Ok::<(), multiproc_pipe::AuthenticationError>(())
//! ```

use crate::connection::Connection;
use crate::error::{AuthFailure, AuthenticationError, ConnectError};
use hmac::{Hmac, Mac};

/// Sent before the challenge message.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// Sent when the reply was right.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// Sent when the reply was wrong.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// Every handshake message is read with this limit (CPython's
/// `recv_bytes(256)`), so a peer cannot make us allocate more.
pub const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// Random bytes in a legacy challenge.
const LEGACY_LEN: usize = 20;
/// Random bytes in a prefixed challenge (CPython 3.12's `MESSAGE_LENGTH`).
const PREFIXED_LEN: usize = 40;
/// Length of a raw HMAC-MD5 reply.
const MD5_LEN: usize = 16;

/// A digest the handshake can use.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::auth::{self, Challenge, Digest};
///
/// let message = auth::challenge_message(Challenge::Prefixed(Digest::Sha384))?;
/// assert!(message.starts_with(b"{sha384}"));
/// assert_eq!(Digest::Md5.name(), "md5");
/// # Ok::<(), multiproc_pipe::AuthenticationError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Digest {
    /// HMAC-MD5: the only one Python ≤ 3.11 knows.
    Md5,
    /// HMAC-SHA256: what Python ≥ 3.12 asks for.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
}

impl Digest {
    /// Its name inside `{…}`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
        }
    }

    fn from_name(name: &[u8]) -> Result<Self, AuthenticationError> {
        match name {
            b"md5" => Ok(Self::Md5),
            b"sha256" => Ok(Self::Sha256),
            b"sha384" => Ok(Self::Sha384),
            b"sha3_256" | b"sha3_384" => Err(AuthenticationError::new(
                AuthFailure::UnsupportedDigest(String::from_utf8_lossy(name).into_owned()),
            )),
            _ => Err(AuthenticationError::protocol(format!(
                "unknown digest {:?}",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length: new_from_slice cannot fail.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts any key length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Self::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
        }
    }

    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> Result<(), AuthenticationError> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return false;
            };
            mac.update(message);
            // Constant-time comparison; a tag of the wrong length fails.
            mac.verify_slice(tag).is_ok()
        }
        let ok = match self {
            Self::Md5 => run::<Hmac<md5::Md5>>(key, message, tag),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, tag),
            Self::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, tag),
        };
        if ok {
            Ok(())
        } else {
            Err(AuthenticationError::new(AuthFailure::DigestWrong))
        }
    }
}

/// Which challenge a deliverer sends.
///
/// The default is [`Challenge::Prefixed`]`(`[`Digest::Sha256`]`)`, what
/// CPython 3.12 and later send. Python 3.11 clients still authenticate
/// against it: they answer any challenge with raw HMAC-MD5, which is
/// accepted like CPython 3.12 accepts it. [`Challenge::Legacy`] sends what
/// CPython 3.11 and older send.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::auth::{self, Challenge};
///
/// assert_eq!(auth::challenge_message(Challenge::Legacy)?.len(), 20);
/// assert_eq!(auth::challenge_message(Challenge::default())?.len(), 8 + 40);
/// # Ok::<(), multiproc_pipe::AuthenticationError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Challenge {
    /// 20 random bytes; the peer replies with raw HMAC-MD5.
    Legacy,
    /// `{digest}` + 40 random bytes; the peer replies with the same prefix
    /// and HMAC over the whole message.
    Prefixed(Digest),
}

impl Default for Challenge {
    fn default() -> Self {
        Self::Prefixed(Digest::Sha256)
    }
}

/// A fresh random challenge message (what follows `#CHALLENGE#`).
///
/// # Errors
///
/// [`AuthFailure::Protocol`] if the system's random source fails.
pub fn challenge_message(form: Challenge) -> Result<Vec<u8>, AuthenticationError> {
    let (mut message, random_len) = match form {
        Challenge::Legacy => (Vec::new(), LEGACY_LEN),
        Challenge::Prefixed(digest) => {
            (format!("{{{}}}", digest.name()).into_bytes(), PREFIXED_LEN)
        }
    };
    let start = message.len();
    message.resize(start + random_len, 0);
    getrandom::fill(&mut message[start..])
        .map_err(|e| AuthenticationError::protocol(format!("no random bytes: {e}")))?;
    Ok(message)
}

/// Splits a `{digest}payload` message; `None` for the legacy form (16 or 20
/// bytes, no prefix).
fn split_digest(message: &[u8]) -> Result<Option<(Digest, &[u8])>, AuthenticationError> {
    if message.len() == MD5_LEN || message.len() == LEGACY_LEN {
        return Ok(None);
    }
    // CPython looks for the closing brace within the first 21 bytes.
    let close = message
        .first()
        .filter(|&&b| b == b'{')
        .and_then(|_| {
            message
                .iter()
                .take(LEGACY_LEN + 1)
                .skip(1)
                .position(|&b| b == b'}')
        })
        .map(|i| i + 1)
        .filter(|&i| i > 1)
        .ok_or_else(|| {
            AuthenticationError::protocol(format!(
                "message of {} bytes has neither a legacy length nor a {{digest}} prefix",
                message.len()
            ))
        })?;
    let digest = Digest::from_name(&message[1..close])?;
    Ok(Some((digest, &message[close + 1..])))
}

/// The reply to a challenge `message` (without `#CHALLENGE#`): raw
/// HMAC-MD5 for a legacy message, `{digest}` + HMAC over the whole message
/// for a prefixed one.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::auth;
///
/// let legacy = auth::response(b"key", &[7; 20])?;
/// assert_eq!(legacy.len(), 16);
/// let mut prefixed = b"{sha256}".to_vec();
/// prefixed.extend([7; 40]);
/// let reply = auth::response(b"key", &prefixed)?;
/// assert!(reply.starts_with(b"{sha256}") && reply.len() == 8 + 32);
/// assert!(auth::response(b"key", b"{whirlpool}0123456789abcdef").is_err());
/// # Ok::<(), multiproc_pipe::AuthenticationError>(())
/// ```
///
/// # Errors
///
/// [`AuthFailure::Protocol`] for a message shorter than 20 bytes or with a
/// malformed prefix, [`AuthFailure::UnsupportedDigest`] for a digest this
/// crate cannot compute.
pub fn response(authkey: &[u8], message: &[u8]) -> Result<Vec<u8>, AuthenticationError> {
    if message.len() < LEGACY_LEN {
        return Err(AuthenticationError::protocol(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    match split_digest(message)? {
        None => Ok(Digest::Md5.mac(authkey, message)),
        Some((digest, _)) => {
            let mut reply = format!("{{{}}}", digest.name()).into_bytes();
            reply.extend(digest.mac(authkey, message));
            Ok(reply)
        }
    }
}

/// Checks a `reply` to our challenge `message`, in constant time.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::auth;
///
/// let message = [1u8; 20];
/// let reply = auth::response(b"key", &message)?;
/// assert!(auth::verify(b"key", &message, &reply).is_ok());
/// assert!(auth::verify(b"key", &message, &reply[..15]).is_err());
/// # Ok::<(), multiproc_pipe::AuthenticationError>(())
/// ```
///
/// # Errors
///
/// [`AuthFailure::DigestWrong`] when the peer does not know the key (or the
/// reply has the wrong length), [`AuthFailure::Protocol`] /
/// [`AuthFailure::UnsupportedDigest`] for a malformed reply.
pub fn verify(authkey: &[u8], message: &[u8], reply: &[u8]) -> Result<(), AuthenticationError> {
    match split_digest(reply)? {
        None => Digest::Md5.verify(authkey, message, reply),
        Some((digest, mac)) => digest.verify(authkey, message, mac),
    }
}

/// Takes the challenge message out of a `#CHALLENGE#…` frame.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::auth;
///
/// assert_eq!(auth::parse_challenge(b"#CHALLENGE#abc")?, b"abc");
/// assert!(auth::parse_challenge(b"#WELCOME#").is_err());
/// # Ok::<(), multiproc_pipe::AuthenticationError>(())
/// ```
///
/// # Errors
///
/// [`AuthFailure::Protocol`] when the frame does not start with
/// `#CHALLENGE#`.
pub fn parse_challenge(frame: &[u8]) -> Result<&[u8], AuthenticationError> {
    frame.strip_prefix(CHALLENGE).ok_or_else(|| {
        AuthenticationError::protocol(format!("expected a challenge, got {} bytes", frame.len()))
    })
}

/// Challenges the peer and tells it whether it passed.
pub(crate) fn deliver_challenge(
    conn: &mut Connection,
    authkey: &[u8],
    form: Challenge,
) -> Result<(), ConnectError> {
    let message = challenge_message(form)?;
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    conn.send_bytes(&frame)?;
    let reply = conn.recv_bytes_max(MAX_HANDSHAKE_MESSAGE)?;
    match verify(authkey, &message, &reply) {
        Ok(()) => {
            conn.send_bytes(WELCOME)?;
            Ok(())
        }
        Err(err) => {
            // Tell the peer before dropping it; if it is gone already, the
            // authentication error is still the one to report.
            let _ = conn.send_bytes(FAILURE);
            Err(err.into())
        }
    }
}

/// Answers the peer's challenge and checks that it was accepted.
pub(crate) fn answer_challenge(conn: &mut Connection, authkey: &[u8]) -> Result<(), ConnectError> {
    let frame = conn.recv_bytes_max(MAX_HANDSHAKE_MESSAGE)?;
    let reply = response(authkey, parse_challenge(&frame)?)?;
    conn.send_bytes(&reply)?;
    let verdict = conn.recv_bytes_max(MAX_HANDSHAKE_MESSAGE)?;
    if verdict == WELCOME {
        Ok(())
    } else {
        Err(AuthenticationError::new(AuthFailure::DigestRejected).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_reply_is_raw_md5() {
        // HMAC-MD5 test vector from RFC 2104.
        let key = [0x0b; 16];
        let message = b"Hi There";
        let tag = Digest::Md5.mac(&key, message);
        assert_eq!(
            tag,
            [
                0x92, 0x94, 0x72, 0x7a, 0x36, 0x38, 0xbb, 0x1c, 0x13, 0xf4, 0x8e, 0xf8, 0x15, 0x8b,
                0xfc, 0x9d
            ]
        );
        let challenge = challenge_message(Challenge::Legacy).unwrap();
        assert_eq!(challenge.len(), 20);
        let reply = response(b"k", &challenge).unwrap();
        assert_eq!(reply.len(), 16);
        assert!(verify(b"k", &challenge, &reply).is_ok());
        assert_eq!(
            verify(b"j", &challenge, &reply).unwrap_err().reason(),
            &AuthFailure::DigestWrong
        );
    }

    #[test]
    fn prefixed_forms_round_trip_and_name_their_digest() {
        for digest in [Digest::Md5, Digest::Sha256, Digest::Sha384] {
            let challenge = challenge_message(Challenge::Prefixed(digest)).unwrap();
            let reply = response(b"key", &challenge).unwrap();
            assert!(reply.starts_with(format!("{{{}}}", digest.name()).as_bytes()));
            assert!(verify(b"key", &challenge, &reply).is_ok());
            assert!(verify(b"kez", &challenge, &reply).is_err());
            // A legacy MD5 reply to a prefixed challenge is accepted, like CPython.
            let md5 = Digest::Md5.mac(b"key", &challenge);
            assert!(verify(b"key", &challenge, &md5).is_ok());
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert!(response(b"k", &[0; 19]).is_err());
        assert!(response(b"k", b"{sha256 no closing brace here").is_err());
        assert!(response(b"k", b"{}aaaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(matches!(
            response(b"k", b"{sha3_256}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap_err()
                .reason(),
            AuthFailure::UnsupportedDigest(_)
        ));
        assert!(verify(b"k", b"m", b"{whirlpool}xxxxxxxxxxxxxxxx").is_err());
        assert!(verify(b"k", b"m", &[0; 17]).is_err());
        assert!(verify(b"k", b"m", &[0; 20]).is_err());
        assert!(parse_challenge(b"#CHALLENGE").is_err());
        assert_eq!(parse_challenge(b"#CHALLENGE#abc").unwrap(), b"abc");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn digest_prefix() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            Just(b"{sha256}".to_vec()),
            Just(b"{md5}".to_vec()),
            Just(b"{sha384}".to_vec()),
            Just(b"{sha3_256}".to_vec()),
            Just(b"{".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(|mut v| {
                v.insert(0, b'{');
                v.push(b'}');
                v
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever a peer sends as a challenge or a reply, parsing never
        /// panics, and only a reply computed with the key verifies.
        #[test]
        fn handshake_parsers_never_panic(
            prefix in digest_prefix(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            key in proptest::collection::vec(any::<u8>(), 0..80),
            with_marker in any::<bool>(),
        ) {
            let mut message = prefix;
            message.extend_from_slice(&body);
            let mut frame = if with_marker { CHALLENGE.to_vec() } else { Vec::new() };
            frame.extend_from_slice(&message);
            if let Ok(challenge) = parse_challenge(&frame)
                && let Ok(reply) = response(&key, challenge)
            {
                prop_assert!(verify(&key, challenge, &reply).is_ok());
                let mut other = key.clone();
                other.push(1);
                prop_assert!(verify(&other, challenge, &reply).is_err());
            }
            // An arbitrary reply only verifies if it happens to be the MAC.
            let _ = verify(&key, &body, &message);
        }
    }
}
