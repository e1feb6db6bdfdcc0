//! Local I/O shared by the commands: the blob cache, atomic files, temporary files
//! a rerun cleans up after a kill, subprocesses, where a bundle's bytes come from
//! (stdin, a file, volumes), volume sets with parity, and a bundle served in place
//! over loopback HTTP.

pub mod atomic;
pub mod bundle_file;
pub mod cas;
pub mod keys;
pub mod process;
pub mod serve;
pub mod source;
pub mod space;
pub mod temp;
pub mod volumes;

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
/// (`read_exact` fails on a short tail, `read` may stop anywhere.)
pub fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
