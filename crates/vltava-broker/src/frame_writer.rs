//! Writing answer frames. Encoded bytes go out by vectored writes; a Fetch's records are
//! sent from the segment files where their stand-ins sit in the frame
//! ([`vltava_protocol::stand_in`]): by `sendfile` on plaintext TCP, so they go from the page
//! cache to the socket without passing through the broker's memory, and for TLS (which must
//! encrypt them) read into memory on a blocking thread, never on an async worker.

use std::io::{self, IoSlice};

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use vltava_protocol::stand_in::stand_in_index;
use vltava_protocol::SegmentedBuf;
use vltava_storage::FileRegion;

/// An encoded answer and what must stay held until it is written.
pub struct Outgoing {
    pub frame: SegmentedBuf,
    /// The file ranges the frame's stand-ins name, by stand-in index.
    pub regions: Vec<FileRegion>,
    /// Budget held until the frame is written (a Fetch's response bytes).
    pub hold: Option<OwnedSemaphorePermit>,
}

impl Outgoing {
    pub fn bytes(frame: SegmentedBuf) -> Self {
        Self {
            frame,
            regions: Vec::new(),
            hold: None,
        }
    }
}

/// The write half of a connection.
pub trait FrameSink: AsyncWrite + Unpin + Send {
    /// The socket, when file bytes may be sent to it directly.
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl FrameSink for tokio::net::tcp::OwnedWriteHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<S: AsyncWrite + Send> FrameSink for tokio::io::WriteHalf<S> {}

/// Writes one answer whole.
pub async fn write_frame<W: FrameSink>(w: &mut W, out: &mut Outgoing) -> io::Result<()> {
    if out.regions.is_empty() {
        return w.write_all_buf(&mut out.frame).await;
    }
    let frame = &mut out.frame;
    while frame.has_remaining() {
        if let Some(i) = stand_in_index(frame.chunk()) {
            let len = frame.chunk().len();
            let region = out
                .regions
                .get(i)
                .filter(|r| r.len == len)
                .ok_or_else(|| io::Error::other("a stand-in without its file range"))?;
            send_region(w, region).await?;
            frame.advance(len);
            continue;
        }
        // Everything up to the next stand-in, in one vectored write.
        let mut slices = [IoSlice::new(&[]); 64];
        let filled = frame.chunks_vectored(&mut slices);
        let upto = slices[..filled]
            .iter()
            .position(|s| stand_in_index(s).is_some())
            .unwrap_or(filled);
        let written = w.write_vectored(&slices[..upto]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        frame.advance(written);
    }
    Ok(())
}

/// Sends a file range: `sendfile` when both ends allow it, else a copy read off the async
/// workers. A range that comes back short (the file was truncated under it) fails the
/// write, and the connection closes: the frame's length was already promised.
async fn send_region<W: FrameSink>(w: &mut W, region: &FileRegion) -> io::Result<()> {
    if let (Some(socket), Some(file)) = (w.socket(), region.fd()) {
        let end = region.position + region.len as u64;
        let mut pos = region.position;
        while pos < end {
            socket.writable().await?;
            let sent = socket.try_io(Interest::WRITABLE, || {
                let left = usize::try_from(end - pos).unwrap_or(usize::MAX);
                rustix::fs::sendfile(socket, file, Some(&mut pos), left).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(truncated()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    let r = region.clone();
    let bytes = tokio::task::spawn_blocking(move || r.read())
        .await
        .map_err(io::Error::other)?
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated(),
            _ => e,
        })?;
    w.write_all(&bytes).await
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the segment file was truncated under a fetch",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use vltava_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use vltava_protocol::messages::FetchResponse;
    use vltava_protocol::stand_in::stand_in;
    use vltava_protocol::{encode_response_segmented, Response};
    use vltava_storage::{accept_all, Log, LogConfig, OpenOptions};
    use vltava_types::{LeaderEpoch, Offset};

    /// A log of 40 batches of 3 records in one segment.
    fn log(dir: &std::path::Path) -> Log {
        let opts = OpenOptions {
            clean_shutdown: true,
            recovery_point: Offset::new(0),
            log_start_offset: Offset::new(0),
        };
        let log = Log::open(dir, LogConfig::default(), opts, 0).unwrap();
        for i in 0..40u8 {
            let value = vec![i; 300];
            let recs: Vec<_> = (0..3).map(|_| (None, Some(value.as_slice()), 0)).collect();
            let b = vltava_record::build_batch(0, &recs);
            log.append_as_leader(&b, LeaderEpoch::new(0), 0, accept_all)
                .unwrap();
        }
        log
    }

    /// A Fetch answer with two partitions whose records are `parts`; as stand-ins for the
    /// regions when `regions` is given.
    fn answer(parts: &[Bytes], stand_ins: bool) -> SegmentedBuf {
        let mut topic = FetchableTopicResponse::default();
        for (i, b) in parts.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.records = Some(if stand_ins {
                stand_in(i, b.len()).unwrap()
            } else {
                b.clone()
            });
            topic.partitions.push(p);
        }
        let mut r = FetchResponse::default();
        r.responses.push(topic);
        encode_response_segmented(9, 16, &Response::Fetch(r)).unwrap()
    }

    fn regions(log: &Log) -> Vec<FileRegion> {
        [(0, 2_000), (60, 5_000)]
            .into_iter()
            .map(|(from, max)| {
                let r = log.read_region(Offset::new(from), Offset::new(i64::MAX), max, true);
                r.unwrap().region.unwrap()
            })
            .collect()
    }

    /// The frame with file ranges reads as the frame with the bytes themselves, through
    /// `sendfile` on TCP and through the copy on any other stream.
    #[tokio::test]
    async fn file_ranges_arrive_as_the_bytes_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let regions = regions(&log);
        let bytes: Vec<Bytes> = regions.iter().map(|r| r.read().unwrap().into()).collect();
        let mut expected = answer(&bytes, false);
        let expected = expected.copy_to_bytes(expected.remaining());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_, mut wr) = accepted.unwrap().0.into_split();
        let mut out = Outgoing {
            frame: answer(&bytes, true),
            regions: regions.clone(),
            hold: None,
        };
        write_frame(&mut wr, &mut out).await.unwrap();
        let mut got = vec![0u8; expected.len()];
        client.unwrap().read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);

        let (mut far, near) = tokio::io::duplex(1 << 20);
        let (_, mut wr) = tokio::io::split(near);
        let mut out = Outgoing {
            frame: answer(&bytes, true),
            regions,
            hold: None,
        };
        write_frame(&mut wr, &mut out).await.unwrap();
        let mut got = vec![0u8; expected.len()];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    /// A range cut short under the writer fails the write rather than send fewer bytes than
    /// the frame announced.
    #[tokio::test]
    async fn a_truncated_file_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let regions = regions(&log);
        let bytes: Vec<Bytes> = regions.iter().map(|r| r.read().unwrap().into()).collect();
        log.truncate_to(Offset::new(30)).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_client, accepted) = tokio::join!(client, listener.accept());
        let (_, mut wr) = accepted.unwrap().0.into_split();
        let mut out = Outgoing {
            frame: answer(&bytes, true),
            regions: regions.clone(),
            hold: None,
        };
        let e = write_frame(&mut wr, &mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (_far, near) = tokio::io::duplex(1 << 20);
        let (_, mut wr) = tokio::io::split(near);
        let mut out = Outgoing {
            frame: answer(&bytes, true),
            regions,
            hold: None,
        };
        let e = write_frame(&mut wr, &mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
