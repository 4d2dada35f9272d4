//! The `/dev/shm` leak check of [`run`] between real processes: a test
//! binary started from here plays a scenario, and its own leak check (the
//! one `run` does after the tests) is judged by its exit status.
//!
//! Other programs on the machine create `mp_*` and `psm_*` names too; a
//! test binary must not be failed for those, only for names it made.

use multiproc_core::Segment;
use multiproc_testkit::{SHM_PREFIX_ENV, Trial, role, run, shm_prefix, tests};
use std::process::{Command, Output, Stdio};

/// Names the scenario a re-executed test binary plays instead of the tests.
const SCENARIO_ENV: &str = "MULTIPROC_TESTKIT_SCENARIO";

/// Comma-separated names a foreign program creates in the `foreign` scenario.
const FOREIGN_NAMES_ENV: &str = "MULTIPROC_TESTKIT_FOREIGN_NAMES";

// ---- child roles -------------------------------------------------------

/// Another multiproc program: creates a segment under a generated name,
/// prints the name and exits without unlinking it.
fn child_foreign_multiproc_program(_: &[String]) {
    let segment = Segment::create_named(None, 64).unwrap();
    println!("{}", segment.name().unwrap());
}

/// Never given to `run`: starting it must fail in the parent.
fn child_not_given_to_run(_: &[String]) {}

// ---- scenarios (the test binary run again, tests and leak check included) -

/// Other programs on the machine, not started through multiproc and
/// without the run's prefix in their environment, create names like ours
/// while the tests run, and leave them: a shell (the names given), and a
/// multiproc program (a name it generates with the default prefix, which
/// is printed as `foreign: NAME` for the parent to clean up).
fn foreign_programs_leave_names() {
    let names = std::env::var(FOREIGN_NAMES_ENV).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"for n in "$@"; do : > "/dev/shm/$n" || exit 1; done"#)
        .arg("sh")
        .args(names.split(','))
        .env_remove(SHM_PREFIX_ENV)
        .env_remove(SCENARIO_ENV)
        .status()
        .unwrap();
    assert!(status.success(), "the shell failed: {status}");
    let out = multiproc_testkit::command(role!(child_foreign_multiproc_program), &[], &[])
        .env_remove(SHM_PREFIX_ENV)
        .env_remove(SCENARIO_ENV)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "the multiproc program failed");
    let name = String::from_utf8(out.stdout).unwrap();
    println!("foreign: {}", name.trim_end());
}

/// A test leaves a segment of its own behind: a generated name, never
/// unlinked. Prints the name so the parent can clean up.
fn test_leaves_its_own_segment() {
    let segment = Segment::create_named(None, 64).unwrap();
    println!("leaked: {}", segment.name().unwrap());
}

// ---- tests ---------------------------------------------------------------

/// This test binary again, playing `scenario`, with its output.
fn play(scenario: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(SCENARIO_ENV, scenario).stdin(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn remove_shm(name: &str) {
    let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
}

fn names_a_foreign_program_creates_during_the_run_are_not_a_leak() {
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let names = [format!("mp_foreign_{tag}"), format!("psm_foreign_{tag}")];
    let out = play("foreign", &[(FOREIGN_NAMES_ENV, names.join(",").as_str())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let generated: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("foreign: "))
        .collect();
    let all: Vec<&str> = names.iter().map(String::as_str).chain(generated).collect();
    let created: Vec<bool> = all
        .iter()
        .map(|n| std::path::Path::new(&format!("/dev/shm/{n}")).exists())
        .collect();
    all.iter().for_each(|n| remove_shm(n));
    assert_eq!(created, [true, true, true], "{}", describe(&out));
    assert!(
        all[2].starts_with("mp_") && !all[2].starts_with(&shm_prefix()),
        "not a name of another program: {}",
        describe(&out)
    );
    assert!(
        out.status.success(),
        "a foreign program's names failed the run: {}",
        describe(&out)
    );
}

fn a_segment_the_tests_leave_behind_fails_the_run() {
    let out = play("leak", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let leaked: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("leaked: "))
        .collect();
    leaked.iter().for_each(|n| remove_shm(n));
    assert_eq!(leaked.len(), 1, "{}", describe(&out));
    // The inner run's prefix extends this run's: its names are ours too.
    assert!(leaked[0].starts_with(&shm_prefix()), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("left shared memory behind") && stderr.contains(leaked[0]),
        "{}",
        describe(&out)
    );
}

fn a_role_not_given_to_run_fails_before_any_child_starts() {
    let panic = std::panic::catch_unwind(|| {
        multiproc_testkit::command(role!(child_not_given_to_run), &[], &[])
    })
    .expect_err("a command for a role run() does not know");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        message.contains("role \"child_not_given_to_run\" is not in the list given to run()"),
        "{message:?}"
    );
}

fn main() {
    let trials: Vec<Trial> = match std::env::var(SCENARIO_ENV).as_deref() {
        Ok("foreign") => tests![foreign_programs_leave_names],
        Ok("leak") => tests![test_leaves_its_own_segment],
        Ok(other) => panic!("unknown scenario {other:?}"),
        Err(_) => tests![
            names_a_foreign_program_creates_during_the_run_are_not_a_leak,
            a_segment_the_tests_leave_behind_fails_the_run,
            a_role_not_given_to_run_fails_before_any_child_starts,
        ],
    };
    run(&[role!(child_foreign_multiproc_program)], trials);
}
