//! The inputs a person writes (the spec) and the pins `create` records (the lock).
//! Pure parsing and writing; resolving what they name is `resolve`'s job.

pub mod file;
pub mod lock;
pub mod platform;

pub use file::{load, parse, ImageRequest, ImageSource, LoadedSpec, SpecError};
pub use lock::{Lock, LockedChart, LockedImage};
pub use platform::{Platform, Platforms};
