//! Errors of the data buffer: one enum for every way an access or a Lua call can fail.
//!
//! The `Display` text of each variant is the message a Lua script sees, raised as a plain string
//! with the script's position in front ("chunk:3: data buffer is no longer valid"; see
//! `raising.rs`).

/// Why a `data` access or call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The memory behind the view was invalidated (e.g. a callback buffer after the callback).
    #[error("data buffer is no longer valid")]
    Invalidated,
    /// A byte range does not fit in the view.
    #[error("range {offset}+{len} is outside a buffer of {size} bytes")]
    OutOfRange {
        /// Start of the range, 0-based within the view.
        offset: usize,
        /// Length of the range in bytes.
        len: usize,
        /// Length of the view in bytes.
        size: usize,
    },
    /// `data.new` was asked for more bytes than [`crate::MAX_NEW_LEN`].
    #[error("data buffer of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Requested size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The allocator refused the buffer.
    #[error("not enough memory for a data buffer of {size} bytes")]
    NoMemory {
        /// Requested size in bytes.
        size: usize,
    },
    /// A Lua function got an argument it cannot use (same shape as Lua's own message).
    #[error("bad argument #{pos} to '{func}' ({message})")]
    BadArgument {
        /// Lua-facing function name, e.g. `new` or `segment`.
        func: &'static str,
        /// Argument position, 1-based, counting `self` for methods.
        pos: usize,
        /// What was wrong.
        message: String,
    },
    /// `d[i] = v` with `i` outside `1..=#d`.
    #[error("index {index} is outside a data buffer of {len} bytes")]
    IndexOutOfRange {
        /// The 1-based index given.
        index: i64,
        /// Length of the view in bytes.
        len: usize,
    },
    /// `d[i] = v` with `v` not an integer in `0..=255`.
    #[error("byte value must be an integer from 0 to 255, got {0}")]
    BadByte(String),
    /// `d.name = v` where `name` is neither a layout field nor a method.
    #[error("data object has no field '{0}'")]
    UnknownField(String),
    /// `d.name = v` where `name` is a method (`segment`, `layout`).
    #[error("cannot assign to method '{0}' of a data object")]
    MethodAssign(String),
    /// `d[k] = v` with a key that is neither an integer nor a string.
    #[error("data objects are indexed by integers or field names, got {0}")]
    BadKey(&'static str),
    /// Writing a layout field that does not fit in the view.
    #[error("field '{field}' lies outside a data buffer of {len} bytes")]
    FieldOutOfRange {
        /// Field name.
        field: String,
        /// Length of the view in bytes.
        len: usize,
    },
    /// Writing a layout field with a value of the wrong kind.
    #[error("field '{field}' expects {expected}, got {got}")]
    BadFieldValue {
        /// Field name.
        field: String,
        /// What the field takes.
        expected: String,
        /// What it was given.
        got: String,
    },
    /// A layout table entry is malformed.
    #[error("invalid layout field '{field}': {cause}")]
    BadLayout {
        /// Field name as written in the layout table.
        field: String,
        /// What is wrong with the entry.
        cause: FieldError,
    },
}

/// What is wrong with one layout field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The entry is not a table.
    #[error("expected a table {{offset, length [, endian]}}, got {0}")]
    NotATable(&'static str),
    /// The offset is missing, negative or not an integer.
    #[error("offset must be a non-negative integer number of bits")]
    BadOffset,
    /// The length is missing, negative or not an integer.
    #[error("length must be a positive integer number of bits")]
    BadLength,
    /// The third element is not a known endianness or type.
    #[error("unknown endian or type '{0}' (expected big, net, little, host or string)")]
    BadKind(String),
    /// Length zero.
    #[error("length must be at least 1 bit")]
    Empty,
    /// An integer field wider than 64 bits.
    #[error("integer fields are at most 64 bits wide, got {bits}")]
    TooWide {
        /// Requested width.
        bits: usize,
    },
    /// A little-endian field wider than a byte that is not whole bytes.
    #[error("little-endian fields wider than 8 bits must be whole bytes, got {bits} bits")]
    LittleEndianWidth {
        /// Requested width.
        bits: usize,
    },
    /// A string field not starting and ending on a byte boundary.
    #[error("string fields must have offset and length in multiples of 8 bits")]
    UnalignedString,
    /// `offset + length` does not fit in `usize`.
    #[error("offset + length overflows")]
    Overflow,
    /// The field name is a method name (`segment`, `layout`), which always wins.
    #[error("the name is reserved for a data method")]
    Reserved,
    /// The field name is not a string.
    #[error("layout field names must be strings")]
    BadName,
}
