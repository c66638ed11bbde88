//! `vltava perf floor`: what this machine's kernel charges for the work a broker cannot
//! avoid, in CPU-seconds per GB, so a broker's own CPU per GB can be read against it.
//!
//! Each probe times only the thread doing the broker's side of the work, with the thread's
//! own CPU clock, in the pieces the broker uses: produce requests of 1 MiB read off a
//! loopback socket into one reused buffer, written to a new file through the page cache
//! (and, for acks=all, fdatasynced), checked with CRC-32C; fetches of 1 MiB sent from the
//! page cache with `sendfile`. The peer thread (the client's side) is not counted, as the
//! client's CPU is not the broker's.
//!
//! A broker in a benchmark shares the machine with its client, whose copies compete for the
//! same caches and memory bandwidth; the minimal broker runs a second time beside such a
//! client (a load the caller starts), so a broker measured that way has a floor measured
//! the same way.
//!
//! The minimal broker copies each request twice: off the socket into its buffer, and from
//! there into the page cache. A spliced broker, which moves the socket's pages into a pipe
//! and from the pipe into the file with `splice`, copies once; its probe is the floor of
//! that design, which the broker does not have.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};
use serde::Serialize;

/// The piece size: a produce request and a fetch response at the clients' default limits.
pub const PIECE: usize = 1 << 20;

/// CPU-seconds per GB (10^9 bytes) of each probe.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub dir: String,
    pub bytes: u64,
    /// Each figure but the first write is the least of this many rounds.
    pub rounds: u32,
    /// Reading produce requests off a loopback TCP socket.
    pub tcp_receive: f64,
    /// Writing them to a new file through the page cache (what acks=1 waits for), into
    /// page-cache memory freed just before, as a broker whose page cache is full reuses it.
    pub page_cache_write: f64,
    /// The same write, the first of the run: into whatever memory the machine had free. On
    /// a virtual machine that hands free memory back to its host, memory untouched for a
    /// few seconds costs a host fault on first touch, and this can be ten times the above.
    pub page_cache_write_first: f64,
    /// The same write with an fdatasync after every piece (what acks=all waits for).
    pub write_fdatasync: f64,
    /// Checking every byte with CRC-32C, as the broker checks every batch.
    pub crc32c: f64,
    /// Sending the written file from the page cache to a loopback TCP socket.
    pub sendfile: f64,
    /// A minimal broker on one thread: receive, CRC-32C, page-cache write, per piece.
    /// Its bytes pass through the caches as a broker's do, which the parts above, each on a
    /// buffer of its own, do not show.
    pub minimal_acks_1: f64,
    /// The same with an fdatasync after every piece.
    pub minimal_acks_all: f64,
    /// The minimal broker, acks=1, while the caller's load (a client producing flat out)
    /// runs on the other threads.
    pub minimal_acks_1_beside_client: f64,
    /// The same with an fdatasync after every piece.
    pub minimal_acks_all_beside_client: f64,
    /// A broker without the receive copy, acks=1: each piece goes from the socket through a
    /// pipe into the file with `splice`, and its CRC-32C is read back from the page cache.
    pub spliced_acks_1: f64,
    /// The same beside the caller's load.
    pub spliced_acks_1_beside_client: f64,
}

impl Floor {
    /// The least a broker can spend per GB produced with acks=1 on this machine: what the
    /// minimal broker spent.
    pub fn produce_acks_1(&self) -> f64 {
        self.minimal_acks_1
    }

    /// The least per GB produced with acks=all (one fdatasync per request).
    pub fn produce_acks_all(&self) -> f64 {
        self.minimal_acks_all
    }

    /// The least per GB consumed.
    pub fn consume(&self) -> f64 {
        self.sendfile
    }
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn per_gb(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes as f64 / 1e9)
}

/// Probes per round, for a progress bar: `step` is called after each.
pub const STEPS_PER_ROUND: u64 = 12;

/// Runs every probe `rounds` times over `bytes` (rounded up to whole pieces) and keeps each
/// one's least CPU: a floor is what the machine can do, and on a shared host a probe is
/// sometimes charged for others' work. The scratch file in `dir` is removed afterwards.
/// `beside` starts the client load for the minimal broker's second runs; the load stops
/// when what it returns is dropped.
pub fn measure<L>(
    dir: &Path,
    bytes: u64,
    rounds: u32,
    mut step: impl FnMut(),
    mut beside: impl FnMut() -> std::io::Result<L>,
) -> std::io::Result<Floor> {
    let pieces = bytes.div_ceil(PIECE as u64).max(1);
    let bytes = pieces * PIECE as u64;
    let path = dir.join(format!(".vltava-floor-probe-{}", std::process::id()));
    let scratch = Scratch(path.clone());
    let piece: Vec<u8> = (0..PIECE).map(|i| b'a' + (i % 26) as u8).collect();
    let mut least = [f64::INFINITY; 11];
    let mut page_cache_write_first = f64::NAN;
    let mut keep = |i: usize, cpu: Duration| least[i] = least[i].min(per_gb(cpu, bytes));
    for round in 0..rounds.max(1) {
        keep(0, tcp_receive(pieces, &piece)?);
        step();
        keep(1, crc(pieces, &piece));
        step();
        // The run's first write goes into whatever memory is free; every later one into
        // the memory the previous file freed just before.
        let w = write(&path, pieces, &piece, false)?;
        if round == 0 {
            page_cache_write_first = per_gb(w, bytes);
        } else {
            keep(2, w);
        }
        step();
        keep(3, send_file(&path, bytes)?);
        step();
        std::fs::remove_file(&path)?;
        keep(2, write(&path, pieces, &piece, false)?);
        step();
        std::fs::remove_file(&path)?;
        keep(4, write(&path, pieces, &piece, true)?);
        step();
        std::fs::remove_file(&path)?;
        keep(5, minimal_broker(&path, pieces, &piece, false)?);
        step();
        std::fs::remove_file(&path)?;
        keep(6, minimal_broker(&path, pieces, &piece, true)?);
        step();
        std::fs::remove_file(&path)?;
        for (i, sync) in [(7, false), (8, true)] {
            let load = beside()?;
            let cpu = minimal_broker(&path, pieces, &piece, sync);
            drop(load);
            keep(i, cpu?);
            step();
            std::fs::remove_file(&path)?;
        }
        keep(9, spliced_broker(&path, pieces, &piece)?);
        step();
        std::fs::remove_file(&path)?;
        let load = beside()?;
        let cpu = spliced_broker(&path, pieces, &piece);
        drop(load);
        keep(10, cpu?);
        step();
        std::fs::remove_file(&path)?;
    }
    drop(scratch);
    let [tcp_receive, crc32c, page_cache_write, sendfile, write_fdatasync, minimal_acks_1, minimal_acks_all, minimal_acks_1_beside_client, minimal_acks_all_beside_client, spliced_acks_1, spliced_acks_1_beside_client] =
        least;
    Ok(Floor {
        dir: dir.display().to_string(),
        bytes,
        rounds: rounds.max(1),
        tcp_receive,
        page_cache_write,
        page_cache_write_first,
        write_fdatasync,
        crc32c,
        sendfile,
        minimal_acks_1,
        minimal_acks_all,
        minimal_acks_1_beside_client,
        minimal_acks_all_beside_client,
        spliced_acks_1,
        spliced_acks_1_beside_client,
    })
}

/// Removes the scratch file however the probes end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A connected loopback pair: (the broker's end, the client's end).
fn loopback() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (broker, _) = listener.accept()?;
    Ok((broker, client))
}

/// A client thread sends `pieces` pieces; this thread reads each whole piece into one
/// reused buffer, as the broker reads a produce request into a recycled one.
fn tcp_receive(pieces: u64, piece: &[u8]) -> std::io::Result<Duration> {
    receive_each(pieces, piece, |_| Ok(()))
}

/// The least a broker does per produce request, on one thread: read it off the socket,
/// check its CRC, append it to a new file (and fdatasync when `sync` is set).
fn minimal_broker(path: &Path, pieces: u64, piece: &[u8], sync: bool) -> std::io::Result<Duration> {
    let file = OpenOptions::new().create_new(true).write(true).open(path)?;
    let mut at = 0u64;
    receive_each(pieces, piece, |buf| {
        std::hint::black_box(crc32c::crc32c(buf));
        file.write_all_at(buf, at)?;
        at += buf.len() as u64;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    })
}

/// The minimal broker without its receive copy: each piece moves from the socket into a
/// pipe and from the pipe into the file with `splice` (the kernel's one copy, into the page
/// cache); its CRC-32C is then read back from the page cache a cache-sized slice at a time.
fn spliced_broker(path: &Path, pieces: u64, piece: &[u8]) -> std::io::Result<Duration> {
    use rustix::pipe::{splice, SpliceFlags};
    const SLICE: usize = 64 << 10;
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)?;
    let (pipe_out, pipe_in) = rustix::pipe::pipe()?;
    // A pipe holds 64 KiB unless asked for more; a piece in one go is as a broker would
    // move a request, and the system's pipe-max-size may refuse it.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_in, piece.len());
    let mut slice = vec![0u8; SLICE];
    let mut at = 0u64;
    beside_sender(pieces, piece, |broker| {
        let piece_at = at;
        let mut moved = 0;
        while moved < piece.len() {
            let left = piece.len() - moved;
            let n = splice(&*broker, None, &pipe_in, None, left, SpliceFlags::MOVE)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut out = 0;
            while out < n {
                out += splice(
                    &pipe_out,
                    None,
                    &file,
                    Some(&mut at),
                    n - out,
                    SpliceFlags::MOVE,
                )?;
            }
            moved += n;
        }
        let mut sum = 0u32;
        for off in (0..piece.len()).step_by(SLICE) {
            let len = SLICE.min(piece.len() - off);
            file.read_exact_at(&mut slice[..len], piece_at + off as u64)?;
            sum = crc32c::crc32c_append(sum, &slice[..len]);
        }
        std::hint::black_box(sum);
        Ok(())
    })
}

/// Receives `pieces` pieces from a client thread into one reused buffer, calling `each`
/// on every piece; returns this thread's CPU time.
fn receive_each(
    pieces: u64,
    piece: &[u8],
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<Duration> {
    let mut buf = vec![0u8; piece.len()];
    beside_sender(pieces, piece, |broker| {
        broker.read_exact(&mut buf)?;
        each(&buf)
    })
}

/// A client thread sends `pieces` pieces over loopback while this thread takes each with
/// `take`; returns this thread's CPU time.
fn beside_sender(
    pieces: u64,
    piece: &[u8],
    mut take: impl FnMut(&mut TcpStream) -> std::io::Result<()>,
) -> std::io::Result<Duration> {
    let (mut broker, mut client) = loopback()?;
    let data = piece.to_vec();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..pieces {
            client.write_all(&data)?;
        }
        Ok(())
    });
    let start = thread_cpu();
    let received = (0..pieces).try_for_each(|_| take(&mut broker));
    let cpu = thread_cpu() - start;
    drop(broker);
    // The sender fails with a broken pipe if the loop above stopped early.
    let sent = sender.join().expect("sender thread");
    received.and(sent)?;
    Ok(cpu)
}

fn crc(pieces: u64, piece: &[u8]) -> Duration {
    let start = thread_cpu();
    let mut sum = 0u32;
    for _ in 0..pieces {
        sum ^= crc32c::crc32c(std::hint::black_box(piece));
    }
    std::hint::black_box(sum);
    thread_cpu() - start
}

/// Appends `pieces` pieces to a new file with `pwrite`, each followed by an fdatasync when
/// `sync` is set; the file stays for the sendfile probe.
fn write(path: &Path, pieces: u64, piece: &[u8], sync: bool) -> std::io::Result<Duration> {
    let file = OpenOptions::new().create_new(true).write(true).open(path)?;
    let start = thread_cpu();
    for i in 0..pieces {
        file.write_all_at(piece, i * piece.len() as u64)?;
        if sync {
            file.sync_data()?;
        }
    }
    Ok(thread_cpu() - start)
}

/// Sends the file to a loopback socket a piece at a time with `sendfile`; a client thread
/// reads and drops it.
fn send_file(path: &Path, bytes: u64) -> std::io::Result<Duration> {
    let file = File::open(path)?;
    let (broker, mut client) = loopback()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            match client.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let start = thread_cpu();
    let mut pos = 0u64;
    while pos < bytes {
        let want = (bytes - pos).min(PIECE as u64) as usize;
        let sent = rustix::fs::sendfile(&broker, &file, Some(&mut pos), want)?;
        if sent == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    let cpu = thread_cpu() - start;
    drop(broker);
    let read = reader.join().expect("reader thread")?;
    if read != bytes {
        return Err(std::io::Error::other(format!(
            "sendfile probe: the reader got {read} of {bytes} bytes"
        )));
    }
    Ok(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_runs_and_costs_something() {
        let dir = std::env::temp_dir().join(format!("vltava-floor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut steps = 0;
        // The load runs only around the two loaded probes of each round.
        let running = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut started = 0;
        struct Load(std::rc::Rc<std::cell::Cell<i32>>);
        impl Drop for Load {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        let f = measure(
            &dir,
            8 * PIECE as u64,
            2,
            || {
                steps += 1;
                assert_eq!(running.get(), 0, "load stopped before the next probe");
            },
            || {
                started += 1;
                running.set(running.get() + 1);
                Ok(Load(running.clone()))
            },
        )
        .unwrap();
        assert_eq!(steps, 2 * STEPS_PER_ROUND);
        assert_eq!(started, 2 * 3);
        assert_eq!(f.rounds, 2);
        assert_eq!(f.bytes, 8 * PIECE as u64);
        for v in [
            f.tcp_receive,
            f.page_cache_write,
            f.page_cache_write_first,
            f.write_fdatasync,
            f.crc32c,
            f.sendfile,
            f.minimal_acks_1,
            f.minimal_acks_all,
            f.minimal_acks_1_beside_client,
            f.minimal_acks_all_beside_client,
            f.spliced_acks_1,
            f.spliced_acks_1_beside_client,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{f:?}");
        }
        assert!(f.produce_acks_1() > 0.0, "{f:?}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "scratch file removed"
        );
        std::fs::remove_dir(&dir).unwrap();
    }
}
