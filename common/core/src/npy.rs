//! The one `.npy` codec: the writer (a version 1.0 file, header padded to 64 bytes, as NumPy
//! writes it) and the header parser every reader uses (the worker's f32 reader for `forward`,
//! the clip reader of `import-npy`).

/// The bytes of a version 1.0 `.npy` of dtype `descr` (e.g. `"<f4"`, `"|u1"`), C order, with
/// `payload` already in that dtype's little-endian layout.
pub fn to_bytes(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + payload.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// [`to_bytes`] of little-endian f32 values.
pub fn f32_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    to_bytes("<f4", shape, &payload)
}

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// u8 (or bool).
    U8,
    /// f32 (`big` = big-endian).
    F32 {
        /// Big-endian.
        big: bool,
    },
    /// f64.
    F64 {
        /// Big-endian.
        big: bool,
    },
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 { .. } => 4,
            Dtype::F64 { .. } => 8,
        }
    }
}

/// A parsed `.npy` header (C order: Fortran-order arrays are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: Dtype,
    /// The `descr` string as written (e.g. `<f4`), for messages.
    pub descr: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset of the data from the start of the file.
    pub data_offset: usize,
}

/// Parses the header at the start of `bytes` (format 1.0, 2.0 or 3.0; the whole header must be
/// present): `{'descr': …, 'fortran_order': …, 'shape': (…), }` with either quote style.
/// The message of an error says what is wrong and how to fix it (the caller names the file).
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (missing the \\x93NUMPY magic)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let text = bytes
        .get(start..start + len)
        .ok_or("truncated .npy header")?;
    let text = std::str::from_utf8(text).map_err(|_| "the .npy header is not text")?;
    let (descr, fortran, shape) = header_fields(text)?;
    if fortran {
        return Err("the array is in Fortran order; save np.ascontiguousarray(x) instead".into());
    }
    let dtype = match descr.as_str() {
        "|u1" | "<u1" | ">u1" | "u1" | "|b1" => Dtype::U8,
        "<f4" | "f4" => Dtype::F32 { big: false },
        ">f4" => Dtype::F32 { big: true },
        "<f8" | "f8" => Dtype::F64 { big: false },
        ">f8" => Dtype::F64 { big: true },
        d => return Err(format!("unsupported element type {d:?} (u8, f32 or f64)")),
    };
    Ok(NpyHeader {
        dtype,
        descr,
        shape,
        data_offset: start + len,
    })
}

/// The three fields of the header's dict literal; any other key is refused.
fn header_fields(h: &str) -> Result<(String, bool, Vec<usize>), String> {
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
            .ok_or("missing ':' in .npy header")?
            .trim_start();
        rest = match key {
            "descr" => {
                let (v, r) = quoted(after).ok_or("malformed 'descr' in .npy header")?;
                descr = Some(v.to_owned());
                r
            }
            "fortran_order" => {
                let (v, r) = if let Some(r) = after.strip_prefix("False") {
                    (false, r)
                } else if let Some(r) = after.strip_prefix("True") {
                    (true, r)
                } else {
                    return Err("malformed 'fortran_order' in .npy header".into());
                };
                fortran = Some(v);
                r
            }
            "shape" => {
                let (dims, r) = shape_tuple(after)?;
                shape = Some(dims);
                r
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

/// `(2, 3)`, `(7,)` or `()` at the start of `s` (Python 2's `3L` accepted), and the rest.
fn shape_tuple(s: &str) -> Result<(Vec<usize>, &str), String> {
    let inner = s
        .strip_prefix('(')
        .ok_or("malformed 'shape' in .npy header")?;
    let (inner, rest) = inner
        .split_once(')')
        .ok_or("malformed 'shape' in .npy header")?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad dimension {d:?} in the .npy shape ({inner})"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dims, rest))
}

/// A '…' or "…" string at the start of `s`, and the rest.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(q)? + 1;
    Some((&s[1..end], &s[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(version: u8, header: &str) -> Vec<u8> {
        let mut out = b"\x93NUMPY".to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out
    }

    #[test]
    fn headers_as_numpy_writes_them_and_their_mistakes() {
        // What NumPy 1.x writes for mnist_test_seq.npy, and this module's own writer.
        let h = parse_header(&to_bytes("|u1", &[20, 10000, 64, 64], &[])).unwrap();
        assert_eq!(
            (h.dtype, h.shape.clone()),
            (Dtype::U8, vec![20, 10000, 64, 64])
        );
        assert_eq!(h.data_offset % 64, 0);
        let h = parse_header(&f32_bytes(&[7], &[0.0; 7])).unwrap();
        assert_eq!((h.dtype, h.shape), (Dtype::F32 { big: false }, vec![7]));
        // Format 2.0 with double quotes, no trailing comma; a scalar shape.
        let h = parse_header(&with_header(
            2,
            "{\"descr\": \">f8\", \"fortran_order\": False, \"shape\": ()}\n",
        ))
        .unwrap();
        assert_eq!((h.dtype, h.shape), (Dtype::F64 { big: true }, vec![]));
        for (header, want) in [
            (
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                "\"<i8\"",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }",
                "Fortran",
            ),
            ("{'descr': '<f4', 'shape': (2,), }", "lacks"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                "unknown key",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (a,), }",
                "bad dimension",
            ),
            ("not a dict", "malformed"),
        ] {
            let e = parse_header(&with_header(1, header)).unwrap_err();
            assert!(e.contains(want), "{header}: {e}");
        }
        let whole = to_bytes("|u1", &[2, 3], &[]);
        assert!(parse_header(&whole[..20])
            .unwrap_err()
            .contains("truncated"));
        assert!(parse_header(b"PK\x03\x04 not npy")
            .unwrap_err()
            .contains("magic"));
    }
}
