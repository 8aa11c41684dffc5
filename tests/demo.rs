//! `tollgate demo` serves the repository's own gateway.toml and the demo
//! upstreams it points at: what a newcomer runs first must work.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_serves_the_example_config() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    // The example's fixed ports, moved to free ones so tests can run in parallel.
    let mut cfg = src.clone();
    for port in ["8080", "9901", "9101", "9102", "9103"] {
        let needle = format!("127.0.0.1:{port}");
        assert!(
            cfg.contains(&needle),
            "gateway.toml no longer uses {needle}; update this test"
        );
        cfg = cfg.replace(&needle, &format!("127.0.0.1:{}", free_port()));
    }
    let table: toml::Table = toml::from_str(&cfg).unwrap();
    let listen = table["server"]["listen"][0].as_str().unwrap().to_string();
    let admin = table["server"]["admin_listen"]
        .as_str()
        .unwrap()
        .to_string();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let client = http_client();
    let ready = format!("http://{admin}/readyz");
    wait_until(Duration::from_secs(30), || {
        let c = client.clone();
        let u = ready.clone();
        async move { c.get(&u).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    // Health checks of the demo upstreams pass, so every target serves.
    let v2 = client
        .get(format!("http://{listen}/v2/accounts/acc_42"))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 200);
    assert!(v2.headers().get("x-request-id").is_some());
    assert!(v2.headers().get("deprecation").is_none());
    let body: serde_json::Value = v2.json().await.unwrap();
    assert_eq!(body["id"], "acc_42");
    assert_eq!(body["balance"]["currency"], "EUR");

    let v1 = client
        .get(format!("http://{listen}/v1/accounts/acc_42"))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 200);
    assert!(v1.headers()["deprecation"]
        .to_str()
        .unwrap()
        .starts_with('@'));
    assert!(v1.headers().get("sunset").is_some());

    let pay = client
        .post(format!("http://{listen}/v1/payments"))
        .header("content-type", "application/json")
        .body(r#"{"amount":"10.00","currency":"EUR"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 201);
    assert!(pay.headers().contains_key("ratelimit-remaining"));
    let body: serde_json::Value = pay.json().await.unwrap();
    assert_eq!(body["request"]["amount"], "10.00");

    // The payments route replays a retried request carrying an Idempotency-Key.
    let idem = || {
        client
            .post(format!("http://{listen}/v1/payments"))
            .header("idempotency-key", "order-1")
            .body(r#"{"amount":"10.00","currency":"EUR"}"#)
            .send()
    };
    let first = idem().await.unwrap();
    assert_eq!(first.status(), 201);
    let first_id = first.json::<serde_json::Value>().await.unwrap()["id"].clone();
    let again = idem().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["id"],
        first_id
    );

    let unknown = client
        .get(format!("http://{listen}/v9/accounts/acc_42"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    let p: serde_json::Value = unknown.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("v1, v2"), "{p}");
}
