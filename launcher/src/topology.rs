//! Node topology from sysfs/procfs, and the per-worker CPU plan (orchestrators.md §1d).
//!
//! GPU k of a worker's CUDA ordinal space → PCI bus id → sysfs `local_cpulist` (or the CPUs of
//! its `numa_node`) → ∩ the launcher's own CPU mask (cgroups, `srun --cpu-bind`) → split into
//! disjoint per-worker sets, whole physical cores first (`thread_siblings_list`). No CUDA or NVML
//! is linked: NVIDIA GPUs are the PCI devices with vendor `0x10de` and class `0x0300xx`/`0x0302xx`,
//! in PCI bus order, which is CUDA's order under `CUDA_DEVICE_ORDER=PCI_BUS_ID` (the launcher sets
//! it for workers). Both roots are injectable so the tests run on fake trees.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A set of CPU ids, printed as a Linux cpulist (`0-3,8,10-11`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(pub BTreeSet<u32>);

impl CpuSet {
    /// Parses a cpulist such as `0-3,8,10-11` (empty text is the empty set).
    pub fn parse(text: &str) -> std::result::Result<CpuSet, String> {
        let mut set = BTreeSet::new();
        for part in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u32 = a
                .parse()
                .map_err(|_| format!("bad cpulist entry {part:?}"))?;
            let b: u32 = b
                .parse()
                .map_err(|_| format!("bad cpulist entry {part:?}"))?;
            if b < a || b - a > 1 << 16 {
                return Err(format!("bad cpulist range {part:?}"));
            }
            set.extend(a..=b);
        }
        Ok(CpuSet(set))
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// CPUs in both sets.
    pub fn intersect(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs in `self` but not in `other`.
    pub fn minus(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// True when no CPU is in both.
    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.0.is_disjoint(&other.0)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<u32> = self.0.iter().copied().collect();
        let mut i = 0;
        let mut first = true;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if i == j {
                write!(f, "{}", v[i])?;
            } else {
                write!(f, "{}-{}", v[i], v[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// Where sysfs and procfs live (`/sys`, `/proc` on a real machine).
#[derive(Debug, Clone)]
pub struct SysPaths {
    /// sysfs root.
    pub sys: PathBuf,
    /// procfs root.
    pub proc: PathBuf,
}

impl Default for SysPaths {
    fn default() -> Self {
        SysPaths {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// One NVIDIA GPU on the PCI bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// PCI address, `domain:bus:device.function` (lowercase hex).
    pub pci: String,
    /// NUMA node (`None` when sysfs says -1 or nothing).
    pub numa: Option<u32>,
    /// CPUs local to the device (`local_cpulist`, else its NUMA node's CPUs).
    pub local_cpus: Option<CpuSet>,
    /// `/dev/nvidiaN` minor number (from the driver's procfs), which Slurm's GPU indices use.
    pub minor: Option<u32>,
    /// `GPU-…` UUID (from the driver's procfs).
    pub uuid: Option<String>,
}

/// What the node looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// NVIDIA GPUs in PCI bus order.
    pub gpus: Vec<Gpu>,
    /// Physical cores: each entry is one core's hardware threads.
    pub cores: Vec<CpuSet>,
    /// NUMA node of each CPU.
    pub cpu_node: BTreeMap<u32, u32>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn list_dir(p: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

impl Topology {
    /// Reads GPUs, cores and NUMA nodes. Missing files mean "unknown", never an error: a
    /// container without `/sys/bus/pci` simply has no GPUs to plan for.
    pub fn read(paths: &SysPaths) -> Topology {
        let mut node_cpus: BTreeMap<u32, CpuSet> = BTreeMap::new();
        let mut cpu_node = BTreeMap::new();
        for (name, path) in list_dir(&paths.sys.join("devices/system/node")) {
            let Some(n) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(set) = read_trim(&path.join("cpulist")).and_then(|t| CpuSet::parse(&t).ok())
            {
                for c in &set.0 {
                    cpu_node.insert(*c, n);
                }
                node_cpus.insert(n, set);
            }
        }

        let mut cores: BTreeSet<CpuSet> = BTreeSet::new();
        for (name, path) in list_dir(&paths.sys.join("devices/system/cpu")) {
            let Some(id) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let siblings = read_trim(&path.join("topology/thread_siblings_list"))
                .and_then(|t| CpuSet::parse(&t).ok())
                .filter(|s| s.0.contains(&id))
                .unwrap_or_else(|| CpuSet([id].into()));
            cores.insert(siblings);
        }
        let mut cores: Vec<CpuSet> = cores.into_iter().collect();
        cores.sort_by_key(|c| c.0.first().copied());

        // The driver's view: PCI address → minor number and UUID.
        let mut driver: BTreeMap<String, (Option<u32>, Option<String>)> = BTreeMap::new();
        for (name, path) in list_dir(&paths.proc.join("driver/nvidia/gpus")) {
            let info = read_trim(&path.join("information")).unwrap_or_default();
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim_start_matches(':').trim().to_owned())
            };
            let minor = field("Device Minor").and_then(|m| m.parse().ok());
            driver.insert(name.to_lowercase(), (minor, field("GPU UUID")));
        }

        let mut gpus = Vec::new();
        for (name, path) in list_dir(&paths.sys.join("bus/pci/devices")) {
            let vendor = read_trim(&path.join("vendor")).unwrap_or_default();
            let class = read_trim(&path.join("class"))
                .unwrap_or_default()
                .to_lowercase();
            if vendor.to_lowercase() != "0x10de"
                || !(class.starts_with("0x0300") || class.starts_with("0x0302"))
            {
                continue;
            }
            let numa = read_trim(&path.join("numa_node"))
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok());
            let local_cpus = read_trim(&path.join("local_cpulist"))
                .and_then(|t| CpuSet::parse(&t).ok())
                .filter(|s| !s.is_empty())
                .or_else(|| numa.and_then(|n| node_cpus.get(&n).cloned()));
            let pci = name.to_lowercase();
            let (minor, uuid) = driver.get(&pci).cloned().unwrap_or_default();
            gpus.push(Gpu {
                pci,
                numa,
                local_cpus,
                minor,
                uuid,
            });
        }
        Topology {
            gpus,
            cores,
            cpu_node,
        }
    }

    /// NUMA nodes of a CPU set.
    pub fn nodes_of(&self, cpus: &CpuSet) -> BTreeSet<u32> {
        cpus.0
            .iter()
            .filter_map(|c| self.cpu_node.get(c).copied())
            .collect()
    }
}

/// The CUDA ordinal space a worker will see, as indices into [`Topology::gpus`].
///
/// * No `CUDA_VISIBLE_DEVICES` and no Slurm GPUs: every GPU, in PCI order.
/// * `SLURM_STEP_GPUS` (physical indices, i.e. device minors) restricts the node to those GPUs.
///   `CUDA_VISIBLE_DEVICES` then either repeats the same indices (no device cgroup) or counts
///   within the restricted set (Slurm's `ConstrainDevices`: CUDA only sees the allowed devices).
/// * `CUDA_VISIBLE_DEVICES` entries are indices (PCI order, as `CUDA_DEVICE_ORDER=PCI_BUS_ID`
///   makes them) or `GPU-<uuid>` prefixes. MIG instances are refused.
pub fn visible_gpus(
    topo: &Topology,
    cuda_visible: Option<&str>,
    slurm_gpus: Option<&[u32]>,
) -> Result<Vec<usize>> {
    let by_minor = |m: u32| -> Result<usize> {
        // Prefer the driver's minor numbers; without procfs assume minors follow PCI order.
        let found = topo.gpus.iter().position(|g| g.minor == Some(m));
        match found {
            Some(i) => Ok(i),
            None if topo.gpus.iter().all(|g| g.minor.is_none())
                && (m as usize) < topo.gpus.len() =>
            {
                Ok(m as usize)
            }
            None => Err(Error::Usage(format!(
                "Slurm GPU index {m} does not match any NVIDIA GPU on this node ({} found)",
                topo.gpus.len()
            ))),
        }
    };
    let base: Vec<usize> = match slurm_gpus {
        Some(ids) => {
            let mut v = ids
                .iter()
                .map(|&m| by_minor(m))
                .collect::<Result<Vec<_>>>()?;
            v.sort_unstable();
            v
        }
        None => (0..topo.gpus.len()).collect(),
    };
    let Some(cvd) = cuda_visible.map(str::trim) else {
        return Ok(base);
    };
    let entries: Vec<&str> = cvd
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let same_as_slurm = slurm_gpus.is_some_and(|ids| {
        entries.len() == ids.len()
            && entries
                .iter()
                .zip(ids)
                .all(|(e, i)| e.parse::<u32>().ok() == Some(*i))
    });
    let mut out = Vec::new();
    for e in entries {
        if e.starts_with("MIG-") {
            return Err(Error::Usage(format!(
                "CUDA_VISIBLE_DEVICES entry {e:?}: MIG instances are not supported by convtt-launch"
            )));
        }
        let idx = if let Some(uuid) = e.strip_prefix("GPU-") {
            topo.gpus
                .iter()
                .position(|g| {
                    g.uuid
                        .as_deref()
                        .is_some_and(|u| u.trim_start_matches("GPU-").starts_with(uuid))
                })
                .ok_or_else(|| {
                    Error::Usage(format!("CUDA_VISIBLE_DEVICES entry {e:?} matches no GPU"))
                })?
        } else {
            let n: usize = e.parse().map_err(|_| {
                Error::Usage(format!(
                    "CUDA_VISIBLE_DEVICES entry {e:?} is not an index or GPU UUID"
                ))
            })?;
            if same_as_slurm {
                by_minor(n as u32)?
            } else {
                *base.get(n).ok_or_else(|| {
                    Error::Usage(format!(
                        "CUDA_VISIBLE_DEVICES entry {n} is out of range: {} GPUs are visible",
                        base.len()
                    ))
                })?
            }
        };
        if out.contains(&idx) {
            return Err(Error::Usage(format!(
                "CUDA_VISIBLE_DEVICES names GPU {} twice (two workers on one GPU hang NCCL)",
                topo.gpus[idx].pci
            )));
        }
        out.push(idx);
    }
    Ok(out)
}

/// Splits CPUs among workers. `pools[i]` is the CPUs worker i should run near (its GPU's local
/// CPUs, or the whole mask on CPU runs). Workers with the same pool share it evenly, whole
/// physical cores first, contiguous, the remainder going to the lowest ranks; every result is
/// within `mask` and disjoint from the others. Returns the sets and notes for the plan.
pub fn split_cpus(
    topo: &Topology,
    mask: &CpuSet,
    pools: &[CpuSet],
) -> Result<(Vec<CpuSet>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut out = vec![CpuSet::default(); pools.len()];
    let mut taken = CpuSet::default();
    let mut groups: Vec<(CpuSet, Vec<usize>)> = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        match groups.iter_mut().find(|(q, _)| q == p) {
            Some((_, members)) => members.push(i),
            None => groups.push((p.clone(), vec![i])),
        }
    }
    for (pool, members) in groups {
        let mut avail = pool.intersect(mask).minus(&taken);
        if avail.len() < members.len() {
            let fallback = mask.minus(&taken);
            notes.push(format!(
                "workers {members:?}: only {} of their local CPUs {pool} are in this launcher's \
                 mask; using other CPUs of the mask",
                avail.len()
            ));
            avail = fallback;
        }
        if avail.len() < members.len() {
            return Err(Error::Usage(format!(
                "{} workers need at least one CPU each, but this launcher may only use {} CPUs \
                 ({mask}); under Slurm ask for more (`--cpus-per-task`, which srun no longer \
                 inherits from sbatch since 22.05: export SRUN_CPUS_PER_TASK)",
                pools.len(),
                mask.len()
            )));
        }
        // Whole cores (threads of one core restricted to `avail`), ordered by first CPU.
        let mut cores: Vec<CpuSet> = topo
            .cores
            .iter()
            .map(|c| c.intersect(&avail))
            .filter(|c| !c.is_empty())
            .collect();
        let covered: CpuSet = CpuSet(cores.iter().flat_map(|c| c.0.iter().copied()).collect());
        cores.extend(
            avail
                .minus(&covered)
                .0
                .into_iter()
                .map(|c| CpuSet([c].into())),
        );
        cores.sort_by_key(|c| c.0.first().copied());
        let units: Vec<CpuSet> = if cores.len() >= members.len() {
            cores
        } else {
            notes.push(format!(
                "workers {members:?}: fewer physical cores than workers; splitting hardware threads"
            ));
            avail.0.iter().map(|c| CpuSet([*c].into())).collect()
        };
        let (k, n) = (members.len(), units.len());
        let mut next = 0;
        for (j, &w) in members.iter().enumerate() {
            let take = n / k + usize::from(j < n % k);
            let set = CpuSet(
                units[next..next + take]
                    .iter()
                    .flat_map(|u| u.0.iter().copied())
                    .collect(),
            );
            next += take;
            taken = CpuSet(taken.0.union(&set.0).copied().collect());
            out[w] = set;
        }
    }
    Ok((out, notes))
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake sysfs/procfs trees for tests.
    use std::path::{Path, PathBuf};

    use super::SysPaths;

    /// A temporary tree that deletes itself.
    pub struct FakeTree {
        pub root: PathBuf,
    }

    impl FakeTree {
        pub fn new(tag: &str) -> FakeTree {
            let root = std::env::temp_dir().join(format!(
                "convtt-fake-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            FakeTree { root }
        }
        pub fn paths(&self) -> SysPaths {
            SysPaths {
                sys: self.root.join("sys"),
                proc: self.root.join("proc"),
            }
        }
        pub fn write(&self, rel: &str, text: &str) {
            let p: &Path = &self.root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{text}\n")).unwrap();
        }
        /// `sockets` NUMA nodes of `cores` cores with 2 threads each; thread 2 of core c is
        /// c + sockets*cores (Intel numbering).
        pub fn cpus(&self, sockets: u32, cores: u32) {
            let n = sockets * cores;
            for s in 0..sockets {
                let a = s * cores;
                let b = a + cores - 1;
                self.write(
                    &format!("sys/devices/system/node/node{s}/cpulist"),
                    &format!("{a}-{b},{}-{}", a + n, b + n),
                );
            }
            for c in 0..n {
                for t in [c, c + n] {
                    self.write(
                        &format!("sys/devices/system/cpu/cpu{t}/topology/thread_siblings_list"),
                        &format!("{c},{}", c + n),
                    );
                }
            }
        }
        pub fn pci(&self, addr: &str, vendor: &str, class: &str, numa: i32, local: Option<&str>) {
            let d = format!("sys/bus/pci/devices/{addr}");
            self.write(&format!("{d}/vendor"), vendor);
            self.write(&format!("{d}/class"), class);
            self.write(&format!("{d}/numa_node"), &numa.to_string());
            if let Some(l) = local {
                self.write(&format!("{d}/local_cpulist"), l);
            }
        }
        pub fn nvidia_info(&self, addr: &str, minor: u32, uuid: &str) {
            self.write(
                &format!("proc/driver/nvidia/gpus/{addr}/information"),
                &format!(
                    "Model: \t\t NVIDIA H200\nGPU UUID: \t {uuid}\nBus Location: \t {addr}\n\
                     Device Minor: \t {minor}"
                ),
            );
        }
    }

    impl Drop for FakeTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTree;
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse(s).unwrap()
    }

    /// 2 sockets × 8 cores × 2 threads (CPUs 0-31), 8 GPUs whose PCI order alternates NUMA
    /// nodes in pairs (as on DGX A100: GPU numbering is not NUMA order), plus a NIC and an
    /// NVSwitch that must be ignored. Driver minors are not PCI order either.
    fn dgx_like() -> FakeTree {
        let t = FakeTree::new("dgx");
        t.cpus(2, 8);
        let node_cpus = ["0-7,16-23", "8-15,24-31"];
        let gpus = [
            ("0000:07:00.0", 1),
            ("0000:0f:00.0", 1),
            ("0000:47:00.0", 0),
            ("0000:4e:00.0", 0),
            ("0000:87:00.0", 1),
            ("0000:90:00.0", 1),
            ("0000:b7:00.0", 0),
            ("0000:bd:00.0", 0),
        ];
        for (i, (addr, node)) in gpus.iter().enumerate() {
            let class = if i % 2 == 0 { "0x030200" } else { "0x030000" };
            t.pci(
                addr,
                "0x10de",
                class,
                *node,
                Some(node_cpus[*node as usize]),
            );
            // minors: reversed within each pair
            t.nvidia_info(addr, (i ^ 1) as u32, &format!("GPU-{i}{i}{i}{i}aaaa-0000"));
        }
        t.pci("0000:0c:00.0", "0x15b3", "0x020700", 0, Some("0-7"));
        t.pci("0000:c4:00.0", "0x10de", "0x068000", 1, Some("8-15"));
        t
    }

    #[test]
    fn cpulists_parse_and_print() {
        let s = set("0-3, 8,10-11");
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!(set("").len(), 0);
        assert!(CpuSet::parse("3-1").is_err());
        assert!(CpuSet::parse("x").is_err());
    }

    #[test]
    fn reads_gpus_in_pci_order_with_their_numa_nodes() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        assert_eq!(topo.gpus.len(), 8, "NIC and NVSwitch are not GPUs");
        assert_eq!(topo.gpus[0].pci, "0000:07:00.0");
        assert_eq!(topo.gpus[2].numa, Some(0));
        assert_eq!(topo.gpus[2].minor, Some(3));
        assert_eq!(topo.gpus[5].uuid.as_deref(), Some("GPU-5555aaaa-0000"));
        assert_eq!(topo.cores.len(), 16);
        assert_eq!(topo.cores[3], set("3,19"));
        assert_eq!(topo.cpu_node[&24], 1);
    }

    #[test]
    fn eight_gpus_get_disjoint_whole_cores_of_their_own_socket() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        let mask = set("0-31");
        let pools: Vec<CpuSet> = topo
            .gpus
            .iter()
            .map(|g| g.local_cpus.clone().unwrap())
            .collect();
        let (cpus, notes) = split_cpus(&topo, &mask, &pools).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        // GPUs 0,1,4,5 are on node 1 (cores 8-15), GPUs 2,3,6,7 on node 0: two cores each.
        let want = [
            "8-9,24-25",
            "10-11,26-27",
            "0-1,16-17",
            "2-3,18-19",
            "12-13,28-29",
            "14-15,30-31",
            "4-5,20-21",
            "6-7,22-23",
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(cpus[i].to_string(), *w, "worker {i}");
            assert_eq!(topo.nodes_of(&cpus[i]).len(), 1);
        }
        for i in 0..8 {
            for j in i + 1..8 {
                assert!(cpus[i].is_disjoint(&cpus[j]));
            }
        }
    }

    #[test]
    fn a_cgroup_restricted_mask_is_respected() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        // Slurm gave the launcher 4 cores per socket, without their hyperthreads.
        let mask = set("0-3,8-11");
        let pools: Vec<CpuSet> = topo
            .gpus
            .iter()
            .map(|g| g.local_cpus.clone().unwrap())
            .collect();
        let (cpus, _) = split_cpus(&topo, &mask, &pools).unwrap();
        let want = ["8", "9", "0", "1", "10", "11", "2", "3"];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(cpus[i].to_string(), *w, "worker {i}");
        }
        // Too few CPUs for the workers: a clear error.
        let e = split_cpus(&topo, &set("0"), &pools[..2]).unwrap_err();
        assert!(e.to_string().contains("--cpus-per-task"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn gpu_local_cpus_outside_the_mask_fall_back_to_the_mask() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        let mask = set("0-3"); // socket 0 only
        let pools = vec![topo.gpus[0].local_cpus.clone().unwrap()]; // a socket-1 GPU
        let (cpus, notes) = split_cpus(&topo, &mask, &pools).unwrap();
        assert_eq!(cpus[0].to_string(), "0-3");
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn cpu_runs_split_the_mask_evenly_by_cores() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        let mask = set("0-31");
        let (cpus, _) = split_cpus(&topo, &mask, &vec![mask.clone(); 3]).unwrap();
        // 16 cores over 3 workers: 6, 5, 5
        assert_eq!(cpus[0].to_string(), "0-5,16-21");
        assert_eq!(cpus[1].to_string(), "6-10,22-26");
        assert_eq!(cpus[2].to_string(), "11-15,27-31");
        // 4 workers on 2 single-thread CPUs + nothing else: error; 2 on 2: one each
        let (cpus, _) = split_cpus(&topo, &set("0,16"), &vec![set("0,16"); 2]).unwrap();
        assert_eq!(
            (cpus[0].to_string(), cpus[1].to_string()),
            ("0".into(), "16".into())
        );
    }

    #[test]
    fn slurm_step_gpus_and_cuda_visible_devices() {
        let t = dgx_like();
        let topo = Topology::read(&t.paths());
        // No restriction: every GPU in PCI order.
        assert_eq!(
            visible_gpus(&topo, None, None).unwrap(),
            (0..8).collect::<Vec<_>>()
        );
        // Plain indices (PCI order under CUDA_DEVICE_ORDER=PCI_BUS_ID), in the given order.
        assert_eq!(visible_gpus(&topo, Some("6,1"), None).unwrap(), [6, 1]);
        // UUID prefixes.
        assert_eq!(
            visible_gpus(&topo, Some("GPU-3333,GPU-0000"), None).unwrap(),
            [3, 0]
        );
        // Slurm gave physical GPUs (minors) 2 and 5 = PCI positions 3 and 4.
        // Without a device cgroup CUDA_VISIBLE_DEVICES repeats them ...
        assert_eq!(
            visible_gpus(&topo, Some("2,5"), Some(&[2, 5])).unwrap(),
            [3, 4]
        );
        // ... with ConstrainDevices it counts within the allowed devices.
        assert_eq!(
            visible_gpus(&topo, Some("0,1"), Some(&[2, 5])).unwrap(),
            [3, 4]
        );
        assert_eq!(visible_gpus(&topo, None, Some(&[5, 2])).unwrap(), [3, 4]);
        // Errors name the entry.
        let e = visible_gpus(&topo, Some("0,1,2"), Some(&[2, 5])).unwrap_err();
        assert!(e.to_string().contains("entry 2 is out of range"), "{e}");
        assert!(visible_gpus(&topo, Some("MIG-abc"), None).is_err());
        assert!(visible_gpus(&topo, Some("1,1"), None)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(visible_gpus(&topo, None, Some(&[9])).is_err());
        // An empty CUDA_VISIBLE_DEVICES hides every GPU.
        assert_eq!(
            visible_gpus(&topo, Some(""), None).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn an_empty_tree_has_no_gpus_and_single_thread_cores() {
        let t = FakeTree::new("empty");
        let topo = Topology::read(&t.paths());
        assert!(topo.gpus.is_empty());
        let (cpus, _) = split_cpus(&topo, &set("0-3"), &vec![set("0-3"); 2]).unwrap();
        assert_eq!(
            (cpus[0].to_string(), cpus[1].to_string()),
            ("0-1".into(), "2-3".into())
        );
    }
}

/// The CPUs this process may run on (`sched_getaffinity`): what cgroups, `taskset` or
/// `srun --cpu-bind` left to the launcher, and the most its workers may get.
pub fn own_cpu_mask() -> Result<CpuSet> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| Error::Usage(format!("sched_getaffinity: {e}")))?;
    Ok(CpuSet(
        (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .map(|c| c as u32)
            .collect(),
    ))
}
