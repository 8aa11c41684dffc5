//! `cors`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::CorsConfig;
use async_trait::async_trait;

pub struct Cors;

impl Cors {
    pub fn new(_c: &CorsConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"cors\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for Cors {
    fn phase(&self) -> Phase {
        Phase::Cors
    }
}
