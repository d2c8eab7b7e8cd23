//! The byte layout of the messages and their frames (see the module docs: little-endian
//! integers and bit-exact f32, length-prefixed strings and buffers, no JSON).

use std::io::{self, Read, Write};

use super::messages::{LauncherMsg, Phase, Progress, WorkerMsg};
use super::MAX_FRAME;

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent protocol: {0}")]
pub struct ProtocolError(pub String);

pub(super) fn perr(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

// ----- encoding --------------------------------------------------------------------------------

struct Enc(Vec<u8>);

impl Enc {
    fn new(tag: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0; 4]); // the length, patched in `finish`
        v.push(tag);
        Enc(v)
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn i32(mut self, x: i32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn f32(mut self, x: f32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(self, b: &[u8]) -> Self {
        let mut s = self.u32(u32::try_from(b.len()).expect("payload below 4 GiB"));
        s.0.extend_from_slice(b);
        s
    }
    fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    fn f32s(self, xs: &[f32]) -> Self {
        let mut s = self.u32(u32::try_from(xs.len()).expect("buffer below 4 Gi elements"));
        s.0.reserve(xs.len() * 4);
        for x in xs {
            s.0.extend_from_slice(&x.to_le_bytes());
        }
        s
    }
    fn finish(mut self) -> Vec<u8> {
        let body = self.0.len() - 4;
        assert!(
            body <= MAX_FRAME,
            "agent frame of {body} bytes exceeds MAX_FRAME"
        );
        self.0[..4].copy_from_slice(&(body as u32).to_le_bytes());
        self.0
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(perr(format!("truncated {} message", self.what)));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32(&mut self) -> Result<f32, ProtocolError> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, ProtocolError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| perr(format!("non-UTF-8 string in {} message", self.what)))
    }
    fn f32s(&mut self) -> Result<Vec<f32>, ProtocolError> {
        let n = self.u32()? as usize;
        let raw = self.take(
            n.checked_mul(4)
                .ok_or_else(|| perr("f32 count overflows"))?,
        )?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn end<T>(self, v: T) -> Result<T, ProtocolError> {
        if self.buf.is_empty() {
            Ok(v)
        } else {
            Err(perr(format!(
                "{} trailing bytes after {} message",
                self.buf.len(),
                self.what
            )))
        }
    }
}

fn split_tag(body: &[u8]) -> Result<(u8, &[u8]), ProtocolError> {
    body.split_first()
        .map(|(t, rest)| (*t, rest))
        .ok_or_else(|| perr("empty frame"))
}

impl WorkerMsg {
    /// The whole frame (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WorkerMsg::Hello {
                version,
                rank,
                pid,
                cpus,
                device,
            } => Enc::new(1)
                .u32(*version)
                .u32(*rank)
                .u32(*pid)
                .str(cpus)
                .str(device),
            WorkerMsg::Heartbeat(p) => Enc::new(2)
                .u64(p.step)
                .u64(p.total_steps)
                .u32(p.epoch)
                .f32(p.loss)
                .f32(p.samples_per_sec)
                .u32(u32::from(p.phase.to_u8()))
                .u64(p.beat)
                .f32(p.compute_ms),
            WorkerMsg::NcclId(id) => Enc::new(3).bytes(id),
            WorkerMsg::WantNcclId => Enc::new(4),
            WorkerMsg::AllReduce { seq, data } => Enc::new(5).u64(*seq).f32s(data),
            WorkerMsg::Broadcast { seq, data } => Enc::new(6).u64(*seq).bytes(data),
            WorkerMsg::Barrier { seq } => Enc::new(7).u64(*seq),
            WorkerMsg::CheckpointCommitted { step, path } => Enc::new(8).u64(*step).str(path),
            WorkerMsg::Goodbye { code, reason } => Enc::new(9).i32(*code).str(reason),
            WorkerMsg::Standby { step, checksum } => Enc::new(10).u64(*step).u64(*checksum),
            WorkerMsg::State { checksum, data } => Enc::new(11).u64(*checksum).bytes(data),
            WorkerMsg::WantState => Enc::new(12),
        }
        .finish()
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<WorkerMsg, ProtocolError> {
        let (tag, rest) = split_tag(body)?;
        let mut d = Dec {
            buf: rest,
            what: "worker",
        };
        let msg = match tag {
            1 => WorkerMsg::Hello {
                version: d.u32()?,
                rank: d.u32()?,
                pid: d.u32()?,
                cpus: d.str()?,
                device: d.str()?,
            },
            2 => WorkerMsg::Heartbeat(Progress {
                step: d.u64()?,
                total_steps: d.u64()?,
                epoch: d.u32()?,
                loss: d.f32()?,
                samples_per_sec: d.f32()?,
                phase: Phase::from_u8(d.u32()? as u8),
                beat: d.u64()?,
                compute_ms: d.f32()?,
            }),
            3 => WorkerMsg::NcclId(d.bytes()?),
            4 => WorkerMsg::WantNcclId,
            5 => WorkerMsg::AllReduce {
                seq: d.u64()?,
                data: d.f32s()?,
            },
            6 => WorkerMsg::Broadcast {
                seq: d.u64()?,
                data: d.bytes()?,
            },
            7 => WorkerMsg::Barrier { seq: d.u64()? },
            8 => WorkerMsg::CheckpointCommitted {
                step: d.u64()?,
                path: d.str()?,
            },
            9 => WorkerMsg::Goodbye {
                code: d.i32()?,
                reason: d.str()?,
            },
            10 => WorkerMsg::Standby {
                step: d.u64()?,
                checksum: d.u64()?,
            },
            11 => WorkerMsg::State {
                checksum: d.u64()?,
                data: d.bytes()?,
            },
            12 => WorkerMsg::WantState,
            t => return Err(perr(format!("unknown worker message tag {t}"))),
        };
        d.end(msg)
    }
}

impl LauncherMsg {
    /// The whole frame (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LauncherMsg::Welcome {
                attempt,
                world_size,
            } => Enc::new(101).u32(*attempt).u32(*world_size),
            LauncherMsg::NcclId(id) => Enc::new(102).bytes(id),
            LauncherMsg::AllReduced { seq, data } => Enc::new(103).u64(*seq).f32s(data),
            LauncherMsg::Broadcasted { seq, data } => Enc::new(104).u64(*seq).bytes(data),
            LauncherMsg::BarrierDone { seq } => Enc::new(105).u64(*seq),
            LauncherMsg::Preempt { deadline_ms } => Enc::new(106).u64(*deadline_ms),
            LauncherMsg::Failed { msg } => Enc::new(107).str(msg),
            LauncherMsg::PeerLost { rank, msg } => Enc::new(108).u32(*rank).str(msg),
            LauncherMsg::SendState => Enc::new(109),
            LauncherMsg::State { checksum, data } => Enc::new(110).u64(*checksum).bytes(data),
            LauncherMsg::Resume {
                attempt,
                lost_rank,
                cause,
                millis,
            } => Enc::new(111)
                .u32(*attempt)
                .u32(*lost_rank)
                .str(cause)
                .u64(*millis),
        }
        .finish()
    }

    /// Decodes a frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<LauncherMsg, ProtocolError> {
        let (tag, rest) = split_tag(body)?;
        let mut d = Dec {
            buf: rest,
            what: "launcher",
        };
        let msg = match tag {
            101 => LauncherMsg::Welcome {
                attempt: d.u32()?,
                world_size: d.u32()?,
            },
            102 => LauncherMsg::NcclId(d.bytes()?),
            103 => LauncherMsg::AllReduced {
                seq: d.u64()?,
                data: d.f32s()?,
            },
            104 => LauncherMsg::Broadcasted {
                seq: d.u64()?,
                data: d.bytes()?,
            },
            105 => LauncherMsg::BarrierDone { seq: d.u64()? },
            106 => LauncherMsg::Preempt {
                deadline_ms: d.u64()?,
            },
            107 => LauncherMsg::Failed { msg: d.str()? },
            108 => LauncherMsg::PeerLost {
                rank: d.u32()?,
                msg: d.str()?,
            },
            109 => LauncherMsg::SendState,
            110 => LauncherMsg::State {
                checksum: d.u64()?,
                data: d.bytes()?,
            },
            111 => LauncherMsg::Resume {
                attempt: d.u32()?,
                lost_rank: d.u32()?,
                cause: d.str()?,
                millis: d.u64()?,
            },
            t => return Err(perr(format!("unknown launcher message tag {t}"))),
        };
        d.end(msg)
    }
}

/// Parses a frame length prefix, rejecting lengths above [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> io::Result<usize> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("agent frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok(n)
}

/// Reads one frame body. `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes one already-encoded frame.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

// ----- blocking client -------------------------------------------------------------------------
