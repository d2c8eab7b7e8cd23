//! Folders of PNG frames (KTH-style: `<action>/personNN_<action>_dK_uncomp/image_0001.png`) as
//! clip sources.
//!
//! Every directory under the input that directly holds `.png` files is one video; videos are
//! taken in path order and frames in natural name order (`image_2` before `image_10`). A video
//! gives clips of `clip_length` consecutive frames starting every `stride` frames (stride =
//! clip length: non-overlapping, as the reference's test clips); a shorter video gives none.
//! Frames are decoded to 8 bits, made square (`crop`: centre crop to the shorter side; or
//! `stretch`), resized bilinearly (pixel centres aligned, as OpenCV's and PyTorch's default) to
//! `size × size`, and stored as one gray channel (plain mean of R, G, B, as the reference's
//! loader averages channels) or three RGB channels.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How a non-square frame becomes square.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Centre crop to the shorter side, then resize.
    Crop,
    /// Resize both axes independently.
    Stretch,
}

/// One decoded image: `h × w × c` bytes, `c` ∈ {1, 3}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels (1 or 3).
    pub c: usize,
    /// Row-major interleaved pixels.
    pub px: Vec<u8>,
}

/// Decodes a PNG to 8-bit gray or RGB (alpha dropped, palettes expanded, 16 bits reduced).
pub fn decode_png(path: &Path) -> Result<Image> {
    let bad = |msg: String| Error::Data {
        path: path.to_owned(),
        msg,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(format!("not a readable PNG: {e}")))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("corrupt PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let src_c = info.color_type.samples();
    let keep = if src_c >= 3 { 3 } else { 1 };
    let mut px = Vec::with_capacity(h * w * keep);
    for row in buf[..info.buffer_size()].chunks_exact(info.line_size) {
        for p in row[..w * src_c].chunks_exact(src_c) {
            px.extend_from_slice(&p[..keep]);
        }
    }
    Ok(Image { h, w, c: keep, px })
}

/// Converts to `channels` (1: mean of RGB; 3: gray replicated) and resizes to `size × size`;
/// returns `[C, size, size]` planar bytes.
pub fn to_clip_frame(img: &Image, channels: usize, size: usize, fit: Fit) -> Vec<u8> {
    let (y0, x0, ch, cw) = match fit {
        Fit::Crop => {
            let s = img.h.min(img.w);
            ((img.h - s) / 2, (img.w - s) / 2, s, s)
        }
        Fit::Stretch => (0, 0, img.h, img.w),
    };
    let sample = |y: usize, x: usize, k: usize| -> f32 {
        let p = &img.px[((y0 + y) * img.w + x0 + x) * img.c..][..img.c];
        match (img.c, channels) {
            (1, _) => p[0] as f32,
            (_, 1) => (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0,
            _ => p[k] as f32,
        }
    };
    let mut out = vec![0u8; channels * size * size];
    let (sy, sx) = (ch as f32 / size as f32, cw as f32 / size as f32);
    for oy in 0..size {
        let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32);
        let (ya, wy) = (fy.floor() as usize, fy - fy.floor());
        let yb = (ya + 1).min(ch - 1);
        for ox in 0..size {
            let fx = ((ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32);
            let (xa, wx) = (fx.floor() as usize, fx - fx.floor());
            let xb = (xa + 1).min(cw - 1);
            for k in 0..channels {
                let top = sample(ya, xa, k) * (1.0 - wx) + sample(ya, xb, k) * wx;
                let bot = sample(yb, xa, k) * (1.0 - wx) + sample(yb, xb, k) * wx;
                let v = top * (1.0 - wy) + bot * wy;
                out[(k * size + oy) * size + ox] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Natural sort key: digit runs compare as numbers.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut num = c.to_digit(10).unwrap() as u64;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                num = num.saturating_mul(10).saturating_add(d as u64);
                chars.next();
            }
            key.push((std::mem::take(&mut text), num));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

/// The videos under `root` and the clips cut from them.
#[derive(Debug, Clone)]
pub struct FrameFolders {
    /// Each video's frame files, in order.
    pub videos: Vec<(PathBuf, Vec<PathBuf>)>,
    /// `(video, first frame)` per clip.
    pub clips: Vec<(usize, usize)>,
    /// Frames per clip.
    pub clip_length: usize,
}

impl FrameFolders {
    /// Scans `root` (no decoding).
    pub fn scan(root: &Path, clip_length: usize, stride: usize) -> Result<Self> {
        let mut videos = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::Data {
                path: dir.clone(),
                msg: format!("cannot list directory: {e}"),
            })?;
            let mut frames = Vec::new();
            for e in entries {
                let p = e.map_err(|e| Error::io(&dir, e))?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")) {
                    frames.push(p);
                }
            }
            if !frames.is_empty() {
                frames.sort_by_cached_key(|p| {
                    natural_key(&p.file_name().unwrap_or_default().to_string_lossy())
                });
                videos.push((dir, frames));
            }
        }
        videos.sort_by(|a, b| a.0.cmp(&b.0));
        if videos.is_empty() {
            return Err(Error::Data {
                path: root.to_owned(),
                msg: "no folder with .png frames found".into(),
            });
        }
        let mut clips = Vec::new();
        let mut short = 0;
        for (v, (_, frames)) in videos.iter().enumerate() {
            if frames.len() < clip_length {
                short += 1;
            }
            let mut s = 0;
            while s + clip_length <= frames.len() {
                clips.push((v, s));
                s += stride;
            }
        }
        if short > 0 {
            tracing::warn!(
                "{}: {short} of {} videos have fewer than {clip_length} frames and give no clip",
                root.display(),
                videos.len()
            );
        }
        Ok(Self {
            videos,
            clips,
            clip_length,
        })
    }
}

/// The person number of a KTH video folder (`person07_walking_d1_uncomp` → 7): the digits after
/// the first `person` (any case) in the folder name.
pub fn person_of(video: &Path) -> Option<u32> {
    let name = video.file_name()?.to_string_lossy().to_ascii_lowercase();
    let rest = &name[name.find("person")? + "person".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl FrameFolders {
    /// Keeps only the videos of `persons` (by [`person_of`]) and their clips.
    ///
    /// # Errors
    /// [`Error::Data`] naming a video folder without a person number, or when no video is left.
    pub fn retain_persons(
        &mut self,
        root: &Path,
        persons: &std::ops::RangeInclusive<u32>,
    ) -> Result<()> {
        let mut keep = Vec::with_capacity(self.videos.len());
        for (dir, _) in &self.videos {
            let Some(p) = person_of(dir) else {
                return Err(Error::Data {
                    path: dir.clone(),
                    msg: "no person number in the folder name (KTH folders are named \
                          personNN_<action>_dK_uncomp)"
                        .into(),
                });
            };
            keep.push(persons.contains(&p));
        }
        let mut new_index = vec![usize::MAX; self.videos.len()];
        let mut videos = Vec::new();
        for (v, video) in std::mem::take(&mut self.videos).into_iter().enumerate() {
            if keep[v] {
                new_index[v] = videos.len();
                videos.push(video);
            }
        }
        self.clips = self
            .clips
            .iter()
            .filter(|(v, _)| keep[*v])
            .map(|&(v, s)| (new_index[v], s))
            .collect();
        if videos.is_empty() {
            return Err(Error::Data {
                path: root.to_owned(),
                msg: format!(
                    "no video of persons {}–{} found",
                    persons.start(),
                    persons.end()
                ),
            });
        }
        self.videos = videos;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["image_10.png", "image_2.png", "image_1.png"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, ["image_1.png", "image_2.png", "image_10.png"]);
    }

    #[test]
    fn crop_and_resize() {
        // 2×4 RGB: left half black, right half white; crop keeps the middle 2×2 → half/half.
        let mut px = Vec::new();
        for _y in 0..2 {
            for x in 0..4 {
                px.extend([if x < 2 { 0u8 } else { 255 }; 3]);
            }
        }
        let img = Image {
            h: 2,
            w: 4,
            c: 3,
            px,
        };
        assert_eq!(to_clip_frame(&img, 1, 2, Fit::Crop), vec![0, 255, 0, 255]);
        // Identity size keeps pixels exactly; RGB planes are planar.
        let rgb = to_clip_frame(&img, 3, 2, Fit::Crop);
        assert_eq!(rgb, vec![0, 255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255]);
        // Stretch 4 → 2 wide: bilinear at centres 0.5 and 2.5 → (0+0)/2, (255+255)/2.
        assert_eq!(
            to_clip_frame(&img, 1, 2, Fit::Stretch),
            vec![0, 255, 0, 255]
        );
    }

    #[test]
    fn person_numbers_come_from_the_folder_name() {
        let p = |s: &str| person_of(Path::new(s));
        assert_eq!(p("kth/walking/person07_walking_d1_uncomp"), Some(7));
        assert_eq!(p("x/Person25_boxing_d4"), Some(25));
        assert_eq!(p("x/walking"), None);
    }
}
