//! The state machine: the metadata image, built by applying committed batches in log
//! order, and the snapshots of it. Every node applies the same batches, so every node's
//! image is the same at the same index; each applied batch is handed to the node's
//! [`Listener`] as a delta.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vltava_metadata::{MetadataDelta, MetadataImage, MetadataRecord};

use crate::store::blocking;
use crate::TypeConfig;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// Told about every applied batch, in log order, on every node (Kafka's metadata publishers).
pub trait Listener: Send + Sync {
    /// `image` is the state after the batch; `delta` is what the batch changed.
    fn on_commit(&self, delta: &MetadataDelta, image: &MetadataImage);
}

/// What readers see: the image and the index it reflects.
pub(crate) struct Shared {
    pub image: RwLock<Arc<MetadataImage>>,
    /// The index of the last applied entry, plus one (0: nothing applied).
    pub applied: watch::Sender<u64>,
    /// The listener and the lock that serialises publishing with [`Shared::attach`].
    pub listener: Mutex<Option<Weak<dyn Listener>>>,
    /// The latest applied batches, so observers a little behind get batches rather than
    /// the whole image. Written under the listener lock.
    pub recent: Mutex<Recent>,
}

/// How many applied batches a voter keeps for observers.
const RECENT_BATCHES: usize = 4096;

/// Applied batches with the applied index after each: every batch applied after index
/// `start` is here.
pub(crate) struct Recent {
    pub start: u64,
    pub batches: std::collections::VecDeque<(u64, Arc<[MetadataRecord]>)>,
}

impl Shared {
    pub(crate) fn new(image: MetadataImage, applied: u64) -> Self {
        Self {
            image: RwLock::new(Arc::new(image)),
            applied: watch::Sender::new(applied),
            listener: Mutex::new(None),
            recent: Mutex::new(Recent {
                start: applied,
                batches: Default::default(),
            }),
        }
    }

    /// Publishes the image after one batch (`records`) or after a whole new image (`None`).
    pub(crate) fn publish(
        &self,
        delta: &MetadataDelta,
        image: &Arc<MetadataImage>,
        next_applied: u64,
        records: Option<&[MetadataRecord]>,
    ) {
        let listener = self.listener.lock();
        *self.image.write() = Arc::clone(image);
        if let Some(l) = listener.as_ref().and_then(Weak::upgrade) {
            l.on_commit(delta, image);
        }
        {
            let mut recent = self.recent.lock();
            match records {
                Some(r) => {
                    recent.batches.push_back((next_applied, Arc::from(r)));
                    if recent.batches.len() > RECENT_BATCHES {
                        if let Some((next, _)) = recent.batches.pop_front() {
                            recent.start = next;
                        }
                    }
                }
                None => {
                    recent.batches.clear();
                    recent.start = next_applied;
                }
            }
        }
        self.applied.send_replace(next_applied);
    }

    /// Sets the listener and hands it the whole image as one delta, atomically with respect
    /// to applies: it sees every batch exactly once, either in the image or as a delta.
    pub fn attach(&self, listener: Weak<dyn Listener>) {
        let mut slot = self.listener.lock();
        if let Some(l) = listener.upgrade() {
            let image = Arc::clone(&self.image.read());
            l.on_commit(&MetadataDelta::everything(&image), &image);
        }
        *slot = Some(listener);
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    /// The records that rebuild the image ([`MetadataImage::to_records`]), as JSON.
    data: Vec<u8>,
}

struct Inner {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Option<StoredSnapshot>,
}

/// The metadata state machine; clones share one.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    pub(crate) shared: Arc<Shared>,
    dir: PathBuf,
}

fn decode_records(data: &[u8]) -> io::Result<Vec<MetadataRecord>> {
    serde_json::from_slice(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl StateMachine {
    /// Opens the state machine of `dir`: the latest snapshot, if any, is its starting point.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let (image, last_applied, membership, snapshot) =
            match std::fs::read(dir.join(SNAPSHOT_FILE)) {
                Ok(bytes) => {
                    let snap: StoredSnapshot = serde_json::from_slice(&bytes)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let mut image = MetadataImage::default();
                    for r in decode_records(&snap.data)? {
                        image.apply(&r);
                    }
                    (
                        image,
                        snap.meta.last_log_id,
                        snap.meta.last_membership.clone(),
                        Some(snap),
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => (
                    MetadataImage::default(),
                    None,
                    StoredMembershipOf::<TypeConfig>::default(),
                    None,
                ),
                Err(e) => return Err(e),
            };
        let next = last_applied.as_ref().map_or(0, |l| l.index + 1);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                last_applied,
                membership,
                snapshot,
            })),
            shared: Arc::new(Shared::new(image, next)),
            dir: dir.to_path_buf(),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let me = self.clone();
        blocking(move || {
            // Under the state lock, so the image and the log id it reflects match.
            let mut g = me.inner.lock();
            let image = Arc::clone(&me.shared.image.read());
            let data = serde_json::to_vec(&image.to_records()).map_err(io::Error::other)?;
            let snap = StoredSnapshot {
                meta: SnapshotMetaOf::<TypeConfig> {
                    last_log_id: g.last_applied,
                    last_membership: g.membership.clone(),
                },
                data,
            };
            let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
            crate::store::write_atomic(&me.dir, SNAPSHOT_FILE, &bytes, true)?;
            g.snapshot = Some(snap.clone());
            Ok(SnapshotOf::<TypeConfig, Vec<u8>> {
                meta: snap.meta,
                snapshot: snap.data,
            })
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let g = self.inner.lock();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let next = log_id.index + 1;
            match entry.payload {
                EntryPayload::Normal(batch) => {
                    let me = self.clone();
                    // Publishing opens and closes partition logs: off the async workers.
                    blocking(move || {
                        let mut g = me.inner.lock();
                        let base = Arc::clone(&me.shared.image.read());
                        let (image, delta) = MetadataDelta::apply(&base, &batch.0);
                        me.shared
                            .publish(&delta, &Arc::new(image), next, Some(&batch.0));
                        g.last_applied = Some(log_id);
                        Ok(())
                    })
                    .await?;
                }
                EntryPayload::Blank => {
                    self.inner.lock().last_applied = Some(log_id);
                    self.shared.applied.send_replace(next);
                }
                EntryPayload::Membership(m) => {
                    let mut g = self.inner.lock();
                    g.membership = StoredMembershipOf::<TypeConfig>::new(Some(log_id), m);
                    g.last_applied = Some(log_id);
                    self.shared.applied.send_replace(next);
                }
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let me = self.clone();
        let meta = meta.clone();
        blocking(move || {
            let records = decode_records(&snapshot)?;
            let snap = StoredSnapshot {
                meta: meta.clone(),
                data: snapshot,
            };
            let bytes = serde_json::to_vec(&snap).map_err(io::Error::other)?;
            crate::store::write_atomic(&me.dir, SNAPSHOT_FILE, &bytes, true)?;
            let mut g = me.inner.lock();
            let mut image = MetadataImage::default();
            for r in &records {
                image.apply(r);
            }
            let base = Arc::clone(&me.shared.image.read());
            let delta = MetadataDelta::replace(&base, &image);
            let next = meta.last_log_id.as_ref().map_or(0, |l| l.index + 1);
            me.shared.publish(&delta, &Arc::new(image), next, None);
            g.last_applied = meta.last_log_id;
            g.membership = meta.last_membership.clone();
            g.snapshot = Some(snap);
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        Ok(self
            .inner
            .lock()
            .snapshot
            .clone()
            .map(|s| SnapshotOf::<TypeConfig, Vec<u8>> {
                meta: s.meta,
                snapshot: s.data,
            }))
    }
}
