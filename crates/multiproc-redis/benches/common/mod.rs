//! What the benches' floors share: raw stream commands, and their
//! replies read without this crate.

use redis::Value;
use std::time::Duration;

/// Entries per round trip.
pub const BATCH: usize = 64;

/// A plain connection to the bench's server.
pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

/// `XREADGROUP` of up to a batch of new entries of `stream` for
/// `consumer` of group `g`, waiting up to a second.
pub fn read_batch(consumer: &str, stream: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// The `(id, payload)` pairs of an `XREADGROUP` reply on one stream.
pub fn entries(reply: Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let Some(Value::Array(pair)) = streams.into_iter().next() else {
        panic!("reply");
    };
    let Some(Value::Array(entries)) = pair.into_iter().nth(1) else {
        panic!("reply");
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(entry) = entry else {
                panic!("entry")
            };
            let mut entry = entry.into_iter();
            let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                (entry.next(), entry.next())
            else {
                panic!("entry")
            };
            let Some(Value::BulkString(d)) = fields.into_iter().nth(1) else {
                panic!("payload")
            };
            (id, d)
        })
        .collect()
}
