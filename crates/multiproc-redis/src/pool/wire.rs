//! What travels between a pool's callers and its workers: a task names
//! its function by offset within the build ([`multiproc_core::fnref`]) and
//! says which build it comes from; a worker of another build refuses it
//! instead of turning the offset into an address.
#![allow(unsafe_code)]

use multiproc_core::Codec;
use multiproc_core::fnref::{BuildId, addr_at, offset_of, panic_message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One task: a chunk of arguments for one function.
#[derive(Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    /// The caller's build.
    pub(crate) build: BuildId,
    /// The caller's reply queue.
    pub(crate) reply: String,
    /// The caller's number for the task.
    pub(crate) task: u64,
    /// Offset of the [`Runner`] instance for the function's types.
    pub(crate) runner: i64,
    /// Offset of the `fn(A) -> R`.
    pub(crate) target: i64,
    /// The arguments, an encoded `Vec<A>`.
    pub(crate) args: Vec<u8>,
}

/// A worker's answer to one task.
#[derive(Serialize, Deserialize)]
pub(crate) struct ReplyMsg {
    pub(crate) task: u64,
    pub(crate) outcome: Result<Vec<u8>, Refusal>,
}

/// Why a worker ran nothing of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The worker runs another build.
    OtherBuild { worker: BuildId },
    /// The arguments did not decode as the function's.
    Undecodable(String),
}

/// Runs a chunk: decodes `Vec<A>`, calls the function on each, encodes
/// `Vec<Result<R, String>>` (a panic's message in place of its value).
pub(crate) type Runner = unsafe fn(usize, &[u8], &Codec) -> Result<Vec<u8>, Refusal>;

/// The [`Runner`] for `fn(A) -> R`.
///
/// # Safety
///
/// `target` must be the address of a `fn(A) -> R` in this process.
unsafe fn run_chunk<A: DeserializeOwned, R: Serialize>(
    target: usize,
    args: &[u8],
    codec: &Codec,
) -> Result<Vec<u8>, Refusal> {
    let args: Vec<A> = codec
        .decode(args)
        .map_err(|e| Refusal::Undecodable(e.to_string()))?;
    // SAFETY: per this function's contract, `target` is a `fn(A) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(target) };
    let results: Vec<Result<R, String>> = args
        .into_iter()
        .map(|a| catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| panic_message(&*p)))
        .collect();
    codec
        .encode(&results)
        .map_err(|e| Refusal::Undecodable(format!("the results did not encode: {e}")))
}

/// The offsets that name `f` and the runner for its types.
pub(crate) fn name_of<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> (i64, i64) {
    (
        offset_of(run_chunk::<A, R> as Runner as usize),
        offset_of(f as usize),
    )
}

/// Runs `task` in this process: refuses it unless it comes from this very
/// build.
pub(crate) fn run(task: &TaskMsg, own: BuildId, codec: &Codec) -> Result<Vec<u8>, Refusal> {
    if task.build != own {
        return Err(Refusal::OtherBuild { worker: own });
    }
    // SAFETY: the task comes from a process of this same build (equal
    // `BuildId`: the same executable bytes), where `runner` and `target`
    // were the `offset_of` a `Runner` instance for `(A, R)` and of a
    // `fn(A) -> R` (`name_of`): the same offsets name the same functions
    // here.
    unsafe {
        let runner = std::mem::transmute::<usize, Runner>(addr_at(task.runner));
        runner(addr_at(task.target), &task.args, codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    fn task(build: BuildId, args: &[u32]) -> TaskMsg {
        let (runner, target) = name_of(double as fn(u32) -> u32);
        TaskMsg {
            build,
            reply: "r".into(),
            task: 1,
            runner,
            target,
            args: multiproc_core::codec::encode(&args.to_vec()).unwrap(),
        }
    }

    #[test]
    fn a_task_of_this_build_runs() {
        let own = BuildId::current().unwrap();
        let codec = Codec::new();
        let out = run(&task(own, &[1, 2]), own, &codec).unwrap();
        let values: Vec<Result<u32, String>> = codec.decode(&out).unwrap();
        assert_eq!(values, vec![Ok(2), Ok(4)]);
    }

    #[test]
    fn a_task_of_another_build_is_refused_before_anything_runs() {
        let own = BuildId::current().unwrap();
        let other: BuildId = multiproc_core::codec::decode(
            &multiproc_core::codec::encode(&(own.as_u64() ^ 1)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            run(&task(other, &[1]), own, &Codec::new()),
            Err(Refusal::OtherBuild { worker: own })
        );
    }
}
