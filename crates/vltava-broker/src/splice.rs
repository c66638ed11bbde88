//! Produce records that never enter the broker's memory: on a plaintext connection the
//! records of a large Produce of one partition move from the socket into a pipe with
//! `splice` (the kernel passes page references, no copy). On the append lane, just before
//! the append, they are checked through a `tee` of that pipe read a slice at a time, and
//! then go from the pipe into the segment file with `splice` again: the one copy, into the
//! page cache, of bytes the check has just brought into the CPU's caches. A request read
//! into memory costs a copy off the socket as well; `vltava perf floor` measures both
//! designs beside a client.
//!
//! Anything unusual takes the ordinary path with the records read into memory: a pipe that
//! cannot be made large enough, records that fail the checks (so the ordinary path gives
//! Kafka's exact error), and in the handler compressed batches, compacted topics and
//! recompression, which need the records themselves.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, tee, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;
use vltava_record::stream::{StreamValidator, StreamedBatch};
use vltava_record::HEADER_LEN;
use vltava_storage::{BodySource, FsFile};

/// The smallest pipe made (the default `produce.splice.min.bytes`), so a pipe made for
/// small records serves larger ones later. Below 64 KiB the path was not measured.
const MIN_PIPE: usize = 64 << 10;
/// Records above this take the ordinary path: the largest pipe an unprivileged process may
/// make by default (`/proc/sys/fs/pipe-max-size`).
pub const MAX_RECORDS: usize = 1 << 20;
/// Record pipes one connection may hold at once: one being read, the requests queued for
/// its append lane ([`crate::network`] reads at most one ahead) and spare.
const PIPES_PER_CONNECTION: usize = 4;
/// Empty pipe pairs a connection keeps for its next requests.
const SPARE_PIPES: usize = 1;
/// The slice the check reads at a time: it stays in the CPU's caches.
const SLICE: usize = 64 << 10;

#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe that holds at least `len` bytes, or `None` if the system will not make one.
    fn new(len: usize) -> Option<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC).ok()?;
        let capacity = fcntl_setpipe_size(&write, len).ok()?;
        (capacity >= len).then_some(Pipe {
            read,
            write,
            capacity,
        })
    }

    fn buffered(&self) -> usize {
        rustix::io::ioctl_fionread(&self.read).map_or(usize::MAX, |n| n as usize)
    }

    /// Reads `len` bytes out of the pipe, which holds them.
    fn read_into(&self, out: &mut Vec<u8>, len: usize) -> io::Result<()> {
        let start = out.len();
        out.resize(start + len, 0);
        self.read_exact(&mut out[start..])
    }

    /// Fills `buf` from the pipe, which holds at least that much.
    fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        while at < buf.len() {
            match rustix::io::read(&self.read, &mut buf[at..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => at += n,
            }
        }
        Ok(())
    }
}

/// The pipes of one request's records: the records, and the pipe a tee of them is checked
/// through, with the slice the check reads into.
#[derive(Debug)]
struct Pipes {
    records: Pipe,
    check: Pipe,
    slice: Vec<u8>,
}

impl Pipes {
    fn new(len: usize) -> Option<Pipes> {
        let len = len.max(MIN_PIPE);
        Some(Pipes {
            records: Pipe::new(len)?,
            check: Pipe::new(len)?,
            slice: vec![0; SLICE],
        })
    }

    fn capacity(&self) -> usize {
        self.records.capacity.min(self.check.capacity)
    }
}

/// The pipes of one connection.
#[derive(Debug)]
pub struct Splicer {
    /// `produce.splice.min.bytes`
    min: usize,
    /// Pipes back from appended requests, empty and ready for the next.
    free: Arc<Mutex<Vec<Pipes>>>,
    /// Pipes handed out with requests and not yet back.
    out: Arc<std::sync::atomic::AtomicUsize>,
}

/// The pipes taken for one request.
#[derive(Debug)]
pub struct Ready(Pipes);

/// What [`Splicer::receive`] got.
pub enum Received {
    /// The records are in a pipe, to be checked just before their append
    /// ([`SplicedRecords::check`]), while the CPU's caches still hold what the check read.
    Spliced(SplicedRecords),
    /// The records are in memory: a pipe could not take them.
    Copied(Vec<u8>),
}

impl Splicer {
    /// A connection's splicer for records of at least `min` bytes.
    pub fn new(min: usize) -> Self {
        Self {
            min,
            free: Arc::default(),
            out: Arc::default(),
        }
    }

    /// Whether a frame of `len` bytes may carry records to splice.
    pub fn may_take(&self, len: usize) -> bool {
        len >= self.min
    }

    /// Whether a request's records of `len` bytes can be spliced now.
    pub fn can_take(&self, len: usize) -> bool {
        (self.min.max(1)..=MAX_RECORDS).contains(&len)
            && self.out.load(std::sync::atomic::Ordering::Relaxed) < PIPES_PER_CONNECTION
    }

    /// The pipes for records of `len` bytes, before any of the request is read; `None`
    /// when the system will not make them, and the request is read as usual.
    pub fn ready(&mut self, len: usize) -> Option<Ready> {
        let reused = {
            let mut free = self.free.lock();
            let at = free.iter().position(|p| p.capacity() >= len);
            at.map(|i| free.swap_remove(i))
        };
        reused.or_else(|| Pipes::new(len)).map(Ready)
    }

    /// Moves the next `len` bytes of `socket`, a Produce's records, into the pipe.
    pub async fn receive(
        &mut self,
        socket: &TcpStream,
        ready: Ready,
        len: usize,
    ) -> io::Result<Received> {
        let pipes = ready.0;
        let pipe = &pipes.records;
        let mut moved = 0;
        while moved < len {
            socket.readable().await?;
            let n = socket.try_io(Interest::READABLE, || {
                splice(
                    socket,
                    None,
                    &pipe.write,
                    None,
                    len - moved,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match n {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket has bytes the pipe would not take: its slots are full of
                    // small fragments. Go on in memory.
                    if rustix::io::ioctl_fionread(socket).is_ok_and(|n| n > 0) {
                        let mut copied = Vec::with_capacity(len);
                        pipe.read_into(&mut copied, moved)?;
                        copied.resize(len, 0);
                        read_exact(socket, &mut copied[moved..]).await?;
                        return Ok(Received::Copied(copied));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Received::Spliced(SplicedRecords {
            pipes: Some(pipes),
            len,
            batches: Vec::new(),
            left: len,
            free: Arc::clone(&self.free),
            out: Arc::clone(&self.out),
        }))
    }
}

/// Reads exactly `buf.len()` bytes from the socket.
pub(crate) async fn read_exact(socket: &TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        socket.readable().await?;
        match socket.try_read(&mut buf[at..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One partition's records, waiting in a pipe for their check and append.
pub struct SplicedRecords {
    pipes: Option<Pipes>,
    len: usize,
    /// The batches, once checked.
    batches: Vec<StreamedBatch>,
    /// Bytes still in the records pipe.
    left: usize,
    free: Arc<Mutex<Vec<Pipes>>>,
    out: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for SplicedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplicedRecords")
            .field("len", &self.len)
            .field("batches", &self.batches.len())
            .finish()
    }
}

impl SplicedRecords {
    /// Checks the records as [`vltava_record::validate`] would (the topic's
    /// `max.message.bytes` aside, which is the handler's to check per batch), reading a tee
    /// of the pipe a cache-sized slice at a time; `false` if they fail, and the ordinary
    /// path, with [`SplicedRecords::into_bytes`], says what is wrong.
    pub fn check(&mut self) -> io::Result<bool> {
        let pipes = self.pipes.as_mut().expect("held until dropped");
        if self.left != self.len || pipes.check.buffered() != 0 {
            return Ok(false);
        }
        let teed = tee(
            &pipes.records.read,
            &pipes.check.write,
            self.len,
            SpliceFlags::NONBLOCK,
        )?;
        let mut v = StreamValidator::new(usize::MAX);
        let mut left = teed;
        let mut failed = teed != self.len;
        while left > 0 {
            let want = left.min(SLICE);
            let n = rustix::io::read(&pipes.check.read, &mut pipes.slice[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if !failed {
                failed = v.feed(&pipes.slice[..n]).is_err();
            }
            left -= n;
        }
        if failed {
            return Ok(false);
        }
        match v.finish() {
            Ok((_, batches)) => {
                self.batches = batches;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// The checked batches.
    pub fn batches(&self) -> &[StreamedBatch] {
        &self.batches
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The batches' headers, taken out so the records can write their bodies.
    pub fn take_batches(&mut self) -> Vec<StreamedBatch> {
        std::mem::take(&mut self.batches)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records in memory, for the checks and rewrites that need them.
    pub fn into_bytes(mut self) -> io::Result<Bytes> {
        let pipe = &self.pipes.as_ref().expect("held until dropped").records;
        let mut out = Vec::with_capacity(self.left);
        pipe.read_into(&mut out, self.left)?;
        self.left = 0;
        Ok(out.into())
    }
}

impl BodySource for SplicedRecords {
    /// The pipe holds whole batches: the header in front of each body, which the log has
    /// written rewritten, is read out of the way first.
    fn write_to(&mut self, file: &dyn FsFile, mut pos: u64, len: usize) -> io::Result<()> {
        if HEADER_LEN + len > self.left {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let pipe = &self.pipes.as_ref().expect("held until dropped").records;
        pipe.read_exact(&mut [0u8; HEADER_LEN])?;
        self.left -= HEADER_LEN;
        match file.as_fd() {
            Some(fd) => {
                let mut done = 0;
                while done < len {
                    let n = splice(
                        &pipe.read,
                        None,
                        fd.as_fd(),
                        Some(&mut pos),
                        len - done,
                        SpliceFlags::MOVE,
                    )?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    done += n;
                    self.left -= n;
                }
            }
            // A file that is not the kernel's (the simulated disk) is written from memory.
            None => {
                let mut buf = Vec::with_capacity(len);
                pipe.read_into(&mut buf, len)?;
                self.left -= len;
                file.write_all_at(&buf, pos)?;
            }
        }
        Ok(())
    }
}

impl Drop for SplicedRecords {
    fn drop(&mut self) {
        self.out.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Only an empty pipe is used again: records an append did not take (a retried batch,
        // a refused request) leave with their pipe.
        if let Some(pipes) = self.pipes.take() {
            let mut free = self.free.lock();
            // One spare pair per connection: the next request's, while this one's successor
            // is being read. Pipes count against the user's pipe-user-pages-soft.
            if free.len() < SPARE_PIPES
                && self.left == 0
                && pipes.records.buffered() == 0
                && pipes.check.buffered() == 0
            {
                free.push(pipes);
            }
        }
    }
}
