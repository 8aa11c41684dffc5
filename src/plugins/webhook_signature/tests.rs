use super::config::parse_template;
use super::replay::Seen;
use super::schemes::*;
use super::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderValue;

/// An error of `tollgate check` or of the build, at its key in the plugin's table.
#[derive(Debug, Clone)]
struct Located {
    path: String,
    message: String,
}

fn cfg(toml_src: &str) -> WebhookSignatureConfig {
    toml::from_str(toml_src).expect("config")
}

fn build(toml_src: &str) -> WebhookSignature {
    match WebhookSignature::from_config(&cfg(toml_src), "wh") {
        Ok(w) => w,
        Err(e) => panic!("{e:?}"),
    }
}

/// Everything wrong with a `[plugins.wh]` table: what reading the file finds
/// (closed sets, the `signed_string` template, inline secrets), else what the
/// build finds.
fn errors(toml_src: &str) -> Vec<Located> {
    let src = format!(
        "[plugins.wh]\ntype = \"webhook_signature\"\n{toml_src}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"wh\"]\n"
    );
    let cfg = match crate::config::load_str(&src, None, std::path::Path::new(".")) {
        Ok(cfg) => cfg,
        Err(e) => {
            return e
                .0
                .into_iter()
                .map(|e| Located {
                    path: e.path.strip_prefix("plugins.wh.").unwrap_or(&e.path).into(),
                    message: e.message,
                })
                .collect()
        }
    };
    let Some(c) = cfg.plugin_config::<WebhookSignatureConfig>("wh") else {
        panic!("webhook_signature plugin");
    };
    match WebhookSignature::from_config(c, "wh") {
        Ok(_) => panic!("built: {toml_src}"),
        Err(e) => e
            .into_iter()
            .map(|e| Located {
                path: e.path.to_string(),
                message: e.message,
            })
            .collect(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::try_from(*n).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    Key::new(Algorithm::Sha256, key).sign(parts)
}

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1614265330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers(sig: &str, ts: i64) -> HeaderMap {
    headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", &ts.to_string()),
        ("webhook-signature", sig),
    ])
}

#[test]
fn standard_webhooks_reference_vector() {
    let w = build(&format!(
        "scheme = \"standard_webhooks\"\nsecrets = [\"{SW_SECRET}\"]"
    ));
    // Our signer makes the reference signature...
    let key = B64.decode(SW_SECRET.trim_start_matches("whsec_")).unwrap();
    let ts = SW_TS.to_string();
    let mac = hmac256(
        &key,
        &[SW_ID.as_bytes(), b".", ts.as_bytes(), b".", SW_BODY],
    );
    assert_eq!(format!("v1,{}", B64.encode(mac)), SW_SIG);
    // ...and the verifier accepts it with the clock at the vector's time.
    assert_eq!(w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS), Ok(()));
    assert_eq!(
        w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS + 300),
        Ok(())
    );
    assert_eq!(
        w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS - 300),
        Ok(())
    );
    // One valid among several; unknown versions ignored.
    let several = format!("v1,AAAA v1a,bm90IGEgc2ln {SW_SIG} v2,Zm9v");
    assert_eq!(
        w.verify(&sw_headers(&several, SW_TS), SW_BODY, SW_TS),
        Ok(())
    );
    // Outside the tolerance in either direction.
    for now in [SW_TS + 301, SW_TS - 301] {
        assert_eq!(
            w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, now),
            Err(STALE_TIMESTAMP)
        );
    }
    // Tampered body, re-serialised JSON, other timestamp, other id.
    assert_eq!(
        w.verify(
            &sw_headers(SW_SIG, SW_TS),
            br#"{"test": 2432232315}"#,
            SW_TS
        ),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&sw_headers(SW_SIG, SW_TS), br#"{"test":2432232314}"#, SW_TS),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&sw_headers(SW_SIG, SW_TS + 1), SW_BODY, SW_TS),
        Err(BAD_SIGNATURE)
    );
    let mut h = sw_headers(SW_SIG, SW_TS);
    h.insert("webhook-id", HeaderValue::from_static("msg_other"));
    assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(BAD_SIGNATURE));
    // Only unknown versions, nothing, missing id or timestamp.
    assert_eq!(
        w.verify(&sw_headers("v1a,Zm9v", SW_TS), SW_BODY, SW_TS),
        Err(MISSING_SIGNATURE)
    );
    assert_eq!(
        w.verify(&sw_headers("", SW_TS), SW_BODY, SW_TS),
        Err(MISSING_SIGNATURE)
    );
    assert_eq!(
        w.verify(&sw_headers("v1,", SW_TS), SW_BODY, SW_TS),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&sw_headers("v1,!!!", SW_TS), SW_BODY, SW_TS),
        Err(BAD_SIGNATURE)
    );
    let mut h = sw_headers(SW_SIG, SW_TS);
    h.remove("webhook-id");
    assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(MISSING_ID));
    let mut h = sw_headers(SW_SIG, SW_TS);
    h.remove("webhook-timestamp");
    assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(MISSING_TIMESTAMP));
    let mut h = sw_headers(SW_SIG, SW_TS);
    h.insert("webhook-timestamp", HeaderValue::from_static("-5"));
    assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(BAD_TIMESTAMP));
    let mut h = sw_headers(SW_SIG, SW_TS);
    h.append("webhook-signature", HeaderValue::from_static("v1,AAAA"));
    assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(DUPLICATE_HEADER));
}

#[test]
fn standard_webhooks_replay_is_the_same_id() {
    let w = build(&format!(
        "scheme = \"standard_webhooks\"\nsecrets = [\"{SW_SECRET}\"]"
    ));
    let h = sw_headers(SW_SIG, SW_TS);
    assert_eq!(w.verify_once(&h, SW_BODY, SW_TS), Ok(()));
    assert_eq!(w.verify_once(&h, SW_BODY, SW_TS + 10), Err(REPLAY));
    // A refused (forged) copy is not remembered and changes nothing.
    assert_eq!(
        w.verify_once(&sw_headers("v1,AAAA", SW_TS), SW_BODY, SW_TS),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(w.remembered(), 1);
    // Past the window the timestamp is stale anyway and the entry expires.
    assert_eq!(
        w.verify_once(&h, SW_BODY, SW_TS + 301),
        Err(STALE_TIMESTAMP)
    );
    w.seen.lock().purge(SW_TS + 301);
    assert_eq!(w.remembered(), 0);
}

#[test]
fn github_documented_example() {
    let w = build("scheme = \"github\"\nsecrets = [\"It's a Secret to Everybody\"]");
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let h = |s: &str, d: &str| headers(&[("x-hub-signature-256", s), ("x-github-delivery", d)]);
    // No timestamp: any clock will do.
    assert_eq!(w.verify(&h(sig, "d1"), b"Hello, World!", 0), Ok(()));
    assert_eq!(
        w.verify(
            &h(&sig.to_uppercase().replace("SHA256=", "sha256="), "d1"),
            b"Hello, World!",
            0
        ),
        Ok(())
    );
    assert_eq!(
        w.verify(&h(sig, "d1"), b"Hello, World?", 0),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&sig[..sig.len() - 2], "d1"), b"Hello, World!", 0),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&format!("{sig}00"), "d1"), b"Hello, World!", 0),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h("sha256=", "d1"), b"Hello, World!", 0),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h("sha256=zz", "d1"), b"Hello, World!", 0),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h("", "d1"), b"Hello, World!", 0),
        Err(MISSING_SIGNATURE)
    );
    assert_eq!(
        w.verify(
            &h(&sig.replace("sha256=", "sha1="), "d1"),
            b"Hello, World!",
            0
        ),
        Err(MALFORMED_SIGNATURE)
    );
    assert_eq!(
        w.verify(&headers(&[]), b"Hello, World!", 0),
        Err(MISSING_SIGNATURE)
    );
    // Replay: the same delivery, or the same signed content under a new
    // (unsigned) delivery id.
    assert_eq!(w.verify_once(&h(sig, "d1"), b"Hello, World!", 1000), Ok(()));
    assert_eq!(
        w.verify_once(&h(sig, "d1"), b"Hello, World!", 1001),
        Err(REPLAY)
    );
    assert_eq!(
        w.verify_once(&h(sig, "d2"), b"Hello, World!", 1001),
        Err(REPLAY)
    );
    // The window is the tolerance.
    assert_eq!(w.verify_once(&h(sig, "d1"), b"Hello, World!", 1301), Ok(()));
}

fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
    let ts = t.to_string();
    format!(
        "t={ts},v1={}",
        hex::encode(hmac256(secret.as_bytes(), &[ts.as_bytes(), b".", body]))
    )
}

#[test]
fn stripe_format() {
    let w =
        build("scheme = \"stripe\"\nsecrets = [\"whsec_old\", \"whsec_new\"]\ntolerance = \"2m\"");
    let now = 1_700_000_000;
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let h = |v: &str| headers(&[("stripe-signature", v)]);
    let good = stripe_header("whsec_new", now, body);
    assert_eq!(w.verify(&h(&good), body, now), Ok(()));
    assert_eq!(
        w.verify(&h(&stripe_header("whsec_old", now, body)), body, now),
        Ok(())
    );
    assert_eq!(
        w.verify(&h(&stripe_header("whsec_other", now, body)), body, now),
        Err(BAD_SIGNATURE)
    );
    // Several v1, v0 ignored, spaces tolerated.
    let v1 = good.split_once(",v1=").unwrap().1;
    let mixed = format!("t={now}, v0={v1}, v1={}, v1={v1}", "ab".repeat(32));
    assert_eq!(w.verify(&h(&mixed), body, now), Ok(()));
    assert_eq!(
        w.verify(&h(&format!("t={now},v0={v1}")), body, now),
        Err(MISSING_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&format!("v1={v1}")), body, now),
        Err(MISSING_TIMESTAMP)
    );
    assert_eq!(
        w.verify(&h(&format!("t={now},t={now},v1={v1}")), body, now),
        Err(MALFORMED_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&format!("t=soon,v1={v1}")), body, now),
        Err(BAD_TIMESTAMP)
    );
    assert_eq!(
        w.verify(&h(&format!("t={now},v1=")), body, now),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(w.verify(&h(&good), body, now + 121), Err(STALE_TIMESTAMP));
    assert_eq!(w.verify(&h(&good), body, now - 121), Err(STALE_TIMESTAMP));
    assert_eq!(w.verify(&h(&good), body, now + 120), Ok(()));
    // The timestamp is signed.
    assert_eq!(
        w.verify(
            &h(&good.replace(&format!("t={now}"), &format!("t={}", now + 1))),
            body,
            now
        ),
        Err(BAD_SIGNATURE)
    );

    // Replay of the same content, whichever signature or secret matched.
    let both = format!(
        "{},v1={}",
        stripe_header("whsec_old", now, body),
        stripe_header("whsec_new", now, body)
            .split_once(",v1=")
            .unwrap()
            .1
    );
    assert_eq!(w.verify_once(&h(&both), body, now), Ok(()));
    assert_eq!(w.verify_once(&h(&good), body, now), Err(REPLAY));
    assert_eq!(
        w.verify_once(&h(&stripe_header("whsec_old", now, body)), body, now),
        Err(REPLAY)
    );
    // A future-dated webhook is remembered until its own window closes.
    let later = now + 100;
    let f = stripe_header("whsec_new", later, body);
    assert_eq!(w.verify_once(&h(&f), body, now), Ok(()));
    assert_eq!(w.verify_once(&h(&f), body, now + 200), Err(REPLAY));
}

#[test]
fn generic_hmac() {
    let w = build(
        r#"
scheme = "hmac"
secrets = ["k1"]
header = "x-signature"
algorithm = "sha512"
encoding = "base64"
prefix = "v1="
timestamp_header = "x-timestamp"
signed_string = "{timestamp}:{header:x-event}:{body}"
"#,
    );
    let now = 1_700_000_000;
    let body = b"payload";
    let mac = Key::new(Algorithm::Sha512, b"k1").sign(&[
        now.to_string().as_bytes(),
        b":",
        b"paid",
        b":",
        body,
    ]);
    assert_eq!(mac.len(), 64);
    let sig = format!("v1={}", B64.encode(&mac));
    let ts = now.to_string();
    let h =
        |s: &str, ev: &str| headers(&[("x-signature", s), ("x-timestamp", &ts), ("x-event", ev)]);
    assert_eq!(w.verify(&h(&sig, "paid"), body, now), Ok(()));
    assert_eq!(
        w.verify(&h(&sig, "refunded"), body, now),
        Err(BAD_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&sig[3..], "paid"), body, now),
        Err(MALFORMED_SIGNATURE)
    );
    assert_eq!(
        w.verify(&h(&sig, "paid"), body, now + 301),
        Err(STALE_TIMESTAMP)
    );
    let no_event = headers(&[("x-signature", &sig), ("x-timestamp", &ts)]);
    assert_eq!(w.verify(&no_event, body, now), Err(MISSING_HEADER));
    let no_ts = headers(&[("x-signature", &sig), ("x-event", "paid")]);
    assert_eq!(w.verify(&no_ts, body, now), Err(MISSING_TIMESTAMP));

    // Defaults: sha256, hex, `{body}`; no timestamp, so signature-keyed replay.
    let w = build("scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-sig\"");
    let sig = hex::encode(hmac256(b"k", &[b"abc"]));
    let h = headers(&[("x-sig", &sig)]);
    assert_eq!(w.verify_once(&h, b"abc", 5), Ok(()));
    assert_eq!(w.verify_once(&h, b"abc", 6), Err(REPLAY));
    // Default template with a timestamp header: `{timestamp}.{body}`.
    let w = build(
        "scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-sig\"\ntimestamp_header = \"x-ts\"",
    );
    let sig = hex::encode(hmac256(b"k", &[b"100", b".", b"abc"]));
    assert_eq!(
        w.verify(&headers(&[("x-sig", &sig), ("x-ts", "100")]), b"abc", 100),
        Ok(())
    );
}

#[test]
fn templates() {
    assert_eq!(
        parse_template("a{body}b{header:X-Id}{timestamp}").unwrap(),
        vec![
            Part::Lit(b"a".to_vec()),
            Part::Body,
            Part::Lit(b"b".to_vec()),
            Part::Header(HeaderName::from_static("x-id")),
            Part::Timestamp
        ]
    );
    assert!(parse_template("{nope}")
        .unwrap_err()
        .contains("unknown placeholder {nope}"));
    assert!(parse_template("{body").is_err());
    assert!(parse_template("body}").is_err());
    assert!(parse_template("{header:bad name}").is_err());
}

#[test]
fn build_errors_are_located() {
    let keys = |e: Vec<Located>| {
        e.into_iter()
            .map(|e| e.path.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(errors("scheme = \"svix\"\nsecrets = [\"x\"]")),
        ["scheme"]
    );
    assert_eq!(keys(errors("scheme = \"stripe\"")), ["secrets"]);
    assert_eq!(
        keys(errors("scheme = \"stripe\"\nsecrets = [\"a\", \"\"]")),
        ["secrets[1]"]
    );
    let e = errors("scheme = \"standard_webhooks\"\nsecrets = [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_!!notbase64\"]");
    assert_eq!(keys(e.clone()), ["secrets[0]", "secrets[1]"]);
    assert!(
        e.iter()
            .all(|e| !e.message.contains("MfKQ") && !e.message.contains("notbase64")),
        "{e:?}"
    );
    assert_eq!(
        keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]")),
        ["header"]
    );
    assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nalgorithm = \"md5\"\nencoding = \"base32\"")), ["algorithm", "encoding"]);
    assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"{body}.{nonce}\"")), ["signed_string"]);
    assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"{timestamp}.{body}\"")), ["signed_string"]);
    assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\ntimestamp_header = \"x-t\"\nsigned_string = \"{body}\"")), ["signed_string"]);
    assert_eq!(
        keys(errors(
            "scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"static\""
        )),
        ["signed_string"]
    );
    assert_eq!(
        keys(errors(
            "scheme = \"github\"\nsecrets = [\"x\"]\nheader = \"x-s\""
        )),
        ["header"]
    );
    assert_eq!(
        keys(errors(
            "scheme = \"github\"\nsecrets = [\"x\"]\ntolerance = \"10ms\""
        )),
        ["tolerance"]
    );
    assert_eq!(
        keys(errors("scheme = \"github\"\nsecrets_env = [\"TOLLGATE_WH_TEST_UNSET_1\", \"TOLLGATE_WH_TEST_UNSET_2\"]")),
        ["secrets_env[0]", "secrets_env[1]"]
    );
    assert_eq!(
        keys(errors(
            "scheme = \"github\"\nsecrets_env = \"TOLLGATE_WH_TEST_UNSET_3\""
        )),
        ["secrets_env"]
    );
}

#[test]
fn secrets_from_env_rotate() {
    std::env::set_var("TOLLGATE_WH_TEST_OLD", "old-secret");
    std::env::set_var("TOLLGATE_WH_TEST_NEW", "new-secret");
    let w = build("scheme = \"github\"\nsecrets = [\"inline\"]\nsecrets_env = [\"TOLLGATE_WH_TEST_OLD\", \"TOLLGATE_WH_TEST_NEW\"]");
    for secret in ["inline", "old-secret", "new-secret"] {
        let sig = format!(
            "sha256={}",
            hex::encode(hmac256(secret.as_bytes(), &[secret.as_bytes()]))
        );
        assert_eq!(
            w.verify(
                &headers(&[("x-hub-signature-256", &sig)]),
                secret.as_bytes(),
                0
            ),
            Ok(()),
            "{secret}"
        );
    }
    let sig = format!("sha256={}", hex::encode(hmac256(b"retired", &[b"x"])));
    assert_eq!(
        w.verify(&headers(&[("x-hub-signature-256", &sig)]), b"x", 0),
        Err(BAD_SIGNATURE)
    );
}

#[test]
fn replay_memory_is_bounded() {
    let mut s = Seen::default();
    let k = |i: u8| [i; 32];
    assert!(s.admit(&[k(1)], 100, 0, 3));
    assert!(s.admit(&[k(2)], 50, 0, 3));
    assert!(s.admit(&[k(3)], 200, 0, 3));
    assert!(!s.admit(&[k(2)], 300, 0, 3));
    // Full: the entry closest to expiry (2) makes room.
    assert!(s.admit(&[k(4)], 300, 0, 3));
    assert_eq!(s.len(), 3);
    assert!(!s.admit(&[k(1)], 300, 0, 3));
    assert!(
        !s.admit(&[k(9), k(4)], 300, 0, 3),
        "any known key is a replay"
    );
    assert!(
        !s.by_key.contains_key(&k(9)),
        "a refused replay is not remembered"
    );
    // Expiry is inclusive, then the entry goes.
    assert!(!s.admit(&[k(1)], 300, 100, 3));
    assert!(s.admit(&[k(1)], 300, 101, 3));
    s.purge(1000);
    assert_eq!(s.len(), 0);
    assert!(s.by_expiry.is_empty());
}

#[test]
fn refusal_labels() {
    assert_eq!(STALE_TIMESTAMP.result(), "stale");
    assert_eq!(REPLAY.result(), "replay");
    assert_eq!(BAD_SIGNATURE.result(), "invalid");
    assert_eq!(BODY_TOO_LARGE.status, 413);
    assert!(BODY_TOO_LARGE.detail(65536).contains("65536"));
}

/// The closed sets, the template and the inline secrets of `standard_webhooks`
/// are refused when the file is read (`load_str` fails), each at its key with
/// its message; nothing is left for the build to find.
#[test]
fn closed_sets_are_refused_when_the_file_is_read() {
    let read = |toml_src: &str| {
        let src = format!(
            "[plugins.wh]\ntype = \"webhook_signature\"\n{toml_src}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"wh\"]\n"
        );
        match crate::config::load_str(&src, None, std::path::Path::new(".")) {
            Ok(_) => panic!("read: {toml_src}"),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| (e.path, e.message))
                    .collect::<Vec<_>>()
            }
        }
    };
    let e = read("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nalgorithm = \"md5\"\nencoding = \"base32\"\nsigned_string = \"{nonce}.{body}\"");
    let expected = [
        (
            "plugins.wh.algorithm",
            "unknown algorithm \"md5\": use \"sha256\" or \"sha512\"",
        ),
        (
            "plugins.wh.encoding",
            "unknown encoding \"base32\": use \"hex\" or \"base64\"",
        ),
        (
            "plugins.wh.signed_string",
            "unknown placeholder {nonce} in signed_string: use {body}, {timestamp} or {header:NAME}",
        ),
    ];
    assert_eq!(e.len(), expected.len(), "{e:?}");
    for ((path, message), (want_path, want)) in e.iter().zip(expected) {
        assert_eq!(path, want_path);
        assert!(message.starts_with(want), "{message}");
    }
    let e = read("scheme = \"svix\"\nsecrets = [\"x\"]");
    assert_eq!(e[0].0, "plugins.wh.scheme");
    assert!(e[0].1.starts_with(
        "unknown scheme \"svix\": use \"stripe\", \"github\", \"standard_webhooks\" or \"hmac\""
    ));
    let e = read("scheme = \"standard_webhooks\"\nsecrets = [\"whsec_AAAA\", \"\", \"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]");
    let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["plugins.wh.secrets[1]", "plugins.wh.secrets[2]"]);
    assert!(e[0].1.contains("must not be empty"), "{e:?}");
    assert!(
        e[1].1.contains("\"whsec_\"") && !e[1].1.contains("MfKQ"),
        "{e:?}"
    );
    // Valid values parse into their types.
    let c = cfg("scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-s\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\nsigned_string = \"{body}\"");
    assert_eq!(c.scheme, Scheme::Hmac);
    assert_eq!(c.algorithm, Some(Algorithm::Sha512));
    assert_eq!(c.encoding, Some(Encoding::Base64));
    assert_eq!(c.signed_string, Some(Template(vec![Part::Body])));
}
