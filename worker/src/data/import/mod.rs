//! Importing existing data into the shard format: `.npy`/`.npz` arrays ([`npy`]) and PNG frame
//! folders ([`frames`]), with class labels from a CSV or SSv2's JSON files ([`labels`]).

pub mod frames;
pub mod labels;
pub mod npy;
