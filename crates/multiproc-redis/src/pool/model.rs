//! An exhaustive model of how one task moves between a caller and three
//! workers through the server, where any worker may die (or stop for
//! ever) at any step and any held task may be taken over at any moment
//! (its owner's heartbeat delayed arbitrarily): every reachable state is
//! visited, and the promises are checked in each.
//!
//! | model step | code |
//! |---|---|
//! | `Take` | a worker's get reads the new message (`XREADGROUP >`): pending for it, 1 delivery |
//! | `TakeOver` | a worker's get takes the pending message over (`XAUTOCLAIM` in the `TAKE` script, one more delivery), or, past `max_deliveries`, moves it to the dead letters |
//! | `GiveBack` | the heartbeat gives back a task taken and not started (`RELEASE` script: only if this worker still owns it; the delivery count set back by one) |
//! | `Run`, `Reply`, `Ack` | `wire::run`; the reply put in the caller's reply queue; `task_done_many` (`XACK` + `XDEL`) |
//! | `Die` | SIGKILL or SIGSTOP for ever, at any step |
//! | `Collect`, `SeeDeadLetter` | the caller's collector settling the task from a reply or a dead letter; the first settles, later ones are dropped |
//!
//! Checked: the caller's sink runs at most once; from every reachable
//! state with a live worker some path settles the task (nothing is lost
//! or stuck); a settled value comes from a run; no more than
//! `MAX_DELIVERIES` workers die holding the task (a task that kills its
//! workers ends as a dead letter). The second test shows that the last
//! promise needs the give-back to check the owner.

use std::collections::{HashMap, HashSet, VecDeque};

const WORKERS: usize = 3;
const MAX_DELIVERIES: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    /// Holding the task, not started; the delivery count it was given.
    Taken(u8),
    Ran,
    Replied,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Pending,
    Value,
    Poisoned,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// The message is in the stream (not acknowledged or dead-lettered).
    present: bool,
    /// It was read once (no longer new).
    delivered: bool,
    /// The consumer it is pending for.
    owner: Option<usize>,
    deliveries: u8,
    /// A dead letter for it, not yet seen by the caller.
    dead: bool,
    /// Replies in the caller's reply stream.
    replies: u8,
    phases: [Phase; WORKERS],
    alive: [bool; WORKERS],
    outcome: Outcome,
    settles: u8,
    runs: u8,
    /// Workers that died holding the task.
    died_holding: u8,
}

/// How the give-back treats a task another worker took over meanwhile.
#[derive(Clone, Copy)]
enum GiveBack {
    /// Leaves it to that worker (the script checks the owner).
    ChecksOwner,
    /// Claims it back and sets its count from the stale one.
    Blind,
}

fn settle(s: &mut State, outcome: Outcome) {
    if s.outcome == Outcome::Pending {
        s.outcome = outcome;
        s.settles += 1;
    }
}

/// Every state one step from `s`; `with_deaths` false leaves out deaths.
fn successors(s: &State, give_back: GiveBack, with_deaths: bool) -> Vec<State> {
    let mut out = Vec::new();
    for w in 0..WORKERS {
        if !s.alive[w] {
            continue;
        }
        match s.phases[w] {
            Phase::Idle => {
                if s.present && !s.delivered {
                    let mut t = s.clone();
                    t.delivered = true;
                    t.owner = Some(w);
                    t.deliveries = 1;
                    t.phases[w] = Phase::Taken(1);
                    out.push(t);
                }
                if s.present && s.delivered {
                    let mut t = s.clone();
                    let n = s.deliveries + 1;
                    if n > MAX_DELIVERIES {
                        t.present = false;
                        t.owner = None;
                        t.dead = true;
                    } else {
                        t.owner = Some(w);
                        t.deliveries = n;
                        t.phases[w] = Phase::Taken(n);
                    }
                    out.push(t);
                }
            }
            Phase::Taken(n) => {
                let mut run = s.clone();
                run.phases[w] = Phase::Ran;
                run.runs = run.runs.saturating_add(1).min(3);
                out.push(run);
                let mut back = s.clone();
                back.phases[w] = Phase::Idle;
                let owns = s.present && s.owner == Some(w);
                let claims = match give_back {
                    GiveBack::ChecksOwner => owns,
                    GiveBack::Blind => s.present && s.owner.is_some(),
                };
                if claims {
                    back.owner = Some(w);
                    back.deliveries = n.saturating_sub(1);
                }
                out.push(back);
            }
            Phase::Ran => {
                let mut t = s.clone();
                t.phases[w] = Phase::Replied;
                t.replies = t.replies.saturating_add(1).min(3);
                out.push(t);
            }
            Phase::Replied => {
                let mut t = s.clone();
                t.phases[w] = Phase::Idle;
                t.present = false;
                t.owner = None;
                out.push(t);
            }
        }
        if with_deaths {
            let mut t = s.clone();
            t.alive[w] = false;
            // Dying with the task taken or run counts, whoever owns it
            // now: a killer task kills whoever runs it.
            if matches!(s.phases[w], Phase::Taken(_) | Phase::Ran) {
                t.died_holding += 1;
            }
            out.push(t);
        }
    }
    if s.replies > 0 {
        let mut t = s.clone();
        t.replies -= 1;
        settle(&mut t, Outcome::Value);
        out.push(t);
    }
    if s.dead {
        let mut t = s.clone();
        t.dead = false;
        settle(&mut t, Outcome::Poisoned);
        out.push(t);
    }
    out
}

fn initial() -> State {
    State {
        present: true,
        delivered: false,
        owner: None,
        deliveries: 0,
        dead: false,
        replies: 0,
        phases: [Phase::Idle; WORKERS],
        alive: [true; WORKERS],
        outcome: Outcome::Pending,
        settles: 0,
        runs: 0,
        died_holding: 0,
    }
}

/// Every reachable state, with its successors.
fn explore(give_back: GiveBack) -> HashMap<State, Vec<State>> {
    let mut graph = HashMap::new();
    let mut queue = VecDeque::from([initial()]);
    while let Some(s) = queue.pop_front() {
        if graph.contains_key(&s) {
            continue;
        }
        let next = successors(&s, give_back, true);
        queue.extend(next.iter().filter(|t| !graph.contains_key(*t)).cloned());
        graph.insert(s, next);
    }
    graph
}

/// The first reachable state that breaks a promise, with what it breaks.
fn violation(give_back: GiveBack) -> Option<(State, &'static str)> {
    let graph = explore(give_back);
    // States from which the task can be settled without deaths: backwards
    // from the settled ones over the steps that are not deaths.
    let mut into: HashMap<&State, Vec<&State>> = HashMap::new();
    for s in graph.keys() {
        for t in successors(s, give_back, false) {
            if let Some((t, _)) = graph.get_key_value(&t) {
                into.entry(t).or_default().push(s);
            }
        }
    }
    let mut can_settle: HashSet<&State> = graph
        .keys()
        .filter(|s| s.outcome != Outcome::Pending)
        .collect();
    let mut queue: VecDeque<&State> = can_settle.iter().copied().collect();
    while let Some(t) = queue.pop_front() {
        for &s in into.get(t).into_iter().flatten() {
            if can_settle.insert(s) {
                queue.push_back(s);
            }
        }
    }
    for s in graph.keys() {
        if s.settles > 1 {
            return Some((s.clone(), "settled twice"));
        }
        if s.outcome == Outcome::Value && s.runs == 0 {
            return Some((s.clone(), "a value without a run"));
        }
        if s.died_holding > MAX_DELIVERIES {
            return Some((
                s.clone(),
                "more workers died holding it than max_deliveries",
            ));
        }
        if s.alive.iter().any(|a| *a) && !can_settle.contains(s) {
            return Some((s.clone(), "a live worker can never settle it"));
        }
    }
    None
}

#[test]
fn one_task_settles_once_whoever_dies_or_stalls_at_any_step() {
    assert_eq!(violation(GiveBack::ChecksOwner), None);
}

#[test]
fn a_give_back_that_ignores_the_owner_lets_a_killer_task_kill_too_many() {
    let (state, what) = violation(GiveBack::Blind).expect("the blind give-back breaks a promise");
    assert_eq!(
        what, "more workers died holding it than max_deliveries",
        "{state:?}"
    );
}
