//! Reading the server's replies, for the blocking and the async queues
//! alike: the take script's reply, `XREADGROUP`'s, the put script's, a
//! stream entry's payload field and a dead-letter entry. Pure functions of
//! a [`Value`]: every reply shape is checked here, once.

use crate::{DeadLetter, DeadReason, RemoteError};
use redis::Value;

/// An entry a get took: its id, its delivery count, its fields.
pub(crate) type Entry = (String, u64, Vec<Value>);

/// What the take script found.
pub(crate) enum TakeReply {
    /// 1 to `want` entries.
    Some(Vec<Entry>),
    /// The queue is closed and drained.
    Closed,
    /// Nothing now.
    Empty,
}

/// What the put script answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PutReply {
    /// Added; with a counter, the counter's new value (else 0).
    Added(u64),
    /// No room for the batch.
    Full,
    /// The queue is closed.
    Closed,
}

pub(crate) fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The put script's integer reply, for a call with or without a counter.
pub(crate) fn put_reply(n: i64, counted: bool) -> Result<PutReply, RemoteError> {
    match n {
        1 if !counted => Ok(PutReply::Added(0)),
        n if n >= 2 && counted => Ok(PutReply::Added(n.unsigned_abs() - 1)),
        -1 => Ok(PutReply::Closed),
        0 => Ok(PutReply::Full),
        _ => Err(RemoteError::protocol("put script answered out of range")),
    }
}

/// The take script's reply, `{kind, cursor[, {{id, deliveries, fields}, …}]}`,
/// with at most `want` entries: the next scan cursor and what it found.
pub(crate) fn take_reply(reply: Value, want: usize) -> Result<(String, TakeReply), RemoteError> {
    let Value::Array(parts) = reply else {
        return Err(RemoteError::protocol("take script reply is not an array"));
    };
    let mut parts = parts.into_iter();
    let kind = parts.next().and_then(into_bytes);
    let next = parts.next().and_then(into_bytes);
    let (Some(kind), Some(next)) = (kind, next) else {
        return Err(RemoteError::protocol("take script reply is too short"));
    };
    let cursor =
        String::from_utf8(next).map_err(|_| RemoteError::protocol("stream cursor is not text"))?;
    let found = match kind.as_slice() {
        b"closed" => TakeReply::Closed,
        b"empty" => TakeReply::Empty,
        b"some" => {
            let Some(Value::Array(entries)) = parts.next() else {
                return Err(RemoteError::protocol("take script entries are malformed"));
            };
            if entries.is_empty() || entries.len() > want {
                return Err(RemoteError::protocol(
                    "take script returned a count not asked for",
                ));
            }
            let mut taken = Vec::with_capacity(entries.len());
            for entry in entries {
                let Value::Array(entry) = entry else {
                    return Err(RemoteError::protocol("take script entry is malformed"));
                };
                let mut entry = entry.into_iter();
                let id = entry.next().and_then(into_bytes);
                let (Some(id), Some(Value::Int(count)), Some(Value::Array(fields))) =
                    (id, entry.next(), entry.next())
                else {
                    return Err(RemoteError::protocol("take script entry is malformed"));
                };
                let id = String::from_utf8(id)
                    .map_err(|_| RemoteError::protocol("stream id is not text"))?;
                taken.push((id, u64::try_from(count).unwrap_or(1), fields));
            }
            TakeReply::Some(taken)
        }
        _ => {
            return Err(RemoteError::protocol(
                "take script answered an unknown kind",
            ));
        }
    };
    Ok((cursor, found))
}

/// `XREADGROUP`'s reply for one stream: nil (nothing new), or
/// `[[stream, [[id, fields], …]]]` with 1 to `want` entries, each
/// delivered once.
pub(crate) fn read_reply(reply: Value, want: usize) -> Result<Option<Vec<Entry>>, RemoteError> {
    let entries = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams.into_iter().next().and_then(|st| match st {
            Value::Array(pair) => pair.into_iter().nth(1),
            _ => None,
        }),
        _ => None,
    };
    let Some(Value::Array(entries)) = entries else {
        return Err(RemoteError::protocol("XREADGROUP reply is malformed"));
    };
    if entries.is_empty() || entries.len() > want {
        return Err(RemoteError::protocol(
            "XREADGROUP returned a count not asked for",
        ));
    }
    let mut taken = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return Err(RemoteError::protocol("stream entry is malformed"));
        };
        let mut entry = entry.into_iter();
        let (Some(id), Some(Value::Array(fields))) =
            (entry.next().and_then(into_bytes), entry.next())
        else {
            return Err(RemoteError::protocol("stream entry is malformed"));
        };
        let id =
            String::from_utf8(id).map_err(|_| RemoteError::protocol("stream id is not text"))?;
        taken.push((id, 1, fields));
    }
    Ok(Some(taken))
}

/// The value of field `d` among an entry's `[field, value, …]`.
pub(crate) fn payload_field(fields: Vec<Value>) -> Option<Vec<u8>> {
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if matches!(&k, Value::BulkString(k) if k == b"d") {
            return into_bytes(v);
        }
    }
    None
}

/// A dead-letter entry, `[id, [field, value, …]]`.
pub(crate) fn parse_dead_letter(entry: Value) -> Result<DeadLetter, RemoteError> {
    let bad = || RemoteError::protocol("dead-letter entry is malformed");
    let Value::Array(entry) = entry else {
        return Err(bad());
    };
    let mut entry = entry.into_iter();
    let (Some(_), Some(Value::Array(fields))) = (entry.next(), entry.next()) else {
        return Err(bad());
    };
    let (mut id, mut deliveries, mut reason, mut payload) = (None, None, None, None);
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let Some(k) = into_bytes(k) else {
            return Err(bad());
        };
        let v = into_bytes(v).ok_or_else(bad)?;
        match k.as_slice() {
            b"id" => id = Some(String::from_utf8(v).map_err(|_| bad())?),
            b"deliveries" => {
                let text = std::str::from_utf8(&v).map_err(|_| bad())?;
                deliveries = Some(text.parse::<u64>().map_err(|_| bad())?);
            }
            b"reason" => reason = Some(DeadReason::parse(&v).ok_or_else(bad)?),
            b"d" => payload = Some(v),
            _ => {}
        }
    }
    match (id, deliveries, reason, payload) {
        (Some(id), Some(deliveries), Some(reason), Some(payload)) => Ok(DeadLetter {
            id,
            deliveries,
            reason,
            payload,
        }),
        _ => Err(bad()),
    }
}

/// A dead-letter reply of `XRANGE … COUNT max`.
pub(crate) fn dead_letter_range(reply: Value, max: usize) -> Result<Vec<Value>, RemoteError> {
    let Value::Array(entries) = reply else {
        return Err(RemoteError::protocol("XRANGE reply is not an array"));
    };
    if entries.len() > max {
        return Err(RemoteError::protocol("XRANGE returned more than asked"));
    }
    Ok(entries)
}
