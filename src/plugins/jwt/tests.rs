use super::*;
use crate::config::Config;
use crate::pipeline::{BuildError, KeyPath};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::time::{Duration, Instant};

const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7515_A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTEz/3hlTzBuzvR6h
xMh2lrlQJiyCIjgjGlFjETigHmChRANCAAR9JWUvQkf4H96U1O2exqGKNU0GhkaU
LwV4bUsA7rbkk7pbrKQi/3i63yUAzzrAf63YCxxZDMYbPXxIlV003ZJk
-----END PRIVATE KEY-----
";

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A config with one plugin table `[plugins.t]` (plus `files` beside it).
fn build(table: &str, files: &[(&str, &[u8])]) -> (BuildResult<Jwt>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let src = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[upstreams.u]\ntargets = [\"127.0.0.1:2\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\npath = \"/\"\nplugins = [\"t\"]\n\n[plugins.t]\ntype = \"jwt\"\n{table}\n"
    );
    // Some keys are checked when the config is read (`algorithms`): their
    // errors come back as build errors at the same key path.
    let cfg: Config = match crate::config::load_str(&src, None, dir.path()) {
        Ok(cfg) => cfg,
        Err(e) => return (Err(e.0.iter().map(read_error).collect()), dir),
    };
    let Some(jc) = cfg.plugin_config::<JwtConfig>("t") else {
        panic!("not jwt")
    };
    let r = Jwt::new(
        jc,
        &BuildCtx {
            name: "t",
            config: &cfg,
        },
    );
    (r, dir)
}

/// A config error in `[plugins.t]` as a build error of the plugin.
fn read_error(e: &crate::config::ConfigError) -> BuildError {
    let Some(rel) = e.path.strip_prefix("plugins.t.") else {
        panic!("{e}")
    };
    let mut path = KeyPath::default();
    for part in rel.split('.') {
        let mut pieces = part.split('[');
        path = path.key(pieces.next().unwrap_or(""));
        for i in pieces {
            path = path.index(i.trim_end_matches(']').parse().unwrap());
        }
    }
    BuildError {
        path,
        message: e.message.clone(),
    }
}

fn ok(table: &str, files: &[(&str, &[u8])]) -> (Jwt, tempfile::TempDir) {
    let (r, d) = build(table, files);
    match r {
        Ok(j) => (j, d),
        Err(e) => panic!("{e:?}"),
    }
}

fn err(table: &str, files: &[(&str, &[u8])]) -> Vec<BuildError> {
    match build(table, files).0 {
        Ok(_) => panic!("built: {table}"),
        Err(e) => e,
    }
}

fn hs(claims: Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn raw(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn secret_jwt(extra: &str) -> Jwt {
    std::env::set_var("TOLLGATE_UNIT_JWT_SECRET", SECRET);
    ok(
        &format!("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_SECRET\"\n{extra}"),
        &[],
    )
    .0
}

const NOW: u64 = 1_700_000_000;

#[test]
fn rfc7515_a1() {
    let jwks = json!({"keys": [{"kty": "oct", "k": RFC7515_A1_KEY}]}).to_string();
    let (j, _d) = ok(
        "algorithms = [\"HS256\"]\njwks_file = \"jwks.json\"\nleeway = \"0s\"",
        &[("jwks.json", jwks.as_bytes())],
    );
    // Valid signature: accepted while `exp` (1300819380) lies ahead…
    let v = j.verify(RFC7515_A1_TOKEN, 1_300_819_000).unwrap();
    assert_eq!(v.claims["iss"], "joe");
    assert_eq!(v.consumer, None);
    // …and expired afterwards, even from the cache.
    assert_eq!(
        j.verify(RFC7515_A1_TOKEN, 1_300_819_380).unwrap_err(),
        Reason::Expired
    );
    assert_eq!(
        j.verify_uncached(RFC7515_A1_TOKEN, NOW).unwrap_err(),
        Reason::Expired
    );
    // One flipped signature character.
    let bad = RFC7515_A1_TOKEN.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
    assert_eq!(
        j.verify(&bad, 1_300_819_000).unwrap_err(),
        Reason::BadSignature
    );
}

#[test]
fn hmac_claims() {
    let j = secret_jwt("issuer = \"https://id\"\naudience = [\"api\", \"other\"]\nrequired_claims = [\"scope\"]\nforward_claims = { sub = \"x-user-id\", roles = \"x-roles\", n = \"x-n\" }");
    let good = json!({"sub": "alice", "exp": NOW + 60, "iss": "https://id", "aud": ["x", "api"], "scope": "read", "roles": ["a", "b"], "n": 7});
    let v = j.verify(&hs(good.clone(), SECRET.as_bytes()), NOW).unwrap();
    assert_eq!(v.consumer.as_deref(), Some("alice"));
    let h: Vec<(&str, &str)> = v
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(
        h,
        vec![
            ("x-n", "7"),
            ("x-roles", "[\"a\",\"b\"]"),
            ("x-user-id", "alice")
        ]
    );

    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        j.verify(&hs(c, SECRET.as_bytes()), NOW)
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        j.verify(&hs(c, SECRET.as_bytes()), NOW)
    };
    assert_eq!(
        with("iss", json!("https://evil")).unwrap_err(),
        Reason::BadIssuer
    );
    assert_eq!(without("iss").unwrap_err(), Reason::BadIssuer);
    assert_eq!(with("aud", json!("nope")).unwrap_err(), Reason::BadAudience);
    assert!(with("aud", json!("other")).is_ok());
    assert_eq!(without("aud").unwrap_err(), Reason::BadAudience);
    assert_eq!(without("scope").unwrap_err(), Reason::MissingClaim);
    assert_eq!(
        with("scope", Value::Null).unwrap_err(),
        Reason::MissingClaim
    );
    assert_eq!(without("exp").unwrap_err(), Reason::MissingClaim);
    assert_eq!(
        with("exp", json!("tomorrow")).unwrap_err(),
        Reason::BadClaimValue
    );
    assert_eq!(with("exp", json!(NOW - 31)).unwrap_err(), Reason::Expired);
    assert!(
        with("exp", json!(NOW - 29)).is_ok(),
        "within the 30s leeway"
    );
    assert_eq!(
        with("nbf", json!(NOW + 31)).unwrap_err(),
        Reason::NotYetValid
    );
    assert!(with("nbf", json!(NOW + 29)).is_ok());
    assert_eq!(
        with("sub", json!("a\r\nx-admin: 1")).unwrap_err(),
        Reason::BadClaimValue
    );
    // Forwarded claims that are not visible ASCII are percent-encoded (SPEC §3).
    let forwarded = |k: &str, val: Value, header: &str| {
        let v = with(k, val).unwrap();
        let (_, h) = v.headers.iter().find(|(n, _)| n == header).unwrap();
        h.to_str().unwrap().to_string()
    };
    assert_eq!(forwarded("n", json!("tab\there"), "x-n"), "tab%09here");
    assert_eq!(forwarded("n", json!("a\r\nx: 1"), "x-n"), "a%0D%0Ax: 1");
    assert_eq!(
        forwarded("n", json!("José 100%"), "x-n"),
        "Jos%C3%A9 100%25"
    );
    assert_eq!(forwarded("n", json!(" pad "), "x-n"), "%20pad%20");
    assert_eq!(forwarded("n", json!("\u{7f}\u{85}"), "x-n"), "%7F%C2%85");
    assert_eq!(forwarded("n", json!("read write"), "x-n"), "read write");
    assert_eq!(forwarded("n", json!(""), "x-n"), "");
    assert_eq!(
        forwarded("roles", json!(["ok", "bad\n", "é"]), "x-roles"),
        "[\"ok\",\"bad\\n\",\"%C3%A9\"]"
    );
    // A consumer must be a string without control characters, or a number.
    assert_eq!(
        with("sub", json!({"o": 1})).unwrap_err(),
        Reason::BadClaimValue
    );
    let v = with("sub", json!(42)).unwrap();
    assert_eq!(v.consumer.as_deref(), Some("42"));
    // An absent forwarded claim is simply not forwarded; an absent sub means no consumer.
    let v = without("roles").unwrap();
    assert!(v.headers.iter().all(|(n, _)| n != "x-roles"));
    assert_eq!(without("sub").unwrap().consumer, None);
    // Another secret.
    assert_eq!(
        j.verify(&hs(good.clone(), b"another-secret-another-secret-xx"), NOW)
            .unwrap_err(),
        Reason::BadSignature
    );
}

#[test]
fn dates_beyond_year_9999_and_duplicate_names_are_refused() {
    let j = secret_jwt("");
    let ok = |payload: &str| {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        j.verify_uncached(&format!("{msg}.{sig}"), NOW)
    };
    assert!(ok(&format!(r#"{{"sub":"a","exp":{}}}"#, NOW + 60)).is_ok());
    // The last second of year 9999 is a date; anything later is not.
    assert!(ok(r#"{"sub":"a","exp":253402300799}"#).is_ok());
    for exp in [
        "253402300800",
        "1e300",
        "18446744073709551616",
        "18446744073709551615",
        "9223372036854775807",
        "1.7976931348623157e308",
        "-1",
        "\"9999999999\"",
        "null",
        "true",
        "[1]",
    ] {
        assert_eq!(
            ok(&format!(r#"{{"sub":"a","exp":{exp}}}"#)).unwrap_err(),
            Reason::BadClaimValue,
            "exp {exp}"
        );
        let nbf = format!(r#"{{"sub":"a","exp":{},"nbf":{exp}}}"#, NOW + 60);
        assert_eq!(ok(&nbf).unwrap_err(), Reason::BadClaimValue, "nbf {exp}");
        let iat = format!(r#"{{"sub":"a","exp":{},"iat":{exp}}}"#, NOW + 60);
        assert_eq!(ok(&iat).unwrap_err(), Reason::BadClaimValue, "iat {exp}");
    }
    // Beyond what a double holds: not JSON serde can read, so not a token.
    assert_eq!(ok(r#"{"exp":1e400}"#).unwrap_err(), Reason::Malformed);
    // Duplicate names, in either order, at any depth.
    let exp = NOW + 60;
    for p in [
        format!(r#"{{"exp":1,"exp":{exp}}}"#),
        format!(r#"{{"exp":{exp},"sub":"a","exp":{exp}}}"#),
        format!(r#"{{"exp":{exp},"sub":"a","sub":"admin"}}"#),
        format!(r#"{{"exp":{exp},"ctx":{{"role":"u","role":"admin"}}}}"#),
        format!(r#"{{"exp":{exp},"l":[{{"a":1,"a":2}}]}}"#),
        format!(r#"{{"exp":{exp},"e\u0078p":1,"exp":{exp}}}"#),
    ] {
        assert_eq!(ok(&p).unwrap_err(), Reason::Malformed, "{p}");
    }
    // The same in the JOSE header.
    let claims = json!({"sub": "a", "exp": exp});
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    for h in [
        r#"{"alg":"none","alg":"HS256"}"#,
        r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
    ] {
        let msg = format!("{}.{body}", URL_SAFE_NO_PAD.encode(h));
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            j.verify_uncached(&format!("{msg}.{sig}"), NOW).unwrap_err(),
            Reason::Malformed,
            "{h}"
        );
    }
    assert_eq!(
        strict_object(br#"{"a":{"b":1},"c":{"b":2}}"#)
            .unwrap()
            .len(),
        2
    );
    assert!(strict_object(b"[1]").is_none());
}

#[test]
fn consumer_claim_required_when_configured() {
    let j = secret_jwt("consumer_claim = \"client_id\"");
    let t = hs(
        json!({"sub": "alice", "client_id": "acme", "exp": NOW + 60}),
        SECRET.as_bytes(),
    );
    assert_eq!(j.verify(&t, NOW).unwrap().consumer.as_deref(), Some("acme"));
    let t = hs(json!({"sub": "alice", "exp": NOW + 60}), SECRET.as_bytes());
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::MissingClaim);
}

#[test]
fn hostile_tokens() {
    let j = secret_jwt("");
    let claims = json!({"sub": "alice", "exp": NOW + 60});
    let good = hs(claims.clone(), SECRET.as_bytes());
    assert!(j.verify(&good, NOW).is_ok());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    for t in [
        "",
        ".",
        "..",
        "abc",
        &format!("{h}.{p}"),
        &format!("{h}.{p}.{s}.{s}"),
        &format!("{h}.{p}."),
        &format!("{h}..{s}"),
        &format!("{h}.{p}.{s}="),
        &format!("{h}.{p}!.{s}"),
        &format!("{h}.{p}.{s}xy"),
        &format!("e30.{p}.{s}"),
        &format!("bm90IGpzb24.{p}.{s}"),
    ] {
        assert_eq!(j.verify(t, NOW).unwrap_err(), Reason::Malformed, "{t:?}");
    }
    for alg in ["none", "None", "NONE", "nOnE", "HS257", "RS256"] {
        let t = raw(&json!({"alg": alg, "typ": "JWT"}), &claims, "");
        assert_eq!(
            j.verify(&t, NOW).unwrap_err(),
            Reason::AlgNotAllowed,
            "{alg}"
        );
        let t = raw(&json!({"alg": alg}), &claims, s);
        assert_eq!(
            j.verify(&t, NOW).unwrap_err(),
            Reason::AlgNotAllowed,
            "{alg}"
        );
    }
    // A header HS256 signature moved onto another payload.
    let forged = raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "admin", "exp": NOW + 60}),
        s,
    );
    assert_eq!(j.verify(&forged, NOW).unwrap_err(), Reason::BadSignature);
    // `crit` is refused; `jku`/`x5u`/`jwk` are ignored (the configured secret still decides).
    let hdr = json!({"alg": "HS256", "crit": ["exp"]});
    let t = encode_with(&hdr, &claims, SECRET.as_bytes());
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::Malformed);
    let hdr = json!({"alg": "HS256", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x", "jwk": {"kty": "oct", "k": "AAAA"}, "kid": "../../etc/passwd"});
    assert!(j
        .verify(&encode_with(&hdr, &claims, SECRET.as_bytes()), NOW)
        .is_ok());
    let t = encode_with(&hdr, &claims, b"AAAA-not-the-secret-AAAA-AAAA-AAAA");
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::BadSignature);
}

/// A token with an arbitrary header, HS256-signed.
fn encode_with(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{msg}.{sig}")
}

#[test]
fn jwks_key_families_and_kids() {
    let oct = URL_SAFE_NO_PAD.encode(SECRET);
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": oct},
        {"kty": "oct", "kid": "enc", "use": "enc", "k": oct},
        {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB"},
    ]})
    .to_string();
    let (j, _d) = ok(
        "algorithms = [\"HS256\", \"RS256\"]\njwks_file = \"k.json\"",
        &[("k.json", jwks.as_bytes())],
    );
    let claims = json!({"sub": "a", "exp": NOW + 60});
    let t = encode_with(
        &json!({"alg": "HS256", "kid": "hmac"}),
        &claims,
        SECRET.as_bytes(),
    );
    assert!(j.verify(&t, NOW).is_ok());
    // No kid: tried against every HMAC key.
    let t = encode_with(&json!({"alg": "HS256"}), &claims, SECRET.as_bytes());
    assert!(j.verify(&t, NOW).is_ok());
    // An encryption key is not a signing key.
    let t = encode_with(
        &json!({"alg": "HS256", "kid": "enc"}),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::UnknownKid);
    // HS256 naming the RSA key: the RSA key is never an HMAC secret.
    let t = encode_with(
        &json!({"alg": "HS256", "kid": "rsa"}),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::KeyMismatch);
    let t = encode_with(
        &json!({"alg": "HS256", "kid": "../../etc/passwd"}),
        &claims,
        SECRET.as_bytes(),
    );
    assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::UnknownKid);
}

#[test]
fn algorithms_are_read_as_a_closed_set() {
    std::env::set_var("TOLLGATE_UNIT_JWT_OK", SECRET);
    let e = err(
        "algorithms = [\"HS256\", \" NONE \", \"hs256\", 7]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
        &[],
    );
    let got: Vec<(String, &str)> = e
        .iter()
        .map(|e| (e.path.to_string(), e.message.as_str()))
        .collect();
    assert_eq!(
        got[0],
        (
            "algorithms[1]".to_string(),
            "alg \"none\" (an unsigned token) is never accepted"
        )
    );
    assert_eq!(got[1], ("algorithms[2]".to_string(), "unknown algorithm \"hs256\": use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"));
    assert_eq!(got[2].0, "algorithms[3]");
    assert_eq!(got.len(), 3);
    let (j, _d) = ok(
        "algorithms = [\"HS256\", \"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
        &[],
    );
    assert_eq!(j.algorithms, [Algorithm::HS256], "repeats are dropped");
}

#[test]
fn build_errors() {
    std::env::set_var("TOLLGATE_UNIT_JWT_SHORT", "short");
    std::env::set_var("TOLLGATE_UNIT_JWT_OK", SECRET);
    std::env::set_var("TOLLGATE_UNIT_JWT_EMPTY", "");
    let keys = |e: Vec<BuildError>| {
        e.into_iter()
            .map(|e| e.path.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(err(
            "algorithms = [\"none\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["algorithms[0]"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\", \"None\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["algorithms[1]"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"hs256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["algorithms[0]"]
    );
    assert_eq!(
        keys(err(
            "algorithms = []\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["algorithms"]
    );
    assert_eq!(keys(err("algorithms = [\"HS256\"]", &[])), [""]);
    assert_eq!(
        keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\njwks_url = \"http://127.0.0.1:1/\"", &[])),
        [""]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_UNSET_XYZ\"",
            &[]
        )),
        ["secret_env"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_EMPTY\"",
            &[]
        )),
        ["secret_env"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_SHORT\"",
            &[]
        )),
        ["secret_env"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS512\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["secret_env"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\", \"RS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
            &[]
        )),
        ["algorithms[1]"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\", \"HS384\"]\njwks_url = \"https://id.example/jwks\"",
            &[]
        )),
        ["algorithms[1]"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\"]\njwks_url = \"ftp://id.example/jwks\"",
            &[]
        )),
        ["jwks_url"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\"]\njwks_url = \"https://id.example/\"\njwks_cooldown = \"0s\"",
            &[]
        )),
        ["jwks_cooldown"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\"]\npublic_key_file = \"missing.pem\"",
            &[]
        )),
        ["public_key_file"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"ES256\"]\npublic_key_file = \"k.pem\"",
            &[("k.pem", EC_PRIVATE.as_bytes())]
        )),
        ["public_key_file"]
    );
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\"]\njwks_file = \"k.json\"",
            &[("k.json", b"{\"keys\": []}")]
        )),
        ["jwks_file"]
    );
    let short_rsa =
        json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"}]})
            .to_string();
    assert_eq!(
        keys(err(
            "algorithms = [\"RS256\"]\njwks_file = \"k.json\"",
            &[("k.json", short_rsa.as_bytes())]
        )),
        ["jwks_file", "jwks_file"]
    );
    let short_oct = json!({"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}).to_string();
    assert_eq!(
        keys(err(
            "algorithms = [\"HS256\"]\njwks_file = \"k.json\"",
            &[("k.json", short_oct.as_bytes())]
        )),
        ["jwks_file", "jwks_file"]
    );
    assert_eq!(
        keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nforward_claims = { sub = \"x-consumer\", a = \"host\", b = \"bad header\" }", &[])),
        ["forward_claims.a", "forward_claims.b", "forward_claims.sub"]
    );
    assert_eq!(
        keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nforward_claims = { a = \"x-a\", b = \"X-A\" }", &[])),
        ["forward_claims.b"]
    );
    assert_eq!(keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nissuer = \"\"\naudience = []", &[])), ["issuer", "audience"]);
}

#[test]
fn tokens_over_the_size_bound_are_verified_but_never_cached() {
    let j = secret_jwt("leeway = \"0s\"");
    let big = "x".repeat(MAX_CACHED_TOKEN);
    let t = hs(
        json!({"sub": "a", "pad": big, "exp": NOW + 60}),
        SECRET.as_bytes(),
    );
    assert!(t.len() > MAX_CACHED_TOKEN);
    assert!(j.verify(&t, NOW).is_ok());
    assert!(j.verify(&t, NOW).is_ok());
    assert_eq!(j.cached_tokens(), 0);
    let small = hs(json!({"sub": "a", "exp": NOW + 60}), SECRET.as_bytes());
    assert!(j.verify(&small, NOW).is_ok());
    assert_eq!(j.cached_tokens(), 1);
}

#[test]
fn cache_is_bounded_and_honours_exp_and_key_changes() {
    let j = secret_jwt("leeway = \"0s\"");
    for i in 0..(CACHE_ENTRIES + 3000) {
        let t = hs(
            json!({"sub": "a", "i": i, "exp": NOW + 60}),
            SECRET.as_bytes(),
        );
        j.verify(&t, NOW).unwrap();
    }
    assert!(j.cached_tokens() <= CACHE_ENTRIES, "{}", j.cached_tokens());
    assert!(j.cached_tokens() >= CACHE_ENTRIES / 4);
    let t = hs(json!({"sub": "a", "exp": NOW + 60}), SECRET.as_bytes());
    assert!(j.verify(&t, NOW).is_ok());
    assert!(j.verify(&t, NOW + 59).is_ok());
    assert_eq!(j.verify(&t, NOW + 60).unwrap_err(), Reason::Expired);

    // An entry verified under one key set is not used under another.
    let cache = Cache::new(100);
    let v = Arc::new(Verified {
        claims: Arc::new(Map::new()),
        consumer: None,
        headers: vec![],
    });
    cache.insert(
        [7; 32],
        Entry {
            verified: v,
            exp: 100.0,
            nbf: Some(50.0),
            generation: 1,
        },
    );
    assert!(cache.get(&[7; 32], 1, 60.0, 0.0).is_some());
    assert!(cache.get(&[7; 32], 1, 40.0, 0.0).is_none(), "before nbf");
    assert!(cache.get(&[7; 32], 2, 60.0, 0.0).is_none(), "other key set");
}

#[test]
fn bearer_parsing() {
    let req = |v: &[&str]| {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in v {
            r.append_header("authorization", *v).unwrap();
        }
        r
    };
    assert_eq!(bearer(&req(&[])), Err(Reason::MissingToken));
    assert_eq!(bearer(&req(&["Basic YTpi"])), Err(Reason::MissingToken));
    assert_eq!(bearer(&req(&["Bearer"])), Err(Reason::Malformed));
    assert_eq!(bearer(&req(&["Bearer   "])), Err(Reason::Malformed));
    assert_eq!(
        bearer(&req(&["Bearer a.b.c", "Bearer d.e.f"])),
        Err(Reason::Malformed)
    );
    assert_eq!(bearer(&req(&["bearer a.b.c"])), Ok("a.b.c"));
    assert_eq!(bearer(&req(&["Bearer  a.b.c "])), Ok("a.b.c"));
}

#[test]
fn challenge_headers_carry_no_token() {
    let h = challenge(Reason::MissingToken);
    assert_eq!(h[0].1, "Bearer");
    let h = challenge(Reason::Expired);
    assert_eq!(
        h[0].1,
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
    );
}

#[test]
fn retry_after_is_the_time_until_the_next_fetch() {
    // Default jwks_cooldown (30s): the issue's 503 said 29 s while the
    // background retries came after 1, 2 and 4 s.
    let (j, _d) = ok(
        "algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:9/jwks\"\njwks_refresh = \"10m\"",
        &[],
    );
    let Keys::Remote(r) = &j.keys else { panic!() };
    let now = Instant::now();
    let after_failures = |failures: u32| {
        let mut st = r.lock();
        st.failures = failures;
        st.last_failure = Some(now);
        st.last_on_demand = Some(now);
        drop(st);
        r.retry_after()
    };
    assert_eq!(after_failures(1), 1);
    assert_eq!(after_failures(2), 2);
    assert_eq!(after_failures(3), 4);
    assert_eq!(after_failures(4), 8);
    // At most 64 s. After a failure no fetch starts before the backoff
    // ends, on demand neither (the issue's log said "next try in 1s" while
    // the next attempt came 2, 4, 8 s later): the cooldown does not count.
    assert_eq!(after_failures(20), 64);
    {
        let mut st = r.lock();
        st.last_on_demand = None;
    }
    assert_eq!(r.retry_after(), 64);
    // Without failures, an on-demand fetch may start at once.
    r.lock().failures = 0;
    assert_eq!(r.retry_after(), 1, "an on-demand fetch may start at once");
    // Keys loaded, refreshed every 10 minutes: the refresh is the next fetch
    // unless the cooldown ends first.
    let mut st = r.lock();
    st.failures = 0;
    st.last_success = Some(now);
    st.last_on_demand = Some(now);
    assert_eq!(r.seconds_until_next(&st), 30);
    st.last_on_demand = Some(now - Duration::from_secs(3600));
    assert_eq!(r.seconds_until_next(&st), 1);
}

#[tokio::test]
async fn unknown_kids_fetch_at_most_once_per_cooldown() {
    // Nothing listens: every fetch fails fast.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (j, _d) = ok(
        &format!("algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{port}/jwks\"\njwks_cooldown = \"1h\"\njwks_refresh = \"1h\""),
        &[],
    );
    let Keys::Remote(r) = &j.keys else { panic!() };
    let mut waits = Vec::new();
    for _ in 0..20 {
        let r = r.clone();
        waits.push(tokio::spawn(async move { r.on_demand().await }));
    }
    let mut finished = 0;
    for w in waits {
        finished += w.await.unwrap() as usize;
    }
    assert!(finished >= 1);
    assert_eq!(j.jwks_fetches(), 1);
    assert!(!r.on_demand().await, "within the cooldown: no fetch");
    assert_eq!(j.jwks_fetches(), 1);
    assert!(j.key_set().is_none());
    assert_eq!(j.verify("a.b", NOW).unwrap_err(), Reason::Malformed);
    let none = raw(&json!({"alg": "none"}), &json!({"exp": NOW + 9}), "");
    assert_eq!(j.verify(&none, NOW).unwrap_err(), Reason::AlgNotAllowed);
    let rs = raw(
        &json!({"alg": "RS256", "kid": "k"}),
        &json!({"exp": NOW + 9}),
        "AAAA",
    );
    assert_eq!(j.verify(&rs, NOW).unwrap_err(), Reason::KeysUnavailable);
    assert!(r.retry_after() >= 1);
    // The background refresh retries after a failure, but never two at once.
    r.tick();
    r.tick();
    assert!(j.jwks_fetches() <= 2);
}

#[tokio::test]
async fn a_failed_fetch_is_retried_when_its_log_line_says() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (j, _d) = ok(
        &format!("algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{port}/jwks\"\njwks_cooldown = \"1s\"\njwks_refresh = \"1h\""),
        &[],
    );
    let Keys::Remote(r) = &j.keys else { panic!() };
    let next = || r.seconds_until_next(&r.lock());
    assert!(r.on_demand().await);
    assert_eq!(j.jwks_fetches(), 1);
    assert_eq!(next(), 1);
    // Within the backoff a request starts no fetch, even past the cooldown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!r.on_demand().await);
    assert_eq!(j.jwks_fetches(), 1);
    // Nothing calls `tick` here: the retry starts on time by itself.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(j.jwks_fetches(), 2);
    assert_eq!(next(), 2);
    assert!(!r.on_demand().await);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(j.jwks_fetches(), 3);
    assert_eq!(next(), 4);
}
