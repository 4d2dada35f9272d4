//! Handing an object to a child started with [`std::process::Command`]:
//! [`pass`] in the parent, [`take`] in the child, no `unsafe` and no
//! `libc` on either side.
//!
//! Every handle of multiproc (a [`Segment`](crate::Segment), a queue, a
//! lock, a connection, a shared-memory block, …) serializes with its
//! descriptors ([`crate::handle`]). [`pass`] encodes the value, keeps
//! duplicates of its descriptors open in the `Command` (close-on-exec in
//! this process, made inheritable only in the child, between `fork` and
//! `exec`), and writes their numbers and the encoded bytes into the child's
//! environment under `MULTIPROC_INHERIT_<key>` ([`ENV_PREFIX`]). The child
//! calls [`take`] with the same key and the same type and gets a working
//! handle to the same object: a queue the parent puts into is the queue the
//! child gets from.
//!
//! A child made by `fork` (no `exec`) needs none of this: it has the
//! parent's memory and descriptors, so the handles it inherited work as
//! they are.
//!
//! ```
//! use multiproc_core::{inherit, Segment};
//! use std::process::Command;
//!
//! // Parent: the segment goes to the child under the key "block".
//! let segment = Segment::anonymous(4096)?;
//! segment.write_at(0, b"hi")?;
//! let mut cmd = Command::new("my-worker");
//! inherit::pass(&mut cmd, "block", &segment)?;
//! assert!(cmd.get_envs().any(|(k, _)| k == "MULTIPROC_INHERIT_block"));
//! // cmd.spawn()? starts the worker, whose main does:
//! fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let segment: Segment = inherit::take("block")?;
//!     let mut word = [0u8; 2];
//!     segment.read_at(0, &mut word)?;
//!     assert_eq!(&word, b"hi");
//!     Ok(())
//! }
//! // Not in this process: nothing was passed to it.
//! assert!(inherit::take::<Segment>("block").unwrap_err().is_missing());
//! # let _ = worker;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the child can rely on
//!
//! - [`take`] works once per key in a process: the descriptors become the
//!   value's, close-on-exec again, so the child's own children do not
//!   inherit them. A second call is [`InheritError::AlreadyTaken`].
//! - The variable stays in the child's environment (changing the
//!   environment races with other threads reading it), so the child's own
//!   children see it too; there its numbers name no inheritable descriptor
//!   and [`take`] refuses it ([`InheritError::NotInherited`]), unless the
//!   child passed them something under the same key itself.
//! - Objects in shared memory check their header when decoded, so a
//!   descriptor that is not what the parent sent is an error, never
//!   undefined behaviour.
//!
//! # Limits
//!
//! The encoded value must fit in an environment variable: [`pass`] refuses
//! more than [`MAX_ENCODED_LEN`] bytes ([`InheritError::TooLarge`]).
//! Handles encode in a few dozen bytes; pass data through the object, not
//! in it.
#![allow(unsafe_code)]

use crate::codec::{self, CodecError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

/// The prefix of the environment variable [`pass`] sets for a key: the
/// variable is `MULTIPROC_INHERIT_<key>`.
pub const ENV_PREFIX: &str = "MULTIPROC_INHERIT_";

/// The most encoded bytes [`pass`] puts into one variable (twice as many
/// hex digits; Linux refuses a single variable over 128 KiB).
pub const MAX_ENCODED_LEN: usize = 16 * 1024;

/// The longest key [`pass`] accepts.
pub const MAX_KEY_LEN: usize = 64;

/// The keys [`take`] has taken in this process.
static TAKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Error of [`pass`] and [`take`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InheritError {
    /// The key is empty, longer than [`MAX_KEY_LEN`], or has a character
    /// other than ASCII letters, digits and `_`.
    InvalidKey,
    /// The encoded value is over [`MAX_ENCODED_LEN`] bytes.
    TooLarge {
        /// Its encoded size.
        len: usize,
    },
    /// [`take`]: this process's environment has no such variable.
    Missing,
    /// [`take`]: the variable is not in the format [`pass`] writes.
    Malformed,
    /// [`take`]: this key was taken already in this process.
    AlreadyTaken,
    /// [`take`]: a descriptor the variable names is not open here as an
    /// inherited one (the variable was meant for another process, such as
    /// this one's parent).
    NotInherited,
    /// The value failed to encode or decode (a decoded object also checks
    /// the header of its shared memory).
    Codec(CodecError),
    /// The kernel's error, duplicating or flagging a descriptor.
    Io(io::Error),
}

impl InheritError {
    /// Whether the variable was not in the environment at all.
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing)
    }
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey => f.write_str("invalid inheritance key"),
            Self::TooLarge { len } => write!(
                f,
                "value too large to inherit ({len} bytes, at most {MAX_ENCODED_LEN})"
            ),
            Self::Missing => f.write_str("nothing was passed under this key"),
            Self::Malformed => f.write_str("malformed inheritance variable"),
            Self::AlreadyTaken => f.write_str("this key was taken already"),
            Self::NotInherited => {
                f.write_str("the inheritance variable names no inherited descriptor")
            }
            Self::Codec(_) => f.write_str("inherited value failed to encode or decode"),
            Self::Io(_) => f.write_str("inheriting a descriptor failed"),
        }
    }
}

impl std::error::Error for InheritError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Codec(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for InheritError {
    fn from(e: CodecError) -> Self {
        Self::Codec(e)
    }
}

impl From<io::Error> for InheritError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn variable(key: &str) -> Result<String, InheritError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(format!("{ENV_PREFIX}{key}"))
    } else {
        Err(InheritError::InvalidKey)
    }
}

/// Makes `value` (with the descriptors of the handles in it) available to
/// the child `cmd` starts, under `key`, for [`take`]. Can be called several
/// times with different keys; a `Command` that spawns several children
/// gives each the same objects.
///
/// The duplicated descriptors stay open as long as `cmd` lives: drop the
/// `Command` after spawning.
///
/// # Errors
///
/// [`InheritError::InvalidKey`], [`InheritError::TooLarge`],
/// [`InheritError::Codec`] when the value does not encode, and
/// [`InheritError::Io`] when a descriptor cannot be duplicated.
///
/// # Examples
///
/// ```
/// use multiproc_core::{inherit, Segment};
///
/// let mut cmd = std::process::Command::new("true");
/// inherit::pass(&mut cmd, "seg", &Segment::anonymous(64)?)?;
/// assert!(cmd.status()?.success());
/// assert!(matches!(
///     inherit::pass(&mut cmd, "no-dash", &1u8),
///     Err(inherit::InheritError::InvalidKey)
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pass<T: Serialize + ?Sized>(
    cmd: &mut Command,
    key: &str,
    value: &T,
) -> Result<(), InheritError> {
    let name = variable(key)?;
    let (bytes, fds) = codec::encode_with_fds(value)?;
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(InheritError::TooLarge { len: bytes.len() });
    }
    // The encoder's duplicates are close-on-exec; they move into the
    // command, which keeps them open (under these numbers) until it drops.
    let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let list = numbers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    cmd.env(name, format!("{list};{hex}"));
    if !fds.is_empty() {
        // SAFETY: the closure runs in the forked child before `exec` and
        // only calls `fcntl(F_SETFD)` (async-signal-safe: no allocation, no
        // lock) on descriptors the closure owns, so they are open under
        // these numbers in the child; it changes the child's descriptor
        // table only.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                }
                Ok(())
            });
        }
    }
    Ok(())
}

/// In a child started with a `Command` given to [`pass`]: the value passed
/// under `key`, owning the inherited descriptors (made close-on-exec
/// again).
///
/// # Errors
///
/// [`InheritError::Missing`] when nothing was passed under `key` (also in a
/// process not started that way), [`InheritError::AlreadyTaken`] on a
/// second call, [`InheritError::NotInherited`] when the variable's
/// descriptors were not inherited by this process,
/// [`InheritError::Malformed`], [`InheritError::InvalidKey`], and
/// [`InheritError::Codec`] when the bytes do not decode as a `T` (or an
/// object's shared memory fails its header check).
///
/// # Examples
///
/// See the [module docs](self); in a process nothing was passed to:
///
/// ```
/// let err = multiproc_core::inherit::take::<u32>("jobs").unwrap_err();
/// assert!(err.is_missing());
/// ```
pub fn take<T: DeserializeOwned>(key: &str) -> Result<T, InheritError> {
    let name = variable(key)?;
    let Some(value) = std::env::var_os(&name) else {
        return Err(InheritError::Missing);
    };
    let value = value.to_str().ok_or(InheritError::Malformed)?;
    let (list, hex) = value.split_once(';').ok_or(InheritError::Malformed)?;
    let numbers = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<RawFd>().map_err(|_| InheritError::Malformed))
        .collect::<Result<Vec<_>, _>>()?;
    if hex.len() % 2 != 0 || hex.len() > 2 * MAX_ENCODED_LEN {
        return Err(InheritError::Malformed);
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| InheritError::Malformed))
        .collect::<Result<Vec<u8>, _>>()?;
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if taken.iter().any(|k| k == key) {
        return Err(InheritError::AlreadyTaken);
    }
    // An inherited descriptor is open and not close-on-exec (the parent
    // cleared the flag for us); descriptors this process opened itself are
    // close-on-exec (std and multiproc open every one so), and so are the
    // ones an earlier `take` took.
    for (i, &raw) in numbers.iter().enumerate() {
        if raw < 0 || numbers[..i].contains(&raw) {
            return Err(InheritError::Malformed);
        }
        // Standard input, output and error are inherited by every child.
        if raw <= 2 {
            return Err(InheritError::NotInherited);
        }
        // SAFETY: only borrowed to read its flags, which neither closes it
        // nor keeps it; whether it is open is what the call tells.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        match rustix::io::fcntl_getfd(fd) {
            Ok(flags) if !flags.contains(rustix::io::FdFlags::CLOEXEC) => {}
            _ => return Err(InheritError::NotInherited),
        }
    }
    let fds: Vec<OwnedFd> = numbers
        .iter()
        .map(|&raw| {
            // SAFETY: the parent kept this descriptor open for us under this
            // number (`pass`), it is open and inheritable here (checked
            // above), and nothing else in this process claims it: the key
            // is recorded as taken below, under the same lock, before
            // anyone else can look.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            fd
        })
        .collect();
    taken.push(key.to_owned());
    drop(taken);
    Ok(codec::decode_with_fds(&bytes, fds)?)
}
