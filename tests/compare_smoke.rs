//! `examples/compare.rs --smoke`: two tiny cases, three peers, a table and
//! the two output files, in a few seconds (cargo builds examples before
//! integration tests).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/compare_smoke-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

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
