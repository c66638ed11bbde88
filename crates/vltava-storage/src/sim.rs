//! A simulated file system that can lose power: [`SimFs`].
//!
//! Files live in memory. For every file it keeps the bytes as written and the bytes as last
//! made durable by a sync; for every directory, its entries as they are and as they were at
//! its last [`Fs::sync_dir`]. [`SimFs::crash`] turns the tree into what a disk holds after a
//! power loss: everything not yet durable is gone. That is the POSIX promise and no more
//! (ext4 and xfs often keep more, and code that relies on that loses data elsewhere).
//! [`SimFs::crash_torn`] is the unkind variant: with a seeded RNG, any part of a file's
//! bytes that was not yet durable may or may not have reached the disk, block by block, so
//! a torn or half-written tail is what recovery sees; and a prefix, in the order they were
//! made, of the directory changes not yet synced survives, as a journaling file system
//! (ext4, xfs) commits them.
//!
//! It can also fail the next write, sync, directory sync or file creation, as a failing or
//! full disk does ([`SimFs::fail_next`]), and it counts open handles, so a test can check
//! how many file descriptors the real code would hold.
//!
//! Built for this crate's tests and, with the `sim` feature, for other crates' tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{Fs, FsFile, OpenMode};

/// An operation [`SimFs::fail_next`] can make fail once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next write to any file.
    Write,
    /// The next `sync_data`/`sync_all` of any file.
    Sync,
    /// The next sync of a directory.
    SyncDir,
    /// The next open that creates a file.
    Create,
}

/// The granularity at which [`SimFs::crash_torn`] decides what reached the disk: a sector.
const BLOCK: usize = 512;

/// An in-memory file system that tracks what is durable. Clones share the same tree.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("SimFs")
            .field("files", &st.files.len())
            .field("open_files", &st.open_files)
            .field("generation", &st.generation)
            .finish()
    }
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

/// What a directory change left at a path.
#[derive(Debug, Clone)]
enum Entry {
    File(u64),
    /// A rename to this path: one journal transaction, so both names change together.
    RenamedFrom(PathBuf, u64),
    Dir,
    Gone,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    files: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    durable_files: BTreeMap<PathBuf, u64>,
    durable_dirs: BTreeSet<PathBuf>,
    /// Directory changes not yet made durable by a directory sync, oldest first.
    pending: Vec<(PathBuf, Entry)>,
    /// Bumped by a crash: handles opened before it fail, as the process that held them died.
    generation: u64,
    open_files: usize,
    faults: Vec<Fault>,
    /// The ranges writeback was asked to start on, as (inode, position, length): a hint
    /// with no effect here, recorded (the first 4,096 since the last take) so tests can
    /// see what was asked.
    writebacks: Vec<(u64, u64, u64)>,
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p.parent().is_none()
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

fn injected(f: Fault) -> io::Error {
    io::Error::other(format!("injected {f:?} failure"))
}

impl State {
    fn dir_exists(&self, p: &Path) -> bool {
        is_root(p) || self.dirs.contains(p)
    }

    fn parent_exists(&self, p: &Path) -> bool {
        p.parent().is_none_or(|d| self.dir_exists(d))
    }

    fn take_fault(&mut self, f: Fault) -> io::Result<()> {
        match self.faults.iter().position(|x| *x == f) {
            Some(i) => {
                self.faults.remove(i);
                Err(injected(f))
            }
            None => Ok(()),
        }
    }

    fn inode(&mut self, ino: u64, generation: u64) -> io::Result<&mut Inode> {
        if generation != self.generation {
            return Err(io::Error::other("file handle from before a crash"));
        }
        Ok(self.inodes.get_mut(&ino).expect("open inodes are kept"))
    }
}

impl SimFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `fault` operation fail once.
    pub fn fail_next(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// The ranges writeback was asked to start on since the last call, as (path,
    /// position, length), oldest first.
    pub fn take_writebacks(&self) -> Vec<(PathBuf, u64, u64)> {
        let mut st = self.state.lock();
        let started = std::mem::take(&mut st.writebacks);
        started
            .into_iter()
            .map(|(ino, pos, len)| {
                let path = st
                    .files
                    .iter()
                    .find(|(_, i)| **i == ino)
                    .map_or_else(PathBuf::new, |(p, _)| p.clone());
                (path, pos, len)
            })
            .collect()
    }

    /// How many file handles are open now.
    pub fn open_files(&self) -> usize {
        self.state.lock().open_files
    }

    /// Power loss: only what a sync made durable survives. Handles opened before it fail.
    pub fn crash(&self) {
        self.crash_inner(None);
    }

    /// Power loss where any unsynced block, length change or directory entry may or may not
    /// have reached the disk, decided by an RNG seeded with `seed`.
    pub fn crash_torn(&self, seed: u64) {
        self.crash_inner(Some(Rng::new(seed)));
    }

    fn crash_inner(&self, mut rng: Option<Rng>) {
        let mut st = self.state.lock();
        let st = &mut *st;
        st.generation += 1;
        st.faults.clear();
        let mut dirs = st.durable_dirs.clone();
        let mut files = st.durable_files.clone();
        let pending = std::mem::take(&mut st.pending);
        if let Some(rng) = rng.as_mut() {
            let survived = rng.below(pending.len() + 1);
            for (p, entry) in pending.into_iter().take(survived) {
                match entry {
                    Entry::File(ino) => {
                        files.insert(p, ino);
                    }
                    Entry::RenamedFrom(from, ino) => {
                        files.remove(&from);
                        files.insert(p, ino);
                    }
                    Entry::Dir => {
                        dirs.insert(p);
                    }
                    Entry::Gone => {
                        files.remove(&p);
                    }
                }
            }
        }
        // A name survives only if every directory above it does.
        let reachable = |p: &Path, dirs: &BTreeSet<PathBuf>| {
            p.ancestors()
                .skip(1)
                .all(|a| is_root(a) || dirs.contains(a))
        };
        let kept_dirs: BTreeSet<PathBuf> = dirs
            .iter()
            .filter(|d| reachable(d, &dirs))
            .cloned()
            .collect();
        files.retain(|p, _| reachable(p, &kept_dirs));
        let live: BTreeSet<u64> = files.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        // In inode order, so a seed tears the same bytes every run.
        let mut inodes: Vec<(&u64, &mut Inode)> = st.inodes.iter_mut().collect();
        inodes.sort_by_key(|(ino, _)| **ino);
        for (_, inode) in inodes {
            let image = match rng.as_mut() {
                None => inode.durable.clone(),
                Some(rng) => torn_image(&inode.durable, &inode.data, rng),
            };
            inode.data = image.clone();
            inode.durable = image;
        }
        st.files = files.clone();
        st.durable_files = files;
        st.dirs = kept_dirs.clone();
        st.durable_dirs = kept_dirs;
    }
}

/// What a disk may hold for a file whose durable bytes are `durable` and whose written bytes
/// are `current`: a length between the two and, per block that differs, either version.
fn torn_image(durable: &[u8], current: &[u8], rng: &mut Rng) -> Vec<u8> {
    if durable == current {
        return durable.to_vec();
    }
    let len = if current.len() >= durable.len() {
        durable.len() + rng.below(current.len() - durable.len() + 1)
    } else if rng.coin() {
        current.len()
    } else {
        durable.len()
    };
    let mut out = vec![0u8; len];
    let byte = |src: &[u8], i: usize| src.get(i).copied().unwrap_or(0);
    for start in (0..len).step_by(BLOCK) {
        let end = (start + BLOCK).min(len);
        let src = if rng.coin() { current } else { durable };
        for (i, b) in out[start..end].iter_mut().enumerate() {
            *b = byte(src, start + i);
        }
    }
    out
}

/// SplitMix64: deterministic, dependency-free, good enough to pick blocks and test steps.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// A number in `0..n`; `n` must not be 0.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.state.lock();
        if !st.parent_exists(path) {
            return Err(not_found(path));
        }
        if st.dir_exists(path) {
            return Err(io::Error::other(format!(
                "{} is a directory",
                path.display()
            )));
        }
        let ino = match (st.files.get(path).copied(), mode) {
            (Some(ino), OpenMode::Truncate) => {
                st.inodes.get_mut(&ino).expect("named inode").data.clear();
                ino
            }
            (Some(ino), _) => ino,
            (None, OpenMode::Read | OpenMode::Write) => return Err(not_found(path)),
            (None, OpenMode::Create | OpenMode::Truncate) => {
                st.take_fault(Fault::Create)?;
                st.next_ino += 1;
                let ino = st.next_ino;
                st.inodes.insert(ino, Inode::default());
                st.files.insert(path.to_path_buf(), ino);
                st.pending.push((path.to_path_buf(), Entry::File(ino)));
                ino
            }
        };
        st.open_files += 1;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            generation: st.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        if !st.dir_exists(path) {
            return Err(not_found(path));
        }
        let child = |p: &&PathBuf| p.parent() == Some(path);
        let name = |p: &PathBuf| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(st
            .files
            .keys()
            .filter(child)
            .chain(st.dirs.iter().filter(child))
            .map(name)
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        st.dir_exists(path) || st.files.contains_key(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        for a in path.ancestors() {
            if st.files.contains_key(a) {
                return Err(io::Error::other(format!("{} is a file", a.display())));
            }
        }
        let mut new: Vec<PathBuf> = path
            .ancestors()
            .filter(|a| !is_root(a) && !st.dirs.contains(*a))
            .map(Path::to_path_buf)
            .collect();
        new.reverse();
        for a in new {
            st.dirs.insert(a.clone());
            st.pending.push((a, Entry::Dir));
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.parent_exists(to) {
            return Err(not_found(to));
        }
        let ino = st.files.remove(from).ok_or_else(|| not_found(from))?;
        st.files.insert(to.to_path_buf(), ino);
        st.pending.push((
            to.to_path_buf(),
            Entry::RenamedFrom(from.to_path_buf(), ino),
        ));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.files.remove(path).ok_or_else(|| not_found(path))?;
        st.pending.push((path.to_path_buf(), Entry::Gone));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let st = &mut *st;
        if !st.dir_exists(path) {
            return Err(not_found(path));
        }
        st.take_fault(Fault::SyncDir)?;
        let child = |p: &Path| p.parent() == Some(path);
        st.durable_files.retain(|p, _| !child(p));
        st.durable_dirs.retain(|p| !child(p));
        for (p, ino) in st.files.iter().filter(|(p, _)| child(p)) {
            st.durable_files.insert(p.clone(), *ino);
        }
        for p in st.dirs.iter().filter(|p| child(p)) {
            st.durable_dirs.insert(p.clone());
        }
        st.pending.retain(|(p, e)| match e {
            Entry::RenamedFrom(from, _) => !child(p) && !child(from),
            _ => !child(p),
        });
        Ok(())
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    writable: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("ino", &self.ino).finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.state.lock().open_files -= 1;
    }
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.take_fault(Fault::Sync)?;
        let inode = st.inode(self.ino, self.generation)?;
        inode.durable.clone_from(&inode.data);
        Ok(())
    }
}

impl FsFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        let data = &st.inode(self.ino, self.generation)?.data;
        let start = usize::try_from(pos).map_err(io::Error::other)?;
        let src = data
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state.lock();
        st.take_fault(Fault::Write)?;
        let data = &mut st.inode(self.ino, self.generation)?.data;
        let start = usize::try_from(pos).map_err(io::Error::other)?;
        let end = start + buf.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let mut st = self.state.lock();
        Ok(st.inode(self.ino, self.generation)?.data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state.lock();
        let data = &mut st.inode(self.ino, self.generation)?.data;
        data.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.inode(self.ino, self.generation)?;
        // Bounded, for simulations that never take them.
        if st.writebacks.len() < 4096 {
            st.writebacks.push((self.ino, pos, len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, p: &str, bytes: &[u8], sync: bool) {
        let f = fs.open(Path::new(p), OpenMode::Create).unwrap();
        let len = f.size().unwrap();
        f.write_all_at(bytes, len).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }

    #[test]
    fn only_synced_bytes_and_names_survive_a_crash() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        write(&fs, "/d/a", b"durable", true);
        fs.sync_dir(Path::new("/d")).unwrap();
        write(&fs, "/d/a", b" lost", false);
        write(&fs, "/d/b", b"synced but unnamed", true);
        fs.crash();
        assert_eq!(fs.read(Path::new("/d/a")).unwrap(), b"durable");
        assert!(!fs.exists(Path::new("/d/b")), "name never made durable");
        assert_eq!(fs.read_dir(Path::new("/d")).unwrap(), ["a"]);
    }

    #[test]
    fn renames_and_removals_need_a_directory_sync() {
        let fs = SimFs::new();
        write(&fs, "/old", b"x", true);
        fs.sync_dir(Path::new("/")).unwrap();
        fs.rename(Path::new("/old"), Path::new("/new")).unwrap();
        fs.crash();
        assert!(fs.exists(Path::new("/old")) && !fs.exists(Path::new("/new")));
        fs.rename(Path::new("/old"), Path::new("/new")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.remove_file(Path::new("/new")).unwrap();
        fs.crash();
        assert_eq!(fs.read(Path::new("/new")).unwrap(), b"x");
    }

    #[test]
    fn an_unsynced_directory_takes_its_files_along() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/p/q")).unwrap();
        fs.sync_dir(Path::new("/p")).unwrap();
        write(&fs, "/p/q/f", b"x", true);
        fs.sync_dir(Path::new("/p/q")).unwrap();
        fs.crash();
        assert!(!fs.exists(Path::new("/p")));
        assert!(!fs.exists(Path::new("/p/q/f")));
    }

    #[test]
    fn stale_handles_fail_and_handles_are_counted() {
        let fs = SimFs::new();
        let f = fs.open(Path::new("/f"), OpenMode::Create).unwrap();
        assert_eq!(fs.open_files(), 1);
        fs.crash();
        assert!(f.write_all_at(b"x", 0).is_err());
        drop(f);
        assert_eq!(fs.open_files(), 0);
    }

    #[test]
    fn faults_fire_once() {
        let fs = SimFs::new();
        fs.fail_next(Fault::Create);
        assert!(fs.open(Path::new("/f"), OpenMode::Create).is_err());
        let f = fs.open(Path::new("/f"), OpenMode::Create).unwrap();
        fs.fail_next(Fault::Write);
        assert!(f.write_all_at(b"x", 0).is_err());
        f.write_all_at(b"x", 0).unwrap();
        fs.fail_next(Fault::Sync);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        fs.fail_next(Fault::SyncDir);
        assert!(fs.sync_dir(Path::new("/")).is_err());
        fs.sync_dir(Path::new("/")).unwrap();
    }

    #[test]
    fn torn_crash_keeps_the_durable_prefix_and_some_of_the_tail() {
        let mut lengths = BTreeSet::new();
        for seed in 0..32 {
            let fs = SimFs::new();
            write(&fs, "/f", &[1u8; 1000], true);
            fs.sync_dir(Path::new("/")).unwrap();
            write(&fs, "/f", &[2u8; 3000], false);
            fs.crash_torn(seed);
            let got = fs.read(Path::new("/f")).unwrap();
            assert!(got.len() >= 1000 && got.len() <= 4000);
            assert!(got.iter().all(|b| [0, 1, 2].contains(b)));
            lengths.insert(got.len());
        }
        assert!(lengths.len() > 1, "the surviving tail varies with the seed");
    }
}
