use super::*;

#[test]
fn keys() {
    assert!(valid_key(b"8e03978e-40d5-43e8-bc93-6894a57f9324"));
    assert!(!valid_key(b""));
    assert!(!valid_key(b"has space"));
    assert!(!valid_key(&[b'a'; 256]));
}

/// `methods` are config methods: every bad one is refused when the file is
/// read, at its index, with the one method rule's message.
#[test]
fn bad_methods_are_refused_at_their_index() {
    let errs = crate::config::load_str(
        "[plugins.idem]\ntype = \"idempotency\"\nmethods = [\"post\", \"PUT\", \"BAD METHOD\"]\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"idem\"]\n",
        None,
        std::path::Path::new("."),
    )
    .err()
    .unwrap();
    let found: Vec<_> = errs
        .0
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "plugins.idem.methods[0]",
                "invalid method \"post\" (write it in upper case)"
            ),
            (
                "plugins.idem.methods[2]",
                "invalid method \"BAD METHOD\" (write it in upper case)"
            ),
        ]
    );
    let cfg = crate::config::load_str(
        "[plugins.idem]\ntype = \"idempotency\"\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"idem\"]\n",
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let c = cfg.plugin_config::<IdempotencyConfig>("idem").unwrap();
    assert_eq!(format!("{:?}", c.methods), "[\"POST\", \"PATCH\"]");
}
