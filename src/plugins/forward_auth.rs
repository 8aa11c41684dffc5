//! `forward_auth`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::ForwardAuthConfig;
use async_trait::async_trait;

pub struct ForwardAuth;

impl ForwardAuth {
    pub fn new(_c: &ForwardAuthConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"forward_auth\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for ForwardAuth {
    fn phase(&self) -> Phase {
        Phase::Auth
    }
}
