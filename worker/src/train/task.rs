//! What `train` trains: the prediction network, or the activity-recognition task with the
//! labels of its training and validation splits.

use std::path::Path;

use convtt_common::config::ValidConfig;
use convtt_common::model::Network;
use tch::nn::VarStore;

use super::activity;
use crate::data;
use crate::error::{Error, Result};

/// What `train` trains: the prediction network, or the activity task with its split labels.
pub(crate) enum Task {
    Predict(Network),
    Activity(Box<activity::ActivityTask>, SplitLabels),
}

/// Labels of the training and validation splits of an activity run.
pub(crate) struct SplitLabels {
    pub(crate) train: Vec<i64>,
    pub(crate) valid: Vec<i64>,
}

impl Task {
    pub(crate) fn new(vs: &VarStore, cfg: &ValidConfig) -> Result<Self> {
        if !cfg.activity.enabled {
            return Ok(Task::Predict(Network::new(&vs.root(), &cfg.model)));
        }
        if cfg.data.source != convtt_common::config::DataSource::Shards {
            return Err(Error::Usage(
                "activity.enabled needs data.source = \"shards\" (a labelled dataset)".into(),
            ));
        }
        let space = activity::LabelSpace::open(cfg)?;
        let k = space.classes.len();
        let ds = data::Dataset::open(Path::new(&cfg.data.dataset))?;
        let train = ds.split(&cfg.data.train_split)?.labels(k)?;
        let valid = match ds.split(&cfg.data.valid_split) {
            Ok(s) => s.labels(k)?,
            Err(_) => Vec::new(),
        };
        let task = activity::ActivityTask::new(vs, cfg, space);
        Ok(Task::Activity(Box::new(task), SplitLabels { train, valid }))
    }

    pub(crate) fn data_config(&self, cfg: &ValidConfig) -> convtt_common::config::DataConfig {
        match self {
            Task::Predict(_) => cfg.data.clone(),
            Task::Activity(a, _) => a.data_config(&cfg.data),
        }
    }

    pub(crate) fn valid_frames(&self, cfg: &ValidConfig) -> usize {
        match self {
            Task::Predict(_) => cfg.data.clip_frames(),
            Task::Activity(a, _) => a.valid_frames(cfg),
        }
    }
}
