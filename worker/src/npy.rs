//! A small, strict reader and writer for NumPy `.npy` files holding little-endian f32 arrays in
//! C order (format versions 1.0, 2.0 and 3.0), as `np.save(path, x.astype('<f4'))` writes them.
//!
//! Anything else (another dtype, Fortran order, a truncated or over-long payload, a malformed
//! header) is refused with a message naming the file and saying how to fix it.

use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// An f32 array: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyF32 {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in C order.
    pub data: Vec<f32>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

/// Reads `path`.
pub fn read(path: &Path) -> Result<NpyF32> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Parses the bytes of a `.npy` file (`path` names it in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<NpyF32> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(bad(
                path,
                format!("unsupported .npy format version {major}.{minor}"),
            ))
        }
    };
    let end = start + header_len;
    if bytes.len() < end {
        return Err(bad(path, "truncated .npy header"));
    }
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad(path, "the .npy header is not text"))?;
    let (descr, fortran, shape) = parse_header(header).map_err(|m| bad(path, m))?;
    if descr != "<f4" {
        return Err(bad(
            path,
            format!("dtype {descr:?} is not little-endian float32; save x.astype('<f4') instead"),
        ));
    }
    if fortran {
        return Err(bad(
            path,
            "array is in Fortran order; save np.ascontiguousarray(x) instead",
        ));
    }
    let count: usize = shape.iter().product();
    let payload = &bytes[end..];
    if payload.len() != count * 4 {
        return Err(bad(
            path,
            format!(
                "shape {shape:?} needs {} bytes of data, the file has {}",
                count * 4,
                payload.len()
            ),
        ));
    }
    let data = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyF32 { shape, data })
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(h: &str) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let body = h
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("malformed .npy header {h:?}"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| format!("malformed .npy header {h:?}"))?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or("missing ':' in .npy header")?;
        let after = after.trim_start();
        rest = match key.as_str() {
            "descr" => {
                let (v, r) = quoted(after).ok_or("malformed 'descr' in .npy header")?;
                descr = Some(v);
                r
            }
            "fortran_order" => {
                if let Some(r) = after.strip_prefix("False") {
                    fortran = Some(false);
                    r
                } else if let Some(r) = after.strip_prefix("True") {
                    fortran = Some(true);
                    r
                } else {
                    return Err("malformed 'fortran_order' in .npy header".into());
                }
            }
            "shape" => {
                let close = after.find(')').ok_or("malformed 'shape' in .npy header")?;
                let inner = after
                    .strip_prefix('(')
                    .ok_or("malformed 'shape' in .npy header")?;
                let dims = inner[..close - 1]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<usize>()
                            .map_err(|_| format!("bad dimension {s:?}"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                shape = Some(dims);
                &after[close + 1..]
            }
            other => return Err(format!("unknown key {other:?} in .npy header")),
        };
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err(format!(
            ".npy header lacks descr, fortran_order or shape: {h:?}"
        )),
    }
}

/// A '…' or "…" string at the start of `s`, and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(q)? + 1;
    Some((s[1..end].to_owned(), &s[end + 1..]))
}

/// The bytes of a version 1.0 `.npy` file for `array` (header padded to 64 bytes, as NumPy
/// writes it).
pub fn to_bytes(array: &NpyF32) -> Vec<u8> {
    convtt_core::npy::f32_bytes(&array.shape, &array.data)
}

/// Writes `array` to `path`.
pub fn write(path: &Path, array: &NpyF32) -> Result<()> {
    debug_assert_eq!(array.shape.iter().product::<usize>(), array.data.len());
    std::fs::write(path, to_bytes(array)).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.npy")
    }

    fn with_header(version: u8, header: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trip_and_alignment() {
        let a = NpyF32 {
            shape: vec![2, 1, 3],
            data: vec![0.5, -1.0, 2.0, 3.25, 1e-7, f32::MAX],
        };
        let bytes = to_bytes(&a);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(parse(p(), &bytes).unwrap(), a);
        let one = NpyF32 {
            shape: vec![3],
            data: vec![1.0, 2.0, 3.0],
        };
        assert!(String::from_utf8_lossy(&to_bytes(&one)).contains("'shape': (3,)"));
        assert_eq!(parse(p(), &to_bytes(&one)).unwrap(), one);
    }

    /// A header exactly as NumPy 1.x/2.x writes it, in format 2.0, with double quotes too.
    #[test]
    fn reads_numpy_headers_v1_and_v2() {
        let payload: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for (v, h) in [
            (
                1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }          \n",
            ),
            (
                2,
                "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}\n",
            ),
        ] {
            let a = parse(p(), &with_header(v, h, &payload)).unwrap();
            assert_eq!(a.data, [1.0, 2.0]);
        }
    }

    #[test]
    fn refuses_other_dtypes_fortran_order_and_bad_lengths() {
        let four = [0u8; 8];
        let cases = [
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n",
                &four[..],
                "float32",
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n",
                &four[..],
                "float32",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n",
                &four[..],
                "Fortran",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n",
                &four[..],
                "needs 12 bytes",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n",
                &four[..],
                "needs 4 bytes",
            ),
            ("{'descr': '<f4', 'shape': (2,), }\n", &four[..], "lacks"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n",
                &four[..],
                "unknown key",
            ),
        ];
        for (h, payload, want) in cases {
            let err = parse(p(), &with_header(1, h, payload)).unwrap_err();
            assert!(matches!(err, Error::Data { .. }));
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.contains("x.npy"),
                "{msg:?} lacks {want:?}"
            );
        }
        assert!(parse(p(), b"PK\x03\x04 not npy")
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }
}
