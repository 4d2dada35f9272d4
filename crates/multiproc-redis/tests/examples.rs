//! The crate's examples run to the end against a `redis-server` of the
//! test's own (cargo builds the examples before the tests of a package).

use multiproc_testkit::RedisServer;

#[test]
fn the_remote_pool_example_runs_its_own_workers_to_the_end() {
    let Some(server) =
        RedisServer::start_or_skip("the_remote_pool_example_runs_its_own_workers_to_the_end")
    else {
        return;
    };
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/remote_pool
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/remote_pool");
    let out = std::process::Command::new(example)
        .arg(server.url())
        .output()
        .expect("cargo test builds the examples");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("squares: [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]"),
        "{text}"
    );
    assert!(text.contains("word lengths: [1, 6, 4, 2, 7]"), "{text}");
    assert!(text.contains("sum of squares to 1000: 333833500"), "{text}");
    assert_eq!(
        text.matches("worker exited: exit status: 0").count(),
        2,
        "{text}"
    );
}
