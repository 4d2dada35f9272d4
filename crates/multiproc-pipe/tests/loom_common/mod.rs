//! What the loom models of this crate share: a party that may stop for
//! ever at any step, and the model checker's bounds.

use loom::model::Builder;

/// A party's remaining steps: `None` runs to the end.
pub struct Steps {
    left: Option<usize>,
    /// Steps taken so far (to know when killing one step later changes
    /// nothing).
    pub taken: usize,
}

impl Steps {
    pub fn new(left: Option<usize>) -> Self {
        Self { left, taken: 0 }
    }

    /// Whether the party lives to take the next step.
    pub fn step(&mut self) -> bool {
        self.taken += 1;
        match &mut self.left {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// The checker, with a preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS`
/// says otherwise.
pub fn builder() -> Builder {
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder
}
