//! A host that turns off the `auto-init` feature (no code of the library
//! runs before its `main`) and calls `init` itself, first thing.
//!
//! Run: `cargo run -p multiproc-process --no-default-features --example explicit_init`

use multiproc_process::{Process, StartMethod};

fn double(x: u64) -> u64 {
    2 * x
}

fn main() {
    // A spawned child or the fork server stops here (never returns).
    multiproc_process::init();
    for method in [
        StartMethod::Spawn,
        StartMethod::ForkServer,
        StartMethod::Fork,
    ] {
        let value = Process::new(double, 21)
            .start_method(method)
            .start()
            .and_then(|mut p| p.join().map_err(std::io::Error::other))
            .expect("the child runs its target");
        assert_eq!(value, 42);
        println!("{}: 2 x 21 = {value}", method.name());
    }
}
