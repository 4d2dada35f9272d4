//! Connections between real processes: the test binary re-executes itself
//! as the child (see `multiproc-testkit`).
#![allow(unsafe_code)]

use multiproc_core::{Segment, codec};
use multiproc_pipe::{
    Address, AuthFailure, Client, ConnectError, Connection, Listener, Pipe, RecvError, SendError,
    Waitable, auth::Challenge, wait,
};
use multiproc_testkit::{
    Role, Trial, inherited_fds, open_fd_count, pattern, role, run, spawn, wait_timeout,
};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// Several tests count this process's open descriptors, so the tests of
/// this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Like `multiproc_testkit::tests!`, but each test holds [`SERIAL`].
macro_rules! serial_tests {
    ($($name:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($name), || {
            let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            $name();
            Ok(())
        })),*]
    };
}

fn child_conn() -> Connection {
    Connection::from_fd(inherited_fds().remove(0)).unwrap()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mp-pipe-{tag}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- child roles -------------------------------------------------------

/// Sends back every message it receives until end of file.
fn child_echo(_: &[String]) {
    let mut conn = child_conn();
    loop {
        match conn.recv_bytes() {
            Ok(msg) => conn.send_bytes(&msg).unwrap(),
            Err(RecvError::Eof) => return,
            Err(err) => panic!("echo: {err}"),
        }
    }
}

/// Frames of [`bursts_of_small_frames_after_large_ones_arrive_whole`]:
/// two large ones, then many empty ones (headers alone, so a read that
/// ends between frames ends between headers too).
fn burst_frames() -> Vec<Vec<u8>> {
    let mut frames = vec![pattern(300_000, 0), pattern(40_000, 1)];
    frames.resize(120_000, Vec::new());
    frames
}

/// Sends the first of [`burst_frames`], waits for "go", then writes all
/// the others with one `write`, as fast as the socket takes them.
fn child_burst_after_large(_: &[String]) {
    let mut conn = child_conn();
    let frames = burst_frames();
    conn.send_bytes(&frames[0]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"go");
    let mut stream = Vec::new();
    for frame in &frames[1..] {
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(frame);
    }
    let mut raw = std::fs::File::from(conn.into_fd());
    std::io::Write::write_all(&mut raw, &stream).unwrap();
}

/// The send buffer of `conn`'s socket, as `SO_SNDBUF` reads it.
fn send_buffer(conn: &Connection) -> usize {
    rustix::net::sockopt::socket_send_buffer_size(conn.as_fd()).unwrap()
}

/// Sends a 64 KiB frame, 15 small ones, one more small one and a large
/// one, then the send buffer it saw before and after each step.
fn child_send_buffer_steps(_: &[String]) {
    let conn = child_conn();
    let mut seen = vec![send_buffer(&conn)];
    conn.send_bytes(&pattern(64 * 1024, 0)).unwrap();
    seen.push(send_buffer(&conn));
    for i in 0..15 {
        conn.send_bytes(&pattern(100, i)).unwrap();
    }
    seen.push(send_buffer(&conn));
    conn.send_bytes(&pattern(100, 15)).unwrap();
    seen.push(send_buffer(&conn));
    conn.send(&pattern(300_000, 16)).unwrap();
    seen.push(send_buffer(&conn));
    conn.send(&seen).unwrap();
}

/// Sends `args[0]` numbered messages, then exits (closing its end).
fn child_send_then_exit(args: &[String]) {
    let conn = child_conn();
    let count: u32 = args[0].parse().unwrap();
    for i in 0..count {
        conn.send(&i).unwrap();
    }
}

/// Writes the hex bytes of `args[0]` raw, then exits.
fn child_write_raw(args: &[String]) {
    let fd = inherited_fds().remove(0);
    let bytes: Vec<u8> = (0..args[0].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&args[0][i..i + 2], 16).unwrap())
        .collect();
    rustix::io::write(&fd, &bytes).unwrap();
}

/// Sleeps `args[1]` ms, then sends `b"late"` on inherited connection
/// number `args[0]`; then waits for "bye" on it.
fn child_late_sender(args: &[String]) {
    let mut conns: Vec<Connection> = inherited_fds()
        .into_iter()
        .map(|fd| Connection::from_fd(fd).unwrap())
        .collect();
    let which: usize = args[0].parse().unwrap();
    let ms: u64 = args[1].parse().unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    conns[which].send_bytes(b"late").unwrap();
    assert_eq!(conns[which].recv_bytes().unwrap(), b"bye");
}

/// Receives a Connection and a Segment through the inherited connection,
/// checks the segment, writes into it, and reports through the received
/// connection.
fn child_receive_handles(_: &[String]) {
    let mut courier = child_conn();
    let (conn, segment): (Connection, Segment) = courier.recv().unwrap();
    let mut data = vec![0u8; 1000];
    segment.read_at(0, &mut data).unwrap();
    assert_eq!(data, pattern(1000, 0));
    segment.write_at(1000, b"child was here").unwrap();
    conn.send_bytes(b"hello through a passed connection")
        .unwrap();
    // The courier stays usable after a handle message.
    courier.send(&"done").unwrap();
}

/// Uses up every descriptor this process may open (a lowered
/// `RLIMIT_NOFILE`, its free slots filled), says `ready`, then receives a
/// value with a segment in it: the kernel drops the descriptor, and the
/// error must say so. With slots freed, the next one arrives whole.
fn child_receiver_out_of_fds(_: &[String]) {
    let mut conn = child_conn();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let nofile = rustix::process::Resource::Nofile;
    let maximum = rustix::process::getrlimit(nofile).maximum;
    // Two slots above the highest descriptor, so that at least two fillers
    // exist to be closed later even when the descriptors in use leave no gap.
    let limit = rustix::process::Rlimit {
        current: Some(highest + 3),
        maximum,
    };
    rustix::process::setrlimit(nofile, limit).unwrap();
    let mut filler = Vec::new();
    loop {
        match rustix::io::fcntl_dupfd_cloexec(&conn, 0) {
            Ok(fd) => filler.push(fd),
            Err(rustix::io::Errno::MFILE) => break,
            Err(err) => panic!("dup: {err}"),
        }
    }
    conn.send_bytes(b"ready").unwrap();
    let err = conn.recv::<(u32, Segment)>().unwrap_err();
    assert!(err.is_descriptors_dropped(), "{err:?}");
    let source = std::error::Error::source(&err).expect("the codec error");
    assert!(source.to_string().contains("descriptor"), "{source}");
    println!("typed error: {err}");
    // The frame was consumed whole: with room again, the next value comes
    // with its descriptor.
    filler.truncate(filler.len() - 2);
    let (n, segment) = conn.recv::<(u32, Segment)>().unwrap();
    let mut word = [0u8; 4];
    segment.read_at(0, &mut word).unwrap();
    assert_eq!((n, &word), (2, b"seg2"));
    println!("then received");
}

/// Restores the default SIGPIPE action, then writes to pipes and sockets
/// whose readers are gone. Dies of SIGPIPE unless the crate prevents it.
fn child_sigpipe(_: &[String]) {
    // (libc: rustix has no `signal`/`sigaction` outside its unstable
    // runtime module, and the crates only ever set "ignore".)
    // SAFETY: resetting a signal to its default action in a single-threaded
    // child before anything else runs; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (rx, tx) = Pipe::simplex().unwrap();
    drop(rx);
    let err = tx.send_bytes(b"into the void").unwrap_err();
    assert!(err.is_broken_pipe(), "{err:?}");

    // A pipe end that came in as a raw descriptor is covered too.
    // SAFETY: as above.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (raw_rx, raw_tx) = rustix::pipe::pipe().unwrap();
    let tx = Connection::from_fd(raw_tx).unwrap();
    drop(raw_rx);
    assert!(tx.send_bytes(&[1; 100_000]).unwrap_err().is_broken_pipe());

    let (a, b) = Pipe::new().unwrap();
    drop(b);
    assert!(a.send_bytes(b"x").unwrap_err().is_broken_pipe());
    println!("survived");
}

/// Turns the crate's SIGPIPE handling off, restores the default action,
/// then writes to a socket (survives: `MSG_NOSIGNAL`) and to a pipe whose
/// readers are gone (dies of SIGPIPE).
fn child_sigpipe_left_alone(_: &[String]) {
    multiproc_pipe::set_ignore_sigpipe(false);
    // SAFETY: as in `child_sigpipe`.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (a, b) = Pipe::new().unwrap();
    drop(b);
    assert!(a.send_bytes(b"x").unwrap_err().is_broken_pipe());
    println!("socket survived");
    let (rx, tx) = Pipe::simplex().unwrap();
    drop(rx);
    let outcome = tx.send_bytes(b"into the void");
    println!("pipe survived: {outcome:?}");
}

/// Connects to `args[0]` with key `args[1]` ("-" for none), sends "hi"
/// and echoes one message; prints the outcome.
fn child_client(args: &[String]) {
    let address: Address = args[0].parse().unwrap();
    let key = (args[1] != "-").then(|| args[1].as_bytes());
    match Client::connect(address, key) {
        Ok(mut conn) => {
            conn.send_bytes(b"hi").unwrap();
            let msg = conn.recv_bytes().unwrap();
            conn.send_bytes(&msg).unwrap();
            println!("connected");
        }
        Err(ConnectError::Authentication(err)) => println!("auth error: {err}"),
        Err(err) => println!("other error: {err}"),
    }
}

/// Limits its address space to 512 MiB, receives one large frame (so the
/// next one takes the large-message path), then a header announcing about
/// 1 GiB followed by 3 bytes and end of file (it says `ready` in between). `args[0]`: `bytes` or `into`
/// (`recv_bytes` or `recv_bytes_into`), `args[1]`: the header length sent
/// (4 or 12). The truncated frame must be a typed error, not an abort.
fn child_reader_under_rlimit(args: &[String]) {
    let limit = rustix::process::Rlimit {
        current: Some(RLIMIT_AS_BYTES),
        maximum: Some(RLIMIT_AS_BYTES),
    };
    rustix::process::setrlimit(rustix::process::Resource::As, limit).unwrap();
    let mut conn = child_conn();
    let header_len: u64 = args[1].parse().unwrap();
    let mut dst = vec![0u8; 40_000];
    let err = if args[0] == "into" {
        assert_eq!(conn.recv_bytes_into(&mut dst).unwrap(), 40_000);
        assert_eq!(dst, pattern(40_000, 0));
        conn.send_bytes(b"ready").unwrap();
        conn.recv_bytes_into(&mut dst).unwrap_err()
    } else {
        assert_eq!(conn.recv_bytes().unwrap(), pattern(40_000, 0));
        conn.send_bytes(b"ready").unwrap();
        conn.recv_bytes().unwrap_err()
    };
    assert!(
        matches!(
            err,
            RecvError::Truncated { expected, received }
                if expected == header_len + HUGE_ANNOUNCED && received == header_len + 3
        ),
        "{err:?}"
    );
    println!("typed error: {err}");
}

/// Frame sizes [`child_write_in_pieces`] sends: around the 32 KiB edge of
/// the read-ahead buffer and past 64 KiB.
const PIECE_SIZES: [usize; 7] = [
    5,
    32 * 1024 - 4,
    32 * 1024 - 3,
    32 * 1024 + 1,
    70_000,
    0,
    200_000,
];

/// Writes every length of [`PIECE_SIZES`] as a frame of `pattern(len, 0)`,
/// in pieces with pauses: the header split in two writes, the payload in
/// chunks. On `duplex`, then echoes one message (read after a pause, so
/// the parent's send meets a full socket buffer).
fn child_write_in_pieces(args: &[String]) {
    fn write_all(fd: &OwnedFd, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = rustix::io::write(fd, bytes).unwrap();
            bytes = &bytes[n..];
        }
    }
    let pause = || std::thread::sleep(Duration::from_millis(3));
    let fd = inherited_fds().remove(0);
    for (k, len) in PIECE_SIZES.into_iter().enumerate() {
        let header = (len as u32).to_be_bytes();
        let payload = pattern(len, 0);
        let split = 1 + k % 3;
        write_all(&fd, &header[..split]);
        pause();
        write_all(&fd, &header[split..]);
        pause();
        for chunk in payload.chunks(9_000) {
            write_all(&fd, chunk);
            pause();
        }
    }
    if args[0] == "duplex" {
        let mut conn = Connection::from_fd(fd).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let msg = conn.recv_bytes().unwrap();
        conn.send_bytes(&msg).unwrap();
    }
}

/// Sleeps (so the sender fills the socket), then receives `args[0]`
/// `(Segment, payload)` messages, checks each and its working descriptor,
/// and finally sends "done" after a pause.
fn child_slow_handles(args: &[String]) {
    let mut conn = child_conn();
    let count: u64 = args[0].parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = open_fd_count();
    for k in 0..count {
        let (segment, payload): (Segment, Vec<u8>) = conn.recv().unwrap();
        let mut mark = [0u8; 8];
        segment.read_at(0, &mut mark).unwrap();
        assert_eq!(u64::from_ne_bytes(mark), k, "segment of message {k}");
        assert!(
            payload == pattern(TRY_SEND_LEN, k),
            "payload of message {k}"
        );
    }
    // Every descriptor came once, with its own message: none is left over.
    assert_eq!(open_fd_count(), before);
    std::thread::sleep(Duration::from_millis(200));
    conn.send_bytes(b"done").unwrap();
}

/// Payload size of [`try_send_keeps_partial_frames_and_sends_descriptors_once`]:
/// far more than a socket buffer.
const TRY_SEND_LEN: usize = 2 << 20;

/// Connects to `args[0]` with a plain socket and says nothing until its
/// stdin closes.
fn child_silent_client(args: &[String]) {
    let address: Address = args[0].parse().unwrap();
    let _socket: Box<dyn std::any::Any> = match address {
        Address::Tcp(addr) => Box::new(std::net::TcpStream::connect(addr).unwrap()),
        Address::Unix(path) => Box::new(std::os::unix::net::UnixStream::connect(path).unwrap()),
        Address::Abstract(_) => panic!("not used"),
    };
    println!("connected");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest).unwrap();
}

// ---- tests -------------------------------------------------------------

fn bytes_round_trip_through_a_child_at_edge_sizes() {
    for duplex in [true, false] {
        let (mut ours, theirs, extra) = if duplex {
            let (a, b) = Pipe::new().unwrap();
            (a, b, None)
        } else {
            // Two simplex pipes: ours reads one, the child's echo writes it.
            let (rx, child_tx) = Pipe::simplex().unwrap();
            let (child_rx, tx) = Pipe::simplex().unwrap();
            (rx, child_rx, Some((tx, child_tx)))
        };
        let sizes = [
            0usize,
            1,
            7,
            4096,
            65_532,
            65_536,
            65_537,
            1 << 20,
            16 << 20,
        ];
        let mut child = match &extra {
            None => spawn(role!(child_echo), &[], &[theirs.as_fd()]).unwrap(),
            Some((_, child_tx)) => spawn(
                role!(child_echo_split),
                &[],
                &[theirs.as_fd(), child_tx.as_fd()],
            )
            .unwrap(),
        };
        drop(theirs);
        let sender = match extra {
            None => None,
            Some((tx, child_tx)) => {
                drop(child_tx);
                Some(tx)
            }
        };
        for &size in &sizes {
            let payload = pattern(size, 0);
            match &sender {
                None => ours.send_bytes(&payload).unwrap(),
                Some(tx) => tx.send_bytes(&payload).unwrap(),
            }
            let back = ours.recv_bytes().unwrap();
            assert_eq!(back.len(), size, "duplex={duplex}");
            assert!(back == payload, "payload {size} came back altered");
        }
        // recv_bytes_into with exact and short buffers.
        let mut buf = vec![0u8; 65_536];
        let payload = pattern(65_536, 0);
        match &sender {
            None => ours.send_bytes(&payload).unwrap(),
            Some(tx) => tx.send_bytes(&payload).unwrap(),
        }
        assert_eq!(ours.recv_bytes_into(&mut buf).unwrap(), 65_536);
        assert!(buf == payload);
        let payload = pattern(65_537, 0);
        match &sender {
            None => ours.send_bytes(&payload).unwrap(),
            Some(tx) => tx.send_bytes(&payload).unwrap(),
        }
        let err = ours.recv_bytes_into(&mut buf).unwrap_err();
        assert!(err.is_buffer_too_short());
        assert!(err.into_message().unwrap() == payload);
        match sender {
            None => drop(ours.into_fd()),
            Some(tx) => drop(tx),
        }
        assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    }
}

/// Typed values whose sizes rise and fall (so the connection's kept send
/// and receive buffers are reused, outgrown and dropped) come back whole
/// through a child that echoes the bytes; a `Serialize` impl that sends on
/// the connection while it is being encoded gets a buffer of its own.
fn typed_values_of_changing_sizes_round_trip_through_a_child() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Frame {
        id: u64,
        samples: Vec<f64>,
        label: String,
    }
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut child = spawn(role!(child_echo), &[], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    for (i, len) in [10usize, 70_000, (1 << 20) + 3, 100_000, 5 << 20, 5, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let bytes = pattern(len, i as u64);
        ours.send(&bytes).unwrap();
        assert!(ours.recv::<Vec<u8>>().unwrap() == bytes, "Vec<u8> of {len}");
        let frame = Frame {
            id: i as u64,
            samples: (0..len / 8).map(|k| k as f64 * 0.5).collect(),
            label: "x".repeat(len % 1000),
        };
        ours.send(&frame).unwrap();
        assert_eq!(ours.recv::<Frame>().unwrap(), frame, "Frame of {len}");
    }

    /// Sends a message of its own on the connection while it is encoded.
    struct SendsWhileEncoded<'a>(&'a Connection);
    impl serde::Serialize for SendsWhileEncoded<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.send(&"inner").map_err(serde::ser::Error::custom)?;
            s.serialize_str("outer")
        }
    }
    ours.send(&SendsWhileEncoded(&ours)).unwrap();
    assert_eq!(ours.recv::<String>().unwrap(), "inner");
    assert_eq!(ours.recv::<String>().unwrap(), "outer");
    drop(ours.into_fd());
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn child_echo_split(_: &[String]) {
    let mut fds = inherited_fds();
    let tx = Connection::from_fd(fds.remove(1)).unwrap();
    let mut rx = Connection::from_fd(fds.remove(0)).unwrap();
    assert!(!rx.is_writable() && !tx.is_readable());
    loop {
        match rx.recv_bytes() {
            Ok(msg) => tx.send_bytes(&msg).unwrap(),
            Err(RecvError::Eof) => return,
            Err(err) => panic!("echo: {err}"),
        }
    }
}

fn eof_after_the_peer_exits() {
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut child = spawn(role!(child_send_then_exit), &["50"], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    for i in 0..50u32 {
        assert_eq!(ours.recv::<u32>().unwrap(), i);
    }
    assert!(ours.recv::<u32>().unwrap_err().is_eof());
    // And again: end of file is sticky.
    assert!(ours.recv_bytes().unwrap_err().is_eof());
    assert!(ours.poll(Some(Duration::ZERO)).unwrap());
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn close_is_seen_as_eof() {
    let (mut a, b) = Pipe::new().unwrap();
    b.send_bytes(b"before close").unwrap();
    b.close();
    assert_eq!(a.recv_bytes().unwrap(), b"before close");
    assert!(a.recv_bytes().unwrap_err().is_eof());
    let (mut rx, tx) = Pipe::simplex().unwrap();
    tx.close();
    assert!(rx.recv_bytes().unwrap_err().is_eof());
}

/// Feeds raw bytes from a child and returns what `recv_bytes` says.
fn raw_from_child(hex: &str, max: usize) -> (Connection, Result<Vec<u8>, RecvError>) {
    let (ours, theirs) = Pipe::new().unwrap();
    let mut ours = ours;
    ours.set_max_message_len(max);
    let mut child = spawn(role!(child_write_raw), &[hex], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    let result = ours.recv_bytes();
    (ours, result)
}

/// Address-space limit of [`child_reader_under_rlimit`].
const RLIMIT_AS_BYTES: u64 = 512 << 20;
/// Payload length announced to it: under the default 1 GiB message limit,
/// over its address-space limit.
const HUGE_ANNOUNCED: u64 = (1 << 30) - 16;

/// A peer that announces a huge (permitted) length and sends 3 bytes must
/// cost what it sent: the receiver reserves memory as data arrives, not
/// as the header claims, even right after a large frame.
fn announced_length_is_not_reserved_before_data_arrives() {
    for (mode, header_len) in [("bytes", 4), ("into", 4), ("bytes", 12), ("into", 12)] {
        let (ours, theirs) = Pipe::new().unwrap();
        let mut child = multiproc_testkit::command(
            role!(child_reader_under_rlimit),
            &[mode, &header_len.to_string()],
            &[theirs.as_fd()],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        drop(theirs);
        let mut ours = ours;
        ours.send_bytes(&pattern(40_000, 0)).unwrap();
        // The header goes out only once the large frame was consumed, so
        // that it arrives alone.
        assert_eq!(ours.recv_bytes().unwrap(), b"ready");
        let mut raw = Vec::new();
        if header_len == 4 {
            raw.extend_from_slice(&u32::try_from(HUGE_ANNOUNCED).unwrap().to_be_bytes());
        } else {
            raw.extend_from_slice(&[0xff; 4]);
            raw.extend_from_slice(&HUGE_ANNOUNCED.to_be_bytes());
        }
        raw.extend_from_slice(b"abc");
        rustix::io::write(&ours, &raw).unwrap();
        drop(ours);
        let status = wait_timeout(&mut child, CHILD_LIMIT);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert!(
            status.success(),
            "{mode}, {header_len}-byte header: child ended with {status:?}, output {out:?}"
        );
        assert!(out.contains("typed error: "), "{out:?}");
    }
}

/// Starts [`child_silent_client`] against `address` and waits until it has
/// connected.
fn spawn_silent_client(address: &Address) -> std::process::Child {
    let mut child =
        multiproc_testkit::command(role!(child_silent_client), &[&address.to_string()], &[])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "connected\n");
    child
}

/// A client process that connects and says nothing: by default `accept`
/// waits for it as Python's does; with a handshake timeout it fails with a
/// typed timeout, and the next, well-behaved client is served.
fn handshake_timeout_drops_a_silent_client() {
    let dir = temp_dir("handshake-timeout");
    for address in [
        "127.0.0.1:0".parse::<Address>().unwrap(),
        Address::Unix(dir.join("l.sock")),
    ] {
        // Default: no limit. accept is still waiting after 500 ms and
        // ends only when the silent client hangs up.
        let listener = Listener::bind(&address, Some(b"key")).unwrap();
        assert_eq!(listener.handshake_timeout(), None);
        let bound = listener.address().clone();
        let mut silent = spawn_silent_client(&bound);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let result = listener.accept().map(drop);
            done_tx.send(()).unwrap();
            result
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "accept without a handshake timeout returned on a silent client"
        );
        drop(silent.stdin.take());
        assert!(wait_timeout(&mut silent, CHILD_LIMIT).success());
        // Closing with our challenge unread resets a TCP connection.
        let ended = waiter.join().unwrap().unwrap_err();
        assert!(
            matches!(&ended, ConnectError::Eof)
                || matches!(&ended, ConnectError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{ended:?}"
        );

        // With a 200 ms handshake timeout.
        let timeout = Duration::from_millis(200);
        let listener = Listener::bind(&address, Some(b"key"))
            .unwrap()
            .with_handshake_timeout(Some(timeout));
        let bound = listener.address().clone();
        let mut silent = spawn_silent_client(&bound);
        let started = Instant::now();
        let err = listener.accept().unwrap_err();
        let waited = started.elapsed();
        assert!(err.is_timeout(), "{err:?}");
        assert!(matches!(err, ConnectError::HandshakeTimeout(t) if t == timeout));
        assert_eq!(err.to_string(), "handshake timed out after 200ms");
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::TimedOut
        );
        assert!(
            waited >= timeout && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        drop(silent.stdin.take());
        assert!(wait_timeout(&mut silent, CHILD_LIMIT).success());

        // A well-behaved client afterwards is accepted and talks; the
        // timeout no longer applies to the accepted connection.
        let mut client =
            multiproc_testkit::command(role!(child_client), &[&bound.to_string(), "key"], &[])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        let mut conn = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(conn.recv_bytes().unwrap(), b"hi");
        conn.send_bytes(b"after the timeout").unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"after the timeout");
        assert!(wait_timeout(&mut client, CHILD_LIMIT).success());
        let mut out = String::new();
        std::io::Read::read_to_string(&mut client.stdout.take().unwrap(), &mut out).unwrap();
        assert_eq!(out, "connected\n");
        let _ = std::fs::remove_file(dir.join("l.sock"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn malformed_frames_are_typed_errors() {
    // A length over the limit: refused without allocating 2 GiB.
    let (_, result) = raw_from_child("7fffffff00", 1 << 20);
    assert!(matches!(
        result,
        Err(RecvError::BadMessageLength {
            claimed: 0x7fff_ffff,
            max: 0x10_0000
        })
    ));
    // The 8-byte form claiming 2^64 - 1.
    let (_, result) = raw_from_child("ffffffffffffffffffffffff", 1 << 20);
    assert!(result.unwrap_err().is_bad_message_length());
    // A negative length (-2 and -3 start tokens and pieces here, -4 is a
    // doorbell).
    let (_, result) = raw_from_child("fffffffb", 1 << 20);
    assert!(matches!(
        result,
        Err(RecvError::BadMessageLength { claimed: -5, .. })
    ));
    // Doorbells carry no message: skipped, before a frame or the end.
    let (mut conn, result) = raw_from_child("fffffffcfffffffc0000000568656c6c6ffffffffc", 1 << 20);
    assert_eq!(result.unwrap(), b"hello");
    assert!(conn.recv_bytes().unwrap_err().is_eof());
    // -3 starts a piece: a token whose message goes on in the next frame.
    // A piece of 16 bytes at the ring's start, then an ordinary frame as
    // the message's last part: one message of both.
    let piece = "fffffffd00000000000000100000000000000010";
    let (mut conn, result) = raw_from_child(&format!("{piece}0000000568656c6c6f"), 1 << 20);
    let mut expected = vec![0u8; 16];
    expected.extend_from_slice(b"hello");
    assert_eq!(result.unwrap(), expected);
    assert!(conn.recv_bytes().unwrap_err().is_eof());
    // A piece and then the end: a message cut short.
    let (_, result) = raw_from_child(piece, 1 << 20);
    assert!(
        matches!(
            result,
            Err(RecvError::Truncated {
                expected: 17,
                received: 16
            })
        ),
        "{result:?}"
    );
    // Pieces that add up to more than the limit are refused.
    let (_, result) = raw_from_child(&format!("{piece}{piece}{piece}"), 40);
    assert!(
        matches!(
            result,
            Err(RecvError::BadMessageLength {
                claimed: 16,
                max: 8
            })
        ),
        "{result:?}"
    );
    // A piece naming bytes outside the ring, like such a token.
    let (mut conn, result) = raw_from_child(
        "fffffffd000000000000001000000000000000200000000568656c6c6f",
        1 << 20,
    );
    assert!(
        matches!(result, Err(RecvError::BadLaneToken { .. })),
        "{result:?}"
    );
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    // Between the ends of a `Pipe::new` pair, -2 starts a token naming a
    // payload in shared memory: one that names bytes outside the ring
    // (ending before it starts, or past the ring's end) is refused and
    // consumed, and the frame after it arrives.
    for token in [
        "fffffffe00000000000000100000000000000020",
        "fffffffe00000000004000100000000000100000",
    ] {
        let (mut conn, result) = raw_from_child(&format!("{token}0000000568656c6c6f"), 1 << 20);
        assert!(
            matches!(result, Err(RecvError::BadLaneToken { .. })),
            "{result:?}"
        );
        assert_eq!(conn.recv_bytes().unwrap(), b"hello");
        assert!(conn.recv_bytes().unwrap_err().is_eof());
    }
    // A token over the limit is refused like any length, and stays unread.
    let (mut conn, result) = raw_from_child("fffffffe00000000000100000000000000010000", 100);
    assert!(matches!(
        result,
        Err(RecvError::BadMessageLength {
            claimed: 0x1_0000,
            max: 100
        })
    ));
    assert!(conn.recv_bytes().unwrap_err().is_bad_message_length());
    // A token cut short.
    let (_, result) = raw_from_child("fffffffe0000", 1 << 20);
    assert!(matches!(
        result,
        Err(RecvError::Truncated {
            expected: 20,
            received: 6
        })
    ));
    // The 8-byte form is accepted for small payloads too.
    let (mut conn, result) = raw_from_child("ffffffff000000000000000568656c6c6f", 100);
    assert_eq!(result.unwrap(), b"hello");
    assert!(conn.recv_bytes().unwrap_err().is_eof());
    // Truncated inside the payload, inside the header, inside a large payload.
    let (_, result) = raw_from_child("0000000a0102", 100);
    assert!(matches!(
        result,
        Err(RecvError::Truncated {
            expected: 14,
            received: 6
        })
    ));
    let (_, result) = raw_from_child("0000", 100);
    assert!(matches!(result, Err(RecvError::Truncated { .. })));
    let (_, result) = raw_from_child("3fffffff0102", usize::MAX);
    assert!(matches!(
        result,
        Err(RecvError::Truncated { received: 6, .. })
    ));
}

fn garbage_to_recv_leaves_the_connection_usable() {
    // Child writes: a frame of garbage, then a valid frame holding 42u32.
    let valid = codec::encode(&42u32).unwrap();
    let mut hex = String::from("00000003ffffff");
    hex.push_str(&format!("{:08x}", valid.len()));
    for b in &valid {
        hex.push_str(&format!("{b:02x}"));
    }
    let (ours, theirs) = Pipe::new().unwrap();
    let mut ours = ours;
    let mut child = spawn(role!(child_write_raw), &[&hex], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    assert!(matches!(
        ours.recv::<(u64, String)>(),
        Err(RecvError::Codec(_))
    ));
    assert_eq!(ours.recv::<u32>().unwrap(), 42);
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn poll_times_out_then_sees_a_late_message() {
    let (mut ours, theirs) = Pipe::new().unwrap();
    for ms in [0u64, 30, 100] {
        let start = Instant::now();
        assert!(!ours.poll(Some(Duration::from_millis(ms))).unwrap());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(ms), "early: {took:?}");
        assert!(took < Duration::from_millis(ms + 500), "late: {took:?}");
    }
    let mut child = spawn(role!(child_late_sender), &["0", "100"], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    let start = Instant::now();
    assert!(ours.poll(Some(Duration::from_secs(10))).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(ours.recv_bytes().unwrap(), b"late");
    ours.send_bytes(b"bye").unwrap();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    // A simplex sender cannot be polled.
    let (_rx, tx) = Pipe::simplex().unwrap();
    assert!(tx.poll(Some(Duration::ZERO)).is_err());
}

fn wait_returns_the_ready_ones_among_many() {
    let pairs: Vec<(Connection, Connection)> = (0..4).map(|_| Pipe::new().unwrap()).collect();
    let (mut ours, theirs): (Vec<Connection>, Vec<Connection>) = pairs.into_iter().unzip();
    let fds: Vec<_> = theirs.iter().map(AsFd::as_fd).collect();
    let mut child = spawn(role!(child_late_sender), &["2", "100"], &fds).unwrap();
    drop(theirs);
    // Nothing yet.
    let start = Instant::now();
    assert!(
        wait(&ours, Some(Duration::from_millis(20)))
            .unwrap()
            .is_empty()
    );
    assert!(start.elapsed() >= Duration::from_millis(20));
    // The child speaks on number 2 only.
    assert_eq!(wait(&ours, Some(Duration::from_secs(10))).unwrap(), vec![2]);
    // A raw descriptor in the mix, ready at once.
    let (pipe_rx, pipe_tx) = rustix::pipe::pipe().unwrap();
    rustix::io::write(&pipe_tx, b"!").unwrap();
    {
        let mixed: Vec<&dyn Waitable> = vec![&ours[0], &ours[2], &pipe_rx];
        assert_eq!(wait(&mixed, None).unwrap(), vec![1, 2]);
    }
    assert_eq!(ours[2].recv_bytes().unwrap(), b"late");
    ours[2].send_bytes(b"bye").unwrap();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    // The child is gone: every connection reports end of file as ready.
    assert_eq!(
        wait(&ours, Some(Duration::from_secs(5))).unwrap(),
        vec![0, 1, 2, 3]
    );
    let _: OwnedFd = pipe_tx;
}

fn wait_counts_messages_already_read_ahead() {
    let (mut rx, tx) = Pipe::new().unwrap();
    let (other, _other_tx) = Pipe::new().unwrap();
    tx.send_bytes(b"one").unwrap();
    tx.send_bytes(b"two").unwrap();
    // Both frames arrive in one read; the second waits in our buffer, where
    // poll(2) cannot see it.
    assert_eq!(rx.recv_bytes().unwrap(), b"one");
    assert!(rx.has_buffered());
    assert_eq!(
        wait(&[&rx, &other], Some(Duration::from_millis(10))).unwrap(),
        vec![0]
    );
    assert!(rx.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(rx.recv_bytes().unwrap(), b"two");
    assert!(!rx.poll(Some(Duration::ZERO)).unwrap());
}

fn a_connection_and_a_segment_pass_to_a_child() {
    let (courier, courier_child) = Pipe::new().unwrap();
    let mut courier = courier;
    let mut child = spawn(role!(child_receive_handles), &[], &[courier_child.as_fd()]).unwrap();
    drop(courier_child);
    let (mut here, there) = Pipe::new().unwrap();
    let segment = Segment::anonymous(4096).unwrap();
    segment.write_at(0, &pattern(1000, 0)).unwrap();
    let fds_before = open_fd_count();
    courier.send(&(&there, &segment)).unwrap();
    assert_eq!(open_fd_count(), fds_before, "sending leaked a duplicate");
    drop(there);
    assert_eq!(
        here.recv_bytes().unwrap(),
        b"hello through a passed connection"
    );
    assert_eq!(courier.recv::<String>().unwrap(), "done");
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    let mut note = [0u8; 14];
    segment.read_at(1000, &mut note).unwrap();
    assert_eq!(&note, b"child was here");
    // The child exited: the passed connection's last holder is gone.
    assert!(here.recv_bytes().unwrap_err().is_eof());
}

fn a_large_frame_raises_the_send_buffer_and_a_run_of_small_ones_puts_it_back() {
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut child = spawn(role!(child_send_buffer_steps), &[], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    assert!(ours.recv_bytes().unwrap() == pattern(64 * 1024, 0));
    for i in 0..16 {
        assert!(
            ours.recv_bytes().unwrap() == pattern(100, i),
            "small frame {i}"
        );
    }
    assert!(ours.recv::<Vec<u8>>().unwrap() == pattern(300_000, 16));
    let seen: Vec<usize> = ours.recv().unwrap();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    let [
        made,
        after_large,
        after_15_small,
        after_16_small,
        after_large_again,
    ] = seen[..]
    else {
        panic!("five sizes, got {seen:?}");
    };
    if made >= 1 << 20 {
        // Large enough as made: left alone throughout.
        assert!(seen.iter().all(|&s| s == made), "{seen:?}");
        return;
    }
    assert!(after_large > made, "{seen:?}");
    assert_eq!(after_15_small, after_large, "{seen:?}");
    assert_eq!(after_16_small, made, "{seen:?}");
    assert_eq!(after_large_again, after_large, "{seen:?}");
}

fn bursts_of_small_frames_after_large_ones_arrive_whole() {
    // After a large frame, the next receive reads its header and what
    // follows in one go, into the caller's buffer (`recv_bytes_into`) or a
    // new vector (`recv_bytes`): a read that brings a large frame and a
    // burst of small ones behind it leaves far more than the read-ahead
    // buffer holds, which it keeps, and refills.
    let frames = burst_frames();
    for into in [true, false] {
        let (mut ours, theirs) = Pipe::new().unwrap();
        let mut child = spawn(role!(child_burst_after_large), &[], &[theirs.as_fd()]).unwrap();
        drop(theirs);
        let mut buf = vec![0u8; 400_000];
        let mut receive = |conn: &mut Connection| {
            if into {
                let n = conn.recv_bytes_into(&mut buf).unwrap();
                buf[..n].to_vec()
            } else {
                conn.recv_bytes().unwrap()
            }
        };
        assert!(receive(&mut ours) == frames[0]);
        ours.send_bytes(b"go").unwrap();
        // Let the child fill the socket.
        std::thread::sleep(Duration::from_millis(200));
        for (k, frame) in frames.iter().enumerate().skip(1) {
            assert!(receive(&mut ours) == *frame, "frame {k}, into: {into}");
            if k == 1 {
                // Let the child fill the socket again: the next read then
                // fills all the room the buffer has.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(ours.recv_bytes().unwrap_err().is_eof());
        assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    }
}

fn received_descriptors_go_to_their_own_message() {
    // Several handle messages and plain frames back to back: each handle
    // must land on its own message, and unclaimed descriptors must close.
    let (mut rx, tx) = Pipe::new().unwrap();
    let segments: Vec<Segment> = (0..3)
        .map(|i| {
            let s = Segment::anonymous(64).unwrap();
            s.write_at(0, &[i as u8 + 1]).unwrap();
            s
        })
        .collect();
    let before = open_fd_count();
    tx.send(&segments[0]).unwrap();
    tx.send_bytes(b"plain").unwrap();
    tx.send(&segments[1]).unwrap();
    tx.send(&(&segments[2], "pair")).unwrap();
    tx.send(&7u8).unwrap();
    let first: Segment = rx.recv().unwrap();
    // Read a handle message as bytes: its descriptor must be closed, not
    // handed to the next message.
    assert_eq!(rx.recv_bytes().unwrap(), b"plain");
    let skipped = rx.recv_bytes().unwrap();
    assert!(!skipped.is_empty());
    let (third, word): (Segment, String) = rx.recv().unwrap();
    assert_eq!(rx.recv::<u8>().unwrap(), 7);
    let mut b = [0u8];
    first.read_at(0, &mut b).unwrap();
    assert_eq!(b, [1]);
    third.read_at(0, &mut b).unwrap();
    assert_eq!((b, word.as_str()), ([3], "pair"));
    assert_eq!(open_fd_count(), before + 2, "a received descriptor leaked");
    drop((first, third));
    assert_eq!(open_fd_count(), before);
}

fn descriptors_ride_with_large_messages() {
    // Large frames take the scatter-read path; handles inside them must
    // still reach their own message.
    let (mut rx, tx) = Pipe::new().unwrap();
    let before = open_fd_count();
    let sender = std::thread::spawn(move || {
        for i in 0..6u8 {
            let segment = Segment::anonymous(64).unwrap();
            segment.write_at(0, &[i]).unwrap();
            tx.send(&(segment, vec![i; 50_000 + usize::from(i) * 1000]))
                .unwrap();
            tx.send_bytes(&vec![i; 60_000]).unwrap();
        }
    });
    for i in 0..6u8 {
        let (segment, bulk): (Segment, Vec<u8>) = rx.recv().unwrap();
        let mut b = [0u8];
        segment.read_at(0, &mut b).unwrap();
        assert_eq!(b, [i]);
        assert!(bulk.len() == 50_000 + usize::from(i) * 1000 && bulk.iter().all(|&x| x == i));
        assert!(rx.recv_bytes().unwrap() == vec![i; 60_000]);
    }
    sender.join().unwrap();
    assert_eq!(open_fd_count(), before - 1, "a descriptor leaked");
}

fn stray_descriptors_are_closed_not_misdelivered() {
    // A foreign sender attaches a descriptor in the middle of a frame. It
    // belongs to no frame start, so it must be closed, not handed to the
    // next message (which asks for a descriptor it was not sent with).
    let before = open_fd_count();
    let (mut rx, tx) = Pipe::new().unwrap();
    let raw = tx.into_fd();
    let (stray, _keep) = rustix::pipe::pipe().unwrap();
    let (bytes, fds) = codec::encode_with_fds(&multiproc_core::SharedFd::from(
        rustix::io::fcntl_dupfd_cloexec(&stray, 0).unwrap(),
    ))
    .unwrap();
    drop(fds);
    let sender = std::thread::spawn(move || {
        multiproc_core::scm::send_all(&raw, &[0, 0, 0, 6, b'a', b'b', b'c'], &[]).unwrap();
        // Let the receiver read the first part on its own.
        std::thread::sleep(Duration::from_millis(50));
        multiproc_core::scm::send_all(&raw, b"def", &[stray.as_fd()]).unwrap();
        drop(stray);
        let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&bytes);
        multiproc_core::scm::send_all(&raw, &frame, &[]).unwrap();
        raw
    });
    assert_eq!(rx.recv_bytes().unwrap(), b"abcdef");
    let err = rx.recv::<multiproc_core::SharedFd>().unwrap_err();
    assert!(matches!(err, RecvError::Codec(_)), "{err:?}");
    let raw = sender.join().unwrap();
    drop((rx, raw, _keep));
    assert_eq!(open_fd_count(), before, "the stray descriptor leaked");
}

fn descriptors_the_receiver_cannot_take_are_a_typed_error() {
    let (mut courier, theirs) = Pipe::new().unwrap();
    let child =
        multiproc_testkit::command(role!(child_receiver_out_of_fds), &[], &[theirs.as_fd()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    drop(theirs);
    assert_eq!(courier.recv_bytes().unwrap(), b"ready");
    for (n, tag) in [(1u32, b"seg1"), (2, b"seg2")] {
        let segment = Segment::anonymous(64).unwrap();
        segment.write_at(0, tag).unwrap();
        courier.send(&(n, &segment)).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("typed error: descriptors sent with the message were dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("then received"), "{stdout}");
}

fn simplex_and_tcp_refuse_descriptors() {
    let segment = Segment::anonymous(64).unwrap();
    let (_rx, tx) = Pipe::simplex().unwrap();
    let err = tx.send(&segment).unwrap_err();
    assert!(err.is_descriptors_unsupported(), "{err:?}");
    assert!(err.to_string().contains("cannot carry"));
    let (a, _b) = Pipe::new().unwrap();
    assert!(tx.send(&a).unwrap_err().is_descriptors_unsupported());

    let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), None).unwrap();
    let client = Client::connect(listener.address(), None).unwrap();
    let mut server = listener.accept().unwrap();
    assert!(!client.carries_descriptors());
    assert!(
        client
            .send(&segment)
            .unwrap_err()
            .is_descriptors_unsupported()
    );
    // Plain values still work on TCP.
    client.send(&("tcp", 1u8)).unwrap();
    assert_eq!(server.recv::<(String, u8)>().unwrap(), ("tcp".into(), 1));
}

fn writing_to_a_closed_peer_is_an_error_not_sigpipe() {
    let out = multiproc_testkit::command(role!(child_sigpipe), &[], &[])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "child killed by signal: {:?}",
        out.status
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survived");
}

fn set_ignore_sigpipe_false_leaves_the_default_action_alone() {
    let out = multiproc_testkit::command(role!(child_sigpipe_left_alone), &[], &[])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "socket survived"
    );
}

fn listener_and_client_across_processes_all_families() {
    let dir = temp_dir("families");
    let addresses = [
        Address::Unix(dir.join("l.sock")),
        Address::Abstract(format!("mp-pipe-test-{}", std::process::id()).into_bytes()),
        "127.0.0.1:0".parse().unwrap(),
    ];
    for address in addresses {
        let listener = Listener::bind(address.clone(), Some(b"key")).unwrap();
        let target = listener.address().to_string();
        let child = multiproc_testkit::command(role!(child_client), &[&target, "key"], &[])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = listener.accept().unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hi");
        conn.send_bytes(&pattern(100_000, 0)).unwrap();
        assert!(conn.recv_bytes().unwrap() == pattern(100_000, 0));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "connected");
        if let Address::Unix(path) = &address {
            assert!(path.exists());
            drop(listener);
            assert!(!path.exists(), "listener left its socket file");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn ipv6_loopback_works_when_available() {
    let Ok(listener) = Listener::bind("[::1]:0".parse::<Address>().unwrap(), Some(b"six")) else {
        println!("no IPv6 loopback here; skipping the [::1] case");
        return;
    };
    let address = listener.address().clone();
    let peer = std::thread::spawn(move || {
        let mut c = Client::connect(address, Some(b"six")).unwrap();
        c.send_bytes(b"v6").unwrap();
        c.recv_bytes().unwrap()
    });
    let mut conn = listener.accept().unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"v6");
    conn.send_bytes(b"ok").unwrap();
    assert_eq!(peer.join().unwrap(), b"ok");
}

fn wrong_authkey_fails_on_both_sides() {
    for challenge in [Challenge::Legacy, Challenge::default()] {
        let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), Some(b"right"))
            .unwrap()
            .with_challenge(challenge);
        let target = listener.address().to_string();
        let child = multiproc_testkit::command(role!(child_client), &[&target, "wrong"], &[])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = listener.accept().unwrap_err();
        assert!(
            matches!(&err, ConnectError::Authentication(a) if a.reason() == &AuthFailure::DigestWrong),
            "{err:?}"
        );
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "auth error: digest sent was rejected"
        );
        // The listener still works for a client with the key.
        let target2 = target.clone();
        let good = std::thread::spawn(move || {
            Client::connect(target2.parse::<Address>().unwrap(), Some(b"right")).map(|_| ())
        });
        listener.accept().unwrap();
        good.join().unwrap().unwrap();
    }
    // A client that needs a key against a server without one: the server
    // sends no challenge, so the client's wait for one ends in a protocol
    // error when the server speaks first.
    let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), None).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(address, Some(b"k")));
    let server = listener.accept().unwrap();
    server.send_bytes(b"#WELCOME#").unwrap();
    let err = client.join().unwrap().unwrap_err();
    assert!(err.is_authentication(), "{err:?}");
}

fn oversized_or_malformed_handshake_is_rejected() {
    // A fake server sends a 300-byte challenge: over the 256-byte limit.
    let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), None).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(address, Some(b"k")));
    let server = listener.accept().unwrap();
    let mut big = b"#CHALLENGE#".to_vec();
    big.resize(300, b'x');
    server.send_bytes(&big).unwrap();
    let err = client.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, ConnectError::Authentication(a) if matches!(a.reason(), AuthFailure::Protocol(_))),
        "{err:?}"
    );
    // A fake client that answers with garbage of a plausible length, and
    // one that hangs up.
    let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), Some(b"k")).unwrap();
    let address = listener.address().clone();
    let fake = std::thread::spawn(move || {
        let mut c = Client::connect(address.clone(), None).unwrap();
        let _challenge = c.recv_bytes().unwrap();
        c.send_bytes(b"{sha256}not a mac at all").unwrap();
        let verdict = c.recv_bytes().unwrap();
        let mut c2 = Client::connect(address, None).unwrap();
        let _ = c2.recv_bytes().unwrap();
        drop(c2);
        verdict
    });
    let err = listener.accept().unwrap_err();
    assert!(err.is_authentication(), "{err:?}");
    let err = listener.accept().unwrap_err();
    assert!(matches!(err, ConnectError::Eof), "{err:?}");
    assert_eq!(fake.join().unwrap(), b"#FAILURE#");
}

fn a_server_without_the_key_fails_the_clients_challenge() {
    // The fake server welcomes anyone, then answers the client's challenge
    // without knowing the key: the client must refuse it.
    let listener = Listener::bind("127.0.0.1:0".parse::<Address>().unwrap(), None).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || Client::connect(address, Some(b"real key")));
    let mut server = listener.accept().unwrap();
    let message = multiproc_pipe::auth::challenge_message(Challenge::Legacy).unwrap();
    let mut frame = b"#CHALLENGE#".to_vec();
    frame.extend_from_slice(&message);
    server.send_bytes(&frame).unwrap();
    let _reply = server.recv_bytes().unwrap();
    server.send_bytes(b"#WELCOME#").unwrap();
    let theirs = server.recv_bytes().unwrap();
    let challenge = multiproc_pipe::auth::parse_challenge(&theirs).unwrap();
    let forged = multiproc_pipe::auth::response(b"guessed key", challenge).unwrap();
    server.send_bytes(&forged).unwrap();
    assert_eq!(server.recv_bytes().unwrap(), b"#FAILURE#");
    let err = client.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, ConnectError::Authentication(a) if a.reason() == &AuthFailure::DigestWrong),
        "{err:?}"
    );
}

fn send_errors_are_typed() {
    let (rx, tx) = Pipe::simplex().unwrap();
    assert!(matches!(rx.send_bytes(b"x"), Err(SendError::NotWritable)));
    let mut tx = tx;
    assert!(matches!(tx.recv_bytes(), Err(RecvError::NotReadable)));
    assert!(matches!(
        tx.send_bytes_range(b"abc", 4, None),
        Err(SendError::OutOfRange {
            len: 3,
            offset: 4,
            ..
        })
    ));
    assert!(matches!(
        tx.send_bytes_range(b"abc", 1, Some(usize::MAX)),
        Err(SendError::OutOfRange { .. })
    ));
    tx.send_bytes_range(b"abc", 3, None).unwrap();
    let (a, _b) = Pipe::new().unwrap();
    // Each end of a `Pipe::new` pair travels with two descriptors: its
    // socket and its shared-memory lane.
    let too_many: Vec<&Connection> = std::iter::repeat_n(&a, 127).collect();
    assert!(matches!(
        a.send(&too_many),
        Err(SendError::TooManyDescriptors(254))
    ));
    drop(rx);
}

fn handles_and_errors_are_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + std::error::Error + 'static>() {}
    send::<Connection>();
    send::<Listener>();
    send_sync::<RecvError>();
    send_sync::<SendError>();
    send_sync::<ConnectError>();
    send_sync::<multiproc_pipe::AuthenticationError>();
}

/// Whether `err` says the non-blocking descriptor had nothing to read.
fn would_block(err: &RecvError) -> bool {
    err.is_would_block()
}

/// Receives one message on a non-blocking connection the way an event
/// loop does: on `WouldBlock`, wait for readability and call again.
fn recv_nonblocking(conn: &mut Connection) -> Vec<u8> {
    let started = Instant::now();
    loop {
        match conn.recv_bytes() {
            Ok(msg) => return msg,
            Err(err) if would_block(&err) => {
                assert!(started.elapsed() < CHILD_LIMIT, "no message in time");
                conn.poll(Some(Duration::from_secs(5))).unwrap();
            }
            Err(err) => panic!("recv on a non-blocking descriptor: {err} ({err:?})"),
        }
    }
}

fn nonblocking_descriptor_keeps_partial_frames() {
    for kind in ["duplex", "simplex"] {
        let (mut rx, tx) = if kind == "duplex" {
            Pipe::new().unwrap()
        } else {
            Pipe::simplex().unwrap()
        };
        let flags = rustix::fs::fcntl_getfl(&rx).unwrap();
        rustix::fs::fcntl_setfl(&rx, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut child = spawn(role!(child_write_in_pieces), &[kind], &[tx.as_fd()]).unwrap();
        drop(tx);
        for len in PIECE_SIZES {
            let msg = recv_nonblocking(&mut rx);
            assert_eq!(msg.len(), len, "{kind}");
            assert!(
                msg == pattern(len, 0),
                "{kind}: payload of {len} bytes differs"
            );
        }
        if kind == "duplex" {
            // Sending on the non-blocking descriptor: far more than the
            // socket buffer holds while the child still sleeps.
            let big = pattern(3 * 1024 * 1024 + 17, 0);
            rx.send_bytes(&big).unwrap();
            let echo = recv_nonblocking(&mut rx);
            assert!(echo == big, "echo of {} bytes differs", big.len());
        }
        let status = wait_timeout(&mut child, CHILD_LIMIT);
        assert!(status.success(), "{kind}: {status:?}");
        loop {
            match rx.recv_bytes() {
                Err(RecvError::Eof) => break,
                Err(err) if would_block(&err) => {
                    rx.poll(Some(Duration::from_secs(5))).unwrap();
                }
                other => panic!("{kind}: expected end of file, got {other:?}"),
            }
        }
    }
}

/// Takes the connection passed with `multiproc_pipe::inherit`, answers
/// one message.
fn child_inherit_pong(_: &[String]) {
    use multiproc_pipe::inherit;
    let mut conn: Connection = inherit::take("shared").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"ping");
    conn.send_bytes(b"pong").unwrap();
}

// ---- the shared-memory lane of a `Pipe::new` pair ---------------------

/// Takes the connection passed with `multiproc_pipe::inherit` (so with its
/// lane), says "ready", then sends back every message until end of file.
fn child_lane_echo(_: &[String]) {
    use multiproc_pipe::inherit;
    let mut conn: Connection = inherit::take("shared").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    conn.send_bytes(b"ready").unwrap();
    loop {
        match conn.recv_bytes() {
            Ok(msg) => conn.send_bytes(&msg).unwrap(),
            Err(RecvError::Eof) => return,
            Err(err) => panic!("echo: {err}"),
        }
    }
}

/// A value whose decoding, once its bytes are out, says so on standard
/// output and then waits for ever: a receiver that decodes it where it
/// lies in the lane holds the lane's space meanwhile.
struct StuckInDecode;

impl<'de> serde::Deserialize<'de> for StuckInDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use std::io::Write as _;
        let bytes = <Vec<u8> as serde::Deserialize>::deserialize(d)?;
        println!("decoding {}", bytes.len());
        std::io::stdout().flush().unwrap();
        loop {
            std::thread::park();
        }
    }
}

/// Takes the connection passed with `inherit`, says `ready`, and receives
/// one [`StuckInDecode`].
fn child_lane_stuck_decoder(_: &[String]) {
    use multiproc_pipe::inherit;
    let mut conn: Connection = inherit::take("shared").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    conn.send_bytes(b"ready").unwrap();
    let _ = conn.recv::<StuckInDecode>();
    unreachable!("the decoding never ends");
}

/// Takes the connection passed with `inherit` and sends message after
/// message: `pattern(size, n)` for n = 0, 1, …, sizes taking turns from
/// `args`, until killed; as bytes, or as typed `Vec<u8>` values when the
/// first argument is `typed`.
fn child_lane_stream(args: &[String]) {
    use multiproc_pipe::inherit;
    let typed = args.first().is_some_and(|a| a == "typed");
    let sizes: Vec<usize> = args[usize::from(typed)..]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let mut conn: Connection = inherit::take("shared").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    let mut n = 0u64;
    loop {
        let size = sizes[n as usize % sizes.len()];
        let message = pattern(size, n);
        let sent = if typed {
            conn.send(&message)
        } else {
            conn.send_bytes(&message)
        };
        if sent.is_err() {
            return;
        }
        n += 1;
    }
}

/// How many messages `child_mixed_stream` sends.
const MIXED_COUNT: u64 = 3000;

/// Message `n` of `child_mixed_stream`: small byte strings (mailbox or
/// socket), small typed values, byte strings through the lane, and values
/// with a descriptor (socket only), in a fixed rotation.
#[derive(Clone, Copy, Debug)]
enum Mixed {
    Small(usize),
    Typed,
    Large(usize),
    Handle,
}

fn mixed(n: u64) -> Mixed {
    match n % 8 {
        0 | 3 | 6 => Mixed::Small((n as usize * 7) % 300),
        1 | 4 => Mixed::Typed,
        2 => Mixed::Large(if n % 16 == 2 { 65536 } else { 3000 }),
        5 => Mixed::Small(0),
        _ => Mixed::Handle,
    }
}

/// Sends [`MIXED_COUNT`] messages as [`mixed`] says, pausing now and then
/// so that the receiver falls asleep between them.
fn child_mixed_stream(_: &[String]) {
    use multiproc_pipe::inherit;
    let mut conn: Connection = inherit::take("shared").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    for n in 0..MIXED_COUNT {
        match mixed(n) {
            Mixed::Small(size) | Mixed::Large(size) => conn.send_bytes(&pattern(size, n)).unwrap(),
            Mixed::Typed => conn.send(&(n, format!("message {n}"))).unwrap(),
            Mixed::Handle => {
                let segment = Segment::anonymous(4096).unwrap();
                segment.write_at(0, &n.to_le_bytes()).unwrap();
                conn.send(&(n, segment)).unwrap();
            }
        }
        if n % 500 == 499 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts `role` with the other end of a new pair, passed with `inherit`
/// (its lane goes along), says "hello" so the child starts receiving, and
/// returns our end and the child.
fn lane_child(role: Role, args: &[&str]) -> (Connection, std::process::Child) {
    lane_child_with_stdout(role, args, std::process::Stdio::inherit())
}

/// [`lane_child`], the child's standard output going to `stdout`.
fn lane_child_with_stdout(
    role: Role,
    args: &[&str],
    stdout: std::process::Stdio,
) -> (Connection, std::process::Child) {
    use multiproc_pipe::inherit;
    let (ours, theirs) = Pipe::new().unwrap();
    let mut cmd = multiproc_testkit::command(role, args, &[]);
    inherit::pass(&mut cmd, "shared", &theirs).unwrap();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .spawn()
        .unwrap();
    drop((cmd, theirs));
    ours.send_bytes(b"hello").unwrap();
    (ours, child)
}

fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// A `Serialize` impl that sends large messages on the connection while
/// its value is being encoded, and has the first taken at once: every
/// message and the value arrive whole, in order, once. (An encoder that
/// ran the impl twice, say to measure the value first, or that reserved
/// the value's lane space before the impl ran, would fail this: the
/// second message would take that space.)
fn large_sends_from_inside_a_serialize_impl_arrive_whole_and_once() {
    struct Nested<'a> {
        tx: &'a Connection,
        rx: &'a std::cell::RefCell<Connection>,
        first: Vec<u8>,
        second: Vec<u8>,
        own: Vec<u8>,
    }
    impl serde::Serialize for Nested<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.tx
                .send_bytes(&self.first)
                .map_err(serde::ser::Error::custom)?;
            let got = self.rx.borrow_mut().recv_bytes();
            assert!(got.unwrap() == self.first, "the first message");
            self.tx
                .send_bytes(&self.second)
                .map_err(serde::ser::Error::custom)?;
            serde::Serialize::serialize(&self.own, s)
        }
    }
    let (tx, rx) = Pipe::new().unwrap();
    let rx = std::cell::RefCell::new(rx);
    tx.send_bytes(b"start").unwrap();
    assert_eq!(rx.borrow_mut().recv_bytes().unwrap(), b"start");
    // A large value first, so that the next is encoded into the lane.
    let first_value = pattern(64 << 10, 0);
    tx.send(&first_value).unwrap();
    assert!(rx.borrow_mut().recv::<Vec<u8>>().unwrap() == first_value);
    let nested = Nested {
        tx: &tx,
        rx: &rx,
        first: pattern(64 << 10, 1),
        second: pattern(64 << 10, 2),
        own: pattern(64 << 10, 3),
    };
    tx.send(&nested).unwrap();
    let second = rx.borrow_mut().recv_bytes().unwrap();
    assert!(second == nested.second, "the second message came altered");
    let own = rx.borrow_mut().recv::<Vec<u8>>().unwrap();
    assert!(own == nested.own, "the value came altered");
}

/// A large typed value that holds a handle is encoded into the lane like
/// any other, and its descriptor rides with the token.
fn a_large_value_with_a_handle_goes_through_the_lane_with_its_descriptor() {
    let (tx, mut rx) = Pipe::new().unwrap();
    tx.send_bytes(b"start").unwrap();
    assert_eq!(rx.recv_bytes().unwrap(), b"start");
    let bulk = pattern(200_000, 1);
    tx.send(&bulk).unwrap();
    assert!(rx.recv::<Vec<u8>>().unwrap() == bulk);
    for round in 0..3u64 {
        let segment = Segment::anonymous(64).unwrap();
        segment.write_at(0, &round.to_le_bytes()).unwrap();
        let bulk = pattern(150_000 + round as usize * 40_000, round);
        tx.send(&(segment, &bulk)).unwrap();
        let (got, got_bulk): (Segment, Vec<u8>) = rx.recv().unwrap();
        let mut word = [0u8; 8];
        got.read_at(0, &mut word).unwrap();
        assert_eq!(
            u64::from_le_bytes(word),
            round,
            "the segment of round {round}"
        );
        assert!(got_bulk == bulk, "the bytes of round {round}");
    }
}

/// Large messages cross the lane whole and in order, mixed with small
/// ones, ones too large for it and typed values; and while the receiver is
/// stopped, what fits in the ring is sent without blocking (through the
/// socket, 4 MiB would not be: it holds at most about 1 MiB), and a send
/// that finds the ring full waits for room only a while, then goes
/// through the socket.
fn large_messages_cross_the_lane_whole_and_a_stopped_receiver_does_not_block_them() {
    let (mut ours, mut child) = lane_child(role!(child_lane_echo), &[]);
    assert_eq!(ours.recv_bytes().unwrap(), b"ready");
    let sizes = [
        4 << 10,
        (4 << 10) - 1,
        64 << 10,
        7,
        1 << 20,
        2 << 20,
        (2 << 20) + 1,
        100_000,
        5 << 20,
        1 << 20,
        0,
        300_000,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let payload = pattern(size, i as u64);
        ours.send_bytes(&payload).unwrap();
        let back = ours.recv_bytes().unwrap();
        assert!(
            back == payload,
            "message {i} of {size} bytes came back altered"
        );
    }
    let values: Vec<Vec<f64>> = (0..4).map(|i| vec![i as f64; 20_000]).collect();
    ours.send(&values).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let len = ours.recv_bytes_into(&mut buf).unwrap();
    assert_eq!(codec::decode::<Vec<Vec<f64>>>(&buf[..len]).unwrap(), values);
    // Typed values cross the lane too.
    ours.send(&values).unwrap();
    assert_eq!(ours.recv::<Vec<Vec<f64>>>().unwrap(), values);
    let text = "lane ".repeat(200_000);
    ours.send(&text).unwrap();
    assert!(ours.recv::<String>().unwrap() == text);
    // A value that does not decode as asked is an error, and its space
    // goes back all the same: the next ones come through whole.
    ours.send(&pattern(300_000, 9)).unwrap();
    assert!(ours.recv::<(Vec<u8>, u64)>().is_err());
    for i in 0..100 {
        let bytes = pattern(100_000, i);
        ours.send(&bytes).unwrap();
        assert!(ours.recv::<Vec<u8>>().unwrap() == bytes, "value {i}");
    }

    signal(&child, rustix::process::Signal::STOP);
    let mut messages: Vec<Vec<u8>> = (0..4).map(|i| pattern(1 << 20, 100 + i)).collect();
    messages.push(pattern(64 << 10, 104));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn({
        let messages = messages.clone();
        move || {
            for message in &messages {
                ours.send_bytes(message).unwrap();
            }
            done_tx.send(()).unwrap();
            ours
        }
    });
    let sent = done_rx.recv_timeout(Duration::from_secs(10));
    signal(&child, rustix::process::Signal::CONT);
    assert!(
        sent.is_ok(),
        "4 MiB and 64 KiB to a stopped receiver blocked the sender"
    );
    let mut ours = sender.join().unwrap();
    for (i, message) in messages.iter().enumerate() {
        assert!(
            ours.recv_bytes().unwrap() == *message,
            "message {i} after the stop"
        );
    }
    drop(ours);
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

/// A sender killed at any moment leaves the receiver only whole messages,
/// in order, and then end of file (or a frame cut short, when it died
/// inside one that went through the socket).
/// A small message posted while its receiver stops spinning and falls
/// asleep wakes it: pings at every distance from the end of the echo's
/// spin, each answered within the limit.
fn small_messages_wake_a_receiver_that_falls_asleep() {
    let (mut ours, mut child) = lane_child(role!(child_lane_echo), &[]);
    assert_eq!(ours.recv_bytes().unwrap(), b"ready");
    let mut state = 0x9e37_79b9u64;
    for n in 0..3000u64 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Around the echo's longest spin (50 µs), where it stops listening.
        let pause = Duration::from_micros(state % 120);
        let until = Instant::now() + pause;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        let ping = n.to_le_bytes();
        ours.send_bytes(&ping).unwrap();
        assert!(
            ours.poll(Some(Duration::from_secs(5))).unwrap(),
            "ping {n} left unanswered: the echo slept through it"
        );
        assert_eq!(ours.recv_bytes().unwrap(), ping);
    }
    drop(ours);
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

/// Small messages (through the receiver's mailbox while it spins, else
/// the socket), typed values, messages through the lane and messages with
/// descriptors (the socket's) arrive in the order they were sent, through
/// blocking receives, `poll`, `wait` and non-blocking ones.
fn small_large_and_descriptor_messages_keep_their_order() {
    let (mut ours, mut child) = lane_child(role!(child_mixed_stream), &[]);
    for n in 0..MIXED_COUNT {
        match n % 3 {
            // Blocking receives spin, and listen for mail.
            0 => {}
            // After a blocking receive left the mailbox open: `poll` and
            // `wait` see what waits there.
            1 => assert!(
                ours.poll(Some(CHILD_LIMIT)).unwrap(),
                "message {n} never came"
            ),
            _ => assert_eq!(wait(&[&ours], Some(CHILD_LIMIT)).unwrap(), [0]),
        }
        match mixed(n) {
            Mixed::Small(size) | Mixed::Large(size) => {
                let got = if n % 5 == 0 {
                    loop {
                        match ours.try_recv_bytes() {
                            Err(err) if err.is_would_block() => {
                                assert!(ours.poll(Some(CHILD_LIMIT)).unwrap());
                            }
                            other => break other.unwrap(),
                        }
                    }
                } else {
                    ours.recv_bytes().unwrap()
                };
                assert!(got == pattern(size, n), "message {n} ({size} bytes)");
            }
            Mixed::Typed => {
                let got: (u64, String) = ours.recv().unwrap();
                assert_eq!(got, (n, format!("message {n}")));
            }
            Mixed::Handle => {
                let (got, segment): (u64, Segment) = ours.recv().unwrap();
                assert_eq!(got, n);
                let mut word = [0u8; 8];
                segment.read_at(0, &mut word).unwrap();
                assert_eq!(u64::from_le_bytes(word), n, "descriptor of message {n}");
            }
        }
    }
    assert!(ours.recv_bytes().unwrap_err().is_eof());
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn a_sender_killed_mid_stream_leaves_only_whole_messages() {
    for (round, args) in [
        &["65536"][..],
        &["1048576", "65536", "3000000"],
        &["2097152", "20000", "100"],
        // Small messages go to the receiver's mailbox while it spins for
        // them, and through the socket otherwise.
        &["8", "100", "3000"],
        &["8", "65536", "200", "1048576"],
        &["typed", "8", "700"],
        // Typed values are encoded straight into the lane, into space
        // reserved from the length of the one before: these fit it, outgrow
        // it (and go on in a buffer) or leave part of it unused.
        &["typed", "65536", "1048576", "5000", "3000000"],
    ]
    .into_iter()
    .enumerate()
    {
        let typed = args[0] == "typed";
        for after in [1u64, 5, 40] {
            let (mut ours, mut child) = lane_child(role!(child_lane_stream), args);
            let sizes: Vec<usize> = args[usize::from(typed)..]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
            let recv = |ours: &mut Connection| {
                if typed {
                    ours.recv::<Vec<u8>>()
                } else {
                    ours.recv_bytes()
                }
            };
            let mut n = 0u64;
            let check = |msg: Vec<u8>, n: &mut u64| {
                let size = sizes[*n as usize % sizes.len()];
                assert!(
                    msg == pattern(size, *n),
                    "round {round}: message {n} of {size} bytes is not whole"
                );
                *n += 1;
            };
            while n < after {
                check(recv(&mut ours).unwrap(), &mut n);
            }
            signal(&child, rustix::process::Signal::KILL);
            let end = loop {
                match recv(&mut ours) {
                    Ok(msg) => check(msg, &mut n),
                    Err(err) => break err,
                }
            };
            assert!(
                matches!(end, RecvError::Eof | RecvError::Truncated { .. }),
                "round {round}: {end:?}"
            );
            assert_eq!(child.wait().unwrap().signal(), Some(9));
        }
    }
}

/// A receiver killed while large messages flow makes the sender fail with
/// a broken pipe; it never hangs on the ring.
fn a_receiver_killed_mid_stream_fails_the_sender() {
    let (ours, mut child) = lane_child(role!(child_lane_echo), &[]);
    let mut ours = ours;
    assert_eq!(ours.recv_bytes().unwrap(), b"ready");
    let message = pattern(1 << 20, 1);
    ours.send_bytes(&message).unwrap();
    assert!(ours.recv_bytes().unwrap() == message);
    signal(&child, rustix::process::Signal::KILL);
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    sends_end_in_a_broken_pipe(ours, move |ours| ours.send_bytes(&message));
}

/// Sends with `send` on `ours`, whose receiver is dead, until a send
/// fails: within 100 sends and [`CHILD_LIMIT`], and with a broken pipe.
fn sends_end_in_a_broken_pipe(
    mut ours: Connection,
    mut send: impl FnMut(&mut Connection) -> Result<(), SendError> + Send + 'static,
) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let err = (0..100)
            .find_map(|_| send(&mut ours).err())
            .expect("100 sends to a dead receiver");
        done_tx.send(err.is_broken_pipe()).unwrap();
    });
    assert!(
        done_rx.recv_timeout(CHILD_LIMIT).unwrap(),
        "not a broken pipe"
    );
}

/// A receiver killed while it decodes a value where it lies in the lane
/// never hands that space back. With the ring filled behind that value
/// before the kill, the sender's next large message finds no room, waits
/// its bounded while, and goes to the socket, whose reader is gone: every
/// send after the death ends (no wait on the dead receiver's space), and
/// with a broken pipe.
fn a_receiver_killed_while_it_decodes_in_place_fails_the_sender() {
    use std::io::BufRead as _;
    let (mut ours, mut child) = lane_child_with_stdout(
        role!(child_lane_stuck_decoder),
        &[],
        std::process::Stdio::piped(),
    );
    assert_eq!(ours.recv_bytes().unwrap(), b"ready");
    let value = pattern(1 << 20, 3);
    ours.send(&value).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("decoding {}", value.len()));
    // The rest of the 4 MiB ring, all but a few bytes, behind the value.
    for size in [1 << 20, 1 << 20, (1 << 20) - 64] {
        ours.try_send_bytes(&pattern(size, 4)).unwrap();
        assert_eq!(ours.pending_send(), 0, "{size} bytes wait in the socket");
    }
    signal(&child, rustix::process::Signal::KILL);
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    sends_end_in_a_broken_pipe(ours, move |ours| ours.send(&value));
}

/// A descriptor taken out with `into_fd` may go to a reader that knows
/// nothing of the lane: from then on large messages to it go through the
/// socket, even after this end received through the lane.
fn into_fd_takes_the_end_off_the_lane() {
    let (a, mut b) = Pipe::new().unwrap();
    let first = pattern(100_000, 1);
    a.send_bytes(b"start").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"start");
    a.send_bytes(&first).unwrap();
    assert!(b.recv_bytes().unwrap() == first);
    let mut plain = Connection::from_fd(b.into_fd()).unwrap();
    let second = pattern(100_000, 2);
    a.send_bytes(&second).unwrap();
    assert!(plain.recv_bytes().unwrap() == second);
}

/// The non-blocking sends use the lane too: four 1 MiB messages fit in
/// the ring with nobody reading, where the socket would refuse them.
fn nonblocking_sends_go_through_the_lane() {
    let (a, mut b) = Pipe::new().unwrap();
    a.send_bytes(b"start").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"start");
    let messages: Vec<Vec<u8>> = (0..4).map(|i| pattern((1 << 20) - 64, i)).collect();
    a.try_send(&messages[0]).unwrap();
    assert_eq!(a.pending_send(), 0, "the typed message waits in the socket");
    for (i, message) in messages.iter().enumerate().skip(1) {
        a.try_send_bytes(message).unwrap();
        assert_eq!(a.pending_send(), 0, "message {i} waits in the socket");
    }
    assert!(b.try_recv::<Vec<u8>>().unwrap() == messages[0]);
    for message in &messages[1..] {
        assert!(b.try_recv_bytes().unwrap() == *message);
    }
}

fn pipe_shared_with_a_command_child_through_inherit() {
    // The recipe of the crate docs ("Using this crate alone").
    use multiproc_pipe::inherit;
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut cmd = multiproc_testkit::command(role!(child_inherit_pong), &[], &[]);
    inherit::pass(&mut cmd, "shared", &theirs).unwrap();
    let mut child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    drop((cmd, theirs));
    ours.send_bytes(b"ping").unwrap();
    assert_eq!(ours.recv_bytes().unwrap(), b"pong");
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    assert!(
        ours.recv_bytes().unwrap_err().is_eof(),
        "no other copy stays open"
    );
}

/// Waits until `fd` is writable (or 10 s pass).
fn wait_writable(fd: &impl AsFd) {
    let mut fds = [rustix::event::PollFd::new(
        fd,
        rustix::event::PollFlags::OUT,
    )];
    let ten = rustix::time::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&ten)).unwrap();
}

fn try_send_keeps_partial_frames_and_sends_descriptors_once() {
    const COUNT: u64 = 5;
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut child = spawn(
        role!(child_slow_handles),
        &[&COUNT.to_string()],
        &[theirs.as_fd()],
    )
    .unwrap();
    drop(theirs);
    // The child sleeps: nothing to receive, and the blocking flag stays
    // this connection's business.
    assert!(ours.try_recv_bytes().unwrap_err().is_would_block());
    let (mut would_block, mut partial) = (0, 0);
    for k in 0..COUNT {
        let segment = Segment::anonymous(4096).unwrap();
        segment.write_at(0, &k.to_ne_bytes()).unwrap();
        let value = (segment, pattern(TRY_SEND_LEN, k));
        loop {
            match ours.try_send(&value) {
                Ok(()) => break,
                Err(SendError::WouldBlock) => {
                    would_block += 1;
                    wait_writable(&ours);
                }
                Err(err) => panic!("message {k}: {err}"),
            }
        }
        if ours.pending_send() > 0 {
            partial += 1;
        }
    }
    while ours.pending_send() > 0 {
        match ours.try_flush() {
            Ok(()) => {}
            Err(SendError::WouldBlock) => wait_writable(&ours),
            Err(err) => panic!("flush: {err}"),
        }
    }
    assert!(would_block > 0 && partial > 0, "{would_block} {partial}");
    // The connection made its descriptor non-blocking; its blocking receive
    // still blocks (the child answers after a pause).
    assert_eq!(ours.recv_bytes().unwrap(), b"done");
    let status = wait_timeout(&mut child, CHILD_LIMIT);
    assert!(status.success(), "{status:?}");
}

fn main() {
    let roles: &[Role] = &[
        role!(child_inherit_pong),
        role!(child_echo),
        role!(child_echo_split),
        role!(child_send_then_exit),
        role!(child_write_raw),
        role!(child_late_sender),
        role!(child_receive_handles),
        role!(child_sigpipe),
        role!(child_sigpipe_left_alone),
        role!(child_receiver_out_of_fds),
        role!(child_client),
        role!(child_reader_under_rlimit),
        role!(child_silent_client),
        role!(child_write_in_pieces),
        role!(child_slow_handles),
        role!(child_burst_after_large),
        role!(child_send_buffer_steps),
        role!(child_lane_echo),
        role!(child_lane_stream),
        role!(child_lane_stuck_decoder),
        role!(child_mixed_stream),
    ];
    run(
        roles,
        serial_tests![
            pipe_shared_with_a_command_child_through_inherit,
            bytes_round_trip_through_a_child_at_edge_sizes,
            typed_values_of_changing_sizes_round_trip_through_a_child,
            eof_after_the_peer_exits,
            close_is_seen_as_eof,
            malformed_frames_are_typed_errors,
            announced_length_is_not_reserved_before_data_arrives,
            handshake_timeout_drops_a_silent_client,
            garbage_to_recv_leaves_the_connection_usable,
            poll_times_out_then_sees_a_late_message,
            wait_returns_the_ready_ones_among_many,
            wait_counts_messages_already_read_ahead,
            a_connection_and_a_segment_pass_to_a_child,
            bursts_of_small_frames_after_large_ones_arrive_whole,
            a_large_frame_raises_the_send_buffer_and_a_run_of_small_ones_puts_it_back,
            received_descriptors_go_to_their_own_message,
            descriptors_ride_with_large_messages,
            stray_descriptors_are_closed_not_misdelivered,
            descriptors_the_receiver_cannot_take_are_a_typed_error,
            simplex_and_tcp_refuse_descriptors,
            writing_to_a_closed_peer_is_an_error_not_sigpipe,
            set_ignore_sigpipe_false_leaves_the_default_action_alone,
            listener_and_client_across_processes_all_families,
            ipv6_loopback_works_when_available,
            wrong_authkey_fails_on_both_sides,
            oversized_or_malformed_handshake_is_rejected,
            a_server_without_the_key_fails_the_clients_challenge,
            send_errors_are_typed,
            handles_and_errors_are_send,
            nonblocking_descriptor_keeps_partial_frames,
            try_send_keeps_partial_frames_and_sends_descriptors_once,
            large_messages_cross_the_lane_whole_and_a_stopped_receiver_does_not_block_them,
            large_sends_from_inside_a_serialize_impl_arrive_whole_and_once,
            a_large_value_with_a_handle_goes_through_the_lane_with_its_descriptor,
            small_large_and_descriptor_messages_keep_their_order,
            small_messages_wake_a_receiver_that_falls_asleep,
            a_sender_killed_mid_stream_leaves_only_whole_messages,
            a_receiver_killed_mid_stream_fails_the_sender,
            a_receiver_killed_while_it_decodes_in_place_fails_the_sender,
            into_fd_takes_the_end_off_the_lane,
            nonblocking_sends_go_through_the_lane,
        ],
    );
}
