//! A "subclass-style" worker: a struct that carries its own state and has a
//! `run` method, the Rust counterpart of subclassing `Process`.
//!
//! The Python it mirrors:
//!
//! ```python
//! class Squarer(Process):
//!     def __init__(self, name, numbers):
//!         super().__init__(name=name)
//!         self.numbers = numbers
//!     def run(self):
//!         print(self.name, [n * n for n in self.numbers])
//!
//! if __name__ == "__main__":
//!     w = Squarer("squarer", [1, 2, 3]); w.start(); w.join()
//! ```
//!
//! Why there is no subclassing: Rust has no inheritance, and a child process
//! cannot receive a closure or a trait object — what crosses the process
//! boundary is *data* (serialized with serde) plus *code* named as a
//! `fn(A) -> R` of the same executable. So the worker is split along that
//! line: its state is a `Serialize + Deserialize` struct (the argument), and
//! its behaviour is a method taking `self` by value. `Squarer::run` *is*
//! such a `fn(Squarer) -> Summary`, so it can be the target directly; a
//! small trait plus one generic `start` function gives every worker type
//! Python's `w.start()` shape.
//!
//! Run: `cargo run --example worker_struct`

use multiproc::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a worker type provides: its state is the struct, its body is `run`.
trait Worker: Serialize + DeserializeOwned + Sized {
    /// What the worker hands back to `join`.
    type Output: Serialize + DeserializeOwned;

    /// The body, run in the child process (Python's `Process.run`).
    fn run(self) -> Self::Output;

    /// Starts `self.run()` in a new process (Python's `start()`).
    fn start(self, name: &str) -> std::io::Result<Process<Self::Output>> {
        // `Self::run` is a plain `fn(Self) -> Self::Output`: it names code in
        // this executable, and `self` travels as serialized data.
        Process::new(Self::run, self).name(name).start()
    }
}

#[derive(Serialize, Deserialize)]
struct Squarer {
    numbers: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    worker: String,
    pid: u32,
    squares: Vec<u64>,
}

impl Worker for Squarer {
    type Output = Summary;

    fn run(self) -> Summary {
        let me = multiproc::current_process();
        Summary {
            worker: me.name,
            pid: me.pid,
            squares: self.numbers.iter().map(|n| n * n).collect(),
        }
    }
}

/// A second worker type, to show the trait is not tied to one struct.
#[derive(Serialize, Deserialize)]
struct Shouter {
    words: Vec<String>,
}

impl Worker for Shouter {
    type Output = String;

    fn run(self) -> String {
        self.words.join(" ").to_uppercase()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut squarer = Squarer {
        numbers: vec![1, 2, 3, 4],
    }
    .start("squarer")?;
    let mut shouter = Shouter {
        words: vec!["hello".into(), "from".into(), "a".into(), "struct".into()],
    }
    .start("shouter")?;

    let summary = squarer.join()?;
    assert_eq!(summary.squares, [1, 4, 9, 16]);
    assert_ne!(summary.pid, std::process::id());
    println!(
        "{} (pid {}) squared: {:?}",
        summary.worker, summary.pid, summary.squares
    );
    let shout = shouter.join()?;
    println!("{} said: {shout}", shouter.name());

    // Without the trait: any plain fn that calls `run(self)` is a target too.
    fn run_squarer(worker: Squarer) -> Summary {
        worker.run()
    }
    let mut plain = Process::new(run_squarer, Squarer { numbers: vec![5] }).start()?;
    let squares = plain.join()?.squares;
    println!("{} squared: {squares:?}", plain.name());
    Ok(())
}
