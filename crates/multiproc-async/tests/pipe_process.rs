//! Async connections and processes between real processes, on tokio and on
//! smol: the test binary re-executes itself as the child (see
//! `multiproc-testkit`), or starts children with `Process`. Every scenario
//! runs on both runtimes, and fails instead of hanging.

use multiproc_async::AsyncConnection;
use multiproc_async::process::join;
use multiproc_pipe::{Connection, Pipe, RecvError};
use multiproc_process::{JoinError, Process, StartMethod};
use multiproc_testkit::{inherited_fds, pattern, role, run, spawn, wait_timeout};
use std::os::fd::AsFd;
use std::pin::pin;
use std::process::Child;
use std::time::{Duration, Instant};

mod common;
use common::*;

const CHILD_LIMIT: Duration = Duration::from_secs(60);

// ---- children ---------------------------------------------------------------

/// The connection this child inherited.
fn inherited() -> Connection {
    Connection::from_fd(inherited_fds().remove(0)).unwrap()
}

/// The `i`-th small message of a burst.
fn small(i: u32) -> Vec<u8> {
    let mut m = i.to_be_bytes().to_vec();
    m.extend(std::iter::repeat_n(i as u8, (i % 13) as usize));
    m
}

/// Writes `count` small frames with one `write` of them all, then keeps
/// the connection open until told "done" (so neither end of file nor new
/// bytes wake the reader: only its buffer holds the last messages).
fn child_burst(args: &[String]) {
    let mut conn = inherited();
    let count: u32 = arg(args, 0);
    let mut stream = Vec::new();
    for i in 0..count {
        let m = small(i);
        stream.extend_from_slice(&(m.len() as u32).to_be_bytes());
        stream.extend_from_slice(&m);
    }
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let n = rustix::io::write(&conn, rest).unwrap();
        rest = &rest[n..];
    }
    assert_eq!(conn.recv_bytes().unwrap(), b"done");
}

/// Sleeps, then receives `count` messages slowly and answers each with its
/// length and a checksum.
fn child_slow_reader(args: &[String]) {
    let mut conn = inherited();
    let count: usize = arg(args, 0);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..count {
        let m = conn.recv_bytes().unwrap();
        let sum: u64 = m.iter().map(|&b| u64::from(b)).sum();
        conn.send(&(m.len() as u64, sum)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The payload of message `k` in the cancellation scenario: small ones and
/// large ones (which arrive over several reads) mixed.
fn mixed(k: u64) -> Vec<u8> {
    let len = match k % 4 {
        0 => 3,
        1 => 70_000,
        2 => 1 << 20,
        _ => 10,
    };
    pattern(len + k as usize, k)
}

/// Sends `count` [`mixed`] messages in pieces, pausing between pieces, so
/// the reader often holds half a frame.
fn child_trickle(args: &[String]) {
    let conn = inherited();
    let count: u64 = arg(args, 0);
    for k in 0..count {
        let m = mixed(k);
        let mut frame = (m.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&m);
        for piece in frame.chunks(frame.len() / 3 + 1) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = rustix::io::write(&conn, rest).unwrap();
                rest = &rest[n..];
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Stay until the reader hangs up.
    let mut conn = conn;
    assert!(conn.recv_bytes().unwrap_err().is_eof());
}

/// Sends one message, then sleeps until killed.
fn child_hello_then_sleep(_: &[String]) {
    let conn = inherited();
    conn.send_bytes(b"hello").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

/// Starts `role` with `theirs` as its inherited descriptor; drops ours of
/// it.
fn start_with(role: multiproc_testkit::Role, args: &[&str], theirs: Connection) -> Child {
    let child = spawn(role, args, &[theirs.as_fd()]).unwrap();
    drop(theirs);
    child
}

fn finish(mut child: Child) {
    let status = wait_timeout(&mut child, CHILD_LIMIT);
    assert!(status.success(), "child: {status:?}");
}

// ---- scenarios --------------------------------------------------------------

/// 10 000 small frames arrive in few reads: after the first, most are in
/// the read-ahead buffer, where the descriptor does not signal them. Each
/// must come out, in order, without more bytes arriving.
fn many_small_frames_per_read<R: Runtime>() {
    const COUNT: u32 = 10_000;
    let (ours, theirs) = Pipe::new().unwrap();
    let child = start_with(role!(child_burst), &[&COUNT.to_string()], theirs);
    on::<R>(async {
        let mut conn = AsyncConnection::<R>::new(ours).unwrap();
        for i in 0..COUNT {
            let got = within::<R, _>(Duration::from_secs(10), conn.recv_bytes())
                .await
                .unwrap_or_else(|| panic!("message {i} never came ({})", R::NAME))
                .unwrap();
            assert_eq!(got, small(i), "message {i}");
        }
        assert!(!conn.get_ref().has_buffered());
        conn.send_bytes(b"done").await.unwrap();
    });
    finish(child);
}

/// A 4 MiB message (and more) to a child that reads late and slowly: the
/// socket takes it in parts; it arrives whole, and the stream stays in
/// step for the messages after it.
fn large_send_to_a_slow_reader<R: Runtime>() {
    let sizes = [4 << 20, 17, (6 << 20) + 5, 0];
    let (ours, theirs) = Pipe::new().unwrap();
    let child = start_with(
        role!(child_slow_reader),
        &[&sizes.len().to_string()],
        theirs,
    );
    on::<R>(async {
        let mut conn = AsyncConnection::<R>::new(ours).unwrap();
        for (k, &len) in sizes.iter().enumerate() {
            let message = pattern(len, k as u64);
            let sum: u64 = message.iter().map(|&b| u64::from(b)).sum();
            {
                let mut send = pin!(conn.send_bytes(&message));
                if len >= 4 << 20 {
                    // The child sleeps: the socket cannot take it all yet.
                    assert!(poll_once(send.as_mut()).await.is_pending());
                }
                within::<R, _>(Duration::from_secs(20), send)
                    .await
                    .expect("send hung")
                    .unwrap();
            }
            assert_eq!(conn.get_ref().pending_send(), 0);
            let echo: (u64, u64) = within::<R, _>(Duration::from_secs(20), conn.recv())
                .await
                .expect("answer hung")
                .unwrap();
            assert_eq!(echo, (len as u64, sum), "message {k}");
        }
    });
    finish(child);
}

/// Receives cancelled every millisecond, most of them with half a frame
/// read: every message still arrives once, whole, in order.
fn cancelled_recvs_lose_nothing<R: Runtime>() {
    const COUNT: u64 = 24;
    let (ours, theirs) = Pipe::new().unwrap();
    let child = start_with(role!(child_trickle), &[&COUNT.to_string()], theirs);
    on::<R>(async {
        let mut conn = AsyncConnection::<R>::new(ours).unwrap();
        let (mut k, mut cancelled) = (0, 0);
        let started = Instant::now();
        while k < COUNT {
            assert!(started.elapsed() < HUNG / 2, "only {k} messages came");
            match within::<R, _>(Duration::from_millis(1), conn.recv_bytes()).await {
                Some(got) => {
                    let got = got.unwrap();
                    assert!(got == mixed(k), "message {k} differs ({} bytes)", got.len());
                    k += 1;
                }
                None => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "no receive was cancelled");
        drop(conn);
    });
    finish(child);
}

fn double(n: u64) -> u64 {
    n * 2
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn big_value(len: usize) -> Vec<u8> {
    pattern(len, 3)
}

fn sleep_long(_: ()) {
    std::thread::sleep(Duration::from_secs(120));
}

const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Spawn,
    StartMethod::ForkServer,
];

/// `p` awaited on `R`, failing the test if that takes 20 s.
async fn joined<R: Runtime, T: serde::de::DeserializeOwned + Send>(
    p: &mut Process<T>,
    method: StartMethod,
) -> Result<T, JoinError> {
    within::<R, _>(Duration::from_secs(20), join::<R, _>(p))
        .await
        .unwrap_or_else(|| panic!("join hung ({method:?})"))
}

/// An awaited child's value, its exit code, and a value larger than a
/// socket buffer (which the child sends only as it is read), for every
/// start method.
fn awaited_process_gives_its_exit_code<R: Runtime>() {
    on::<R>(async {
        for method in METHODS {
            let mut p = Process::new(double, 21)
                .start_method(method)
                .start()
                .unwrap();
            let value = joined::<R, _>(&mut p, method).await.unwrap();
            assert_eq!((value, p.exitcode()), (42, Some(0)), "{method:?}");

            let mut p = Process::new(exit_with, 7)
                .start_method(method)
                .start()
                .unwrap();
            let err = joined::<R, _>(&mut p, method).await.unwrap_err();
            assert!(matches!(err, JoinError::Exited(7)), "{method:?}: {err}");
            assert_eq!(p.exitcode(), Some(7), "{method:?}");

            let len = 3 << 20;
            let mut p = Process::new(big_value, len)
                .start_method(method)
                .start()
                .unwrap();
            let value = joined::<R, _>(&mut p, method).await.unwrap();
            assert!(value == pattern(len, 3), "{method:?}");
            assert!(p.join().unwrap_err().is_already_joined());
        }
    });
}

/// A task awaiting a child sees it die of `SIGKILL` (exit code -9), sent
/// while it waits.
fn awaited_process_sees_a_sigkill<R: Runtime>() {
    on::<R>(async {
        for method in METHODS {
            let mut p = Process::new(sleep_long, ())
                .start_method(method)
                .start()
                .unwrap();
            // Through a pidfd of its own: `join` holds the process.
            let pidfd = p.sentinel().try_clone_to_owned().unwrap();
            let killer = async {
                R::sleep(Duration::from_millis(200)).await;
                rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL).unwrap();
            };
            let joined = async { joined::<R, _>(&mut p, method).await };
            let (joined, ()) = both(joined, killer).await;
            let err = joined.unwrap_err();
            assert!(
                matches!(err, JoinError::Killed { signal: 9, .. }),
                "{method:?}: {err}"
            );
            assert_eq!(p.exitcode(), Some(-9), "{method:?}");
        }
    });
}

/// A receive awaiting a peer that is killed ends with end of file (or a
/// reset), not a hang; so does a send to it.
fn dead_peer_is_end_of_file<R: Runtime>() {
    let (ours, theirs) = Pipe::new().unwrap();
    let mut child = start_with(role!(child_hello_then_sleep), &[], theirs);
    on::<R>(async {
        let mut conn = AsyncConnection::<R>::new(ours).unwrap();
        assert_eq!(conn.recv_bytes().await.unwrap(), b"hello");
        let err = {
            let mut recv = pin!(conn.recv_bytes());
            assert!(poll_once(recv.as_mut()).await.is_pending());
            child.kill().unwrap();
            within::<R, _>(Duration::from_secs(20), recv)
                .await
                .expect("receive from a dead peer hung")
                .unwrap_err()
        };
        assert!(
            matches!(err, RecvError::Eof | RecvError::Io(_)),
            "{}: {err:?}",
            R::NAME
        );
        let sent = within::<R, _>(Duration::from_secs(20), conn.send_bytes(&[0; 1 << 20]))
            .await
            .expect("send to a dead peer hung");
        assert!(sent.unwrap_err().is_broken_pipe());
    });
    child.wait().unwrap();
}

fn main() {
    run(
        &[
            role!(child_burst),
            role!(child_slow_reader),
            role!(child_trickle),
            role!(child_hello_then_sleep),
        ],
        on_both_runtimes![
            many_small_frames_per_read,
            large_send_to_a_slow_reader,
            cancelled_recvs_lose_nothing,
            awaited_process_gives_its_exit_code,
            awaited_process_sees_a_sigkill,
            dead_peer_is_end_of_file,
        ],
    );
}
