//! `idempotency`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::IdempotencyConfig;
use async_trait::async_trait;

pub struct Idempotency;

impl Idempotency {
    pub fn new(_c: &IdempotencyConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"idempotency\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for Idempotency {
    fn phase(&self) -> Phase {
        Phase::Idempotency
    }
}
