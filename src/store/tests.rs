use super::*;

#[test]
fn the_default_applies_only_when_nothing_is_configured() {
    let e = BackendError("down".into());
    let open = FailurePolicy::new("p", None, OnBackendError::Allow);
    assert_eq!(open.fail(&e), Unavailable(OnBackendError::Allow));
    let closed = FailurePolicy::new("p", None, OnBackendError::Deny);
    assert_eq!(closed.fail(&e), Unavailable(OnBackendError::Deny));
    let set = FailurePolicy::new("p", Some(OnBackendError::Deny), OnBackendError::Allow);
    assert_eq!(set.fail(&e), Unavailable(OnBackendError::Deny));
}

/// The key layout gateways share (README, "rate-limit key layout";
/// plugins/idempotency.md): a gateway of this version and one of the
/// version before it count in the same buckets and records.
#[test]
fn key_prefixes_are_those_of_earlier_versions() {
    let cfg = crate::config::load_str(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n[plugins.rl]\ntype = \"rate_limit\"\nrate = \"10/s\"\nkey = \"header:X-Tenant\"\nbackend = \"redis\"\n[plugins.idem]\ntype = \"idempotency\"\nbackend = \"redis\"\nmethods = [\"POST\", \"PUT\"]\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"rl\", \"idem\"]\n",
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let rl = cfg
        .plugin_config::<crate::plugins::rate_limit::RateLimitConfig>("rl")
        .unwrap();
    let idem = cfg
        .plugin_config::<crate::plugins::idempotency::IdempotencyConfig>("idem")
        .unwrap();
    // The `Debug` texts the digests of the version before this one were of.
    let shared = crate::plugins::rate_limit::RateLimitConfig {
        max_keys: 0,
        ..rl.clone()
    };
    assert_eq!(
        format!("{shared:?}"),
        "RateLimitConfig { rate: Rate { count: 10, per: 1s }, burst: None, key: \"header:X-Tenant\", backend: Redis, on_backend_error: None, max_keys: 0 }"
    );
    assert_eq!(
        format!("{idem:?}"),
        "IdempotencyConfig { header: \"Idempotency-Key\", methods: [\"POST\", \"PUT\"], ttl: 1day, required: false, max_response: Size(1048576), max_size: Size(67108864), backend: Redis, on_backend_error: None, unknown_outcome_lock: 1m }"
    );
    assert_eq!(
        key_prefix("rl", "rl", &shared),
        "tollgate:rl:rl:73241e50c047:"
    );
    assert_eq!(
        key_prefix("idem", "idem", idem),
        "tollgate:idem:idem:6e872c35bc35:"
    );
}
