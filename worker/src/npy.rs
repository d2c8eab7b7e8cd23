//! A small, strict reader and writer for NumPy `.npy` files holding little-endian f32 arrays in
//! C order (format versions 1.0, 2.0 and 3.0), as `np.save(path, x.astype('<f4'))` writes them.
//!
//! Anything else (another dtype, Fortran order, a truncated or over-long payload, a malformed
//! header) is refused with a message naming the file and saying how to fix it.

use std::path::Path;

use convtt_core::npy::Dtype;

use crate::error::{Error, Result};

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
    let h = convtt_core::npy::parse_header(bytes).map_err(|m| bad(path, m))?;
    if h.dtype != (Dtype::F32 { big: false }) {
        return Err(bad(
            path,
            format!(
                "dtype {:?} is not little-endian float32; save x.astype('<f4') instead",
                h.descr
            ),
        ));
    }
    let count: usize = h.shape.iter().product();
    let payload = &bytes[h.data_offset..];
    if payload.len() != count * 4 {
        return Err(bad(
            path,
            format!(
                "shape {:?} needs {} bytes of data, the file has {}",
                h.shape,
                count * 4,
                payload.len()
            ),
        ));
    }
    let data = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyF32 {
        shape: h.shape,
        data,
    })
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
    use convtt_core::npy::to_bytes as npy_bytes;

    fn p() -> &'static Path {
        Path::new("x.npy")
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

    /// Header mistakes are convtt-core's tests; here: the dtype, the payload's length, and
    /// every message naming the file.
    #[test]
    fn refuses_other_dtypes_bad_lengths_and_bad_headers_naming_the_file() {
        let eight = [0u8; 8];
        let cases = [
            ("<f8", vec![1], "float32"),
            (">f4", vec![2], "float32"),
            ("|u1", vec![8], "float32"),
            ("<f4", vec![3], "needs 12 bytes"),
            ("<f4", vec![1], "needs 4 bytes"),
        ];
        for (descr, shape, want) in cases {
            let err = parse(p(), &npy_bytes(descr, &shape, &eight)).unwrap_err();
            assert!(matches!(err, Error::Data { .. }));
            let msg = err.to_string();
            assert!(
                msg.contains(want) && msg.contains("x.npy"),
                "{msg:?} lacks {want:?}"
            );
        }
        let e = parse(p(), b"PK\x03\x04 not npy").unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("x.npy"), "{e}");
    }
}
