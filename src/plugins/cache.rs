//! `cache`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::CacheConfig;
use async_trait::async_trait;

pub struct Cache;

impl Cache {
    pub fn new(_c: &CacheConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"cache\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for Cache {
    fn phase(&self) -> Phase {
        Phase::Cache
    }
}
