//! The ticket-buying race, fixed with a [`Lock`]: ten buyer processes share
//! a JSON file holding the tickets left; each buys one ticket at a time until
//! they are sold out. Reading, deciding and writing the file happen under one
//! lock, so no ticket is ever sold twice and the total is never oversold.
//!
//! The Python it mirrors:
//!
//! ```python
//! def buy(name, lock, path):
//!     bought = 0
//!     while True:
//!         with lock:
//!             state = json.load(open(path))
//!             if state["left"] == 0:
//!                 return bought
//!             state["left"] -= 1
//!             state["sold"].append(name)
//!             json.dump(state, open(path, "w"))
//!         bought += 1
//!
//! lock = Lock()
//! buyers = [Process(target=buy, args=(f"buyer-{i}", lock, path)) for i in range(10)]
//! ```
//!
//! Without the lock two buyers read the same `left`, both sell "the last"
//! ticket, and the file, written by both, ends up wrong or torn.
//!
//! Run: `cargo run --example tickets`

use multiproc::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const TICKETS: u32 = 100;
const BUYERS: usize = 10;

#[derive(Serialize, Deserialize)]
struct BoxOffice {
    left: u32,
    /// Who bought each ticket, in order of sale.
    sold: Vec<String>,
}

fn load(path: &Path) -> BoxOffice {
    let text = std::fs::read_to_string(path).expect("box office file is readable");
    serde_json::from_str(&text).expect("box office file is valid JSON")
}

/// Replaces the file in one step (write aside, then rename), so a reader
/// never sees it half written, even if the writer dies.
fn store(path: &Path, office: &BoxOffice) {
    let text = serde_json::to_string(office).expect("serializable");
    let aside = path.with_extension("json.new");
    std::fs::write(&aside, text).expect("box office directory is writable");
    std::fs::rename(&aside, path).expect("box office directory is writable");
}

/// Buys tickets one at a time until none are left; returns how many.
fn buy((lock, path): (Lock, PathBuf)) -> u32 {
    let me = multiproc::current_process().name;
    let mut bought = 0;
    loop {
        {
            // A buyer that died holding the lock left the file whole (see
            // `store`), so the next one can carry on.
            let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
            let mut office = load(&path);
            if office.left == 0 {
                return bought;
            }
            office.left -= 1;
            office.sold.push(me.clone());
            store(&path, &office);
        }
        bought += 1;
        // Give the others a chance at the lock, as a real buyer would.
        std::thread::yield_now();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("multiproc-tickets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("box_office.json");
    let result = sell(&path);
    std::fs::remove_dir_all(&dir)?;
    result
}

fn sell(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    store(
        path,
        &BoxOffice {
            left: TICKETS,
            sold: Vec::new(),
        },
    );
    let lock = Lock::new()?;
    let mut buyers = (0..BUYERS)
        .map(|i| {
            Process::new(buy, (lock.clone(), path.to_owned()))
                .name(format!("buyer-{i}"))
                .start()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = 0;
    for buyer in &mut buyers {
        let bought = buyer.join()?;
        println!("{} bought {bought}", buyer.name());
        total += bought;
    }
    let office = load(path);
    println!(
        "sold {total} of {TICKETS} tickets ({} recorded in the file, {} left)",
        office.sold.len(),
        office.left
    );
    assert_eq!(total, TICKETS, "every ticket sold exactly once");
    assert_eq!(office.sold.len(), TICKETS as usize);
    assert_eq!(office.left, 0);
    println!("never oversold");
    Ok(())
}
