//! SharedMemory and ShareableList between real processes, including Python's
//! own `multiprocessing.shared_memory` (system python3).

use multiproc_core::{codec, scm};
use multiproc_shm::{
    Array, RawArray, RawValue, ShareableList, ShareableValue as V, SharedMemory, ShmError, Value,
};
use multiproc_testkit::{
    Role, eventually, pattern, role, run, shm_names, shm_prefix, spawn, tests, unique_name,
    wait_timeout,
};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn exists(name: &str) -> bool {
    Path::new(&format!("/dev/shm/{name}")).exists()
}

// ---- child roles -------------------------------------------------------

/// Opens `args[0]`, checks the pattern, writes a marker, drops the handle.
fn child_open_and_mark(args: &[String]) {
    let shm = SharedMemory::open(&args[0]).unwrap();
    let mut data = vec![0u8; shm.size()];
    shm.read_at(0, &mut data).unwrap();
    assert_eq!(&data[8..], &pattern(shm.size(), 0)[8..]);
    shm.write_at(0, b"childwas").unwrap();
}

/// Creates a block, prints its name, and waits to be killed.
fn child_create_and_wait(_: &[String]) {
    let shm = SharedMemory::create(None, 4096).unwrap();
    println!("{}", shm.name());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Creates an untracked block, prints its name, waits to be killed.
fn child_create_untracked_and_wait(_: &[String]) {
    let shm = SharedMemory::create_untracked(None, 4096).unwrap();
    println!("{}", shm.name());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// The processes other than this one whose environment holds `marker`:
/// what this process forked (its shared-memory tracker) inherits it.
fn forked_from_here(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}

/// Creates a block (which starts this process's tracker), SIGKILLs the
/// tracker, creates a second block, prints both names and exits without
/// unlinking either, as a crashing creator would. Run with `args[0]` =
/// a `KEY=VALUE` marker that is in its environment and nowhere else.
/// `SIGPIPE` is at its default action here, as in a C host: a write to the
/// dead tracker must not kill the process.
#[allow(unsafe_code)]
fn child_create_around_a_dead_tracker(args: &[String]) {
    // (libc: rustix has no `signal`/`sigaction` outside its unstable
    // runtime module, and the crates only ever set "ignore".)
    // SAFETY: sets a signal disposition to its default, in a process that
    // has no handler of its own for it.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let first = SharedMemory::create(None, 4096).unwrap();
    let tracker = forked_from_here(&args[0]);
    assert_eq!(tracker.len(), 1, "not one tracker: {tracker:?}");
    let pid = rustix::process::Pid::from_raw(tracker[0]).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    assert!(eventually(Duration::from_secs(5), || forked_from_here(
        &args[0]
    )
    .is_empty()));
    let second = SharedMemory::create(None, 4096).unwrap();
    println!("{}\n{}", first.name(), second.name());
    std::io::stdout().flush().unwrap();
    // A crash leaves no destructor run either.
    std::mem::forget((first, second));
    std::process::exit(0);
}

/// Creates and drops blocks until killed: one under the name
/// `args[0]` + a counter, one under a generated name, in turns.
fn child_create_in_a_loop(args: &[String]) {
    for i in 0u64.. {
        drop(SharedMemory::create(Some(&format!("{}{i}", args[0])), 4096).unwrap());
        drop(SharedMemory::create(None, 4096).unwrap());
    }
}

/// Receives a `(Value<u64>, RawValue<u64>, Array<u64>)` over the inherited
/// socket and adds to each `args[0]` times: under the lock, atomically in
/// place, and element-wise under the array's lock.
fn child_increment(args: &[String]) {
    let socket = multiproc_testkit::inherited_fds().remove(0);
    let mut buf = vec![0u8; 4096];
    let got = scm::recv(&socket, &mut buf, 8).unwrap();
    let (value, raw, array): (Value<u64>, RawValue<u64>, Array<u64>) =
        codec::decode_with_fds(&buf[..got.len], got.fds).unwrap();
    let n: u64 = args[0].parse().unwrap();
    for i in 0..n {
        let guard = value.lock().unwrap_or_else(|died| died.into_inner());
        guard.set(0, guard.get(0).unwrap() + 1).unwrap();
        drop(guard);
        raw.atomic().fetch_add(1, Ordering::Relaxed);
        let slot = (i % 4) as usize;
        let guard = array.lock().unwrap_or_else(|died| died.into_inner());
        guard.set(slot, guard.get(slot).unwrap() + 1).unwrap();
    }
}

/// Receives a `Value<u64>` and an `Array<u64>`, takes both locks (the
/// array's Python's way, with `get_lock`), writes 999 under them, reports,
/// and waits to be killed.
fn child_hold_value_lock(_: &[String]) {
    let socket = multiproc_testkit::inherited_fds().remove(0);
    let mut buf = vec![0u8; 4096];
    let got = scm::recv(&socket, &mut buf, 8).unwrap();
    let (value, array): (Value<u64>, Array<u64>) =
        codec::decode_with_fds(&buf[..got.len], got.fds).unwrap();
    let guard = value.lock().unwrap();
    guard.set(0, 999).unwrap();
    let _held = array.get_lock().acquire().unwrap();
    array.set(0, 999).unwrap();
    scm::send(&socket, b"held", &[]).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn send_handles<T: serde::Serialize>(socket: &std::os::fd::OwnedFd, value: &T) {
    let (bytes, fds) = codec::encode_with_fds(value).unwrap();
    let lent: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    scm::send_all(socket, &bytes, &lent).unwrap();
}

// ---- python ------------------------------------------------------------

/// Starts `python3 -c script args…` with piped stdin/stdout, or `None`
/// (with a message) when python3 is not installed.
fn python(script: &str, args: &[&str]) -> Option<std::process::Child> {
    match Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => Some(child),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("python3 not found: skipping the Python interop check");
            None
        }
        Err(e) => panic!("starting python3: {e}"),
    }
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

// ---- tests -------------------------------------------------------------

fn child_opens_by_name_and_writes() {
    let shm = SharedMemory::create(None, 10_000).unwrap();
    shm.write_at(0, &pattern(10_000, 0)).unwrap();
    let mut child = spawn(role!(child_open_and_mark), &[shm.name()], &[]).unwrap();
    assert!(wait_timeout(&mut child, LIMIT).success());
    let mut head = [0u8; 8];
    shm.read_at(0, &mut head).unwrap();
    assert_eq!(&head, b"childwas");
    // The attacher dropped its handle: the name must still be there.
    assert!(exists(shm.name()));
    let name = shm.name().to_owned();
    drop(shm);
    assert!(!exists(&name), "the owner's drop did not unlink");
}

fn sigkilled_creator_is_reclaimed() {
    for _ in 0..3 {
        let mut child = multiproc_testkit::command(role!(child_create_and_wait), &[], &[])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let name = line(&mut BufReader::new(child.stdout.take().unwrap()));
        assert!(name.starts_with(&shm_prefix()), "{name:?}");
        assert!(exists(&name));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            eventually(Duration::from_secs(3), || !exists(&name)),
            "{name} survived its SIGKILLed creator"
        );
    }
}

fn create_untracked_starts_no_tracker_and_leaves_a_killed_creators_name() {
    let marker = format!("MP_TEST_UNTRACKED={}", unique_name("untracked"));
    let (key, value) = marker.split_once('=').unwrap();
    let mut child = multiproc_testkit::command(role!(child_create_untracked_and_wait), &[], &[])
        .env(key, value)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let name = line(&mut BufReader::new(child.stdout.take().unwrap()));
    assert!(exists(&name));
    // Only the child itself carries the marker: it forked no tracker.
    assert_eq!(forked_from_here(&marker), vec![child.id() as i32]);
    child.kill().unwrap();
    child.wait().unwrap();
    // Nobody reclaims it (a tracked name goes within a few milliseconds:
    // `sigkilled_creator_is_reclaimed`); it is ours to unlink.
    std::thread::sleep(Duration::from_millis(300));
    assert!(exists(&name), "{name} was reclaimed");
    SharedMemory::open(&name).unwrap().unlink().unwrap();
}

/// Names in `/dev/shm` of this run (see `multiproc_testkit::shm_prefix`):
/// other programs' do not count.
fn our_names() -> std::collections::HashSet<String> {
    shm_names(&shm_prefix()).into_iter().collect()
}

fn a_creator_killed_inside_create_leaves_no_name() {
    // Creators SIGKILLed at random instants, the first create among them
    // (which also starts the tracker): every name they made must be
    // reclaimed, whatever instant the kill hit.
    let before = our_names();
    let prefix = format!("{}_", unique_name("killed_in_create"));
    let mut seed = u64::from(std::process::id()) | 1;
    for round in 0..150 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let prefix = format!("{prefix}{round}_");
        let mut child = spawn(role!(child_create_in_a_loop), &[&prefix], &[]).unwrap();
        std::thread::sleep(Duration::from_micros(seed % 6000));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let left = || {
        let mut left: Vec<String> = our_names().difference(&before).cloned().collect();
        left.sort();
        left
    };
    // Generated names and asked-for ones alike. (Other tests of this
    // binary create blocks too, for a moment each.)
    let reclaimed = eventually(Duration::from_secs(10), || left().is_empty());
    assert!(reclaimed, "names left behind: {:?}", left());
}

fn a_dead_tracker_is_replaced_and_still_reclaims_every_name() {
    // The tracker of a creator is killed from outside. The creator's next
    // create must not fail (nor die of SIGPIPE), and when the creator exits
    // without unlinking, both its names must be reclaimed: the one made
    // before the tracker died too.
    let marker = format!("MULTIPROC_TRACKER_TEST={}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let out =
        multiproc_testkit::command(role!(child_create_around_a_dead_tracker), &[&marker], &[])
            .env(key, value)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        assert!(
            eventually(Duration::from_secs(5), || !exists(name)),
            "{name} survived its creator"
        );
    }
}

fn explicit_unlink_then_drop_does_not_fail_or_double_unlink() {
    let shm = SharedMemory::create(None, 64).unwrap();
    let name = shm.name().to_owned();
    shm.unlink().unwrap();
    assert!(!exists(&name));
    assert!(matches!(shm.unlink(), Err(ShmError::Segment(_))));
    shm.write_at(0, b"still mapped").unwrap();
    drop(shm);
    // A user-named block created afterwards under the same name survives
    // the old handle's tracker record.
    let again = SharedMemory::create(Some(&name), 64).unwrap();
    assert!(exists(&name));
    drop(again);
    assert!(!exists(&name));
}

fn persistent_block_outlives_its_handle() {
    let shm = SharedMemory::create(None, 64).unwrap();
    let name = shm.into_persistent();
    assert!(exists(&name));
    let reopened = SharedMemory::open(&name).unwrap();
    reopened.unlink().unwrap();
    assert!(!exists(&name));
}

fn python_creates_rust_opens() {
    let script = r#"
import sys
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=4096)
shm.buf[:4096] = bytes(i % 251 for i in range(4096))
print(shm.name, flush=True)
sys.stdin.readline()
ok = bytes(shm.buf[:4]) == b"rust"
shm.close()
shm.unlink()
print("OK" if ok else "BAD", flush=True)
"#;
    // The name comes from here, so the run's leak check covers it.
    let wanted = unique_name("py_block");
    let Some(mut py) = python(script, &[&wanted]) else {
        return;
    };
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let name = line(&mut out);
    assert_eq!(name, wanted);
    let shm = SharedMemory::open(&name).unwrap();
    assert!(!shm.is_owner());
    assert_eq!(shm.size(), 4096);
    assert_eq!(shm.to_vec(), pattern(4096, 0), "bytes differ from Python's");
    shm.write_at(0, b"rust").unwrap();
    writeln!(py.stdin.as_mut().unwrap(), "go").unwrap();
    assert_eq!(line(&mut out), "OK");
    assert!(wait_timeout(&mut py, LIMIT).success());
    drop(shm);
    assert!(!exists(&name));
}

fn rust_creates_python_opens() {
    let shm = SharedMemory::create(None, 4096).unwrap();
    shm.write_at(0, &pattern(4096, 0)).unwrap();
    // Python < 3.13 registers attached blocks with its resource tracker,
    // which would unlink ours when Python exits: unregister right away.
    let script = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1])
resource_tracker.unregister(shm._name, "shared_memory")
ok = shm.size >= 4096 and bytes(shm.buf[:4096]) == bytes(i % 251 for i in range(4096))
shm.buf[:2] = b"py"
shm.close()
print("OK" if ok else "BAD", flush=True)
"#;
    let Some(mut py) = python(script, &[shm.name()]) else {
        return;
    };
    let mut out = BufReader::new(py.stdout.take().unwrap());
    assert_eq!(line(&mut out), "OK", "Python saw other bytes");
    assert!(wait_timeout(&mut py, LIMIT).success());
    let mut head = [0u8; 2];
    shm.read_at(0, &mut head).unwrap();
    assert_eq!(&head, b"py");
    assert!(
        exists(shm.name()),
        "Python unlinked a block it does not own"
    );
}

fn expected_items() -> Vec<V> {
    vec![
        V::Int(42),
        V::Int(-1),
        V::Float(3.5),
        V::Bool(true),
        V::Bool(false),
        V::None,
        V::Str("héllo".into()),
        V::Bytes(b"by\x00tes".to_vec()),
        V::Str("x".repeat(20)),
        V::Str(String::new()),
    ]
}

const PY_ITEMS: &str = r#"[42, -1, 3.5, True, False, None, "héllo", b"by\x00tes", "x" * 20, ""]"#;

fn python_shareable_list_opens_here() {
    let script = format!(
        r#"
import sys
from multiprocessing import shared_memory
sl = shared_memory.ShareableList({PY_ITEMS}, name=sys.argv[1])
print(sl.shm.name, flush=True)
sys.stdin.readline()
ok = list(sl) == [7, "new", 2.25, None, True, False, "hé", b"\x01\x02", "y" * 20, 1]
sl.shm.close()
sl.shm.unlink()
print("OK" if ok else "BAD", flush=True)
"#
    );
    let wanted = unique_name("py_list");
    let Some(mut py) = python(&script, &[&wanted]) else {
        return;
    };
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let name = line(&mut out);
    assert_eq!(name, wanted);
    let list = ShareableList::open(&name).unwrap();
    assert_eq!(list.to_vec().unwrap(), expected_items());
    for (i, value) in [
        V::Int(7),
        V::from("new"),
        V::Float(2.25),
        V::None,
        V::Bool(true),
        V::Bool(false),
        V::from("hé"),
        V::Bytes(vec![1, 2]),
        V::Str("y".repeat(20)),
        V::Int(1),
    ]
    .into_iter()
    .enumerate()
    {
        list.set(i, value).unwrap();
    }
    writeln!(py.stdin.as_mut().unwrap(), "go").unwrap();
    assert_eq!(line(&mut out), "OK", "Python read back other values");
    assert!(wait_timeout(&mut py, LIMIT).success());
}

fn rust_shareable_list_opens_in_python() {
    let list = ShareableList::create(None, &expected_items()).unwrap();
    let script = format!(
        r#"
import sys
from multiprocessing import shared_memory, resource_tracker
sl = shared_memory.ShareableList(name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")
ok = list(sl) == {PY_ITEMS}
sl[0] = 99
sl[6] = "abc"
sl[2] = "str in a float slot"[:8]
sl[5] = b"raw"
sl.shm.close()
print("OK" if ok else "BAD", flush=True)
"#
    );
    let Some(mut py) = python(&script, &[list.shm().name()]) else {
        return;
    };
    let mut out = BufReader::new(py.stdout.take().unwrap());
    assert_eq!(line(&mut out), "OK", "Python read other values");
    assert!(wait_timeout(&mut py, LIMIT).success());
    assert_eq!(list.get(0).unwrap(), V::Int(99));
    assert_eq!(list.get(6).unwrap(), V::from("abc"));
    assert_eq!(list.get(2).unwrap(), V::from("str in a"));
    assert_eq!(list.get(5).unwrap(), V::Bytes(b"raw".to_vec()));
}

fn bad_input_is_a_typed_error() {
    for name in ["", "/", "a/b", &"n".repeat(256)] {
        assert!(
            matches!(
                SharedMemory::create(Some(name), 10),
                Err(ShmError::Segment(_))
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        SharedMemory::create(None, 0),
        Err(ShmError::Segment(_))
    ));
    let missing = SharedMemory::open(&unique_name("does_not_exist")).unwrap_err();
    assert!(
        matches!(missing, ShmError::Segment(ref e) if e.io_kind() == Some(std::io::ErrorKind::NotFound))
    );

    // A foreign block that is not a list.
    let foreign = SharedMemory::create(None, 64).unwrap();
    foreign.write_at(0, &[0xff; 64]).unwrap();
    assert!(matches!(
        ShareableList::open(foreign.name()),
        Err(ShmError::NotAShareableList(_))
    ));
    foreign.write_at(0, &3i64.to_ne_bytes()).unwrap();
    assert!(matches!(
        ShareableList::open(foreign.name()),
        Err(ShmError::NotAShareableList(_))
    ));

    let list = ShareableList::create(None, &[V::Int(1)]).unwrap();
    assert!(matches!(
        list.get(1),
        Err(ShmError::IndexOutOfRange { index: 1, len: 1 })
    ));
    assert!(matches!(
        list.set(0, V::from("123456789")),
        Err(ShmError::ValueTooLong {
            len: 9,
            capacity: 8
        })
    ));
    assert!(list.set(0, V::from("12345678")).is_ok());
}

fn garbage_blocks_never_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let shm = SharedMemory::create(None, 256).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 256), |bytes| {
            shm.write_at(0, &bytes).unwrap();
            let attached = SharedMemory::open(shm.name()).unwrap();
            if let Ok(list) = ShareableList::from_shared_memory(attached) {
                let _ = list.to_vec();
            }
            Ok(())
        })
        .unwrap();
    // Plausible count, corrupt rest.
    let mut bytes = vec![0u8; 256];
    bytes[..8].copy_from_slice(&2i64.to_ne_bytes());
    bytes[16..24].copy_from_slice(&(-5i64).to_ne_bytes());
    shm.write_at(0, &bytes).unwrap();
    assert!(ShareableList::open(shm.name()).is_err());
}

fn values_count_exactly_across_processes() {
    const PROCESSES: u64 = 4;
    const EACH: u64 = 20_000;
    let value = Value::new(0u64).unwrap();
    let raw = RawValue::new(0u64).unwrap();
    let array = Array::filled(0u64, 4).unwrap();
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let (ours, theirs) = scm::stream_pair().unwrap();
        let child = spawn(
            role!(child_increment),
            &[&EACH.to_string()],
            &[theirs.as_fd()],
        )
        .unwrap();
        send_handles(&ours, &(&value, &raw, &array));
        children.push((child, ours));
    }
    for (mut child, _socket) in children {
        assert!(wait_timeout(&mut child, LIMIT).success());
    }
    assert_eq!(value.get().unwrap(), PROCESSES * EACH);
    assert_eq!(raw.get(), PROCESSES * EACH);
    assert_eq!(array.to_vec().unwrap(), vec![PROCESSES * EACH / 4; 4]);
}

fn value_lock_holder_killed_reports_owner_died() {
    let value = Value::new(1u64).unwrap();
    let array = Array::filled(1u64, 2).unwrap();
    let (ours, theirs) = scm::stream_pair().unwrap();
    let mut child = spawn(role!(child_hold_value_lock), &[], &[theirs.as_fd()]).unwrap();
    send_handles(&ours, &(&value, &array));
    let mut buf = [0u8; 8];
    let got = scm::recv(&ours, &mut buf, 0).unwrap();
    assert_eq!(&buf[..got.len], b"held");
    child.kill().unwrap();
    child.wait().unwrap();
    // The plain accessors say so once, without doing their work…
    assert!(value.get().unwrap_err().is_owner_died());
    assert!(array.set(1, 5).unwrap_err().is_owner_died());
    // …then work again, on data the dead holder left.
    assert_eq!(value.get().unwrap(), 999);
    assert_eq!(array.to_vec().unwrap(), [999, 1]);
    value.set(2).unwrap();
    assert_eq!(value.get().unwrap(), 2);
    // The guard form hands the guard over with the news.
    let value = Value::new(1u64).unwrap();
    let (ours, theirs) = scm::stream_pair().unwrap();
    let mut child = spawn(role!(child_hold_value_lock), &[], &[theirs.as_fd()]).unwrap();
    send_handles(&ours, &(&value, &array));
    let got = scm::recv(&ours, &mut buf, 0).unwrap();
    assert_eq!(&buf[..got.len], b"held");
    child.kill().unwrap();
    child.wait().unwrap();
    let repaired = match value.lock() {
        Err(died) => died.into_inner(),
        Ok(_) => panic!("the dead holder went unnoticed"),
    };
    assert_eq!(repaired.get(0).unwrap(), 999);
    repaired.set(0, 1).unwrap();
    drop(repaired);
    assert_eq!(value.get().unwrap(), 1);
}

/// Python's `with v.get_lock(): v.value += 1`, written the same way.
fn python_value_idiom_does_not_panic() {
    let v = Value::new(0u64).unwrap();
    let a = Array::filled(0u64, 2).unwrap();
    {
        let _held = v.get_lock().acquire().unwrap();
        v.set(v.get().unwrap() + 1).unwrap();
        let _also = a.get_lock().acquire().unwrap();
        a.set(1, a.get(1).unwrap() + 1).unwrap();
        a.write_slice(0, &[5]).unwrap();
        assert_eq!(a.to_vec().unwrap(), [5, 1]);
    }
    assert_eq!(v.get().unwrap(), 1);
    assert!(!v.get_lock().is_locked() && !a.get_lock().is_locked());
}

fn wrong_element_type_is_refused() {
    let value = Value::new(7u32).unwrap();
    let (bytes, fds) = codec::encode_with_fds(&value).unwrap();
    assert!(codec::decode_with_fds::<Value<u64>>(&bytes, fds).is_err());
    let (bytes, fds) = codec::encode_with_fds(&value).unwrap();
    let same: Value<u32> = codec::decode_with_fds(&bytes, fds).unwrap();
    assert_eq!(same.get().unwrap(), 7);
    // A segment that is not a value at all.
    let shm = SharedMemory::create(None, 4096).unwrap();
    let (bytes, fds) = codec::encode_with_fds(shm.segment()).unwrap();
    assert!(codec::decode_with_fds::<RawArray<u8>>(&bytes, fds).is_err());
}

/// Takes a `Value<u64>` passed with `multiproc_shm::inherit` and adds one.
fn child_inherit_increment(_: &[String]) {
    use multiproc_shm::inherit;
    let counter: Value<u64> = inherit::take("shared").unwrap();
    let guard = counter.lock().unwrap();
    guard.set(0, guard.get(0).unwrap() + 1).unwrap();
}

fn shm_shared_with_a_command_child_through_inherit() {
    // The recipe of the crate docs ("Using this crate alone").
    use multiproc_shm::inherit;
    let counter = Value::new(41u64).unwrap();
    let mut cmd = multiproc_testkit::command(role!(child_inherit_increment), &[], &[]);
    inherit::pass(&mut cmd, "shared", &counter).unwrap();
    let mut child = cmd.stdin(Stdio::null()).spawn().unwrap();
    drop(cmd);
    assert!(multiproc_testkit::wait_timeout(&mut child, Duration::from_secs(30)).success());
    assert_eq!(counter.get().unwrap(), 42);
}

fn main() {
    let roles: &[Role] = &[
        role!(child_inherit_increment),
        role!(child_create_in_a_loop),
        role!(child_create_around_a_dead_tracker),
        role!(child_open_and_mark),
        role!(child_create_and_wait),
        role!(child_create_untracked_and_wait),
        role!(child_increment),
        role!(child_hold_value_lock),
    ];
    run(
        roles,
        tests![
            shm_shared_with_a_command_child_through_inherit,
            child_opens_by_name_and_writes,
            create_untracked_starts_no_tracker_and_leaves_a_killed_creators_name,
            sigkilled_creator_is_reclaimed,
            a_dead_tracker_is_replaced_and_still_reclaims_every_name,
            a_creator_killed_inside_create_leaves_no_name,
            explicit_unlink_then_drop_does_not_fail_or_double_unlink,
            persistent_block_outlives_its_handle,
            python_creates_rust_opens,
            rust_creates_python_opens,
            python_shareable_list_opens_here,
            rust_shareable_list_opens_in_python,
            bad_input_is_a_typed_error,
            garbage_blocks_never_panic,
            values_count_exactly_across_processes,
            value_lock_holder_killed_reports_owner_died,
            python_value_idiom_does_not_panic,
            wrong_element_type_is_refused,
        ],
    );
}
