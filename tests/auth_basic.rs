//! `api_key` and `ip_filter` through a real gateway, including their docs' examples.

mod common;
use common::*;
use sha2::{Digest, Sha256};

fn sha(k: &str) -> String {
    hex::encode(Sha256::digest(k.as_bytes()))
}

fn problem_status(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).expect("problem+json body");
    assert!(
        v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    v["status"].as_u64().unwrap()
}

fn api_key_config(up: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.keys]
type = "api_key"
keys = [{{ consumer = "acme", key_sha256 = "{acme}" }}]
keys_file = "more-keys.toml"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "guarded"
upstream = "up"
path = "/guarded"
plugins = ["keys"]

[[routes]]
name = "open"
upstream = "up"
path = "/open"
"#,
        acme = sha("sk_acme_1")
    )
}

#[tokio::test]
async fn api_key_identifies_the_consumer_and_refuses_the_rest() {
    let up = TestUpstream::start("up").await;
    let keys_file = format!(
        "keys = [{{ consumer = \"globex\", key_sha256 = \"{}\" }}]\n",
        sha("sk_globex_2")
    );
    let gw = Gateway::builder(&api_key_config(up.addr()))
        .file("more-keys.toml", keys_file)
        .start()
        .await;
    let c = gw.client();

    // A key from the config and one from keys_file each name their consumer; the
    // key itself and a client-sent x-consumer never reach the upstream.
    for (key, consumer) in [("sk_acme_1", "acme"), ("sk_globex_2", "globex")] {
        let r = c
            .get(gw.url("/guarded"))
            .header("x-api-key", key)
            .header("x-consumer", "mallory")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = up.last_request().unwrap();
        assert_eq!(seen.header("x-consumer"), Some(consumer));
        assert_eq!(seen.header_all("x-consumer").len(), 1);
        assert_eq!(seen.header("x-api-key"), None);
    }

    let hits = up.hits();
    for (key, reason) in [
        (None, "missing_key"),
        (Some(""), "missing_key"),
        (Some("sk_acme_2"), "invalid_key"),
        (Some("SK_ACME_1"), "invalid_key"),
    ] {
        let mut req = c.get(gw.url("/guarded"));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "key {key:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(problem_status(&r.text().await.unwrap()), 401);
        let _ = reason;
    }
    assert_eq!(
        up.hits(),
        hits,
        "refused requests must not reach the upstream"
    );
    assert_eq!(
        gw.metric(
            r#"tollgate_auth_failures_total{route="guarded",plugin="keys",reason="missing_key"}"#
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        gw.metric(
            r#"tollgate_auth_failures_total{route="guarded",plugin="keys",reason="invalid_key"}"#
        )
        .await,
        Some(2.0)
    );

    // A route without authentication: the client cannot assert an identity either.
    let r = c
        .get(gw.url("/open"))
        .header("x-consumer", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last_request().unwrap().header("x-consumer"), None);

    // The access log names the consumer, and no key ever appears in the logs.
    gw.wait_for_log("\"consumer\":\"acme\"", Duration::from_secs(10))
        .await;
    let logs = gw.logs();
    assert!(logs.contains("\"consumer\":\"acme\""), "{logs}");
    for secret in ["sk_acme_1", "sk_globex_2", "sk_acme_2"] {
        assert!(
            !logs.contains(secret),
            "the key {secret} leaked into the logs"
        );
    }
}

#[test]
fn api_key_config_errors_are_located() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad_hash = api_key_config(up).replace(&sha("sk_acme_1"), "ABCDEF");
    let (ok, out) = check_config(&bad_hash, &[("more-keys.toml", "keys = []\n")]);
    assert!(!ok);
    assert!(
        out.contains("plugins.keys.keys[0]: keys[0]: key_sha256 must be 64 lowercase hex"),
        "{out}"
    );
    let (ok, out) = check_config(&api_key_config(up), &[]);
    assert!(!ok);
    assert!(out.contains("plugins.keys.keys_file: cannot read"), "{out}");
}

#[tokio::test]
async fn api_key_doc_example() {
    let up = TestUpstream::start("doc").await;
    let gw = Gateway::start(&doc_example("api_key.md", up.addr())).await;
    let c = gw.client();
    let ok = c
        .get(gw.url("/v1/payments"))
        .header("x-api-key", "sk_test_acme")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        up.last_request().unwrap().header("x-consumer"),
        Some("acme")
    );
    let no = c.get(gw.url("/v1/payments")).send().await.unwrap();
    assert_eq!(no.status(), 401);
    assert_eq!(up.hits(), 1);
}

fn ip_config(up: std::net::SocketAddr, trusted: &str, allow: &str, deny: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
trusted_proxies = [{trusted}]

[plugins.fence]
type = "ip_filter"
allow = [{allow}]
deny = [{deny}]

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "fenced"
upstream = "up"
path = "/"
plugins = ["fence"]
"#
    )
}

#[tokio::test]
async fn ip_filter_allows_denies_and_ignores_spoofed_forwarding() {
    let up = TestUpstream::start("up").await;

    // Loopback is allowed; a spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let gw = Gateway::start(&ip_config(
        up.addr(),
        "",
        "\"127.0.0.0/8\"",
        "\"203.0.113.0/24\"",
    ))
    .await;
    let c = gw.client();
    assert_eq!(c.get(gw.url("/a")).send().await.unwrap().status(), 200);
    let r = c
        .get(gw.url("/a"))
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an untrusted peer's XFF must be ignored");
    drop(gw);

    // Only 10.0.0.0/8 allowed: loopback is refused, and spoofing an allowed address does not help.
    let gw = Gateway::start(&ip_config(up.addr(), "", "\"10.0.0.0/8\"", "")).await;
    let c = gw.client();
    let hits = up.hits();
    for xff in [None, Some("10.1.2.3")] {
        let mut req = c.get(gw.url("/a"));
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "xff {xff:?}");
        assert_eq!(problem_status(&r.text().await.unwrap()), 403);
    }
    assert_eq!(up.hits(), hits);
    assert_eq!(
        gw.metric(
            r#"tollgate_auth_failures_total{route="fenced",plugin="fence",reason="ip_denied"}"#
        )
        .await,
        Some(2.0)
    );
    drop(gw);

    // Behind a trusted proxy (loopback), the forwarded client address decides.
    let gw = Gateway::start(&ip_config(
        up.addr(),
        "\"127.0.0.0/8\"",
        "\"10.0.0.0/8\"",
        "\"10.9.0.0/16\"",
    ))
    .await;
    let c = gw.client();
    let st = |xff: &'static str| {
        let c = c.clone();
        let u = gw.url("/a");
        async move {
            c.get(u)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(st("10.1.2.3").await, 200);
    assert_eq!(st("10.9.0.1").await, 403, "deny wins over allow");
    assert_eq!(
        st("198.51.100.1, 10.1.2.3").await,
        200,
        "rightmost untrusted entry"
    );
    assert_eq!(st("10.1.2.3, 198.51.100.1").await, 403);
}

#[tokio::test]
async fn ip_filter_doc_example() {
    let up = TestUpstream::start("doc").await;
    let example = doc_example("ip_filter.md", up.addr());
    let gw = Gateway::start(&example).await;
    assert_eq!(
        gw.client()
            .get(gw.url("/admin/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    drop(gw);
    let narrowed = example.replace(
        "allow = [\"127.0.0.0/8\", \"10.20.0.0/16\"]",
        "allow = [\"10.20.0.0/16\"]",
    );
    assert_ne!(narrowed, example);
    let gw = Gateway::start(&narrowed).await;
    assert_eq!(
        gw.client()
            .get(gw.url("/admin/x"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(up.hits(), 1);
}
