//! A tour of what multiproc does between real processes: start children
//! (fork server by default), get their return values, talk over a pipe,
//! share a lock and a counter, and share a named memory block that Python
//! could open too.
//!
//! Run: `cargo run --release --example hello`

use multiproc::prelude::*;
use std::time::Instant;

fn square(x: u64) -> u64 {
    x * x
}

fn echo_upper(conn: Connection) -> usize {
    let mut conn = conn;
    let mut count = 0;
    while let Ok(text) = conn.recv::<String>() {
        if text.is_empty() {
            break;
        }
        conn.send(&text.to_uppercase())
            .expect("parent is listening");
        count += 1;
    }
    count
}

fn count_to((lock, counter, n): (Lock, Value<u64>, u64)) -> u32 {
    for _ in 0..n {
        let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
        let now = counter
            .get()
            .expect("nobody dies holding the counter's lock here");
        counter.set(now + 1).expect("nor here");
    }
    std::process::id()
}

fn write_block((block, text): (SharedMemory, String)) {
    block
        .write_at(0, text.as_bytes())
        .expect("block is large enough");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let me = multiproc::current_process();
    println!(
        "{} (pid {}), {} CPUs usable",
        me.name,
        me.pid,
        multiproc::cpu_count()
    );

    // 1. Return values.
    let start = Instant::now();
    let mut child = Process::new(square, 12).start()?;
    println!(
        "[process] square(12) = {} in {:?} (start + join)",
        child.join()?,
        start.elapsed()
    );

    // 2. A duplex pipe, Python's wire format.
    let (ours, theirs) = Pipe::new()?;
    let mut ours = ours;
    let mut child = Process::new(echo_upper, theirs).start()?;
    for word in ["hello", "from", "the", "parent"] {
        ours.send(&word.to_string())?;
        print!("{} ", ours.recv::<String>()?);
    }
    ours.send(&String::new())?;
    println!("<- [pipe] {} messages echoed", child.join()?);

    // 3. A lock and a counter shared by four processes.
    let lock = Lock::new()?;
    let counter = Value::new(0u64)?;
    let start = Instant::now();
    let mut children: Vec<_> = (0..4)
        .map(|_| Process::new(count_to, (lock.clone(), counter.clone(), 10_000)).start())
        .collect::<Result<_, _>>()?;
    for child in &mut children {
        child.join()?;
    }
    println!(
        "[lock] 4 processes x 10000 locked increments = {} in {:?}",
        counter.get()?,
        start.elapsed()
    );

    // 4. A named block (Python: SharedMemory(name=...)).
    let block = SharedMemory::create(None, 64)?;
    let mut child = Process::new(
        write_block,
        (block.try_clone()?, "written by a child".into()),
    )
    .start()?;
    child.join()?;
    let mut text = [0u8; 18];
    block.read_at(0, &mut text)?;
    println!(
        "[shared memory] /dev/shm/{}: {:?}",
        block.name(),
        String::from_utf8_lossy(&text)
    );
    Ok(())
}
