//! Every example runs and exits 0 (cargo builds examples before tests).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

#[test]
fn hello_runs_every_section() {
    let out = Command::new(example("hello"))
        .output()
        .expect("examples are built by cargo test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("square(12) = 144"), "{text}");
    assert!(text.contains("HELLO FROM THE PARENT"), "{text}");
    assert!(text.contains("locked increments = 40000"), "{text}");
    assert!(text.contains("\"written by a child\""), "{text}");
}

/// Runs an example with no arguments, checks it exits 0, returns its stdout.
fn run(name: &str) -> String {
    let out = Command::new(example(name))
        .output()
        .expect("examples are built by cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn processes_join_values() {
    let text = run("processes");
    for (n, sum) in [(10, 55), (100, 5050), (1000, 500500), (10000, 50005000)] {
        assert!(
            text.contains(&format!("sum(1..={n}) = {sum}, exitcode Some(0)")),
            "{text}"
        );
    }
    assert!(text.contains("started worker-3"), "{text}");
    assert!(text.contains("4 processes joined in"), "{text}");
}

#[test]
fn worker_struct_runs_in_children() {
    let text = run("worker_struct");
    assert!(text.contains("squarer (pid "), "{text}");
    assert!(text.contains("squared: [1, 4, 9, 16]"), "{text}");
    assert!(text.contains("shouter said: HELLO FROM A STRUCT"), "{text}");
    assert!(text.contains("squared: [25]"), "{text}");
}

#[test]
fn daemon_dies_with_its_parent() {
    let text = run("daemon");
    assert!(
        text.contains("middle: returned (exitcode Some(0))"),
        "{text}"
    );
    assert!(
        text.contains("middle: process killed by SIGKILL (9) (exitcode Some(-9))"),
        "{text}"
    );
    assert_eq!(
        text.matches("after its parent ended, alive: false").count(),
        2,
        "{text}"
    );
}

#[test]
fn terminate_gives_minus_sigterm() {
    let text = run("terminate");
    assert!(text.contains("is_alive true, exitcode None"), "{text}");
    assert!(
        text.contains("join -> process killed by SIGTERM (15)"),
        "{text}"
    );
    assert!(
        text.contains("is_alive false, exitcode Some(-15)"),
        "{text}"
    );
}

#[test]
fn tickets_never_oversold() {
    let child = Command::new(example("tickets"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("examples are built by cargo test");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sold 100 of 100 tickets (100 recorded in the file, 0 left)"),
        "{text}"
    );
    let bought: u32 = text
        .lines()
        .filter_map(|l| l.split_once(" bought ")?.1.parse::<u32>().ok())
        .sum();
    assert_eq!(bought, 100, "{text}");
    assert_eq!(text.matches(" bought ").count(), 10, "{text}");
    let dir = std::env::temp_dir().join(format!("multiproc-tickets-{pid}"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn producer_consumer_joins_the_queue() {
    let text = run("producer_consumer");
    assert!(text.contains("producer put 20 jobs"), "{text}");
    assert!(
        text.contains("jobs.join() returned: 0 unfinished tasks"),
        "{text}"
    );
    for n in 0..20u64 {
        assert!(text.contains(&format!(": {n}^2 = {}\n", n * n)), "{text}");
    }
    assert!(
        text.contains("20 results; 2 daemon consumers still waiting"),
        "{text}"
    );
}

#[test]
fn pipe_reads_until_eof() {
    let text = run("pipe_eof");
    for i in 0..5 {
        assert!(
            text.contains(&format!("received \"message {i}\"")),
            "{text}"
        );
    }
    assert!(text.contains("EOF after 5 messages"), "{text}");
    assert!(text.contains("child sent 5, parent received 5"), "{text}");
}

#[test]
fn pool_apply_apply_async_map() {
    let text = run("pool");
    assert!(text.contains("pool of 2 workers"), "{text}");
    assert!(text.contains("apply(slow_square, 7) = 49"), "{text}");
    assert!(
        text.contains("apply_async values [0, 1, 4, 9, 16], callback saw [0, 1, 4, 9, 16]"),
        "{text}"
    );
    assert!(
        text.contains(
            "successful Some(false), error_callback got \"task panicked: no square for zero today\""
        ),
        "{text}"
    );
    assert!(
        text.contains("map(square, 0..10) = [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"),
        "{text}"
    );
    assert!(text.contains("pool closed and joined"), "{text}");
}

#[test]
fn shared_counter_loses_no_update() {
    let text = run("shared_counter");
    assert!(text.contains("locked increments: counter = 4000"), "{text}");
    assert!(
        text.contains("per worker: [1000, 1000, 1000, 1000]"),
        "{text}"
    );
}

fn check_rust_client(text: &str) {
    assert!(
        text.contains("[server] first client refused: authentication failed"),
        "{text}"
    );
    assert!(text.contains("[client] wrong key refused"), "{text}");
    assert!(text.contains("[server] received \"client pid "), "{text}");
    assert!(
        text.contains("[client] received \"welcome, client pid "),
        "{text}"
    );
    assert!(text.contains("computed by the server: 10"), "{text}");
    assert!(text.contains("[server] client hung up (EOF)"), "{text}");
}

#[test]
fn listener_client_rust_and_python() {
    let text = run("listener_client");
    check_rust_client(&text);
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_python {
        assert!(
            text.contains("[server] python's wrong key refused"),
            "{text}"
        );
        assert!(text.contains("[python] wrong key refused"), "{text}");
        assert!(
            text.contains(
                "received from python: Greeting { language: \"python\", numbers: [5, 6, 7] }"
            ),
            "{text}"
        );
        assert!(
            text.contains("[python] received [('sum', 18), ('text', 'hello, python, from Rust')]"),
            "{text}"
        );
        assert!(
            text.contains("received bytes from python: \"raw bytes from python\""),
            "{text}"
        );
    } else {
        assert!(
            text.contains("[python] skipped: python3 not found"),
            "{text}"
        );
    }
}

#[test]
fn listener_client_without_python_skips_clearly() {
    let out = Command::new(example("listener_client"))
        .env("PATH", "/nonexistent")
        .output()
        .expect("examples are built by cargo test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    check_rust_client(&text);
    assert!(
        text.contains("[python] skipped: python3 not found"),
        "{text}"
    );
}

/// `examples/compare.rs --smoke`: two tiny cases, three peers, a table and
/// the two output files, in a few seconds.
#[test]
fn compare_smoke_prints_a_table_and_writes_files() {
    let out = Command::new(example("compare"))
        .arg("--smoke")
        .output()
        .expect("examples are built by cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("1/6] 1→1 8 B"), "progress lines: {stderr}");
    assert!(stdout.contains("| case | multiproc Queue |"), "{stdout}");
    assert!(stdout.contains("| 1→1 8 B | "), "{stdout}");
    assert!(stdout.contains("| round trip 8 B | "), "{stdout}");
    // The round trip again with the partners pinned: one CPU, two, or
    // where the kernel puts them, with the ratio to the socketpair.
    assert!(stdout.contains("| case | placement |"), "{stdout}");
    assert!(stdout.contains("| round trip 8 B | one CPU | "), "{stdout}");
    assert!(
        stdout.contains("| round trip 8 B | kernel's placement | "),
        "{stdout}"
    );
    // Typed values against the bytes path: the `u64` row at least.
    assert!(
        stdout.contains("| payload | size | Queue bytes |"),
        "{stdout}"
    );
    assert!(stdout.contains("| `u64` | 8 B | "), "{stdout}");
    for line in stdout.lines() {
        if let Some(path) = line
            .strip_prefix("Markdown: ")
            .or_else(|| line.strip_prefix("SVG chart: "))
        {
            let text = std::fs::read_to_string(path).expect("output file");
            assert!(text.contains("1→1 8 B"), "{path}");
        }
    }
    assert!(
        stdout.contains("Markdown: ") && stdout.contains("SVG chart: "),
        "{stdout}"
    );
}
