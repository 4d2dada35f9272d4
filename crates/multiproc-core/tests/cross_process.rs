//! Core primitives between real processes: the test binary re-executes
//! itself as the child (see `multiproc-testkit`).
#![allow(unsafe_code)]

use multiproc_core::futex::{self, WaitOutcome};
use multiproc_core::process::{self, Forked};
use multiproc_core::segment::{self, NAME_PREFIX_ENV, generate_name, name_prefix};
use multiproc_core::{Header, HeaderError, Segment, SegmentError, codec, scm};
use multiproc_testkit::{
    Role, inherited_fds, open_fd_count, pattern, role, run, shm_prefix, spawn, tests, unique_name,
    wait_timeout,
};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(20);

// ---- child roles -------------------------------------------------------

const NS_MAGIC: [u8; 8] = *b"NSCHECK\0";

/// Reads the header of the inherited segment; it must be refused as made in
/// another pid namespace when `args[0]` is `foreign`, accepted otherwise.
fn child_read_header(args: &[String]) {
    let segment = Segment::from_fd(inherited_fds().remove(0)).unwrap();
    let result = segment.read_header(0, NS_MAGIC, 1);
    if args[0] == "foreign" {
        match result {
            Err(SegmentError::Header(HeaderError::ForeignPidNamespace { ours, theirs })) => {
                assert_ne!(ours, theirs);
                assert_eq!(Some(ours), multiproc_core::owner::pid_namespace());
            }
            other => panic!("expected ForeignPidNamespace, got {other:?}"),
        }
    } else {
        assert_eq!(result.unwrap().size(), 4096);
    }
}

/// Maps the inherited segment (or the named one in args[0]), writes the
/// pattern after the first 8 bytes, then raises word 0 and wakes.
fn child_write_pattern(args: &[String]) {
    let segment = match args.first() {
        Some(name) => Segment::open_named(name).unwrap(),
        None => Segment::from_fd(inherited_fds().remove(0)).unwrap(),
    };
    segment.write_at(8, &pattern(segment.len() - 8, 0)).unwrap();
    let flag = segment.atomic_u32(0).unwrap();
    flag.store(1, Ordering::Release);
    futex::wake_all(flag);
}

/// Creates a segment under a generated name and checks the name against
/// `args[0]`: `prefix=P` (names start with P), or `invalid=V` (the prefix
/// V in the environment is refused with a typed error, and a name given
/// explicitly, `args[1]`, still works).
fn child_generated_names(args: &[String]) {
    match args[0].split_once('=').unwrap() {
        ("prefix", prefix) => {
            assert_eq!(name_prefix().unwrap(), prefix);
            let segment = Segment::create_named(None, 64).unwrap();
            let name = segment.name().unwrap().to_owned();
            segment.unlink().unwrap();
            assert!(name.starts_with(prefix), "{name:?}");
            assert_eq!(name.len(), prefix.len() + 24, "{name:?}");
        }
        ("invalid", value) => {
            for err in [
                name_prefix().unwrap_err(),
                generate_name().unwrap_err(),
                Segment::create_named(None, 64).unwrap_err(),
            ] {
                match err {
                    SegmentError::InvalidNamePrefix { prefix, .. } => assert_eq!(prefix, value),
                    other => panic!("expected InvalidNamePrefix, got {other:?}"),
                }
            }
            let given = Segment::create_named(Some(&args[1]), 64).unwrap();
            given.unlink().unwrap();
        }
        other => panic!("unknown check {other:?}"),
    }
}

/// Waits a little, so the parent is asleep, then stores 1 and wakes.
fn child_wake_later(_: &[String]) {
    let segment = Segment::from_fd(inherited_fds().remove(0)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let word = segment.atomic_u32(0).unwrap();
    word.store(1, Ordering::Release);
    futex::wake_all(word);
}

/// Receives a message with a segment and a pipe over the inherited socket,
/// checks the segment, and answers through the pipe.
fn child_receive_handles(_: &[String]) {
    let socket = inherited_fds().remove(0);
    let mut buf = vec![0u8; 4096];
    let got = scm::recv(&socket, &mut buf, 8).unwrap();
    let (segment, pipe): (Segment, OwnedFd) = {
        let (segment, pipe): (Segment, multiproc_core::SharedFd) =
            codec::decode_with_fds(&buf[..got.len], got.fds).unwrap();
        (segment, pipe.into_inner())
    };
    let mut data = vec![0u8; 1000];
    segment.read_at(0, &mut data).unwrap();
    let answer: &[u8] = if data == pattern(1000, 0) {
        b"ok"
    } else {
        b"bad"
    };
    rustix::io::write(&pipe, answer).unwrap();
}

/// Sends `args[0]` fresh descriptors over the inherited socket in one message.
fn child_send_fds(args: &[String]) {
    let socket = inherited_fds().remove(0);
    let count: usize = args[0].parse().unwrap();
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..count)
        .map(|_| rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap())
        .collect();
    let fds: Vec<_> = pipes.iter().map(|(r, _)| r.as_fd()).collect();
    scm::send_all(&socket, b"fds", &fds).unwrap();
}

// ---- tests -------------------------------------------------------------

fn child_writes_memfd_segment_parent_reads() {
    let segment = Segment::anonymous(64 * 1024).unwrap();
    let mut child = spawn(role!(child_write_pattern), &[], &[segment.as_fd()]).unwrap();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    assert_eq!(segment.atomic_u32(0).unwrap().load(Ordering::Acquire), 1);
    let mut data = vec![0u8; segment.len() - 8];
    segment.read_at(8, &mut data).unwrap();
    assert_eq!(data, pattern(segment.len() - 8, 0));
}

fn child_writes_named_segment_parent_reads_then_unlinks() {
    let segment = Segment::create_named(None, 4096).unwrap();
    let name = segment.name().unwrap().to_owned();
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    let mut child = spawn(role!(child_write_pattern), &[&name], &[]).unwrap();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    let mut data = vec![0u8; 4096 - 8];
    segment.read_at(8, &mut data).unwrap();
    assert_eq!(data, pattern(4096 - 8, 0));
    segment.unlink().unwrap();
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    assert_eq!(
        Segment::open_named(&name).unwrap_err().io_kind(),
        Some(std::io::ErrorKind::NotFound)
    );
}

fn named_segment_create_is_exclusive_and_private() {
    let segment = Segment::create_named(None, 100).unwrap();
    let name = segment.name().unwrap().to_owned();
    let again = Segment::create_named(Some(&name), 100).unwrap_err();
    assert_eq!(again.io_kind(), Some(std::io::ErrorKind::AlreadyExists));
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    segment.unlink().unwrap();
}

fn futex_wait_is_woken_by_another_process() {
    let segment = Segment::anonymous(4096).unwrap();
    let word = segment.atomic_u32(0).unwrap();
    let mut child = spawn(role!(child_wake_later), &[], &[segment.as_fd()]).unwrap();
    let start = Instant::now();
    let deadline = Some(start + Duration::from_secs(10));
    let mut woken = false;
    while word.load(Ordering::Acquire) == 0 {
        match futex::wait(word, 0, deadline) {
            WaitOutcome::TimedOut => break,
            WaitOutcome::Woken | WaitOutcome::Changed => woken = true,
        }
    }
    assert_eq!(word.load(Ordering::Acquire), 1, "child never stored");
    assert!(woken, "the wait never returned through a wake-up");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn futex_wait_until_spins_then_sleeps_across_processes() {
    let segment = Segment::anonymous(4096).unwrap();
    let word = segment.atomic_u32(0).unwrap();
    let mut child = spawn(role!(child_wake_later), &[], &[segment.as_fd()]).unwrap();
    let value = futex::wait_until(
        word,
        multiproc_core::time::deadline_after(Duration::from_secs(10)),
        |v| v == 1,
    );
    assert_eq!(value, Ok(1));
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn timed_wait_returns_on_time() {
    let segment = Segment::anonymous(4096).unwrap();
    let word = segment.atomic_u32(0).unwrap();
    for ms in [0u64, 20, 100] {
        let timeout = Duration::from_millis(ms);
        let start = Instant::now();
        let result = futex::wait_until(word, Some(start + timeout), |v| v == 1);
        let took = start.elapsed();
        assert!(result.is_err());
        assert!(took >= timeout, "returned early: {took:?} < {timeout:?}");
        assert!(
            took < timeout + Duration::from_millis(200),
            "returned late: {took:?}"
        );
    }
}

fn handles_cross_a_socket_and_work() {
    let (ours, theirs) = scm::stream_pair().unwrap();
    let mut child = spawn(role!(child_receive_handles), &[], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    let segment = Segment::anonymous(1000).unwrap();
    segment.write_at(0, &pattern(1000, 0)).unwrap();
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let message = (&segment, multiproc_core::SharedFd::from(write_end));
    let (bytes, fds) = codec::encode_with_fds(&message).unwrap();
    assert_eq!(fds.len(), 2);
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    scm::send_all(&ours, &bytes, &borrowed).unwrap();
    drop(fds);
    drop(message);
    let mut answer = [0u8; 8];
    let n = rustix::io::read(&read_end, &mut answer).unwrap();
    assert_eq!(&answer[..n], b"ok");
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
}

fn surplus_and_unexpected_descriptors_are_closed() {
    for (sent, accepted) in [(10usize, 3usize), (5, 0), (1, 1)] {
        let (ours, theirs) = scm::stream_pair().unwrap();
        let before = open_fd_count();
        let mut child = spawn(
            role!(child_send_fds),
            &[&sent.to_string()],
            &[theirs.as_fd()],
        )
        .unwrap();
        drop(theirs);
        let mut buf = [0u8; 16];
        let got = scm::recv(&ours, &mut buf, accepted).unwrap();
        assert_eq!(&buf[..got.len], b"fds");
        assert_eq!(got.fds.len(), sent.min(accepted));
        assert_eq!(got.fds_truncated, sent > accepted);
        for fd in &got.fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        assert_eq!(open_fd_count(), before - 1 + got.fds.len());
        drop(got);
        assert_eq!(open_fd_count(), before - 1, "a received descriptor leaked");
        assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    }
}

fn too_many_descriptors_are_refused_before_sending() {
    let (ours, _theirs) = scm::stream_pair().unwrap();
    let fds = vec![ours.as_fd(); scm::MAX_FDS + 1];
    let err = scm::send(&ours, b"x", &fds).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

fn send_to_closed_peer_is_an_error_not_sigpipe() {
    let (ours, theirs) = scm::stream_pair().unwrap();
    drop(theirs);
    let err = scm::send(&ours, b"x", &[]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

fn corrupt_or_truncated_segments_fail_cleanly() {
    const MAGIC: [u8; 8] = *b"TESTOBJ\0";
    let segment = Segment::anonymous(4096).unwrap();
    segment
        .publish_header(0, &Header::new(MAGIC, 3, 4096))
        .unwrap();
    assert_eq!(segment.read_header(0, MAGIC, 3).unwrap().version(), 3);

    let wrong_magic = segment.read_header(0, *b"OTHER\0\0\0", 3).unwrap_err();
    assert!(matches!(
        wrong_magic,
        SegmentError::Header(HeaderError::BadMagic { .. })
    ));
    let wrong_version = segment.read_header(0, MAGIC, 4).unwrap_err();
    assert!(matches!(
        wrong_version,
        SegmentError::Header(HeaderError::BadVersion { found: 3, .. })
    ));

    // A header claiming more than the segment holds.
    segment
        .publish_header(0, &Header::new(MAGIC, 3, 1 << 40))
        .unwrap();
    assert!(matches!(
        segment.read_header(0, MAGIC, 3),
        Err(SegmentError::Header(HeaderError::BadSize { .. }))
    ));
    // Garbage over the header.
    segment.write_at(0, &[0xA5; 32]).unwrap();
    assert!(segment.read_header(0, MAGIC, 3).is_err());

    // Too small for a header, and headers past the end.
    let tiny = Segment::anonymous(8).unwrap();
    assert!(matches!(
        tiny.read_header(0, MAGIC, 3),
        Err(SegmentError::Header(HeaderError::Truncated {
            need: 32,
            have: 8
        }))
    ));
    assert!(segment.read_header(4090, MAGIC, 3).is_err());
    assert!(segment.read_header(usize::MAX, MAGIC, 3).is_err());
}

fn unsealed_memfd_is_refused_sealed_one_attaches() {
    let raw = rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&raw, 4096).unwrap();
    assert!(matches!(
        Segment::from_fd(raw),
        Err(SegmentError::NotSealed)
    ));

    let sealed = Segment::anonymous(4096).unwrap();
    let fd = rustix::io::fcntl_dupfd_cloexec(&sealed, 0).unwrap();
    let attached = Segment::from_fd(fd).unwrap();
    assert_eq!(attached.len(), 4096);
    // The seals hold: nobody can shrink the file under the mappings.
    assert!(rustix::fs::ftruncate(&sealed, 0).is_err());
}

fn bad_sizes_and_names_are_typed_errors() {
    assert!(matches!(
        Segment::anonymous(0),
        Err(SegmentError::InvalidSize(0))
    ));
    assert!(matches!(
        Segment::create_named(None, 0),
        Err(SegmentError::InvalidSize(0))
    ));
    for bad in ["", "/", "a/b", "..", "x\0y"] {
        assert!(
            matches!(
                Segment::create_named(Some(bad), 10),
                Err(SegmentError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let long = "n".repeat(256);
    assert!(matches!(
        Segment::open_named(&long),
        Err(SegmentError::InvalidName { .. })
    ));
}

fn generated_names_take_their_prefix_from_the_environment() {
    // Here: the run's prefix, set by the testkit before the tests.
    assert_eq!(name_prefix().unwrap(), shm_prefix());
    let custom = format!("{}custom.x-y_", shm_prefix());
    let cases = [
        (Some(custom.clone()), format!("prefix={custom}")),
        (Some(String::new()), "prefix=mp_".to_owned()),
        (None, "prefix=mp_".to_owned()),
    ];
    for (value, check) in cases {
        let mut cmd = multiproc_testkit::command(role!(child_generated_names), &[&check], &[]);
        match value {
            Some(value) => cmd.env(NAME_PREFIX_ENV, value),
            None => cmd.env_remove(NAME_PREFIX_ENV),
        };
        let status = cmd.stdin(std::process::Stdio::null()).status().unwrap();
        assert!(status.success(), "{check}: {status}");
    }
    let too_long = "p".repeat(segment::MAX_NAME_PREFIX_LEN + 1);
    for bad in ["a/b", "mp *", "..\\", too_long.as_str()] {
        let given = unique_name("given");
        let status = multiproc_testkit::command(
            role!(child_generated_names),
            &[&format!("invalid={bad}"), &given],
            &[],
        )
        .env(NAME_PREFIX_ENV, bad)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
        assert!(status.success(), "{bad:?}: {status}");
    }
}

fn handle_in_a_plain_codec_is_refused() {
    let segment = Segment::anonymous(64).unwrap();
    let before = open_fd_count();
    assert!(
        codec::encode(&segment)
            .unwrap_err()
            .is_descriptors_unsupported()
    );
    assert_eq!(open_fd_count(), before, "a refused encode leaked a dup");
    // Decoding a handle with no descriptors is an error, not a panic.
    let (bytes, fds) = codec::encode_with_fds(&segment).unwrap();
    drop(fds);
    assert!(codec::decode_with_fds::<Segment>(&bytes, Vec::new()).is_err());
    assert!(
        codec::decode::<Segment>(&bytes)
            .unwrap_err()
            .is_descriptors_unsupported()
    );
}

fn an_object_from_another_pid_namespace_is_refused_on_attach() {
    let segment = Segment::anonymous(4096).unwrap();
    segment
        .publish_header(0, &Header::new(NS_MAGIC, 1, 4096))
        .unwrap();
    let status = spawn(role!(child_read_header), &["same"], &[segment.as_fd()])
        .unwrap()
        .wait()
        .unwrap();
    assert!(status.success(), "attach in our own namespace: {status:?}");
    let Some(mut cmd) = multiproc_testkit::command_in_new_pid_namespace(
        role!(child_read_header),
        &["foreign"],
        &[segment.as_fd()],
    ) else {
        return;
    };
    let status = cmd.stdin(std::process::Stdio::null()).status().unwrap();
    assert!(
        status.success(),
        "attach from another namespace: {status:?}"
    );
}

static FORK_HANDLER_RAN: AtomicBool = AtomicBool::new(false);

extern "C" fn note_fork() {
    FORK_HANDLER_RAN.store(true, Ordering::Relaxed);
}

extern "C" fn say_goodbye() {
    let _ = rustix::io::write(rustix::stdio::stdout(), b"exit handler ran\n");
}

/// Waits for the forked child `pid` and returns its status.
fn reap(pid: rustix::process::Pid) -> rustix::process::WaitStatus {
    let (found, status) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
            .unwrap()
            .unwrap();
    assert_eq!(found, pid);
    status
}

/// Forks with `multiproc_core::process::fork` from this single-threaded
/// process (a role runs before any test thread exists): the child runs
/// the `at_fork_child` handler, ends through `exit_now` without the
/// `at_exit` handler, may be killed by a signal, and (nothing else runs
/// here) may allocate, format and print.
fn child_fork_wrapper(_: &[String]) {
    assert_eq!(std::fs::read_dir("/proc/self/task").unwrap().count(), 1);
    process::at_exit(say_goodbye).unwrap();
    // SAFETY: `note_fork` only stores to an atomic.
    unsafe { process::at_fork_child(note_fork) }.unwrap();

    // SAFETY: the contract of `process::fork` holds: this process has one
    // thread, and every child below ends with `exit_now` or a signal.
    let pid = match unsafe { process::fork() }.unwrap() {
        Forked::Child => process::exit_now(if FORK_HANDLER_RAN.load(Ordering::Relaxed) {
            7
        } else {
            1
        }),
        Forked::Parent(pid) => pid,
    };
    assert!(
        !FORK_HANDLER_RAN.load(Ordering::Relaxed),
        "ran in the parent"
    );
    let status = reap(pid);
    assert_eq!(status.exit_status(), Some(7), "{status:?}");
    assert_eq!(status.terminating_signal(), None);

    // SAFETY: as above.
    let pid = match unsafe { process::fork() }.unwrap() {
        Forked::Child => {
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
            process::exit_now(1)
        }
        Forked::Parent(pid) => pid,
    };
    let status = reap(pid);
    assert_eq!(status.terminating_signal(), Some(9), "{status:?}");
    assert_eq!(status.exit_status(), None);

    // SAFETY: as above.
    let pid = match unsafe { process::fork() }.unwrap() {
        Forked::Child => {
            let text = format!("child {} printed", 42);
            println!("{text}");
            std::io::Write::flush(&mut std::io::stdout()).unwrap();
            process::exit_now(0)
        }
        Forked::Parent(pid) => pid,
    };
    assert_eq!(reap(pid).exit_status(), Some(0));
    println!("parent done");
}

fn the_fork_wrapper_runs_handlers_and_reports_statuses() {
    let out = multiproc_testkit::command(role!(child_fork_wrapper), &[], &[])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("child 42 printed\n"), "{stdout}");
    assert!(stdout.contains("parent done\n"), "{stdout}");
    // Once: the role's own exit ran it, no forked child's `exit_now` did.
    assert_eq!(stdout.matches("exit handler ran").count(), 1, "{stdout}");
}

fn main() {
    let roles: &[Role] = &[
        role!(child_read_header),
        role!(child_write_pattern),
        role!(child_wake_later),
        role!(child_receive_handles),
        role!(child_send_fds),
        role!(child_generated_names),
        role!(child_fork_wrapper),
    ];
    run(
        roles,
        tests![
            child_writes_memfd_segment_parent_reads,
            child_writes_named_segment_parent_reads_then_unlinks,
            named_segment_create_is_exclusive_and_private,
            futex_wait_is_woken_by_another_process,
            futex_wait_until_spins_then_sleeps_across_processes,
            timed_wait_returns_on_time,
            handles_cross_a_socket_and_work,
            surplus_and_unexpected_descriptors_are_closed,
            too_many_descriptors_are_refused_before_sending,
            send_to_closed_peer_is_an_error_not_sigpipe,
            corrupt_or_truncated_segments_fail_cleanly,
            unsealed_memfd_is_refused_sealed_one_attaches,
            bad_sizes_and_names_are_typed_errors,
            generated_names_take_their_prefix_from_the_environment,
            handle_in_a_plain_codec_is_refused,
            an_object_from_another_pid_namespace_is_refused_on_attach,
            the_fork_wrapper_runs_handlers_and_reports_statuses,
        ],
    );
}
