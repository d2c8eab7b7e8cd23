//! Tests over real HDF5 datasets in temporary directories: generate → verify → read, damaged
//! shards, inconsistent manifests, `--force`, byte-identical regeneration and the loaders.

use std::path::{Path, PathBuf};

use clap::Parser;
use convtt_common::config::{DataConfig, DataSource};
use convtt_common::dataset::{DatasetManifest, MANIFEST_FILE};

use super::tool::DataCli;
use super::*;
use crate::exit;

use super::tool::run_args as data;

/// A small Moving-MNIST dataset: 6 train, 2 valid, 3 test clips of 4 frames, 3 clips per shard
/// (4 shards).
fn small(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let seed = seed.to_string();
    data(&[
        "moving-mnist",
        "--out",
        out.to_str().unwrap(),
        "--train",
        "6",
        "--valid",
        "2",
        "--test",
        "3",
        "--frames",
        "4",
        "--seed",
        &seed,
        "--shard-clips",
        "3",
    ])
    .unwrap();
    out
}

fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((
                p.strip_prefix(dir).unwrap().to_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn cpu(batch_size: usize, threads: usize, frames: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size,
        threads,
        prefetch: 2,
        frames,
        device: tch::Device::Cpu,
    }
}

#[test]
fn generate_verify_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 1);
    let rep = verify(&root);
    assert!(rep.problems.is_empty(), "{:#?}", rep.problems);
    assert_eq!((rep.shards, rep.clips), (4, 11));

    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.manifest().clip_shape, [4, 1, 64, 64]);
    let train = ds.split("train").unwrap();
    assert_eq!(train.len(), 6);
    let mut direct = vec![0u8; 4 * 64 * 64];
    train.reader().read_clip(4, &mut direct).unwrap();
    assert!(direct.iter().any(|&p| p > 200), "digits are visible");

    // The loader gives the same pixels as direct reads, in sampler order, for any thread count.
    let sampler = DistributedSampler::new(6, 0, 1, 0, 7, true);
    let order = sampler.indices(3);
    let mut seen = Vec::new();
    for threads in [1, 2, 3] {
        let loader = Loader::for_split(&train, sampler.clone(), cpu(2, threads, 3)).unwrap();
        assert_eq!(loader.steps(), 3);
        let batches: Vec<Batch> = loader.epoch(3).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        let ids: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(ids, order);
        let b = &batches[0];
        assert_eq!(b.clips.size(), [2, 3, 1, 64, 64]);
        assert_eq!(b.clips.kind(), tch::Kind::Float);
        let (lo, hi) = (
            b.clips.min().double_value(&[]),
            b.clips.max().double_value(&[]),
        );
        assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.5, "{lo} {hi}");
        // Pixel check against a direct read of the first clip of the batch (3 of 4 frames).
        let mut clip = vec![0u8; 4 * 64 * 64];
        train.reader().read_clip(b.indices[0], &mut clip).unwrap();
        let want: Vec<f32> = clip[..3 * 64 * 64]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        let got = Vec::<f32>::try_from(b.clips.get(0).flatten(0, -1)).unwrap();
        assert!(
            got == want,
            "batch pixels differ from a direct read of the clip"
        );
        seen.push(Vec::<f32>::try_from(batches[2].clips.flatten(0, -1)).unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "thread count changes nothing"
    );
}

#[test]
fn same_seed_gives_byte_identical_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let a = all_files(&small(tmp.path(), "a", 5));
    let b = all_files(&small(tmp.path(), "b", 5));
    let c = all_files(&small(tmp.path(), "c", 6));
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        // dataset.toml records the name (the directory) and nothing else that differs.
        if p == Path::new(MANIFEST_FILE) {
            let (x, y) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
            assert_eq!(x.replace("name = \"a\"", "name = \"b\""), y);
        } else {
            assert!(
                x == y,
                "{} differs between two runs with the same seed",
                p.display()
            );
        }
    }
    assert_ne!(a[1].1, c[1].1, "another seed, other clips");
}

#[test]
fn truncated_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 1);
    let shard = root.join("train/shard-00001.h5");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();

    let e = Dataset::open(&root).unwrap_err();
    assert_eq!(e.exit_code(), exit::DATA);
    let msg = e.to_string();
    assert!(
        msg.contains("train/shard-00001.h5") && msg.contains("truncated"),
        "{msg}"
    );

    // Reading through a reader that skipped the open-time checks also names the file.
    let rep = verify(&root);
    assert!(rep
        .problems
        .iter()
        .any(|p| p.contains("shard-00001.h5") && p.contains("bytes")));
    assert!(rep
        .problems
        .iter()
        .any(|p| p.contains("shard-00001.h5") && p.contains("sha256")));
    assert!(
        rep.problems.iter().all(|p| !p.contains("shard-00000.h5")),
        "{:#?}",
        rep.problems
    );
    let e = data(&["verify", root.to_str().unwrap()]).unwrap_err();
    assert_eq!(e.exit_code(), exit::DATA);
}

#[test]
fn flipped_byte_is_a_checksum_error_and_a_clip_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 1);
    let shard = root.join("test/shard-00000.h5");
    // Corrupt the middle of clip 1's compressed chunk.
    let (addr, size) = {
        let f = hdf5::File::open(&shard).unwrap();
        let info = f.dataset("clips").unwrap().chunk_info(1).unwrap();
        (info.addr as usize, info.size as usize)
    };
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[addr + size / 2] ^= 0x5A;
    std::fs::write(&shard, &bytes).unwrap();

    let rep = verify(&root);
    let shown = shard.display().to_string();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.starts_with(&shown) && p.contains("sha256 mismatch")),
        "{:#?}",
        rep.problems
    );
    assert!(
        rep.problems
            .iter()
            .any(|p| p.starts_with(&shown) && p.contains("clip 1")),
        "{:#?}",
        rep.problems
    );
    assert_eq!(rep.clips, 10, "every other clip still reads");

    // The training-side reader reports the file and the clip too.
    let ds = Dataset::open(&root).unwrap(); // sizes and headers are intact
    let mut out = vec![0u8; 4 * 64 * 64];
    let e = ds
        .split("test")
        .unwrap()
        .reader()
        .read_clip(1, &mut out)
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::DATA);
    assert!(
        e.to_string().contains("shard-00000.h5") && e.to_string().contains("clip 1"),
        "{e}"
    );
}

#[test]
fn inconsistent_manifest_lists_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 1);
    let mut m = DatasetManifest::load(&root).unwrap();
    // Claim another shape and remove a shard file: both are reported.
    m.clip_shape = [5, 1, 64, 64];
    m.write(&root).unwrap();
    std::fs::remove_file(root.join("valid/shard-00000.h5")).unwrap();
    let msg = Dataset::open(&root).unwrap_err().to_string();
    assert!(msg.contains("valid/shard-00000.h5"), "{msg}");
    assert_eq!(
        msg.matches("clip shape [4, 1, 64, 64] but dataset.toml says")
            .count(),
        3,
        "{msg}"
    );

    // A manifest whose counts do not add up is rejected before any file is opened.
    let text = std::fs::read_to_string(root.join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        root.join(MANIFEST_FILE),
        text.replacen("clips = 6", "clips = 7", 1),
    )
    .unwrap();
    let e = Dataset::open(&root).unwrap_err();
    assert!(
        e.to_string().contains("dataset.toml") && e.to_string().contains("clips = 7"),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::DATA);
    let rep = verify(&root);
    assert_eq!(rep.problems.len(), 1, "{:#?}", rep.problems);
}

#[test]
fn force_replaces_only_after_success() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 1);
    let before = all_files(&root);
    let out = root.to_str().unwrap();

    // Without --force: a usage error, nothing touched.
    let e = data(&[
        "moving-mnist",
        "--out",
        out,
        "--train",
        "2",
        "--valid",
        "0",
        "--test",
        "0",
    ])
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::CONFIG);
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(all_files(&root), before);

    // With --force but a failing import (unsupported layout): the old dataset survives and no
    // temporary directory is left behind.
    let npy = tmp.path().join("bad.npy");
    std::fs::write(&npy, import::npy::write_npy("|u1", &[2, 3, 8], &[0; 48])).unwrap();
    let e = data(&[
        "import-npy",
        npy.to_str().unwrap(),
        "--layout",
        "TNHW",
        "--split",
        "test",
        "--out",
        out,
        "--force",
    ])
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::DATA);
    assert!(e.to_string().contains("bad.npy"), "{e}");
    assert_eq!(all_files(&root), before);

    // A failure in the middle of writing (a clip cannot be produced) also leaves it intact.
    let spec = writer::DatasetSpec {
        name: "x".into(),
        kind: convtt_common::dataset::DatasetKind::Frames,
        clip_shape: [1, 1, 2, 2],
        description: String::new(),
        source: Default::default(),
    };
    let mut w = writer::DatasetWriter::create(&root, spec, 2, true).unwrap();
    let failed = w.write_split("train", 5, |i, _| {
        if i == 3 {
            Err(crate::Error::Data {
                path: "input".into(),
                msg: "clip 3 is bad".into(),
            })
        } else {
            Ok(())
        }
    });
    assert!(failed.is_err());
    drop(w);
    assert_eq!(all_files(&root), before);
    let siblings: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        siblings
            .iter()
            .all(|n| !n.to_string_lossy().contains(".tmp-")),
        "temporary directory left: {siblings:?}"
    );

    // With --force and a good input: replaced.
    data(&[
        "moving-mnist",
        "--out",
        out,
        "--train",
        "2",
        "--valid",
        "0",
        "--test",
        "0",
        "--frames",
        "3",
        "--force",
    ])
    .unwrap();
    let m = DatasetManifest::load(&root).unwrap();
    assert_eq!(m.clip_shape, [3, 1, 64, 64]);
    assert_eq!(m.splits.keys().collect::<Vec<_>>(), ["train"]);
    assert!(verify(&root).problems.is_empty());

    // --force never replaces something that is not a dataset.
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    let e = data(&[
        "moving-mnist",
        "--out",
        other.to_str().unwrap(),
        "--force",
        "--train",
        "1",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("not a dataset directory"), "{e}");
    assert!(other.join("keep.txt").exists());
}

#[test]
fn imports_npy_npz_and_frames() {
    let tmp = tempfile::tempdir().unwrap();
    // mnist_test_seq.npy in miniature: u8 [T=3, N=4, 8, 8], value = 10·n + t.
    let mut tnhw = Vec::new();
    for t in 0..3u8 {
        for n in 0..4u8 {
            tnhw.extend([10 * n + t; 64]);
        }
    }
    let npy = tmp.path().join("seq.npy");
    std::fs::write(&npy, import::npy::write_npy("|u1", &[3, 4, 8, 8], &tnhw)).unwrap();
    let out = tmp.path().join("from-npy");
    data(&[
        "import-npy",
        npy.to_str().unwrap(),
        "--layout",
        "TNHW",
        "--fractions",
        "train=0.5,test=0.5",
        "--out",
        out.to_str().unwrap(),
        "--shard-clips",
        "1",
    ])
    .unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.manifest().clip_shape, [3, 1, 8, 8]);
    let mut clip = vec![0u8; 3 * 64];
    ds.split("test")
        .unwrap()
        .reader()
        .read_clip(1, &mut clip)
        .unwrap();
    assert_eq!(
        (clip[0], clip[64], clip[128]),
        (30, 31, 32),
        "test clip 1 = sequence 3"
    );
    assert!(verify(&out).problems.is_empty());

    // .npz: "data" [N=2, T=2, 4, 4, C=1] float in [0, 1], stored (not deflated) in a zip.
    let floats: Vec<u8> = (0..64)
        .flat_map(|i| (i as f32 / 63.0).to_le_bytes())
        .collect();
    let npz = tmp.path().join("clips.npz");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
        let opts =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("data.npy", opts).unwrap();
        std::io::Write::write_all(
            &mut z,
            &import::npy::write_npy("<f4", &[2, 2, 4, 4, 1], &floats),
        )
        .unwrap();
        z.finish().unwrap();
    }
    let out = tmp.path().join("from-npz");
    data(&[
        "import-npz",
        &format!("valid={}", npz.display()),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let ds = Dataset::open(&out).unwrap();
    ds.split("valid")
        .unwrap()
        .reader()
        .read_clip(1, &mut clip[..32])
        .unwrap();
    assert_eq!((clip[0], clip[31]), (130, 255), "32/63·255 rounds to 130");
    let e = data(&[
        "import-npz",
        npz.to_str().unwrap(),
        "--key",
        "frames",
        "--split",
        "a",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(
        e.to_string().contains("no array \"frames\"") && e.to_string().contains("data.npy"),
        "{e}"
    );

    // Frame folders: two videos of 5 and 2 RGB frames of 6×4 → clips of 2 frames, stride 2.
    let frames = tmp.path().join("kth");
    for (video, n) in [("person01_walking_d1", 5), ("person02_walking_d1", 2)] {
        let d = frames.join("walking").join(video);
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..n {
            let px: Vec<u8> = (0..4 * 6).flat_map(|_| [f as u8 * 50, 0, 0]).collect();
            let w = std::io::BufWriter::new(
                std::fs::File::create(d.join(format!("image_{}.png", f + 1))).unwrap(),
            );
            let mut enc = png::Encoder::new(w, 6, 4);
            enc.set_color(png::ColorType::Rgb);
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
    }
    let out = tmp.path().join("from-frames");
    data(&[
        "import-frames",
        frames.to_str().unwrap(),
        "--split",
        "train",
        "--size",
        "4",
        "--clip-length",
        "2",
        "--rgb",
        "--kind",
        "kth",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.manifest().clip_shape, [2, 3, 4, 4]);
    let train = ds.split("train").unwrap();
    assert_eq!(
        train.len(),
        3,
        "clips at frames 0, 2 of video 1 and 0 of video 2"
    );
    let mut clip = vec![0u8; 2 * 3 * 16];
    train.reader().read_clip(1, &mut clip).unwrap();
    assert_eq!(
        (clip[0], clip[16], clip[48]),
        (100, 0, 150),
        "R of frame 2, G, R of frame 3"
    );
}

#[test]
fn online_moving_mnist_is_fresh_per_epoch_and_split_across_ranks() {
    let cfg = DataConfig {
        source: DataSource::MovingMnistOnline,
        input_frames: 2,
        future_frames: 1,
        batch_size: 4,
        max_train_clips: 8,
        loader_threads: 2,
        ..DataConfig::default()
    };
    let batches = |rank: usize, epoch: u64| -> Vec<(Vec<usize>, Vec<f32>)> {
        let at = Placement {
            world: 2,
            rank,
            device: tch::Device::Cpu,
        };
        let l = train_loader(&cfg, 11, at).unwrap();
        assert_eq!(l.steps(), 2);
        l.epoch(epoch)
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.clips.size(), [2, 3, 1, 64, 64]);
                (
                    b.indices,
                    Vec::<f32>::try_from(b.clips.flatten(0, -1)).unwrap(),
                )
            })
            .collect()
    };
    let (r0, r1) = (batches(0, 0), batches(1, 0));
    let mut ids: Vec<usize> = r0.iter().chain(&r1).flat_map(|(i, _)| i.clone()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..8).collect::<Vec<_>>(),
        "ranks share the epoch without overlap"
    );
    assert_eq!(r0, batches(0, 0), "deterministic from (seed, epoch, rank)");
    let next = batches(0, 1);
    assert_ne!(r0[0].1, next[0].1, "fresh clips every epoch");
}

#[test]
fn train_loader_reads_shards_from_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 2);
    let cfg = DataConfig {
        dataset: root.display().to_string(),
        input_frames: 2,
        future_frames: 2,
        batch_size: 2,
        max_train_clips: 5,
        ..DataConfig::default()
    };
    let at = Placement {
        world: 1,
        rank: 0,
        device: tch::Device::Cpu,
    };
    let l = train_loader(&cfg, 0, at).unwrap();
    assert_eq!((l.sampler().eligible(), l.steps()), (5, 2));
    assert_eq!(l.epoch(0).count(), 2);
    let e = eval_loader(&cfg, "test", 0, 5, at).unwrap_err();
    assert_eq!(
        e.exit_code(),
        exit::CONFIG,
        "5 frames wanted, clips have 4: {e}"
    );
    let e = eval_loader(&cfg, "nope", 0, 4, at).unwrap_err();
    assert!(e.to_string().contains("no split \"nope\""), "{e}");
    let wrong = DataConfig {
        height: 32,
        width: 32,
        ..cfg
    };
    assert_eq!(
        train_loader(&wrong, 0, at).unwrap_err().exit_code(),
        exit::CONFIG
    );
}

/// The CUDA path (pinned host memory, non-blocking copy, conversion on the GPU) gives exactly
/// the CPU batches. Needs a GPU: `cargo test -p convtt-worker --features gpu-tests`.
#[cfg(feature = "gpu-tests")]
#[test]
fn cuda_batches_equal_cpu_batches() {
    let _ = crate::torch_runtime::load_cuda_backend();
    assert!(tch::Cuda::is_available(), "gpu-tests needs a CUDA device");
    let tmp = tempfile::tempdir().unwrap();
    let root = small(tmp.path(), "mm", 4);
    let train = Dataset::open(&root).unwrap().split("train").unwrap();
    let sampler = DistributedSampler::new(6, 0, 1, 0, 1, true);
    let run = |device| -> Vec<Vec<f32>> {
        let opts = LoaderOptions {
            device,
            ..cpu(3, 2, 4)
        };
        let loader = Loader::for_split(&train, sampler.clone(), opts).unwrap();
        loader
            .epoch(0)
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.clips.device(), device);
                Vec::<f32>::try_from(b.clips.to_device(tch::Device::Cpu).flatten(0, -1)).unwrap()
            })
            .collect()
    };
    assert!(
        run(tch::Device::Cuda(0)) == run(tch::Device::Cpu),
        "CUDA batches differ from CPU"
    );
}

/// `import-frames --preset kth`: persons 1–16 → train, 17–25 → test (others dropped), gray,
/// 128×128 from a centre crop, 50-frame clips every 20 frames (train) / 50 (test), kind kth.
#[test]
fn kth_preset_splits_by_person_with_the_protocol_clips() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("kth");
    // 160×120-shaped (16×12) RGB frames; a video's gray level encodes its person number, and
    // the 2-pixel side bands that the centre crop removes are white.
    for (person, frames) in [(1, 90), (16, 60), (17, 120), (25, 60), (26, 60)] {
        let d = root
            .join("walking")
            .join(format!("person{person:02}_walking_d1_uncomp"));
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..frames {
            let px: Vec<u8> = (0..12 * 16)
                .flat_map(|i| {
                    let x = i % 16;
                    let v = if !(2..14).contains(&x) {
                        255
                    } else {
                        person as u8 * 8
                    };
                    [v, v, v]
                })
                .collect();
            let w = std::io::BufWriter::new(
                std::fs::File::create(d.join(format!("image_{:04}.png", f + 1))).unwrap(),
            );
            let mut enc = png::Encoder::new(w, 16, 12);
            enc.set_color(png::ColorType::Rgb);
            enc.write_header().unwrap().write_image_data(&px).unwrap();
        }
    }
    let out = tmp.path().join("kth-ds");
    data(&[
        "import-frames",
        root.to_str().unwrap(),
        "--preset",
        "kth",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.manifest().clip_shape, [50, 1, 128, 128]);
    assert_eq!(ds.manifest().kind.as_str(), "kth");
    // train: person 1 (90 frames: starts 0, 20, 40) + person 16 (60: start 0); test: person 17
    // (120: starts 0, 50) + person 25 (60: start 0); person 26 is in neither.
    let (train, test) = (ds.split("train").unwrap(), ds.split("test").unwrap());
    assert_eq!((train.len(), test.len()), (4, 3));
    let mut clip = vec![0u8; 50 * 128 * 128];
    for (split, i, person) in [
        (&train, 0, 1u8),
        (&train, 3, 16),
        (&test, 1, 17),
        (&test, 2, 25),
    ] {
        split.reader().read_clip(i, &mut clip).unwrap();
        assert!(
            clip.iter().all(|&v| v == person * 8),
            "clip {i}: the crop keeps only the centre"
        );
    }
    // The preset fixes size and clips: mixing it with --size is a usage error.
    let e = DataCli::try_parse_from([
        "convtt-data",
        "import-frames",
        root.to_str().unwrap(),
        "--preset",
        "kth",
        "--size",
        "64",
        "--out",
        "x",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}
