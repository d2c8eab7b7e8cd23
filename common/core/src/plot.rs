//! Chart plumbing shared by the worker's run plots (`<run>/plots/`) and the launcher's sweep
//! report (`convtt-launch sweep report`): an RGB buffer drawn with plotters' bitmap backend,
//! written as PNG with the `png` crate. Text is rendered with ab_glyph from a DejaVu Sans subset
//! embedded in the binary (`common/core/assets/fonts`), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::style::FontStyle;

use crate::{Error, Result};

/// The embedded font (DejaVu Sans, ASCII and a few symbols; see its LICENSE file).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font as plotters' `"sans-serif"` (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the embedded plot font does not load; plots will lack text");
        }
    });
}

/// What a drawing closure returns (plotters' errors are boxed).
pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws into a white RGB buffer of `size` with `draw`, then writes the PNG to `path`.
pub fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&mut [u8]) -> DrawResult,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    draw(&mut buf).map_err(|e| {
        Error::io(
            path,
            std::io::Error::other(format!("cannot draw the plot: {e}")),
        )
    })?;
    write_png(path, &buf, size.0 as usize, size.1 as usize, 3)
}

/// The legend every chart here draws: upper right, on translucent white, with a black border.
pub fn draw_legend<'a, DB, CT>(
    chart: &mut plotters::chart::ChartContext<'a, DB, CT>,
    font_size: u32,
) -> DrawResult
where
    DB: plotters::prelude::DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: plotters::coord::CoordTranslate,
{
    use plotters::prelude::{Color, SeriesLabelPosition, BLACK, WHITE};
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `lo..hi` around `values`, padded by 5 % (and by `top` × 5 % above, room for a legend),
/// never empty.
pub fn span(values: impl Iterator<Item = f64>, top: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo - pad..hi + top * pad
}

/// Writes 8-bit pixels (`channels` = 1 grey or 3 RGB, rows top to bottom) as a PNG, atomically:
/// an existing file is replaced only by a complete new one.
pub fn write_png(
    path: &Path,
    px: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<()> {
    let bytes = encode_png(px, width, height, channels)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// 8-bit pixels (`channels` = 1 grey or 3 RGB, rows top to bottom) as PNG bytes.
pub fn encode_png(
    px: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> std::result::Result<Vec<u8>, png::EncodingError> {
    debug_assert_eq!(px.len(), width * height * channels);
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
    enc.set_color(if channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header()?;
    wr.write_image_data(px)?;
    wr.finish()?;
    Ok(bytes)
}

/// Writes an animated GIF that loops forever, atomically. Each frame holds 8-bit pixels of
/// `width` × `height` (`channels` = 1 grey or 3 RGB, rows top to bottom) and is shown for its
/// delay in hundredths of a second. Grey frames are exact (a palette of the 256 greys); RGB
/// frames are quantised to a palette of their own (NeuQuant).
pub fn write_gif(
    path: &Path,
    frames: &[(Vec<u8>, u16)],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<()> {
    let err = |e: gif::EncodingError| Error::io(path, std::io::Error::other(e.to_string()));
    let (w, h) = match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(Error::io(
                path,
                std::io::Error::other(format!("{width}×{height} exceeds GIF's 65535×65535")),
            ))
        }
    };
    let greys: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
    let mut bytes = Vec::new();
    {
        let global: &[u8] = if channels == 3 { &[] } else { &greys };
        let mut enc = gif::Encoder::new(&mut bytes, w, h, global).map_err(err)?;
        enc.set_repeat(gif::Repeat::Infinite).map_err(err)?;
        for (px, delay) in frames {
            debug_assert_eq!(px.len(), width * height * channels);
            let mut frame = if channels == 3 {
                gif::Frame::from_rgb_speed(w, h, px, 10)
            } else {
                // Grey values are indices into the global palette: the pixels as they are.
                gif::Frame {
                    width: w,
                    height: h,
                    buffer: std::borrow::Cow::Borrowed(px),
                    ..gif::Frame::default()
                }
            };
            frame.delay = *delay;
            enc.write_frame(&frame).map_err(err)?;
        }
    }
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_pads_and_never_collapses() {
        let r = span([1.0, 3.0].into_iter(), 1.0);
        assert!((r.start - 0.9).abs() < 1e-12 && (r.end - 3.1).abs() < 1e-12);
        let r = span([2.0].into_iter(), 0.0);
        assert!(r.start < 2.0 && r.end == 2.0);
        assert_eq!(span(std::iter::empty(), 1.0), 0.0..1.0);
        assert_eq!(span([f64::NAN].into_iter(), 1.0), 0.0..1.0);
    }

    #[test]
    fn grey_gif_frames_decode_exactly_and_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gif");
        let frames: Vec<(Vec<u8>, u16)> = (0..3u8)
            .map(|k| ((0..12u8).map(|v| v * 20 + k).collect(), 10 + k as u16))
            .collect();
        write_gif(&path, &frames, 4, 3, 1).unwrap();
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!((dec.width(), dec.height()), (4, 3));
        let mut n = 0;
        while let Some(f) = dec.read_next_frame().unwrap() {
            let (want, delay) = &frames[n];
            assert_eq!(f.delay, *delay);
            let grey: Vec<u8> = f.buffer.chunks_exact(4).map(|p| p[0]).collect();
            assert_eq!(&grey, want);
            assert!(f
                .buffer
                .chunks_exact(4)
                .all(|p| p[0] == p[1] && p[1] == p[2]));
            n += 1;
        }
        assert_eq!(n, 3);
        // A frame size GIF cannot hold is an error naming the file; nothing is left behind.
        let big = dir.path().join("big.gif");
        let e = write_gif(&big, &[(vec![0; 70_000], 1)], 70_000, 1, 1).unwrap_err();
        assert!(e.to_string().contains("big.gif"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
