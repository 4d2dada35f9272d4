//! A [`Pipe`] and end of file: the child sends a few messages and drops its
//! end; the parent reads until the connection reports `Eof`.
//!
//! The Python it mirrors:
//!
//! ```python
//! def sender(conn):
//!     for i in range(5):
//!         conn.send(f"message {i}")
//!     conn.close()
//!
//! rx, tx = Pipe(duplex=False)
//! p = Process(target=sender, args=(tx,)); p.start()
//! tx.close()   # or recv() never sees EOF: the parent's copy keeps it open
//! while True:
//!     try:
//!         print(rx.recv())
//!     except EOFError:
//!         break
//! ```
//!
//! Here the sending end is *moved* into `Process::new`, so the parent holds
//! no copy once the child started: EOF arrives when the child drops its end
//! (or exits), without a `close()` to remember.
//!
//! Run: `cargo run --example pipe_eof`

use multiproc::connection::RecvError;
use multiproc::prelude::*;

const MESSAGES: usize = 5;

fn sender(conn: Connection) -> usize {
    for i in 0..MESSAGES {
        conn.send(&format!("message {i}"))
            .expect("the parent is reading");
    }
    conn.close();
    // The process keeps running for a while: EOF comes from the close, not
    // from the exit.
    std::thread::sleep(std::time::Duration::from_millis(200));
    MESSAGES
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut rx, tx) = Pipe::simplex()?;
    let mut child = Process::new(sender, tx).start()?;
    let mut received = 0;
    loop {
        match rx.recv::<String>() {
            Ok(text) => {
                println!("received {text:?}");
                received += 1;
            }
            Err(RecvError::Eof) => {
                println!(
                    "EOF after {received} messages (child still running: {})",
                    child.is_alive()
                );
                break;
            }
            Err(other) => return Err(other.into()),
        }
    }
    let sent = child.join()?;
    assert_eq!(received, sent);
    println!("child sent {sent}, parent received {received}");
    Ok(())
}
