//! `convtt-worker doctor`: what this machine offers a training run, and whether a GPU run can work.
//!
//! Every probe is read-only and cheap; a probe that fails reports why instead of aborting.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::{sys, torch_runtime};

/// Everything the doctor found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// libtorch version (e.g. `2.11.0+cu130`), when it could be read.
    pub libtorch_version: Option<String>,
    /// Directory of the loaded `libtorch_cpu.so`.
    pub libtorch_dir: String,
    /// Path of the loaded CUDA backend, or why it did not load.
    pub libtorch_cuda: std::result::Result<String, String>,
    /// Intra-op threads libtorch uses.
    pub torch_threads: i32,
    /// `tch::Cuda::is_available()`.
    pub cuda_available: bool,
    /// CUDA devices libtorch sees.
    pub cuda_devices: i64,
    /// Device names from the CUDA driver, in ordinal order.
    pub device_names: Vec<String>,
    /// cuDNN availability and version.
    pub cudnn: Option<i64>,
    /// NCCL version (e.g. `2.28.9`) or why it is unavailable.
    pub nccl: std::result::Result<String, String>,
    /// MPI library version string.
    pub mpi: String,
    /// HDF5 library version.
    pub hdf5: String,
    /// NUMA node → CPU list.
    pub numa_nodes: Vec<(String, String)>,
    /// This process's CPU mask (`Cpus_allowed_list`).
    pub cpu_mask: String,
}

/// Runs every probe.
pub fn probe() -> Report {
    let libtorch_cuda = torch_runtime::load_cuda_backend()
        .as_ref()
        .map(|p| p.display().to_string())
        .map_err(Clone::clone);
    let cuda_available = tch::Cuda::is_available();
    let cuda_devices = if cuda_available {
        tch::Cuda::device_count()
    } else {
        0
    };
    let device_names = if cuda_available && sys::cuda_driver_present() {
        device_names(cuda_devices)
    } else {
        Vec::new()
    };
    let cudnn = (cuda_available && tch::Cuda::cudnn_is_available()).then(tch::utils::version_cudnn);
    let nccl = if sys::nccl_present() {
        cudarc::nccl::result::get_nccl_version()
            .map(|v| format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
            .map_err(|e| format!("libnccl loaded but ncclGetVersion failed: {e:?}"))
    } else {
        Err(
            "libnccl.so not found (install the nvidia-nccl wheel beside torch, or put \
             libnccl.so on LD_LIBRARY_PATH)"
                .to_owned(),
        )
    };
    let mpi = mpi::environment::library_version()
        .map(|s| {
            s.trim_end_matches('\0')
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    let (a, b, c) = hdf5::library_version();
    Report {
        libtorch_version: torch_runtime::version(),
        libtorch_dir: torch_runtime::lib_dir().display().to_string(),
        libtorch_cuda,
        torch_threads: tch::get_num_threads(),
        cuda_available,
        cuda_devices,
        device_names,
        cudnn,
        nccl,
        mpi,
        hdf5: format!("{a}.{b}.{c}"),
        numa_nodes: numa_nodes(Path::new("/sys/devices/system/node")),
        cpu_mask: cpu_mask(),
    }
}

fn device_names(n: i64) -> Vec<String> {
    use cudarc::driver::result;
    if result::init().is_err() {
        return Vec::new();
    }
    (0..n as i32)
        .map(|i| {
            result::device::get(i)
                .and_then(result::device::get_name)
                .unwrap_or_else(|e| format!("unknown ({e:?})"))
        })
        .collect()
}

/// NUMA nodes and their CPU lists from a sysfs `node` directory, in node order.
pub fn numa_nodes(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: u32 = name.strip_prefix("node")?.parse().ok()?;
            let cpus = std::fs::read_to_string(e.path().join("cpulist")).ok()?;
            Some((id, name, cpus.trim().to_owned()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, n, c)| (n, c)).collect()
}

/// This process's allowed CPUs, as the kernel lists them.
pub fn cpu_mask() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Report {
    /// What a GPU run needs and this machine lacks (empty when a GPU run can start).
    pub fn gpu_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = &self.libtorch_cuda {
            out.push(format!("libtorch's CUDA backend did not load: {e}"));
        }
        if !self.cuda_available {
            out.push("CUDA is not available to libtorch (no driver or no device)".into());
        } else if self.cuda_devices == 0 {
            out.push("no CUDA device is visible (check CUDA_VISIBLE_DEVICES)".into());
        }
        if let Err(e) = &self.nccl {
            out.push(format!("NCCL: {e}"));
        }
        out
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let na = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".into());
        let either = |r: &std::result::Result<String, String>| match r {
            Ok(v) => v.clone(),
            Err(e) => format!("unavailable: {e}"),
        };
        let _ = writeln!(
            s,
            "libtorch       {} ({})",
            na(&self.libtorch_version),
            self.libtorch_dir
        );
        let _ = writeln!(s, "torch threads  {}", self.torch_threads);
        let _ = writeln!(s, "cuda backend   {}", either(&self.libtorch_cuda));
        let _ = writeln!(
            s,
            "cuda           {} ({} device{})",
            if self.cuda_available {
                "available"
            } else {
                "not available"
            },
            self.cuda_devices,
            if self.cuda_devices == 1 { "" } else { "s" }
        );
        for (i, n) in self.device_names.iter().enumerate() {
            let _ = writeln!(s, "  cuda:{i}       {n}");
        }
        let cudnn = self
            .cudnn
            .map_or("not available".into(), |v| format!("available ({v})"));
        let _ = writeln!(s, "cudnn          {cudnn}");
        let _ = writeln!(s, "nccl           {}", either(&self.nccl));
        let _ = writeln!(s, "mpi            {}", self.mpi);
        let _ = writeln!(s, "hdf5           {}", self.hdf5);
        let _ = writeln!(s, "numa nodes     {}", self.numa_nodes.len());
        for (n, c) in &self.numa_nodes {
            let _ = writeln!(s, "  {n:<12} cpus {c}");
        }
        let _ = writeln!(s, "cpu mask       {}", self.cpu_mask);
        s
    }
}

/// Runs the doctor: prints the report (text or JSON); with `require_gpu`, fails when a GPU run
/// could not start.
pub fn run(json: bool, require_gpu: bool) -> Result<()> {
    let report = probe();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", report.render());
    }
    let problems = report.gpu_problems();
    if require_gpu && !problems.is_empty() {
        return Err(Error::Unavailable(format!(
            "a GPU run cannot start here:\n  - {}",
            problems.join("\n  - ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_nodes_are_read_in_node_order() {
        let dir = std::env::temp_dir().join(format!("convtt-numa-{}", std::process::id()));
        for (n, cpus) in [("node10", "8-9"), ("node0", "0-3"), ("node1", "4-7")] {
            std::fs::create_dir_all(dir.join(n)).unwrap();
            std::fs::write(dir.join(n).join("cpulist"), format!("{cpus}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.join("power")).unwrap();
        let nodes = numa_nodes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = nodes.iter().map(|(n, c)| format!("{n}={c}")).collect();
        assert_eq!(names, ["node0=0-3", "node1=4-7", "node10=8-9"]);
    }

    #[test]
    fn a_cpu_machine_lists_why_a_gpu_run_cannot_start() {
        let report = probe();
        assert!(!report.hdf5.is_empty() && !report.mpi.is_empty());
        if !report.cuda_available {
            let problems = report.gpu_problems();
            assert!(
                problems.iter().any(|p| p.contains("CUDA is not available")),
                "{problems:?}"
            );
        }
    }
}
