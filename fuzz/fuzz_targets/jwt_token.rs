//! JWT headers, claims and structure from arbitrary tokens: refused with a
//! reason or accepted, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate::config::{load_str, PluginConfig};
use tollgate::plugins::jwt::Jwt;
use tollgate::plugins::BuildCtx;

fn jwt() -> &'static Jwt {
    static J: OnceLock<Jwt> = OnceLock::new();
    J.get_or_init(|| {
        std::env::set_var("FUZZ_JWT_SECRET", "fuzz-secret-at-least-32-bytes-long!!");
        let src = "[plugins.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"FUZZ_JWT_SECRET\"\nissuer = \"https://id.example\"\naudience = [\"a\", \"b\"]\nrequired_claims = [\"scope\"]\nforward_claims = { sub = \"x-user-id\" }\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"j\"]\n";
        let cfg = load_str(src, None, std::path::Path::new(".")).expect("valid config");
        let Some(PluginConfig::Jwt(c)) = cfg.plugins.get("j").cloned() else { panic!("jwt") };
        Jwt::new(&c, &BuildCtx { name: "j", config: &cfg }).unwrap_or_else(|e| panic!("builds: {e:?}"))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = jwt().verify(token, 1_700_000_000);
        let _ = jwt().verify_uncached(token, 1_700_000_000);
    }
});
