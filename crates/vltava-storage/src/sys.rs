//! The one system call the log needs that neither `std` nor `rustix` wraps, and so the one
//! place in this crate allowed `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writing the dirty pages of
/// `[pos, pos + len)` to the disk and returns without waiting for them. Durability still
/// comes only from `fdatasync`; this makes the one that follows wait for pages already on
/// their way instead of starting them itself.
pub(crate) fn start_writeback(file: &impl AsFd, pos: u64, len: u64) -> io::Result<()> {
    let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let fd = file.as_fd();
    // SAFETY: `fd` is borrowed from an open file for the whole call, and the call reads and
    // writes none of this process's memory.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), pos, len, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn writeback_starts_on_a_real_file_and_leaves_its_bytes_alone() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 3 << 20]).unwrap();
        super::start_writeback(&f, 4096, 2 << 20).unwrap();
        // Past the end is no error either: the range covers what exists.
        super::start_writeback(&f, 0, 8 << 20).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 3 << 20);
        let err = super::start_writeback(&f, u64::MAX, 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
