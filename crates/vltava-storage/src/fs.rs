//! The file operations storage performs, behind a trait, so a test can run the real log code
//! over `sim::SimFs` and cut the power at any point: `kill -9` keeps the page cache,
//! so only a simulated disk can tell data that was fsynced from data that was merely written.
//!
//! The set is exactly what storage uses and no more. Production uses [`StdFs`], a thin
//! forwarding to `std::fs`; the log holds it as `Arc<dyn Fs>` and each open file as a
//! `dyn FsFile`, so the cost is one indirect call per system call and no allocation per
//! append.

use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How [`Fs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading.
    Read,
    /// An existing file, for reading and writing.
    Write,
    /// For reading and writing; created empty if missing, kept as is otherwise.
    Create,
    /// For reading and writing; created if missing, emptied otherwise.
    Truncate,
}

/// A directory tree storage can work in.
///
/// Durability follows POSIX, not the friendlier habits of one file system: a file's bytes
/// and length are durable once [`FsFile::sync_data`] returns, and a file's name (its
/// creation, rename or removal) once [`Fs::sync_dir`] of its directory returns.
pub trait Fs: Send + Sync + fmt::Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    /// Names (not paths) of the entries of a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Replaces `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable: files created, renamed or removed in it.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// A whole file's bytes.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(f.size()?).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file, addressed by position only (no cursor), so one handle serves concurrent
/// readers and the appender.
pub trait FsFile: Send + Sync + fmt::Debug {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Reads `[pos, pos + len)` into a new buffer.
    fn read_exact_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }
    /// Writes `bufs` one after another from `pos`, as one `write_all_at` of their
    /// concatenation would, so an append can write a rewritten header and the caller's
    /// untouched bytes without joining them first.
    fn write_all_vectored_at(&self, bufs: &[&[u8]], mut pos: u64) -> io::Result<()> {
        for b in bufs {
            self.write_all_at(b, pos)?;
            pos += b.len() as u64;
        }
        Ok(())
    }
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Sets the length; blocks reserved past it ([`FsFile::reserve`]) are released too.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Asks the file system to allocate `[pos, pos + len)` now, without changing the length,
    /// so writes there skip the per-block allocation work. A hint: `Ok` if not supported.
    fn reserve(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// A hint: start writing `[pos, pos + len)` to the disk now, without waiting for it.
    fn start_writeback(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Makes the bytes and the length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// [`FsFile::sync_data`] plus the other metadata (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// The descriptor behind the file, for `sendfile` from it; `None` for files that are not
    /// the kernel's (the simulated disk), whose readers copy instead.
    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// Where the bodies of streamed batches come from (the zero-copy produce path's pipe): the
/// log writes each batch's rewritten header itself and asks for the body behind it.
pub trait BodySource {
    /// Writes the payload's next `len` body bytes into `file` from `pos`.
    fn write_to(&mut self, file: &dyn FsFile, pos: u64, len: usize) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl StdFs {
    /// The shared handle `Log::open` and the checkpoint functions use.
    pub fn shared() -> Arc<dyn Fs> {
        Arc::new(StdFs)
    }
}

impl Fs for StdFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Write => {
                o.write(true);
            }
            OpenMode::Create => {
                o.write(true).create(true).truncate(false);
            }
            OpenMode::Truncate => {
                o.write(true).create(true).truncate(true);
            }
        }
        Ok(Box::new(o.open(path)?))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

impl FsFile for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, pos)
    }

    /// `pread` into the buffer's spare capacity: a fetch's buffer is never zero-filled first.
    fn read_exact_vec_at(&self, len: usize, mut pos: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            if buf.capacity() == buf.len() {
                buf.reserve_exact(len - buf.len());
            }
            match rustix::io::pread(self, rustix::buffer::spare_capacity(&mut buf), pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => pos += n as u64,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// One `pwritev` for all of `bufs` (more only after a short write).
    fn write_all_vectored_at(&self, bufs: &[&[u8]], mut pos: u64) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match rustix::io::pwritev(self, rest, pos) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    pos += n as u64;
                    io::IoSlice::advance_slices(&mut rest, n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        crate::sys::start_writeback(self, pos, len)
    }

    #[cfg(target_os = "linux")]
    fn reserve(&self, pos: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(self, FallocateFlags::KEEP_SIZE, pos, len) {
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            r => r.map_err(Into::into),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        std::fs::File::sync_all(self)
    }

    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real file's vectored write and uninitialised-buffer read agree with the plain ones.
    #[test]
    fn vectored_writes_and_vec_reads_match_the_plain_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = StdFs.open(&path, OpenMode::Create).unwrap();
        let parts: [&[u8]; 3] = [b"head", b"", &[9u8; 5000]];
        f.write_all_vectored_at(&parts, 10).unwrap();
        let mut plain = vec![0u8; 5004];
        f.read_exact_at(&mut plain, 10).unwrap();
        assert_eq!(&plain[..4], b"head");
        assert!(plain[4..].iter().all(|&b| b == 9));
        assert_eq!(f.read_exact_vec_at(5004, 10).unwrap(), plain);
        assert_eq!(f.read_exact_vec_at(0, 10).unwrap(), Vec::<u8>::new());
        assert_eq!(
            f.read_exact_vec_at(10, 5010).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
