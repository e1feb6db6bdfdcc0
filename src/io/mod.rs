//! Local I/O shared by the commands: the blob cache, atomic files, subprocesses.

pub mod atomic;
pub mod bundle_file;
pub mod cas;
pub mod keys;
pub mod process;
pub mod space;
