//! The agent channel between a worker and its node's launcher (ARCHITECTURE §2.2).
//!
//! # Framing
//! Every message is one frame: a `u32` little-endian body length, then the body. The body is a
//! one-byte tag followed by the fields in declaration order: integers little-endian, `f32`
//! little-endian IEEE-754 (bit-exact, NaN included), strings and byte strings as a `u32` length
//! plus the bytes, `f32` buffers as a `u32` element count plus the raw little-endian values.
//! No JSON: gradients cross this channel on CPU runs and must not be rounded or reformatted.
//!
//! # Conversation
//! The worker connects to `CONVTT_AGENT`, sends [`WorkerMsg::Hello`] and waits for
//! [`LauncherMsg::Welcome`]. After that it sends heartbeats whenever it likes, and requests
//! (collectives, NCCL id) one at a time, each answered by exactly one reply. The launcher may
//! send [`LauncherMsg::Preempt`] at any moment; the client records it without disturbing
//! the request in flight. A launcher-side failure (e.g. a peer that never joined a collective)
//! comes back as [`LauncherMsg::Failed`] naming the culprit.
//!
//! The launcher serves this with tokio (`launcher/src/agent.rs`) using [`WorkerMsg::decode`]
//! and [`LauncherMsg::encode`]; workers use the blocking [`AgentClient`].
//!
//! | file | holds |
//! |---|---|
//! | `messages.rs` | [`WorkerMsg`], [`LauncherMsg`], [`Progress`] |
//! | `codec.rs` | their byte layout and the frames ([`read_frame`], [`write_frame`]) |
//! | `client.rs` | [`AgentClient`], the worker's blocking side |

mod client;
mod codec;
mod messages;

pub use client::{AgentClient, AgentError, HeartbeatSender, Resumed};
pub use codec::{frame_len, read_frame, write_frame, ProtocolError};
pub use messages::{LauncherMsg, Phase, Progress, WorkerMsg};

/// Bumped whenever a message layout changes; the launcher refuses a mismatched hello.
pub const PROTOCOL_VERSION: u32 = 2;

/// FNV-1a 64 of `bytes`: the checksum peer recovery compares between ranks (fast, no
/// dependency; it detects diverged state, it does not defend against an adversary).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Largest accepted frame body (1 GiB): a corrupt length fails loudly instead of allocating.
pub const MAX_FRAME: usize = 1 << 30;

#[cfg(test)]
mod tests;
