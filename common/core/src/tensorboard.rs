//! TensorBoard event files (`<run>/tb/events.out.tfevents.*`): the worker's rank 0 writes one
//! per start from the same records as `metrics.jsonl` (its `MetricsLog` feeds both: one metrics
//! path); the launcher writes its own file in the same folder for its events (stragglers).
//!
//! # Format
//! A file is a sequence of TFRecords — `u64` length (little-endian), the masked CRC32C of those
//! 8 bytes, the data, the masked CRC32C of the data (mask: rotate right by 15, add
//! `0xa282ead8`) — each holding one `Event` protocol buffer (TensorFlow's `event.proto` and
//! `summary.proto`; the messages below declare the fields we use with their numbers, encoded by
//! the `prost` crate; CRC32C from the `crc32c` crate; the framing is ours). The first event
//! names the file version (`brain.Event:2`); then scalars (`simple_value`), PNG images and
//! text (a string tensor with the `text` plugin's metadata).
//!
//! # Resume
//! Each start writes a new file in the same folder. A tag is never written again at a step it
//! already has, in this file or an earlier one (a resumed run recomputes the steps after its
//! checkpoint; the final validation repeats the last periodic one), so a resumed run draws one
//! continuous curve with each step once. Reading stops at the first incomplete or damaged record, so
//! a file cut short by a kill loads up to its last whole record.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};

/// `Event` (event.proto): the fields we write.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global training step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// The first event of a file: `brain.Event:2`.
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// Everything else.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `Summary` (summary.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    /// e.g. `train/loss`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// A scalar.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    /// An image.
    #[prost(message, optional, tag = "4")]
    pub image: Option<Image>,
    /// A tensor (text).
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    /// Which plugin draws it.
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `Summary.Image`.
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    /// Pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 3 RGB.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The PNG.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `TensorProto` (a string scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// 7: `DT_STRING`.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Empty: a scalar.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
    /// The string.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `TensorShapeProto` with no dimensions.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShape {}

/// `SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    /// The plugin.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    /// e.g. `text`.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The events of one file up to its first incomplete or damaged record, and whether the file
/// ended cleanly.
pub fn read_events(path: &Path) -> Result<(Vec<Event>, bool)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let Some(event) = next_record(&mut rest) else {
            return Ok((events, false));
        };
        events.push(event);
    }
    Ok((events, true))
}

fn next_record(rest: &mut &[u8]) -> Option<Event> {
    let head = rest.get(..12)?;
    let len_bytes: [u8; 8] = head[..8].try_into().ok()?;
    let crc = u32::from_le_bytes(head[8..12].try_into().ok()?);
    if masked_crc(&len_bytes) != crc {
        return None;
    }
    let n = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
    let data = rest.get(12..12 + n)?;
    let tail: [u8; 4] = rest.get(12 + n..16 + n)?.try_into().ok()?;
    if masked_crc(data) != u32::from_le_bytes(tail) {
        return None;
    }
    let event = Event::decode(data).ok()?;
    *rest = &rest[16 + n..];
    Some(event)
}

/// Seconds since the epoch, as TensorBoard wants its wall time.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A new event file in `<run>/tb/`, and the steps earlier files hold.
pub struct EventWriter {
    path: PathBuf,
    file: std::fs::File,
    /// Per tag, the highest step written (in earlier files too): nothing at or below it is
    /// written again.
    written: std::collections::HashMap<String, i64>,
}

impl EventWriter {
    /// Opens a new event file in `dir` (created if missing) after reading the earlier ones.
    pub fn open(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = std::collections::HashMap::<String, i64>::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("events.out.tfevents.") {
                continue;
            }
            let (events, clean) = read_events(&entry.path())?;
            if !clean {
                tracing::warn!(
                    "{}: ends in an incomplete record (killed mid-write?); read up to the last \
                     whole one",
                    entry.path().display()
                );
            }
            for e in &events {
                for v in e.summary.iter().flat_map(|s| &s.value) {
                    let w = written.entry(v.tag.clone()).or_insert(i64::MIN);
                    *w = (*w).max(e.step);
                }
            }
        }
        let host = crate::env::hostname().replace(['/', ' '], "_");
        let secs = now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.{}",
            secs as u64,
            std::process::id(),
            (secs.fract() * 1e6) as u64
        ));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter {
            path,
            file,
            written,
        };
        w.write(Event {
            wall_time: secs,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    /// This file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: Event) -> Result<()> {
        let bytes = frame(&event.encode_to_vec());
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    fn summary(&mut self, step: u64, mut value: Vec<Value>) -> Result<()> {
        let step = step as i64;
        value.retain(|v| self.written.get(&v.tag).is_none_or(|&w| step > w));
        if value.is_empty() {
            return Ok(());
        }
        for v in &value {
            self.written.insert(v.tag.clone(), step);
        }
        self.write(Event {
            wall_time: now(),
            step,
            file_version: None,
            summary: Some(Summary { value }),
        })
    }

    /// Scalars `(tag, value)` at `step` (non-finite values are left out).
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let value = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| Value {
                tag: tag.clone(),
                simple_value: Some(*v as f32),
                ..Value::default()
            })
            .collect();
        self.summary(step, value)
    }

    /// A PNG image at `step`.
    pub fn image(
        &mut self,
        step: u64,
        tag: &str,
        png: Vec<u8>,
        [w, h, c]: [usize; 3],
    ) -> Result<()> {
        let image = Image {
            height: h as i32,
            width: w as i32,
            colorspace: c as i32,
            encoded_image_string: png,
        };
        let value = Value {
            tag: tag.to_owned(),
            image: Some(image),
            ..Value::default()
        };
        self.summary(step, vec![value])
    }

    /// A text (markdown) entry at `step`.
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        let value = Value {
            tag: tag.to_owned(),
            tensor: Some(TensorProto {
                dtype: 7,
                tensor_shape: Some(TensorShape {}),
                string_val: vec![text.as_bytes().to_vec()],
            }),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "text".into(),
                }),
            }),
            ..Value::default()
        };
        self.summary(step, vec![value])
    }

    /// A `metrics.jsonl` record as TensorBoard entries: `train` → `train/<key>` scalars;
    /// `valid` → `valid/<key>`, `valid_per_frame/<metric>/t+<k>` and
    /// `valid_baseline/<predictor>/<metric>`; `recovery`, `preempt` and `straggler` → text
    /// under `events/recovery`, `events/preemption` and `events/straggler/r<rank>`.
    pub fn record(&mut self, v: &serde_json::Value) -> Result<()> {
        let Some(step) = v["step"].as_u64() else {
            return Ok(());
        };
        let numbers = |prefix: &str, obj: &serde_json::Value| -> Vec<(String, f64)> {
            obj.as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "step" | "epoch" | "kind" | "time"))
                .filter_map(|(k, x)| Some((format!("{prefix}/{k}"), x.as_f64()?)))
                .collect()
        };
        match v["kind"].as_str() {
            Some("train") => self.scalars(step, &numbers("train", v)),
            Some("valid") => {
                let mut s = numbers("valid", v);
                if let Some(frames) = v["per_frame"].as_object() {
                    for (metric, xs) in frames {
                        for (k, x) in xs.as_array().into_iter().flatten().enumerate() {
                            if let Some(x) = x.as_f64() {
                                s.push((format!("valid_per_frame/{metric}/t+{}", k + 1), x));
                            }
                        }
                    }
                }
                if let Some(base) = v["baselines"].as_object() {
                    for (name, m) in base {
                        s.extend(numbers(&format!("valid_baseline/{name}"), m));
                    }
                }
                self.scalars(step, &s)
            }
            Some("preempt") => {
                let text = format!(
                    "step {step}: preempted; checkpoint committed, the run exits 4 (resume with \
                     --resume auto)"
                );
                self.text(step, "events/preemption", &text)
            }
            Some("straggler") => {
                let text = format!(
                    "step {step}: rank {} on {} (cpus {}) is a straggler: {:.0} ms per step, \
                     {:.2}× the median {:.0} ms",
                    v["rank"],
                    v["host"].as_str().unwrap_or("?"),
                    v["cpus"].as_str().unwrap_or("?"),
                    v["compute_ms"].as_f64().unwrap_or(0.0),
                    v["ratio"].as_f64().unwrap_or(0.0),
                    v["median_ms"].as_f64().unwrap_or(0.0)
                );
                self.text(step, &format!("events/straggler/r{}", v["rank"]), &text)
            }
            Some("recovery") => {
                let text = format!(
                    "step {step}: rank {} replaced from its peers' memory ({}) in {:.2} s",
                    v["rank"],
                    v["cause"].as_str().unwrap_or("?"),
                    v["seconds"].as_f64().unwrap_or(0.0)
                );
                self.text(step, "events/recovery", &text)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convtt-tb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// TensorFlow's own framing of an empty record (from its record_writer tests): the length
    /// 0 and the masked CRC32C of eight zero bytes and of nothing.
    #[test]
    fn the_framing_matches_tensorflow() {
        let f = frame(b"");
        assert_eq!(f.len(), 16);
        assert_eq!(
            masked_crc(&[0u8; 8]),
            u32::from_le_bytes(f[8..12].try_into().unwrap())
        );
        // CRC32C("123456789") = 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    /// What is written reads back; a resumed writer skips the steps earlier files hold; a file
    /// cut mid-record reads up to its last whole record.
    #[test]
    fn records_round_trip_resume_skips_and_truncation_is_survived() {
        let d = dir("rt");
        let mut w = EventWriter::open(&d).unwrap();
        for step in 1..=4 {
            let r = serde_json::json!({"kind": "train", "step": step, "loss": 1.0 / step as f64, "lr": 1e-3});
            w.record(&r).unwrap();
        }
        w.text(4, "events/recovery", "hello").unwrap();
        let first = w.path().to_owned();
        drop(w);
        let (events, clean) = read_events(&first).unwrap();
        assert!(clean);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(events.len(), 6);
        let v = &events[1].summary.as_ref().unwrap().value;
        assert_eq!((events[1].step, v[0].tag.as_str()), (1, "train/loss"));

        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut w = EventWriter::open(&d).unwrap();
        for step in 3..=6 {
            let r = serde_json::json!({"kind": "train", "step": step, "loss": 0.1});
            w.record(&r).unwrap();
        }
        let (events, _) = read_events(w.path()).unwrap();
        let steps: Vec<i64> = events.iter().skip(1).map(|e| e.step).collect();
        assert_eq!(steps, vec![5, 6], "steps 3 and 4 were already written");
        // The same tag at the same step again is left out; another tag at that step is not.
        w.scalars(6, &[("train/loss".into(), 9.0), ("valid/mse".into(), 1.0)])
            .unwrap();
        let (events, _) = read_events(w.path()).unwrap();
        let last = &events.last().unwrap().summary.as_ref().unwrap().value;
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].tag, "valid/mse");

        // Preemptions and stragglers become text, one tag per straggling rank.
        w.record(&serde_json::json!({"kind": "preempt", "step": 7}))
            .unwrap();
        let s = serde_json::json!({"kind": "straggler", "step": 7, "rank": 1, "host": "h",
            "cpus": "1", "compute_ms": 900.0, "median_ms": 500.0, "ratio": 1.8});
        w.record(&s).unwrap();
        let (events, _) = read_events(w.path()).unwrap();
        let tags: Vec<&str> = events
            .iter()
            .rev()
            .take(2)
            .map(|e| e.summary.as_ref().unwrap().value[0].tag.as_str())
            .collect();
        assert_eq!(tags, ["events/straggler/r1", "events/preemption"]);

        // Cut the first file in the middle of its last record.
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(&first, &bytes[..bytes.len() - 7]).unwrap();
        let (events, clean) = read_events(&first).unwrap();
        assert!(!clean);
        assert_eq!(events.len(), 5, "the whole records before the cut");
        let _ = std::fs::remove_dir_all(&d);
    }
}
