//! SPEC §13 end to end: `openapi` and `json_limits` in front of a real
//! upstream, with the documented examples.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const PAYMENTS_31: &str = include_str!("../plugins/openapi/payments.yaml");
const COMMON_31: &str = include_str!("../plugins/openapi/common.yaml");
const PAYMENTS_30: &str = include_str!("fixtures/openapi30/payments.json");
const COMMON_30: &str = include_str!("fixtures/openapi30/common.json");

const PAYMENT: &str = r#"{"amount":"125.50","currency":"EUR","creditor":{"name":"ACME GmbH","iban":"DE89370400440532013000"},"reference":"INV-2026-0042"}"#;

/// The openapi doc example, with the 3.1 files or the 3.0 (JSON) ones.
async fn openapi_gateway(up: &TestUpstream, v30: bool) -> Gateway {
    let mut config = doc_example("openapi.md", up.addr());
    let b = if v30 {
        config = config.replace("openapi/payments.yaml", "openapi/payments.json");
        Gateway::builder(&config)
            .file("openapi/payments.json", PAYMENTS_30)
            .file("openapi/common.json", COMMON_30)
    } else {
        Gateway::builder(&config)
            .file("openapi/payments.yaml", PAYMENTS_31)
            .file("openapi/common.yaml", COMMON_31)
    };
    b.start().await
}

async fn problem(resp: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = resp.status().as_u16();
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.text().await.unwrap();
    if status >= 400 {
        assert_eq!(ct.as_deref(), Some("application/problem+json"), "{body}");
    }
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
        allow,
    )
}

fn pointers(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["pointer"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn openapi_admits_valid_requests_unaltered_and_refuses_each_kind_of_mistake() {
    let up = TestUpstream::start("payments").await;
    for v30 in [false, true] {
        up.clear();
        let gw = openapi_gateway(&up, v30).await;
        let c = gw.client();
        let post = |body: &str| {
            c.post(gw.url("/v1/payments"))
                .header("content-type", "application/json")
                .header("idempotency-key", "key-0000001")
                .body(body.to_string())
        };

        // Valid: the upstream gets the client's bytes and its path after strip_prefix.
        let resp = post(PAYMENT).send().await.unwrap();
        assert_eq!(resp.status(), 200, "v30={v30}");
        let r = up.last_request().unwrap();
        assert_eq!(r.path, "/payments");
        assert_eq!(r.body, PAYMENT.as_bytes());
        let resp = c
            .get(gw.url("/v1/payments?limit=5&status=pending&status=settled"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            up.last_request().unwrap().path,
            "/payments?limit=5&status=pending&status=settled"
        );
        let hits = up.hits();

        // 404, 405 + Allow.
        let (s, p, _) = problem(c.get(gw.url("/v1/invoices")).send().await.unwrap()).await;
        assert_eq!(s, 404, "{p}");
        let (s, p, allow) = problem(c.delete(gw.url("/v1/payments")).send().await.unwrap()).await;
        assert_eq!((s, allow.as_deref()), (405, Some("GET, POST")), "{p}");

        // 400 for parameters: header missing, query wrong, path not a uuid.
        let (s, p, _) = problem(
            c.post(gw.url("/v1/payments"))
                .header("content-type", "application/json")
                .body(PAYMENT)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(pointers(&p), ["idempotency-key"], "{p}");
        let (s, p, _) = problem(
            c.get(gw.url("/v1/payments?limit=0&status=lost&created_after=2026-13-01"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400);
        let mut ps = pointers(&p);
        ps.sort();
        assert_eq!(ps, ["created_after", "limit", "status/0"], "{p}");
        let (s, p, _) = problem(c.get(gw.url("/v1/payments/12345")).send().await.unwrap()).await;
        assert_eq!(
            (s, pointers(&p)),
            (400, vec!["payment_id".to_string()]),
            "{p}"
        );

        // 415, 400 body missing, 400 schema with every mistake located.
        let (s, _, _) = problem(
            c.post(gw.url("/v1/payments"))
                .header("content-type", "text/plain")
                .header("idempotency-key", "key-0000001")
                .body("amount=1")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 415);
        let (s, p, _) = problem(
            c.post(gw.url("/v1/payments"))
                .header("idempotency-key", "key-0000001")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, pointers(&p)), (400, vec![String::new()]), "{p}");
        let bad = json!({"amount": "12.345", "currency": "XXX", "creditor": {"name": ""}});
        let (s, p, _) = problem(post(&bad.to_string()).send().await.unwrap()).await;
        assert_eq!(s, 400);
        let ps = pointers(&p);
        for want in ["/amount", "/currency", "/creditor", "/creditor/name"] {
            assert!(ps.iter().any(|x| x == want), "{want} not in {p}");
        }
        assert!(!p.to_string().contains("12.345"), "{p}");
        // At most 10 errors, however many there are.
        let mut meta = serde_json::Map::new();
        for i in 0..30 {
            meta.insert(format!("k{i}"), json!(i));
        }
        let mut many: Value = serde_json::from_str(PAYMENT).unwrap();
        many["metadata"] = Value::Object(meta);
        let (s, p, _) = problem(post(&many.to_string()).send().await.unwrap()).await;
        assert_eq!(s, 400);
        assert_eq!(p["errors"].as_array().unwrap().len(), 10, "{p}");

        // Hostile JSON: duplicate keys, deep nesting, a 10,000-digit number, bad UTF-8.
        let dup = PAYMENT.replacen('{', r#"{"amount":"1.00","#, 1);
        let deep = "[".repeat(10_000);
        let digits = PAYMENT.replace("\"125.50\"", &"9".repeat(10_000));
        for body in [
            dup.into_bytes(),
            deep.into_bytes(),
            digits.into_bytes(),
            b"{\"amount\":\"\xff\"}".to_vec(),
        ] {
            let resp = c
                .post(gw.url("/v1/payments"))
                .header("content-type", "application/json")
                .header("idempotency-key", "key-0000001")
                .body(body)
                .send()
                .await
                .unwrap();
            let (s, p, _) = problem(resp).await;
            assert_eq!(s, 400, "{p}");
            assert_eq!(p["detail"], "the request body is not valid JSON", "{p}");
        }
        // Larger than what can be held back from the upstream: 413.
        let mut huge: Value = serde_json::from_str(PAYMENT).unwrap();
        huge["reference"] = json!("x".repeat(70_000));
        let (s, _, _) = problem(post(&huge.to_string()).send().await.unwrap()).await;
        assert_eq!(s, 413);

        assert_eq!(up.hits(), hits, "a refused request reached the upstream");
        assert_failures(
            &gw,
            "payments",
            "payments_api",
            &[
                ("not_found", 1.0),
                ("method_not_allowed", 1.0),
                ("parameters", 3.0),
                ("content_type", 1.0),
                ("body_missing", 1.0),
                ("body_schema", 2.0),
                ("invalid_json", 4.0),
                // The echo upstream answers neither operation as described
                // (`responses = "log"`): logged and counted, still delivered.
                ("response_schema", 2.0),
            ],
        )
        .await;
    }
}

/// `tollgate_validation_failures_total` of `route` and `plugin`, by reason.
async fn assert_failures(gw: &Gateway, route: &str, plugin: &str, want: &[(&str, f64)]) {
    let m = gw.metrics().await;
    for (reason, n) in want {
        let q = format!(
            r#"tollgate_validation_failures_total{{plugin="{plugin}",reason="{reason}",route="{route}"}}"#
        );
        assert_eq!(find_metric(&m, &q), Some(*n), "{q}\n{m}");
    }
}

#[tokio::test]
async fn openapi_logs_responses_that_do_not_match_without_touching_them() {
    let up = TestUpstream::start("api").await;
    let spec = r#"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /respond:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { type: object, required: [id], properties: { id: { type: string, format: uuid } } }
"#;
    let config = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
[plugins.api]
type = "openapi"
spec = "api.yaml"
responses = "log"
[upstreams.up]
targets = ["UP"]
[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["api"]
"#
    .replace("UP", &up.addr().to_string());
    let gw = Gateway::builder(&config)
        .file("api.yaml", spec)
        .start()
        .await;
    let c = gw.client();
    let get = |body: &str| {
        let q = format!(
            "/respond?status=200&header=content-type:application/json&body={}",
            percent(body)
        );
        c.get(gw.url(&q)).send()
    };
    let good = r#"{"id":"3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60"}"#;
    let resp = get(good).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), good);
    let bad = r#"{"id":"nope"}"#;
    let resp = get(bad).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        bad,
        "the response is delivered as sent"
    );
    gw.wait_for_log("does not match the API description", WAIT)
        .await;
    let q =
        r#"tollgate_validation_failures_total{plugin="api",reason="response_schema",route="r"}"#;
    assert_eq!(gw.metric(q).await, Some(1.0));
    assert!(!gw.logs().contains("\"nope\""), "the value is not logged");
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn an_edit_of_a_referenced_file_reloads_the_description() {
    let up = TestUpstream::start("payments").await;
    let gw = openapi_gateway(&up, false).await;
    let c = gw.client();
    let send = || {
        c.post(gw.url("/v1/payments"))
            .header("content-type", "application/json")
            .header("idempotency-key", "key-0000001")
            .body(PAYMENT.replace("EUR", "JPY"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 400);
    gw.write_file(
        "openapi/common.yaml",
        COMMON_31.replace("enum: [EUR,", "enum: [JPY, EUR,"),
    );
    wait_until_msg(WAIT, "JPY accepted after the edit", || async {
        send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // A broken edit is refused; the running description stays.
    gw.write_file("openapi/common.yaml", "components: [\n");
    gw.wait_for_log("common.yaml", WAIT).await;
    assert_eq!(send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_broken_description_is_a_located_config_error() {
    let config = doc_example("openapi.md", "127.0.0.1:9".parse().unwrap());
    let broken = PAYMENTS_31.replace(
        "schema: { $ref: \"#/components/schemas/NewPayment\" }",
        "schema: { $ref: \"#/components/schemas/Missing\" }",
    );
    let (ok, out) = check_config(
        &config,
        &[
            ("openapi/payments.yaml", &broken),
            ("openapi/common.yaml", COMMON_31),
        ],
    );
    assert!(!ok);
    assert!(out.contains("plugins.payments_api.spec"), "{out}");
    assert!(
        out.contains("payments.yaml#/paths/~1payments/post"),
        "{out}"
    );
    let (ok, out) = check_config(&config, &[("openapi/payments.yaml", PAYMENTS_31)]);
    assert!(!ok);
    assert!(out.contains("common.yaml"), "{out}");
}

// ---------------------------------------------------------------------------
// json_limits

const LIMITS: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
[plugins.shape]
type = "json_limits"
max_depth = 3
max_keys = 3
max_array = 3
max_string = "8B"
[upstreams.up]
targets = ["UP"]
[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["shape"]
"#;

async fn limits_gateway(up: &TestUpstream) -> Gateway {
    Gateway::start(&LIMITS.replace("UP", &up.addr().to_string())).await
}

/// A body sent chunked (no Content-Length), in pieces of `piece` bytes.
fn chunked(body: Vec<u8>, piece: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(piece).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn json_limits_refuses_each_limit_with_its_pointer_whole_or_streamed() {
    let up = TestUpstream::start("up").await;
    let gw = limits_gateway(&up).await;
    let c = gw.client();
    let cases: [(&str, &str, &str); 6] = [
        (r#"{"a":{"b":{"c":{"d":1}}}}"#, "max_depth", "/a/b/c"),
        (r#"{"a":1,"b":2,"c":3,"d":4}"#, "max_keys", ""),
        (r#"{"list":[1,2,3,4]}"#, "max_array", "/list"),
        (r#"{"name":"123456789"}"#, "max_string", "/name"),
        (r#"{"n":1234567890}"#, "max_string", "/n"),
        (
            r#"{"a~b/c":[{"x":"123456789"}]}"#,
            "max_string",
            "/a~0b~1c/0/x",
        ),
    ];
    for streamed in [false, true] {
        for (body, limit, pointer) in cases {
            let req = c
                .post(gw.url("/x"))
                .header("content-type", "application/json");
            let req = if streamed {
                req.body(chunked(body.as_bytes().to_vec(), 3))
            } else {
                req.body(body)
            };
            let (s, p, _) = problem(req.send().await.unwrap()).await;
            assert_eq!(s, 400, "{body}: {p}");
            assert_eq!(
                p["detail"],
                format!("the request body exceeds {limit}"),
                "{p}"
            );
            assert_eq!(
                p["errors"][0]["pointer"], pointer,
                "{body} streamed={streamed}: {p}"
            );
        }
    }
    // Invalid JSON, whole or streamed.
    for body in [&b"{\"a\":tru}"[..], b"{\"a\":\"\xc3\"}", b"[1,]", b"{} {}"] {
        for streamed in [false, true] {
            let req = c
                .post(gw.url("/x"))
                .header("content-type", "application/json");
            let req = if streamed {
                req.body(chunked(body.to_vec(), 2))
            } else {
                req.body(body.to_vec())
            };
            let (s, p, _) = problem(req.send().await.unwrap()).await;
            assert_eq!(s, 400, "{p}");
            assert_eq!(p["detail"], "the request body is not valid JSON", "{p}");
        }
    }
    // None of them reached the upstream whole.
    assert!(
        up.requests()
            .iter()
            .all(|r| r.body.is_empty() || serde_json::from_slice::<Value>(&r.body).is_err()),
        "{:?}",
        up.requests()
    );
    let within = r#"{"a":[1,2,3],"b":{"c":"12345678"}}"#;
    for streamed in [false, true] {
        let req = c
            .post(gw.url("/x"))
            .header("content-type", "application/vnd.api+json");
        let req = if streamed {
            req.body(chunked(within.as_bytes().to_vec(), 1))
        } else {
            req.body(within)
        };
        assert_eq!(req.send().await.unwrap().status(), 200);
        assert_eq!(up.last_request().unwrap().body, within.as_bytes());
    }
    // Not JSON: untouched, even when it would not parse.
    let resp = c
        .post(gw.url("/x"))
        .header("content-type", "text/plain")
        .body("{{{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last_request().unwrap().body, b"{{{{{");
    assert_failures(
        &gw,
        "r",
        "shape",
        &[
            ("max_depth", 2.0),
            ("max_keys", 2.0),
            ("max_array", 2.0),
            ("max_string", 6.0),
            ("invalid_json", 8.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_large_body_streams_through_and_a_late_violation_stops_it() {
    let up = TestUpstream::start("up").await;
    let config = doc_example("json_limits.md", up.addr());
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    // About 1 MiB of valid JSON within the example's limits (99 members of
    // 175-element arrays), chunked: it streams (not held back) and arrives byte
    // for byte.
    let item = r#"{"id":"pay_0001","amount":"10.00","currency":"EUR","ok":true}"#;
    let array = format!("[{}]", vec![item; 175].join(","));
    let members: Vec<String> = (0..99).map(|i| format!("\"k{i}\":{array}")).collect();
    let big = format!("{{{}}}", members.join(","));
    assert!(big.len() > 1 << 20, "{}", big.len());
    let resp = c
        .post(gw.url("/v1/bulk"))
        .header("content-type", "application/json")
        .body(chunked(big.clone().into_bytes(), 16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last_request().unwrap().body.len(), big.len());
    assert_eq!(up.last_request().unwrap().body, big.as_bytes());
    // The same size with a violation at its end: 400, and the upstream never
    // records a complete request.
    up.clear();
    let late = format!(
        "{},\"deep\":{}1{}}}",
        &big[..big.len() - 1],
        "[".repeat(9),
        "]".repeat(9)
    );
    let (s, p, _) = problem(
        c.post(gw.url("/v1/bulk"))
            .header("content-type", "application/json")
            .body(chunked(late.into_bytes(), 16 * 1024))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/deep/0/0/0/0/0/0/0", "{p}");
    assert!(up.requests().is_empty(), "{:?}", up.requests().len());
    // The doc's own example.
    let doc = r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}"#;
    let (s, p, _) = problem(
        c.post(gw.url("/v1/x"))
            .header("content-type", "application/json")
            .body(doc)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        p["errors"][0],
        json!({"pointer": "/a/b/c/d/e/f/g/h", "message": "max_depth (8) exceeded"})
    );
}

#[tokio::test]
async fn json_limits_before_openapi_and_the_body_read_once() {
    let up = TestUpstream::start("payments").await;
    let config = doc_example("openapi.md", up.addr())
        .replace(
            "plugins = [\"payments_api\"]",
            "plugins = [\"payments_api\", \"shape\"]",
        )
        .replace(
            "[upstreams.payments]",
            "[plugins.shape]\ntype = \"json_limits\"\nmax_depth = 4\n\n[upstreams.payments]",
        );
    let gw = Gateway::builder(&config)
        .file("openapi/payments.yaml", PAYMENTS_31)
        .file("openapi/common.yaml", COMMON_31)
        .start()
        .await;
    let c = gw.client();
    let post = |body: String| {
        c.post(gw.url("/v1/payments"))
            .header("content-type", "application/json")
            .header("idempotency-key", "key-0000001")
            .body(body)
            .send()
    };
    // Both plugins read the same bytes; the upstream gets them once, unaltered.
    assert_eq!(post(PAYMENT.to_string()).await.unwrap().status(), 200);
    assert_eq!(up.last_request().unwrap().body, PAYMENT.as_bytes());
    // Too deep for json_limits: refused by it (listed second, ordered first).
    let mut deep: Value = serde_json::from_str(PAYMENT).unwrap();
    deep["metadata"] = json!({"a": {"b": {"c": {"d": "e"}}}});
    let (s, p, _) = problem(post(deep.to_string()).await.unwrap()).await;
    assert_eq!(s, 400);
    assert_eq!(p["detail"], "the request body exceeds max_depth", "{p}");
}

#[tokio::test]
async fn edge_cases_of_the_body_declaration() {
    let up = TestUpstream::start("payments").await;
    let gw = openapi_gateway(&up, false).await;
    let c = gw.client();
    let id = "3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60";
    // HEAD is checked as GET when the description has no HEAD of its own.
    let resp = c
        .head(gw.url(&format!("/v1/payments/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c.head(gw.url("/v1/payments/42")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let hits = up.hits();
    // Two Content-Types: which one holds is ambiguous -> 400.
    let resp = c
        .post(gw.url("/v1/payments"))
        .header("content-type", "text/plain")
        .header("idempotency-key", "key-0000001")
        .header("content-type", "application/json")
        .body(PAYMENT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A compressed body cannot be checked -> 415.
    let resp = c
        .post(gw.url("/v1/payments"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("idempotency-key", "key-0000001")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // An empty chunked body where one is required: 400 body missing.
    let resp = c
        .post(gw.url("/v1/payments"))
        .header("content-type", "application/json")
        .header("idempotency-key", "key-0000001")
        .body(chunked(Vec::new(), 1))
        .send()
        .await
        .unwrap();
    let (s, p, _) = problem(resp).await;
    assert_eq!(
        (s, p["detail"].as_str()),
        (400, Some("a request body is required")),
        "{p}"
    );
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn json_limits_checks_a_queued_body_whole_before_it_is_published() {
    let redis = common::brokers::RedisServer::start().await;
    let config = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
[plugins.shape]
type = "json_limits"
max_depth = 4
[queues.events]
kind = "redis_stream"
url = "{}"
stream = "tollgate:validated"
[[routes]]
name = "events"
path = "/events"
queue = "events"
plugins = ["shape"]
"#,
        redis.url()
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    // Over 64 KiB and chunked: still checked whole, as nothing streams upstream.
    let filler = vec![format!("\"{}\"", "x".repeat(10_000)); 7].join(",");
    let deep = format!("[{filler},{}1{}]", "[".repeat(5), "]".repeat(5));
    for body in [
        reqwest::Body::from(deep.clone()),
        chunked(deep.into_bytes(), 8192),
    ] {
        let resp = c
            .post(gw.url("/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, p, _) = problem(resp).await;
        assert_eq!(s, 400, "{p}");
        assert_eq!(p["detail"], "the request body exceeds max_depth", "{p}");
    }
    assert_eq!(redis.xlen("tollgate:validated").await, 0);
    let ok = format!("[{filler},[[1]]]");
    let resp = c
        .post(gw.url("/events"))
        .header("content-type", "application/json")
        .body(chunked(ok.into_bytes(), 8192))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(redis.xlen("tollgate:validated").await, 1);
}
