//! [`value_error!`](crate::value_error) and
//! [`reason_error!`](crate::reason_error): the error types of queue-like
//! operations, one shape for every crate (the local queue's and the remote
//! queue's `PutError`, `GetTimeoutError`, …).

/// Defines `enum $name<T>` with one variant per listed reason, each holding
/// the value that was not put, and `Failed(T, $failure)` for anything else;
/// with `into_inner`, an `is_*` predicate per reason, `is_failed`,
/// `failure`, `map`, a `Debug` that never needs `T: Debug`, a short
/// `Display` (`$failed: {failure}` for `Failed`) and `source()`.
///
/// ```
/// #[derive(Debug)]
/// pub struct Broken;
/// impl std::fmt::Display for Broken {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("broken")
///     }
/// }
/// impl std::error::Error for Broken {}
///
/// multiproc_core::value_error! {
///     failure = Broken, failed = "sending failed";
///     /// Error of a send.
///     SendError {
///         /// The other side is gone.
///         Closed => "sending on a closed channel", is_closed;
///     }
/// }
///
/// let err = SendError::Closed(7);
/// assert!(err.is_closed() && !err.is_failed());
/// assert_eq!(err.to_string(), "sending on a closed channel");
/// assert_eq!(format!("{err:?}"), "Closed(..)");
/// assert_eq!(err.into_inner(), 7);
/// let err = SendError::Failed("value", Broken).map(str::len);
/// assert_eq!(err.to_string(), "sending failed: broken");
/// assert_eq!(err.into_inner(), 5);
/// ```
#[macro_export]
macro_rules! value_error {
    (
        failure = $(#[$fmeta:meta])* $failure:ty, failed = $failed:literal;
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident => $display:literal, $pred:ident;)* }
    ) => {
        $(#[$meta])*
        #[non_exhaustive]
        pub enum $name<T> {
            $($(#[$vmeta])* $variant(T),)*
            /// The operation failed for another reason; the value is handed back.
            $(#[$fmeta])*
            Failed(T, $failure),
        }

        impl<T> $name<T> {
            /// The value that was not put.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(v) => v,)*
                    Self::Failed(v, _) => v,
                }
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($variant), "`.")]
                #[must_use]
                pub fn $pred(&self) -> bool {
                    matches!(self, Self::$variant(_))
                }
            )*

            /// Whether this is `Failed`.
            #[must_use]
            pub fn is_failed(&self) -> bool {
                matches!(self, Self::Failed(..))
            }

            /// The failure, for `Failed`.
            #[must_use]
            pub fn failure(&self) -> Option<&$failure> {
                match self {
                    Self::Failed(_, e) => Some(e),
                    _ => None,
                }
            }

            /// The same error with the value handed back through `f`: to
            /// keep the error (as a `source`) without the value.
            pub fn map<U>(self, f: impl FnOnce(T) -> U) -> $name<U> {
                match self {
                    $(Self::$variant(v) => $name::$variant(f(v)),)*
                    Self::Failed(v, e) => $name::Failed(f(v), e),
                }
            }
        }

        impl<T> ::core::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    Self::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
                }
            }
        }

        impl<T> ::core::fmt::Display for $name<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str($display),)*
                    Self::Failed(_, e) => write!(f, concat!($failed, ": {}"), e),
                }
            }
        }

        impl<T> ::std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                match self {
                    Self::Failed(_, e) => Some(e),
                    _ => None,
                }
            }
        }
    };
}

/// Defines `enum $name` with one unit variant per listed reason and
/// `Failed($failure)` for anything else (its docs given after `failure =`);
/// with an `is_*` predicate per reason, `is_failed`, `Debug`, a short
/// `Display` (`$failed: {failure}` for `Failed`), `source()` and
/// `From<$failure>`.
///
/// ```
/// #[derive(Debug)]
/// pub struct Broken;
/// impl std::fmt::Display for Broken {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("broken")
///     }
/// }
/// impl std::error::Error for Broken {}
///
/// multiproc_core::reason_error! {
///     failure = /// Anything else.
///         Broken, failed = "receiving failed";
///     /// Error of a receive with a timeout.
///     RecvTimeoutError {
///         /// Nothing came in time.
///         Timeout => "timed out receiving", is_timeout;
///     }
/// }
///
/// assert!(RecvTimeoutError::Timeout.is_timeout());
/// let err = RecvTimeoutError::from(Broken);
/// assert!(err.is_failed());
/// assert_eq!(err.to_string(), "receiving failed: broken");
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[macro_export]
macro_rules! reason_error {
    (
        failure = $(#[$fmeta:meta])* $failure:ty, failed = $failed:literal;
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident => $display:literal, $pred:ident;)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            $(#[$fmeta])*
            Failed($failure),
        }

        impl $name {
            $(
                #[doc = concat!("Whether this is `", stringify!($variant), "`.")]
                #[must_use]
                pub fn $pred(&self) -> bool {
                    matches!(self, Self::$variant)
                }
            )*

            /// Whether this is `Failed`.
            #[must_use]
            pub fn is_failed(&self) -> bool {
                matches!(self, Self::Failed(_))
            }

            /// The failure, for `Failed`.
            #[must_use]
            pub fn failure(&self) -> Option<&$failure> {
                match self {
                    Self::Failed(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self {
                    $(Self::$variant => f.write_str($display),)*
                    Self::Failed(e) => write!(f, concat!($failed, ": {}"), e),
                }
            }
        }

        impl ::std::error::Error for $name {
            fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                match self {
                    Self::Failed(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl From<$failure> for $name {
            fn from(e: $failure) -> Self {
                Self::Failed(e)
            }
        }
    };
}
