//! The OS error behind a chain of errors: what a failed start reports as
//! its cause (a descriptor that could not be duplicated while encoding, for
//! instance, is `EMFILE` several sources down).

use std::error::Error;
use std::io;

/// The innermost OS error number in `error` and its sources, if any.
pub(crate) fn os_cause(error: &(dyn Error + 'static)) -> Option<i32> {
    let mut found = None;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            found = Some(code);
        }
        next = e.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that keeps its cause as `source`, as encoding errors do.
    #[derive(Debug)]
    struct Step(io::Error);

    impl std::fmt::Display for Step {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a step failed")
        }
    }

    impl Error for Step {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_innermost_os_error_is_found() {
        let wrapped = io::Error::other(Step(io::Error::from_raw_os_error(24)));
        assert_eq!(os_cause(&wrapped), Some(24));
        assert_eq!(os_cause(&io::Error::from_raw_os_error(9)), Some(9));
        assert_eq!(os_cause(&io::Error::other("no os error")), None);
    }
}
