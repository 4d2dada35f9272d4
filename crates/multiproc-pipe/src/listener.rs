//! [`Listener`] and [`Client`]: connections between unrelated processes,
//! by address, with Python's authkey handshake.

use crate::auth::{self, Challenge};
use crate::connection::{Connection, Flavor};
use crate::error::ConnectError;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Where a [`Listener`] listens and a [`Client`] connects: the three families
/// of Python's `multiprocessing.connection` on Linux.
///
/// # Parsing
///
/// | string | address |
/// |---|---|
/// | `unix:/run/app.sock`, or any string containing `/` | [`Address::Unix`] path |
/// | `abstract:name`, `@name`, or a leading NUL (Python's `'\0name'`) | [`Address::Abstract`] |
/// | `tcp:127.0.0.1:5000`, `127.0.0.1:5000`, `[::1]:5000` | [`Address::Tcp`] (IP literals only: no name lookup) |
///
/// ```
/// use multiproc_pipe::Address;
/// use std::path::PathBuf;
///
/// assert_eq!("/tmp/a.sock".parse::<Address>()?, Address::Unix(PathBuf::from("/tmp/a.sock")));
/// assert_eq!("@svc".parse::<Address>()?, Address::Abstract(b"svc".to_vec()));
/// assert_eq!("\0svc".parse::<Address>()?, Address::Abstract(b"svc".to_vec()));
/// assert_eq!("[::1]:80".parse::<Address>()?, Address::Tcp("[::1]:80".parse()?));
/// assert!("localhost".parse::<Address>().is_err());
/// assert_eq!(Address::Abstract(b"svc".to_vec()).to_string(), "@svc");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket at a path in the file system. The listener creates the
    /// socket file and removes it when dropped.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (without the leading NUL): no file,
    /// gone when the listener closes.
    Abstract(Vec<u8>),
    /// A TCP address; port 0 picks a free port (see
    /// [`Listener::address`]).
    Tcp(SocketAddr),
}

impl Address {
    /// The first address `addr` resolves to, as a TCP address (this one does
    /// name lookups, unlike parsing).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::Address;
    ///
    /// let addr = Address::tcp("localhost:0")?;
    /// assert!(matches!(addr, Address::Tcp(a) if a.ip().is_loopback()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The resolver's error, or `NotFound` when `addr` resolves to nothing.
    pub fn tcp(addr: impl ToSocketAddrs) -> io::Result<Self> {
        addr.to_socket_addrs()?
            .next()
            .map(Self::Tcp)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))
    }

    fn unix_addr(&self) -> io::Result<Option<UnixSocketAddr>> {
        match self {
            Self::Unix(path) => UnixSocketAddr::from_pathname(path).map(Some),
            Self::Abstract(name) => UnixSocketAddr::from_abstract_name(name).map(Some),
            Self::Tcp(_) => Ok(None),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

impl From<&Address> for Address {
    fn from(addr: &Address) -> Self {
        addr.clone()
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Self {
        Self::Unix(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Self {
        Self::Unix(path.to_owned())
    }
}

/// The string is not an address in any of the forms [`Address`] parses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressParseError(String);

impl fmt::Display for AddressParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a unix, abstract or tcp address: {:?}", self.0)
    }
}

impl std::error::Error for AddressParseError {}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressParseError(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(bad())
            } else {
                Ok(Self::Unix(path.into()))
            };
        }
        if let Some(name) = s
            .strip_prefix("abstract:")
            .or_else(|| s.strip_prefix('@'))
            .or_else(|| s.strip_prefix('\0'))
        {
            return Ok(Self::Abstract(name.as_bytes().to_vec()));
        }
        let tcp = s.strip_prefix("tcp:").unwrap_or(s);
        if let Ok(addr) = tcp.parse::<SocketAddr>() {
            return Ok(Self::Tcp(addr));
        }
        if s.contains('/') {
            return Ok(Self::Unix(s.into()));
        }
        Err(bad())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts connections at an [`Address`] (Python's
/// `multiprocessing.connection.Listener`).
///
/// With an authkey, each accepted connection first runs the handshake (we
/// challenge the client, then answer its challenge); a client without the
/// key makes [`accept`](Self::accept) fail with
/// [`ConnectError::Authentication`] and is dropped, and the listener keeps
/// listening.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{Address, Client, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0".parse::<Address>()?, Some(b"secret"))?;
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let conn = Client::connect(&address, Some(b"secret"))?;
///     conn.send_bytes(b"hello")?;
///     // A wrong key is refused on both sides.
///     assert!(Client::connect(&address, Some(b"guess")).unwrap_err().is_authentication());
///     Ok(())
/// });
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv_bytes()?, b"hello");
/// assert!(listener.accept().unwrap_err().is_authentication());
/// client.join().unwrap().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Option<Vec<u8>>,
    challenge: Challenge,
    /// Longest wait of each handshake read or write; `None`: no limit.
    handshake_timeout: Option<Duration>,
    /// The socket file to remove on drop (a Unix path we created).
    unlink: Option<PathBuf>,
}

impl Listener {
    /// `socket` + `bind` + `listen` at `address`, close-on-exec. Connections
    /// must authenticate with `authkey` when one is given.
    ///
    /// TCP listeners set `SO_REUSEADDR` (as Python does). A Unix path must
    /// not exist yet; the socket file is removed when the listener drops.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Address, Listener};
    ///
    /// let name = Address::Abstract(format!("mp-doc-{}", std::process::id()).into_bytes());
    /// let listener = Listener::bind(&name, None)?;
    /// assert_eq!(listener.address(), &name);
    /// // The name is taken while the listener lives.
    /// assert!(Listener::bind(&name, None).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The kernel's error (`EADDRINUSE`, `EACCES`, …).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> io::Result<Self> {
        let address = address.into();
        let (socket, address, unlink) = match &address {
            Address::Tcp(addr) => {
                let listener = TcpListener::bind(addr)?;
                let bound = Address::Tcp(listener.local_addr()?);
                (Socket::Tcp(listener), bound, None)
            }
            Address::Unix(path) => {
                let listener = UnixListener::bind(path)?;
                (Socket::Unix(listener), address.clone(), Some(path.clone()))
            }
            Address::Abstract(_) => {
                let addr = address.unix_addr()?.expect("unix address");
                let listener = UnixListener::bind_addr(&addr)?;
                (Socket::Unix(listener), address.clone(), None)
            }
        };
        Ok(Self {
            socket,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            challenge: Challenge::default(),
            handshake_timeout: None,
            unlink,
        })
    }

    /// The same listener sending `challenge` in handshakes (default:
    /// [`Challenge::Prefixed`] with SHA-256, which Python 3.11 clients also
    /// pass).
    #[must_use]
    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = challenge;
        self
    }

    /// The same listener giving up on a client that stalls during the
    /// authkey handshake: every read and write of the handshake waits at
    /// most `timeout` (with `SO_RCVTIMEO`/`SO_SNDTIMEO` on the accepted
    /// socket, restored afterwards), and [`accept`](Self::accept) then
    /// fails with [`ConnectError::HandshakeTimeout`] and drops that client.
    ///
    /// The default, `None`, waits for ever, as Python's `Listener` does: a
    /// client that connects and says nothing blocks `accept`. The limit is
    /// per read or write, so a client that dribbles the handshake a byte at
    /// a time can take longer overall (the handshake is a few hundred bytes
    /// at most). Without an authkey there is no handshake and this has no
    /// effect.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Address, Client, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("127.0.0.1:0".parse::<Address>()?, Some(b"key"))?
    ///     .with_handshake_timeout(Some(Duration::from_millis(200)));
    /// assert_eq!(listener.handshake_timeout(), Some(Duration::from_millis(200)));
    /// let Address::Tcp(addr) = listener.address().clone() else { unreachable!() };
    ///
    /// // A client that connects and says nothing no longer blocks accept.
    /// let silent = std::net::TcpStream::connect(addr)?;
    /// assert!(listener.accept().unwrap_err().is_timeout());
    /// drop(silent);
    ///
    /// // The listener keeps serving well-behaved clients.
    /// let client = std::thread::spawn(move || Client::connect(addr, Some(b"key")));
    /// let conn = listener.accept()?;
    /// conn.send_bytes(b"welcome")?;
    /// assert_eq!(client.join().unwrap()?.recv_bytes()?, b"welcome");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout set with
    /// [`with_handshake_timeout`](Self::with_handshake_timeout) (default:
    /// `None`, no limit).
    #[must_use]
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// The address bound, with the real port when port 0 was asked for.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_pipe::{Address, Listener};
    ///
    /// let listener = Listener::bind("127.0.0.1:0".parse::<Address>()?, None)?;
    /// assert!(matches!(listener.address(), Address::Tcp(a) if a.port() != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// `accept4(SOCK_CLOEXEC)` the next client and, with an authkey, run the
    /// handshake: deliver our challenge, then answer the client's.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Authentication`] when the client does not have the
    /// key or breaks the protocol, [`ConnectError::Eof`] when it hangs up
    /// during the handshake, [`ConnectError::HandshakeTimeout`] when it
    /// stalls past the [handshake
    /// timeout](Self::with_handshake_timeout), [`ConnectError::Io`] from
    /// `accept`. The listener stays usable after any of them.
    pub fn accept(&self) -> Result<Connection, ConnectError> {
        let mut conn = match &self.socket {
            Socket::Unix(listener) => {
                let (stream, _) = listener.accept()?;
                Connection::new(OwnedFd::from(stream), Flavor::Unix)?
            }
            Socket::Tcp(listener) => {
                let (stream, _) = listener.accept()?;
                tcp_connection(stream)?
            }
        };
        if let Some(key) = &self.authkey {
            match self.handshake_timeout {
                None => server_handshake(&mut conn, key, self.challenge)?,
                Some(timeout) => {
                    self.timed_handshake(&mut conn, key, timeout)?;
                }
            }
        }
        Ok(conn)
    }

    /// The server's handshake with `SO_RCVTIMEO`/`SO_SNDTIMEO` set to
    /// `timeout` on the accepted socket, and the socket's own timeouts
    /// (inherited from the listening socket, usually none) put back after.
    fn timed_handshake(
        &self,
        conn: &mut Connection,
        key: &[u8],
        timeout: Duration,
    ) -> Result<(), ConnectError> {
        use rustix::net::sockopt::{Timeout, set_socket_timeout, socket_timeout};
        // The kernel reads a zero timeout as "no timeout".
        let timeout = timeout.max(Duration::from_micros(1));
        let fd = conn.as_fd();
        let before_recv = socket_timeout(fd, Timeout::Recv).map_err(io::Error::from)?;
        let before_send = socket_timeout(fd, Timeout::Send).map_err(io::Error::from)?;
        set_socket_timeout(fd, Timeout::Recv, Some(timeout)).map_err(io::Error::from)?;
        set_socket_timeout(fd, Timeout::Send, Some(timeout)).map_err(io::Error::from)?;
        let result = server_handshake(conn, key, self.challenge).map_err(|err| match err {
            // A blocking socket reports an expired SO_RCVTIMEO/SO_SNDTIMEO
            // as EAGAIN.
            ConnectError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ConnectError::HandshakeTimeout(timeout)
            }
            other => other,
        });
        result?;
        let fd = conn.as_fd();
        set_socket_timeout(fd, Timeout::Recv, before_recv).map_err(io::Error::from)?;
        set_socket_timeout(fd, Timeout::Send, before_send).map_err(io::Error::from)?;
        Ok(())
    }
}

/// The server's side of the authkey handshake: deliver our challenge, then
/// answer the client's.
fn server_handshake(
    conn: &mut Connection,
    key: &[u8],
    challenge: Challenge,
) -> Result<(), ConnectError> {
    auth::deliver_challenge(conn, key, challenge)?;
    auth::answer_challenge(conn, key)
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.as_raw_fd())
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("challenge", &self.challenge)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = self.unlink.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn tcp_connection(stream: TcpStream) -> io::Result<Connection> {
    // Header and payload leave in one write anyway; without Nagle, the
    // handshake's small request/reply messages do not wait for delayed ACKs.
    stream.set_nodelay(true)?;
    Connection::new(OwnedFd::from(stream), Flavor::Socket)
}

/// Connects to a [`Listener`] — ours or Python's (Python's
/// `multiprocessing.connection.Client`).
///
/// [`Client::connect`] is the one-line form; [`Client::builder`] also picks
/// the challenge this side sends.
///
/// # Examples
///
/// ```
/// use multiproc_pipe::{auth::Challenge, Address, Client, Listener};
///
/// let dir = std::env::temp_dir().join(format!("mp-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let address = Address::Unix(dir.join("client.sock"));
/// let listener = Listener::bind(&address, Some(b"k"))?;
/// let server = std::thread::spawn(move || listener.accept().map(|mut c| c.recv_bytes()));
///
/// let conn = Client::builder(&address).authkey(b"k").challenge(Challenge::Legacy).connect()?;
/// conn.send_bytes(b"via unix path")?;
/// assert_eq!(server.join().unwrap()??, b"via unix path");
///
/// // Nobody listens there any more.
/// assert!(Client::connect(&address, None).is_err());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Client(());

impl Client {
    /// Connects to `address`, authenticating with `authkey` when given
    /// (Python's `Client(address, authkey=...)`).
    ///
    /// # Errors
    ///
    /// As for [`ClientBuilder::connect`].
    pub fn connect(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
    ) -> Result<Connection, ConnectError> {
        let mut builder = Self::builder(address);
        builder.authkey = authkey.map(<[u8]>::to_vec);
        builder.connect()
    }

    /// A client for `address` to configure before connecting.
    #[must_use]
    pub fn builder(address: impl Into<Address>) -> ClientBuilder {
        ClientBuilder {
            address: address.into(),
            authkey: None,
            challenge: Challenge::default(),
        }
    }
}

/// A [`Client`] connection being configured; see [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    address: Address,
    authkey: Option<Vec<u8>>,
    challenge: Challenge,
}

impl ClientBuilder {
    /// Authenticate with `authkey`.
    #[must_use]
    pub fn authkey(mut self, authkey: &[u8]) -> Self {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// The challenge this side sends to the server (default:
    /// [`Challenge::Prefixed`] with SHA-256; a Python 3.11 server answers it
    /// with MD5, which is accepted).
    #[must_use]
    pub fn challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = challenge;
        self
    }

    /// `socket` + `connect` (close-on-exec) and, with an authkey, the
    /// handshake: answer the server's challenge, then deliver ours.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Io`] from `connect` (`ConnectionRefused`,
    /// `NotFound`), [`ConnectError::Authentication`] when the server rejects
    /// our key or fails our challenge, [`ConnectError::Eof`] when it hangs
    /// up during the handshake.
    pub fn connect(&self) -> Result<Connection, ConnectError> {
        let mut conn = match &self.address {
            Address::Tcp(addr) => tcp_connection(TcpStream::connect(addr)?)?,
            unix => {
                let addr = unix.unix_addr()?.expect("unix address");
                let stream = UnixStream::connect_addr(&addr)?;
                Connection::new(OwnedFd::from(stream), Flavor::Unix)?
            }
        };
        if let Some(key) = &self.authkey {
            auth::answer_challenge(&mut conn, key)?;
            auth::deliver_challenge(&mut conn, key, self.challenge)?;
        }
        Ok(conn)
    }
}
