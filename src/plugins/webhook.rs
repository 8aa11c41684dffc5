//! `webhook_signature`: under construction.

use super::{BuildCtx, BuildResult, Phase, Plugin};
use crate::config::WebhookSignatureConfig;
use async_trait::async_trait;

pub struct WebhookSignature;

impl WebhookSignature {
    pub fn new(_c: &WebhookSignatureConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Err(super::build_error(
            "",
            "plugin type \"webhook_signature\" is not supported yet by this build of tollgate",
        ))
    }
}

#[async_trait]
impl Plugin for WebhookSignature {
    fn phase(&self) -> Phase {
        Phase::Auth
    }
}
