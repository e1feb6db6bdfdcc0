//! Inputs to blobs: everything that finds, fetches and checks what a spec names,
//! and leaves it in the local cache for the writer.

pub mod image;
