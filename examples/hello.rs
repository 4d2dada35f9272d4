//! Two real processes share memory: the parent hands an anonymous segment to
//! a child over a Unix socket (its descriptor travels with `SCM_RIGHTS`), the
//! child writes into it and wakes the parent through a futex in the segment.
//!
//! Run: `cargo run --release --example hello`

use multiproc::{Segment, codec, futex, scm};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const READY: usize = 0;
const TEXT: usize = 64;

fn child(socket_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let stream = UnixStream::connect(socket_path)?;
    let mut buf = vec![0u8; 1024];
    let got = scm::recv(&stream, &mut buf, 4)?;
    let segment: Segment = codec::decode_with_fds(&buf[..got.len], got.fds)?;
    let text = format!("hello from process {}", std::process::id());
    segment.write_at(TEXT, &(text.len() as u32).to_le_bytes())?;
    segment.write_at(TEXT + 4, text.as_bytes())?;
    let ready = segment.atomic_u32(READY)?;
    ready.store(1, Ordering::Release);
    futex::wake_all(ready);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(path)) = (args.next(), args.next())
        && flag == "--child"
    {
        return child(&path);
    }

    let dir = std::env::temp_dir().join(format!("multiproc-hello-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("socket");
    let listener = UnixListener::bind(&path)?;

    let start = Instant::now();
    let mut process = std::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&path)
        .spawn()?;
    let (stream, _) = listener.accept()?;

    let segment = Segment::anonymous(4096)?;
    let (bytes, fds) = codec::encode_with_fds(&segment)?;
    let lent: Vec<_> = fds.iter().map(std::os::fd::AsFd::as_fd).collect();
    scm::send_all(&stream, &bytes, &lent)?;
    println!(
        "parent {}: sent a {}-byte segment ({} bytes + {} descriptor)",
        std::process::id(),
        segment.len(),
        bytes.len(),
        fds.len()
    );

    let ready = segment.atomic_u32(READY)?;
    let deadline = multiproc::os::time::deadline_after(Duration::from_secs(10));
    futex::wait_until(ready, deadline, |v| v == 1).map_err(|_| "child did not answer in 10 s")?;
    let mut len = [0u8; 4];
    segment.read_at(TEXT, &mut len)?;
    let mut text = vec![0u8; u32::from_le_bytes(len).min(1024) as usize];
    segment.read_at(TEXT + 4, &mut text)?;
    println!("parent read from shared memory: {:?}", String::from_utf8_lossy(&text));
    println!("round trip including process start: {:?}", start.elapsed());

    let status = process.wait()?;
    std::fs::remove_dir_all(&dir)?;
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }
    Ok(())
}
