//! Importing existing data into the shard format: `.npy`/`.npz` arrays ([`npy`]) and PNG frame
//! folders ([`frames`]).

pub mod frames;
pub mod npy;
