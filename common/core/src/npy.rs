//! The one `.npy` writer: a version 1.0 file (header padded to 64 bytes, as NumPy writes it).
//! The worker's readers live in `convtt-worker` (f32 for `forward`, u8/f32 for `import-npy`).

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
