//! Local I/O shared by the commands: the blob cache and atomic files.

pub mod atomic;
pub mod cas;
