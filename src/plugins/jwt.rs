//! `jwt`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::JwtConfig;
use async_trait::async_trait;

pub struct Jwt;

impl Jwt {
    pub fn new(_c: &JwtConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"jwt\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for Jwt {
    fn phase(&self) -> Phase {
        Phase::Auth
    }
}
