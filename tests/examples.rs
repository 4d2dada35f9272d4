//! Every example runs and exits 0 (cargo builds examples before tests).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

#[test]
fn hello_runs_every_section() {
    let out = Command::new(example("hello")).output().expect("examples are built by cargo test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("square(12) = 144"), "{text}");
    assert!(text.contains("HELLO FROM THE PARENT"), "{text}");
    assert!(text.contains("locked increments = 40000"), "{text}");
    assert!(text.contains("\"written by a child\""), "{text}");
}
