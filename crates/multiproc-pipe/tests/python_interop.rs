//! Interop with the system `python3`'s `multiprocessing.connection`: Python
//! clients against our `Listener`, our `Client` against Python listeners,
//! bytes and pickles both ways, both handshake forms, wrong keys.
//!
//! Each test skips (and says so) only when `python3` cannot be started.

use multiproc_pipe::pickle::{HashableValue, Value};
use multiproc_pipe::{
    Address, AuthFailure, Client, ConnectError, Connection, Listener, Pipe, auth,
};
use multiproc_testkit::{run, tests, wait_timeout};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const SIZES: [usize; 4] = [0, 1, 64 * 1024, 16 * 1024 * 1024];

fn python_available() -> bool {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            println!("SKIPPED: python3 is not installed; Python interop not tested");
            false
        }
    }
}

/// Runs `python3 -c script args...` with stdout piped.
fn python(script: &str, args: &[&str]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3")
}

fn finish(mut child: Child) -> String {
    let status = wait_timeout(&mut child, LIMIT);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "python3 failed ({status}); stdout: {out}");
    out
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mp-py-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The Python side of an exchange, shared by client and listener scripts:
/// echoes byte messages until `done`, sends its own patterns, then swaps
/// pickles with us.
const EXCHANGE: &str = r#"
def pattern(n):
    return (bytes(range(251)) * (n // 251 + 1))[:n]

def exchange(c):
    while True:
        m = c.recv_bytes()
        if m == b"done":
            break
        c.send_bytes(m)
    for n in (0, 1, 65536, 16 * 1024 * 1024):
        c.send_bytes(pattern(n))
    ours = c.recv()
    expected_from_rust = (7, -3, 2**40, 0.25, "r\u00e9sum\u00e9", b"\x00\xff", [1, [2, 3]], {"k": [1.5, None]}, True)
    c.send(ours == expected_from_rust)
    c.send((1, -2, 2**40, 2.5, "py \u00e9", b"\x00\xff", [1, [2, 3]], (4, 5), {"a": 1, "b": [1.5]}, True, None))
    c.send_bytes(pickle_of_list())
    print("exchange ok", flush=True)

def pickle_of_list():
    import pickle
    return pickle.dumps([1, 2, 3])
"#;

fn s(text: &str) -> HashableValue {
    HashableValue::String(text.into())
}

fn value_for_python() -> Value {
    Value::Tuple(vec![
        Value::I64(7),
        Value::I64(-3),
        Value::I64(1 << 40),
        Value::F64(0.25),
        Value::String("résumé".into()),
        Value::Bytes(vec![0, 255]),
        Value::List(vec![
            Value::I64(1),
            Value::List(vec![Value::I64(2), Value::I64(3)]),
        ]),
        Value::Dict(BTreeMap::from([(
            s("k"),
            Value::List(vec![Value::F64(1.5), Value::None]),
        )])),
        Value::Bool(true),
    ])
}

fn value_from_python() -> Value {
    Value::Tuple(vec![
        Value::I64(1),
        Value::I64(-2),
        Value::I64(1 << 40),
        Value::F64(2.5),
        Value::String("py é".into()),
        Value::Bytes(vec![0, 255]),
        Value::List(vec![
            Value::I64(1),
            Value::List(vec![Value::I64(2), Value::I64(3)]),
        ]),
        Value::Tuple(vec![Value::I64(4), Value::I64(5)]),
        Value::Dict(BTreeMap::from([
            (s("a"), Value::I64(1)),
            (s("b"), Value::List(vec![Value::F64(1.5)])),
        ])),
        Value::Bool(true),
        Value::None,
    ])
}

/// Our side of [`EXCHANGE`].
fn exchange(conn: &mut Connection) {
    for size in SIZES {
        let payload = pattern(size);
        conn.send_bytes(&payload).unwrap();
        let back = conn.recv_bytes().unwrap();
        assert_eq!(back.len(), size);
        assert!(back == payload, "{size} bytes came back altered");
    }
    conn.send_bytes(b"done").unwrap();
    for size in SIZES {
        let got = conn.recv_bytes().unwrap();
        assert!(got == pattern(size), "python's {size}-byte pattern differs");
    }
    conn.send_pickle_value(&value_for_python()).unwrap();
    assert!(
        conn.recv_pickle::<bool>().unwrap(),
        "python decoded our pickle to something else"
    );
    assert_eq!(conn.recv_pickle_value().unwrap(), value_from_python());
    // Typed decoding of a Python pickle.
    assert_eq!(conn.recv_pickle::<Vec<i64>>().unwrap(), vec![1, 2, 3]);
}

fn python_client_talks_to_rust_listener() {
    if !python_available() {
        return;
    }
    let script = format!(
        "{EXCHANGE}\nimport sys\nfrom multiprocessing.connection import Client\n\
         c = Client(sys.argv[1], authkey=sys.argv[2].encode())\nexchange(c)\nc.close()\n"
    );
    let dir = temp_dir("client");
    for challenge in [auth::Challenge::Legacy, auth::Challenge::default()] {
        let path = dir.join(format!("{challenge:?}.sock"));
        let listener = Listener::bind(path.clone(), Some(b"py secret"))
            .unwrap()
            .with_challenge(challenge);
        let child = python(&script, &[path.to_str().unwrap(), "py secret"]);
        let mut conn = listener.accept().unwrap();
        exchange(&mut conn);
        assert!(conn.recv_bytes().unwrap_err().is_eof());
        assert_eq!(finish(child).trim(), "exchange ok");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn rust_client_talks_to_python_listener() {
    if !python_available() {
        return;
    }
    let script = format!(
        "{EXCHANGE}\nimport sys\nfrom multiprocessing.connection import Listener\n\
         l = Listener(('127.0.0.1', 0), authkey=b'py secret')\n\
         print(l.address[1], flush=True)\nc = l.accept()\nexchange(c)\nc.close()\nl.close()\n"
    );
    let mut child = python(&script, &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut port = String::new();
    lines.read_line(&mut port).unwrap();
    let address: Address = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    // Our default challenge is the {sha256} form; Python 3.11 answers it
    // with MD5, which we accept.
    let mut conn = Client::connect(address, Some(b"py secret")).unwrap();
    exchange(&mut conn);
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(wait_timeout(&mut child, LIMIT).success());
    assert_eq!(rest.trim(), "exchange ok");
}

fn python_client_reaches_abstract_and_tcp_listeners() {
    if !python_available() {
        return;
    }
    let script = "import sys\nfrom multiprocessing.connection import Client\n\
                  a = sys.argv[1]\n\
                  addr = ('127.0.0.1', int(a.split(':')[1])) if a.startswith('127.') else '\\0' + a\n\
                  c = Client(addr, authkey=b'k')\nc.send_bytes(c.recv_bytes()[::-1])\n";
    let name = format!("mp-py-abstract-{}", std::process::id());
    for address in [
        Address::Abstract(name.clone().into_bytes()),
        "127.0.0.1:0".parse().unwrap(),
    ] {
        let listener = Listener::bind(address, Some(b"k")).unwrap();
        let arg = match listener.address() {
            Address::Abstract(_) => name.clone(),
            other => other.to_string(),
        };
        let child = python(script, &[&arg]);
        let mut conn = listener.accept().unwrap();
        conn.send_bytes(b"abc").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"cba");
        finish(child);
    }
}

fn wrong_authkey_is_rejected_on_both_sides() {
    if !python_available() {
        return;
    }
    // Python client with the wrong key, our listener.
    let listener =
        Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), Some(b"right")).unwrap();
    let port = match listener.address() {
        Address::Tcp(a) => a.port(),
        _ => unreachable!(),
    };
    let script = "import sys\nfrom multiprocessing import AuthenticationError\n\
                  from multiprocessing.connection import Client\n\
                  try:\n    Client(('127.0.0.1', int(sys.argv[1])), authkey=b'wrong')\n    print('accepted')\n\
                  except AuthenticationError as e:\n    print('AuthenticationError')\n";
    let child = python(script, &[&port.to_string()]);
    let err = listener.accept().unwrap_err();
    assert!(
        matches!(&err, ConnectError::Authentication(a) if a.reason() == &AuthFailure::DigestWrong),
        "{err:?}"
    );
    assert_eq!(finish(child).trim(), "AuthenticationError");

    // Our client with the wrong key, Python's listener.
    let script = "from multiprocessing import AuthenticationError\n\
                  from multiprocessing.connection import Listener\n\
                  l = Listener(('127.0.0.1', 0), authkey=b'right')\nprint(l.address[1], flush=True)\n\
                  try:\n    l.accept()\n    print('accepted')\n\
                  except AuthenticationError:\n    print('AuthenticationError')\n";
    let mut child = python(script, &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut port = String::new();
    lines.read_line(&mut port).unwrap();
    let address: Address = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    let err = Client::connect(address, Some(b"wrong")).unwrap_err();
    assert!(
        matches!(&err, ConnectError::Authentication(a) if a.reason() == &AuthFailure::DigestRejected),
        "{err:?}"
    );
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(wait_timeout(&mut child, LIMIT).success());
    assert_eq!(rest.trim(), "AuthenticationError");
}

/// Python 3.12's handshake, written out with Python's `hmac` (the system
/// python3 is 3.11, whose `multiprocessing` only speaks the legacy form).
const MODERN: &str = r##"
import hmac, os, sys
from multiprocessing.connection import Client, Listener

def answer(c, key, digest):
    m = c.recv_bytes(256)
    assert m.startswith(b"#CHALLENGE#"), m
    m = m[len(b"#CHALLENGE#"):]
    prefix = b"{" + digest.encode() + b"}"
    assert m.startswith(prefix) and len(m) == len(prefix) + 40, m
    c.send_bytes(prefix + hmac.new(key, m, digest).digest())
    assert c.recv_bytes(256) == b"#WELCOME#"

def deliver(c, key, digest):
    prefix = b"{" + digest.encode() + b"}"
    m = prefix + os.urandom(40)
    c.send_bytes(b"#CHALLENGE#" + m)
    r = c.recv_bytes(256)
    if r == prefix + hmac.new(key, m, digest).digest():
        c.send_bytes(b"#WELCOME#")
        return True
    c.send_bytes(b"#FAILURE#")
    return False
"##;

fn sha256_handshake_matches_python_hmac() {
    if !python_available() {
        return;
    }
    // 1. A fixed vector computed by python3's hmac module.
    let message = {
        let mut m = b"{sha256}".to_vec();
        m.extend((0..40u8).map(|i| i.wrapping_mul(37)));
        m
    };
    let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import hmac, sys\nm = bytes.fromhex(sys.argv[1])\n\
             for d in ('sha256', 'sha384', 'md5'):\n\
             \x20   print((b'{' + d.encode() + b'}' + hmac.new(b'vector key', m, d).digest()).hex() if d != 'md5' else hmac.new(b'vector key', m[8:28], d).digest().hex())\n",
        )
        .arg(&hex)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(auth::response(b"vector key", &message).unwrap(), lines[0]);
    // A reply may name another digest than the challenge (CPython allows
    // it; the MAC still covers the whole message).
    assert!(auth::verify(b"vector key", &message, &lines[0]).is_ok());
    assert!(auth::verify(b"vector key", &message, &lines[1]).is_ok());
    assert!(auth::verify(b"other key", &message, &lines[1]).is_err());
    // Legacy: raw MD5 of a 20-byte challenge.
    assert_eq!(
        auth::response(b"vector key", &message[8..28]).unwrap(),
        lines[2]
    );

    // 2. A live {sha256} handshake, Python as client...
    let listener =
        Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), Some(b"modern")).unwrap();
    let port = match listener.address() {
        Address::Tcp(a) => a.port(),
        _ => unreachable!(),
    };
    let script = format!(
        "{MODERN}\nc = Client(('127.0.0.1', int(sys.argv[1])))\nanswer(c, b'modern', 'sha256')\n\
         print(deliver(c, b'modern', 'sha384'), flush=True)\nc.send_bytes(b'modern ok')\n"
    );
    let child = python(&script, &[&port.to_string()]);
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"modern ok");
    assert_eq!(finish(child).trim(), "True");

    // ...and Python as server, with a wrong key on the Python side first.
    for (py_key, ok) in [("wrong", false), ("modern", true)] {
        let script = format!(
            "{MODERN}\nl = Listener(('127.0.0.1', 0))\nprint(l.address[1], flush=True)\nc = l.accept()\n\
             if deliver(c, sys.argv[1].encode(), 'sha256'):\n    answer(c, sys.argv[1].encode(), 'sha256')\n    c.send_bytes(b'served')\n\
             print('done', flush=True)\n"
        );
        let mut child = python(&script, &[py_key]);
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut port = String::new();
        lines.read_line(&mut port).unwrap();
        let address: Address = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
        let result = Client::connect(address, Some(b"modern"));
        if ok {
            assert_eq!(result.unwrap().recv_bytes().unwrap(), b"served");
        } else {
            assert!(result.unwrap_err().is_authentication());
        }
        let mut rest = String::new();
        lines.read_to_string(&mut rest).unwrap();
        assert!(wait_timeout(&mut child, LIMIT).success());
        assert_eq!(rest.trim(), "done");
    }
}

fn python_pipe_frames_match_ours() {
    if !python_available() {
        return;
    }
    // Python writes frames (including its pickle of `send`) to stdout
    // through a Connection on fd 1; we read them from the pipe.
    let script = "import os\nfrom multiprocessing.connection import Connection\n\
                  c = Connection(1, readable=False)\n\
                  c.send_bytes(b'')\nc.send_bytes(b'x' * 70000)\nc.send({'n': [1, 2.0, 'three']})\n";
    let mut child = python(script, &[]);
    let stdout = child.stdout.take().unwrap();
    let mut conn = Connection::from_fd(std::os::fd::OwnedFd::from(stdout)).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    assert_eq!(conn.recv_bytes().unwrap(), vec![b'x'; 70000]);
    let value = conn.recv_pickle_value().unwrap();
    assert_eq!(
        value,
        Value::Dict(BTreeMap::from([(
            s("n"),
            Value::List(vec![
                Value::I64(1),
                Value::F64(2.0),
                Value::String("three".into())
            ])
        )]))
    );
    assert!(conn.recv_bytes().unwrap_err().is_eof());
    assert!(wait_timeout(&mut child, LIMIT).success());
}

/// Python reads large messages from an end of a `Pipe::new` pair given to
/// it as a plain descriptor (its stdin): nothing goes through the pair's
/// shared-memory lane, which only connections that received through it
/// read — whether our copy of the end never received, or received through
/// the lane and was then taken apart with `into_fd`.
fn python_reads_large_messages_from_an_end_of_a_pipe() {
    if !python_available() {
        return;
    }
    // Answers each message with its length and a checksum, on the same
    // (duplex) descriptor.
    let script = "import zlib\nfrom multiprocessing.connection import Connection\n\
                  c = Connection(0)\n\
                  for _ in range(4):\n    m = c.recv_bytes()\n    \
                  c.send_bytes(b'%d %d' % (len(m), zlib.crc32(m)))\n";
    for taken_apart in [false, true] {
        let (mut ours, mut theirs) = Pipe::new().unwrap();
        let mut kept = None;
        let fd = if taken_apart {
            let through_lane = pattern(200_000);
            ours.send_bytes(b"start").unwrap();
            assert_eq!(theirs.recv_bytes().unwrap(), b"start");
            ours.send_bytes(&through_lane).unwrap();
            assert!(theirs.recv_bytes().unwrap() == through_lane);
            theirs.into_fd()
        } else {
            use std::os::fd::AsFd;
            let fd = theirs.as_fd().try_clone_to_owned().unwrap();
            // Our copy stays open, unread: Python is the one reading.
            kept = Some(theirs);
            fd
        };
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3");
        // We receive on our end too, so Python's answers could come
        // through the lane if anything of ours sent them.
        for (i, size) in [20_000usize, 100_000, 1 << 20, 3 << 20]
            .into_iter()
            .enumerate()
        {
            let payload = pattern(size);
            ours.send_bytes(&payload).unwrap();
            let answer = String::from_utf8(ours.recv_bytes().unwrap()).unwrap();
            let crc = crc32(&payload);
            assert_eq!(
                answer,
                format!("{size} {crc}"),
                "message {i}, taken apart: {taken_apart}"
            );
        }
        assert!(wait_timeout(&mut child, LIMIT).success());
        drop(kept);
    }
}

/// zlib's CRC-32, as Python's `zlib.crc32` computes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn main() {
    run(
        &[],
        tests![
            python_client_talks_to_rust_listener,
            rust_client_talks_to_python_listener,
            python_client_reaches_abstract_and_tcp_listeners,
            wrong_authkey_is_rejected_on_both_sides,
            sha256_handshake_matches_python_hmac,
            python_pipe_frames_match_ours,
            python_reads_large_messages_from_an_end_of_a_pipe,
        ],
    );
}
