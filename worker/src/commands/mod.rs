//! Subcommands that inspect and run models: `forward`, `model-info` and `bench`.

pub mod bench;
pub mod forward;
pub mod model_info;

use tch::Device;

use crate::cli::ConfigArgs;
use crate::error::{Error, Result};
use convtt_common::config::ValidConfig;

/// Loads and validates the config with its `--set` overrides.
pub fn load_config(args: &ConfigArgs) -> Result<ValidConfig> {
    convtt_common::config::load(&args.config, &args.overrides).map_err(|e| Error::Common(e.into()))
}

/// `cpu`, `cuda` (device 0) or `cuda:N`; CUDA must be usable here.
pub fn parse_device(s: &str) -> Result<Device> {
    let device = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => {
                return Err(Error::Usage(format!(
                    "--device must be cpu, cuda or cuda:N (got {s:?})"
                )))
            }
        },
    };
    let Device::Cuda(i) = device else {
        unreachable!("only CUDA devices reach here")
    };
    let count = if tch::Cuda::is_available() {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    if i >= count {
        return Err(Error::Unavailable(format!(
            "--device {s}: this machine has {count} usable CUDA device(s)"
        )));
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            assert!(matches!(parse_device(bad), Err(Error::Usage(_))), "{bad}");
        }
        if !tch::Cuda::is_available() {
            assert!(matches!(parse_device("cuda:0"), Err(Error::Unavailable(_))));
        }
    }
}
