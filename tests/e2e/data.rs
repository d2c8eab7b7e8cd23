//! `convtt-data` end to end: the real binary on tiny datasets in temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::venv_python;

fn convtt_data(args: &[&str]) -> Output {
    Command::new(crate::util::bin("convtt-data"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("convtt-data runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = convtt_data(args);
    assert!(
        o.status.success(),
        "convtt-data {args:?} failed:\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails_with(code: i32, args: &[&str]) -> String {
    let o = convtt_data(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "convtt-data {args:?}:\n{}",
        text(&o)
    );
    text(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A `.npy` (format 1.0) of u8 data.
fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    convtt_core::npy::to_bytes("|u1", shape, data)
}

fn tiny_mmnist(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let stdout = ok(&[
        "moving-mnist",
        "--out",
        s(&out),
        "--train",
        "4",
        "--valid",
        "2",
        "--test",
        "2",
        "--frames",
        "5",
        "--shard-clips",
        "2",
        "--seed",
        "3",
    ]);
    assert!(
        stdout.contains("wrote") && stdout.contains("8 clips"),
        "{stdout}"
    );
    out
}

#[test]
fn generate_inspect_verify_preview_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny_mmnist(tmp.path(), "mm");
    let inspect = ok(&["inspect", s(&ds)]);
    assert!(
        inspect.contains("split       train: 4 clips, 2 shard(s)"),
        "{inspect}"
    );
    assert!(inspect.contains("consistent"), "{inspect}");
    let verify = ok(&["verify", s(&ds)]);
    assert!(
        verify.contains("8 clips read") && verify.contains("no problems"),
        "{verify}"
    );
    let png = tmp.path().join("strip.png");
    ok(&[
        "preview",
        s(&ds),
        "--split",
        "test",
        "--clip",
        "1",
        "--out",
        s(&png),
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width = 5 frames × 64 + 4 gaps × 2, height 64.
    assert_eq!(
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        5 * 64 + 4 * 2
    );
    let bench = ok(&["bench", s(&ds), "--threads", "1,2", "--batch", "2"]);
    assert!(
        bench.contains("clips/s") && bench.lines().count() >= 4,
        "{bench}"
    );

    // The same seed regenerates byte-identical shards.
    let again = tiny_mmnist(tmp.path(), "again");
    for shard in [
        "train/shard-00000.h5",
        "train/shard-00001.h5",
        "test/shard-00000.h5",
    ] {
        assert!(
            std::fs::read(ds.join(shard)).unwrap() == std::fs::read(again.join(shard)).unwrap(),
            "{shard} differs between two runs with the same seed"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_data_errors_exit_5() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tiny_mmnist(tmp.path(), "mm");
    let before = std::fs::read(ds.join("dataset.toml")).unwrap();

    // Usage: an existing dataset without --force, an unknown layout, a missing flag.
    let e = fails_with(2, &["moving-mnist", "--out", s(&ds), "--train", "1"]);
    assert!(e.contains("--force"), "{e}");
    fails_with(
        2,
        &["import-npy", "x.npy", "--layout", "HWTN", "--out", s(&ds)],
    );
    fails_with(2, &["verify"]);

    // Data: an .npy whose shape does not fit the layout; the old dataset is untouched.
    let npy = tmp.path().join("flat.npy");
    std::fs::write(&npy, npy_u8(&[4, 16], &[0; 64])).unwrap();
    let e = fails_with(
        5,
        &[
            "import-npy",
            s(&npy),
            "--layout",
            "TNHW",
            "--split",
            "test",
            "--out",
            s(&ds),
            "--force",
        ],
    );
    assert!(
        e.contains("flat.npy") && e.contains("does not fit layout"),
        "{e}"
    );
    assert_eq!(std::fs::read(ds.join("dataset.toml")).unwrap(), before);
    assert!(ok(&["verify", s(&ds)]).contains("no problems"));

    // Data: a truncated shard and a flipped byte in another; verify lists both files.
    let a = ds.join("train/shard-00000.h5");
    let bytes = std::fs::read(&a).unwrap();
    std::fs::write(&a, &bytes[..bytes.len() - 100]).unwrap();
    let b = ds.join("valid/shard-00000.h5");
    let mut bytes = std::fs::read(&b).unwrap();
    let mid = bytes.len() * 3 / 4;
    bytes[mid] ^= 0xFF;
    std::fs::write(&b, &bytes).unwrap();
    let e = fails_with(5, &["verify", s(&ds)]);
    assert!(e.contains(&format!("problem: {}", a.display())), "{e}");
    assert!(
        e.contains(&format!("problem: {}: sha256 mismatch", b.display())),
        "{e}"
    );
    let e = fails_with(5, &["inspect", s(&ds)]);
    assert!(
        e.contains("shard-00000.h5") && e.contains("truncated"),
        "{e}"
    );
    let e = fails_with(5, &["bench", s(&ds)]);
    assert!(e.contains("train/shard-00000.h5"), "{e}");
}

#[test]
fn h5py_reads_our_shards() {
    let py = venv_python();
    let probe = Command::new(&py)
        .args(["-c", "import h5py, numpy"])
        .output();
    let ready = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ready,
        "{} cannot import h5py: run .ci/setup.sh (it installs h5py into the project venv)",
        py.display()
    );

    // 3 clips, 4 frames of 5×6, value = (7n + 3t + p) mod 256, stored time-major (TNHW).
    let (n, t, h, w) = (3usize, 4usize, 5usize, 6usize);
    let mut data = Vec::new();
    for ti in 0..t {
        for ni in 0..n {
            data.extend((0..h * w).map(|p| ((7 * ni + 3 * ti + p) % 256) as u8));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("seq.npy");
    std::fs::write(&npy, npy_u8(&[t, n, h, w], &data)).unwrap();
    let ds = tmp.path().join("ds");
    ok(&[
        "import-npy",
        s(&npy),
        "--layout",
        "TNHW",
        "--split",
        "test",
        "--out",
        s(&ds),
        "--shard-clips",
        "2",
    ]);

    let script = r#"
import sys, h5py, numpy as np
root = sys.argv[1]
n, t, h, w = 3, 4, 5, 6
want = np.array([[[[(7 * ni + 3 * ti + p) % 256 for p in range(h * w)]] for ti in range(t)]
                 for ni in range(n)], dtype=np.uint8).reshape(n, t, 1, h, w)
got = []
for k, first in [(0, 0), (1, 2)]:
    with h5py.File(f"{root}/test/shard-{k:05d}.h5", "r") as f:
        d = f["clips"]
        assert d.dtype == np.uint8, d.dtype
        assert d.chunks == (1, t, 1, h, w), d.chunks
        assert d.compression == "gzip", d.compression
        assert int(d.attrs["format_version"]) == 1
        split = d.attrs["split"]
        split = split.decode() if isinstance(split, bytes) else split
        assert split == "test", split
        assert int(d.attrs["first_index"]) == first
        got.append(d[...])
got = np.concatenate(got)
assert got.shape == want.shape, got.shape
assert (got == want).all(), "pixel values differ"
print("h5py ok", h5py.__version__)
"#;
    let o = Command::new(&py)
        .args(["-c", script, s(&ds)])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "h5py check failed:\n{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("h5py ok"));
}
