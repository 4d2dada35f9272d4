//! [`Listener`] and [`Client`] between two programs, with an authkey: this
//! program listens on a Unix socket and runs *itself* again as the client
//! (`listener_client client <socket>`); then, if `python3` is installed, a
//! Python `multiprocessing.connection.Client` talks to the same kind of Rust
//! listener — same framing, same authkey handshake, Python's pickles.
//!
//! The Python it mirrors:
//!
//! ```python
//! # server
//! with Listener("/tmp/.../rust.sock", authkey=key) as listener:
//!     with listener.accept() as conn:
//!         print(conn.recv()); conn.send("welcome")
//! # client (another program)
//! with Client("/tmp/.../rust.sock", authkey=key) as conn:
//!     conn.send("hello"); print(conn.recv())
//! ```
//!
//! The key is random and reaches the client through its environment (Python
//! hands a child its parent's `authkey` the same way, out of band); a client
//! with a wrong key is refused by both sides.
//!
//! Run: `cargo run --example listener_client`
//!
//! [`Listener`]: multiproc::Listener
//! [`Client`]: multiproc::Client

use multiproc::{Address, Client, Listener};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the client finds the key (hex).
const KEY_ENV: &str = "LISTENER_CLIENT_AUTHKEY";

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, socket] = args.as_slice()
        && mode == "client"
    {
        let key = std::env::var(KEY_ENV)?;
        return client(Path::new(socket), key.as_bytes());
    }
    let dir = std::env::temp_dir().join(format!("multiproc-listener-{}", std::process::id()));
    std::fs::create_dir(&dir)?;
    let result = server(&dir);
    std::fs::remove_dir_all(&dir)?;
    result
}

fn server(dir: &Path) -> Result<(), Error> {
    let key = random_key()?;

    // 1. Rust <-> Rust: the same executable, started again as the client.
    let listener = Listener::bind(dir.join("rust.sock"), Some(key.as_bytes()))?;
    let Address::Unix(path) = listener.address().clone() else {
        unreachable!("bound to a path")
    };
    let child = Command::new(std::env::current_exe()?)
        .arg("client")
        .arg(&path)
        .env(KEY_ENV, &key)
        .stdout(Stdio::piped())
        .spawn()?;
    // The client first tries a wrong key: refused here, and there.
    let refused = client_waiting(&listener)?.accept().unwrap_err();
    assert!(refused.is_authentication());
    println!("[server] first client refused: {refused}");
    let mut conn = client_waiting(&listener)?.accept()?;
    let hello: String = conn.recv()?;
    println!("[server] received {hello:?}");
    conn.send(&format!("welcome, {hello}"))?;
    let numbers: Vec<u32> = conn.recv()?;
    conn.send(&numbers.iter().sum::<u32>())?;
    // The client hangs up: the server sees end of file.
    assert!(conn.recv::<String>().unwrap_err().is_eof());
    println!("[server] client hung up (EOF)");
    let out = child.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("client failed: {}", out.status).into());
    }
    drop(listener);
    assert!(!path.exists(), "the listener removes its socket file");

    // 2. Python <-> Rust.
    python_client(dir, &key)
}

/// The other program: the client side of part 1.
fn client(socket: &Path, key: &[u8]) -> Result<(), Error> {
    let err = Client::connect(socket, Some(b"not the key")).unwrap_err();
    assert!(err.is_authentication());
    println!("[client] wrong key refused: {err}");

    let mut conn = Client::connect(socket, Some(key))?;
    conn.send(&format!("client pid {}", std::process::id()))?;
    let welcome: String = conn.recv()?;
    println!("[client] received {welcome:?}");
    conn.send(&vec![1u32, 2, 3, 4])?;
    let sum: u32 = conn.recv()?;
    println!("[client] sum of [1, 2, 3, 4] computed by the server: {sum}");
    assert_eq!(sum, 10);
    Ok(())
}

/// What the Python client sends: a dict, pickled by `conn.send`.
#[derive(Debug, Deserialize)]
struct Greeting {
    language: String,
    numbers: Vec<i64>,
}

/// What we send back: a struct, pickled as a dict for Python's `conn.recv()`.
#[derive(Serialize)]
struct Reply {
    sum: i64,
    text: String,
}

const PYTHON_CLIENT: &str = r#"
import os, sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError

address, key = sys.argv[1], os.environ["LISTENER_CLIENT_AUTHKEY"].encode()
try:
    Client(address, authkey=b"not the key")
    sys.exit("a wrong key was accepted")
except AuthenticationError as e:
    print("[python] wrong key refused:", e)
with Client(address, authkey=key) as conn:
    conn.send({"language": "python", "numbers": [5, 6, 7]})
    reply = conn.recv()
    print("[python] received", sorted(reply.items()))
    assert reply["sum"] == 18, reply
    conn.send_bytes(b"raw bytes from python")
"#;

fn python_client(dir: &Path, key: &str) -> Result<(), Error> {
    let listener = Listener::bind(dir.join("python.sock"), Some(key.as_bytes()))?;
    let Address::Unix(path) = listener.address().clone() else {
        unreachable!("bound to a path")
    };
    let spawned = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(&path)
        .env(KEY_ENV, key)
        .stdout(Stdio::piped())
        .spawn();
    let python = match spawned {
        Ok(python) => python,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!("[python] skipped: python3 not found");
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let refused = client_waiting(&listener)?.accept().unwrap_err();
    assert!(refused.is_authentication());
    println!("[server] python's wrong key refused: {refused}");
    let mut conn = client_waiting(&listener)?.accept()?;
    let greeting: Greeting = conn.recv_pickle()?;
    println!("[server] received from python: {greeting:?}");
    conn.send_pickle(&Reply {
        sum: greeting.numbers.iter().sum(),
        text: format!("hello, {}, from Rust", greeting.language),
    })?;
    let raw = conn.recv_bytes()?;
    println!(
        "[server] received bytes from python: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(conn.recv_bytes().unwrap_err().is_eof());
    let out = python.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("python client failed: {}", out.status).into());
    }
    Ok(())
}

/// Waits for a client to knock, giving up after a few seconds so a client
/// that never comes cannot hang the example.
fn client_waiting(listener: &Listener) -> Result<&Listener, Error> {
    if multiproc::wait(&[listener], Some(Duration::from_secs(5)))?.is_empty() {
        return Err("no client connected within 5 s".into());
    }
    Ok(listener)
}

/// 16 random bytes, hex-encoded (a key must be bytes both sides can share).
fn random_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
