//! SPEC §14 end to end: the `graphql` plugin in front of a real upstream,
//! every request form, every code, each limit at its value and one over, and
//! persisted queries (allowlist, APQ, `only_persisted`, reload).

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const ALLOWLIST: &str = include_str!("../plugins/graphql/persisted-queries.json");
const ME: &str = "query Me { me { id name } }";

fn sha(q: &str) -> String {
    hex::encode(Sha256::digest(q.as_bytes()))
}

async fn example(up: &TestUpstream) -> Gateway {
    Gateway::builder(&doc_example("graphql.md", up.addr()))
        .file("graphql/persisted-queries.json", ALLOWLIST)
        .start()
        .await
}

/// `(status, problem)` of a POSTed JSON GraphQL request.
async fn post(gw: &Gateway, body: &Value) -> (u16, Value) {
    let resp = gw
        .client()
        .post(gw.url("/graphql"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn code(p: &Value) -> &str {
    p["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// `{ f0 f1 ... }` with `n` root fields.
fn roots(n: usize) -> String {
    format!(
        "{{ {} }}",
        (0..n)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// `{ a { a { ... x } } }`: depth `d`.
fn deep(d: usize) -> String {
    format!("{}x{}", "{ a ".repeat(d - 1) + "{ ", " }".repeat(d))
}

#[tokio::test]
async fn each_limit_passes_at_its_value_and_refuses_one_over() {
    let up = TestUpstream::start("graph").await;
    let gw = example(&up).await;
    let aliases = |n: usize| {
        format!(
            "{{ me {{ {} }} }}",
            (0..n)
                .map(|i| format!("a{i}: id"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    // me(1) + accounts: m × (1 + transactions); transactions: n × (1 + id).
    let cost = |m: u64, n: u64| 1 + m * (1 + n * 2);
    let complex = |m: u64, n: u64| {
        format!("{{ me {{ accounts(first: {m}) {{ transactions(last: {n}) {{ id }} }} }} }}")
    };
    assert_eq!(cost(12, 20), 493);
    let cases: Vec<(String, String, &str)> = vec![
        (deep(6), deep(7), "DEPTH_LIMIT"),
        (aliases(10), aliases(11), "ALIAS_LIMIT"),
        (roots(10), roots(11), "ROOT_FIELD_LIMIT"),
        (complex(12, 20), complex(13, 20), "COMPLEXITY_LIMIT"),
    ];
    for (ok, over, want) in cases {
        up.clear();
        let (s, p) = post(&gw, &json!({ "query": ok })).await;
        assert_eq!(s, 200, "{ok}: {p}");
        assert_eq!(up.hits(), 1);
        let (s, p) = post(&gw, &json!({ "query": over })).await;
        assert_eq!((s, code(&p)), (400, want), "{over}: {p}");
        assert_eq!(p["status"], 400, "a problem body: {p}");
        assert!(p["errors"][0]["message"].as_str().is_some(), "{p}");
        assert_eq!(up.hits(), 1, "a refused query reached the upstream");
    }
    // Tokens: 5000 by default; `{ a a a ... }` has n + 2 tokens (exact
    // boundaries are the analyser's unit tests).
    let tokens = |n: usize| format!("{{ {} }}", vec!["a"; n].join(" "));
    let (s, p) = post(&gw, &json!({ "query": tokens(4990) })).await;
    assert_ne!(code(&p), "TOKEN_LIMIT", "{s}");
    let (s, p) = post(&gw, &json!({ "query": tokens(5000) })).await;
    assert_eq!((s, code(&p)), (400, "TOKEN_LIMIT"));
    // A variable without a value counts as default_list_size (20).
    let q = "query($n: Int) { me { accounts(first: $n) { id } } }";
    let (s, p) = post(&gw, &json!({ "query": q })).await;
    assert_eq!(s, 200, "{p}");
    let (s, p) = post(&gw, &json!({ "query": q, "variables": { "n": 1000 } })).await;
    assert_eq!((s, code(&p)), (400, "COMPLEXITY_LIMIT"), "{p}");
    let m = gw.metrics().await;
    for (reason, n) in [
        ("depth", 1.0),
        ("aliases", 1.0),
        // roots(11), and the 4990 root fields of the token case
        ("root_fields", 2.0),
        ("complexity", 2.0),
        ("tokens", 1.0),
    ] {
        let q = format!(
            r#"tollgate_graphql_rejections_total{{plugin="accounts_graph",reason="{reason}",route="graphql"}}"#
        );
        assert_eq!(find_metric(&m, &q), Some(n), "{q}");
    }
}

#[tokio::test]
async fn every_request_form_introspection_fragments_and_batches() {
    let up = TestUpstream::start("graph").await;
    let gw = example(&up).await;
    let c = gw.client();
    // GET ?query=
    let resp = c
        .get(gw.url("/graphql?query=%7B%20me%20%7B%20id%20%7D%20%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(gw.url(&format!("/graphql?query={}", percent(&deep(7)))))
        .send()
        .await
        .unwrap();
    let (s, p) = answer(resp).await;
    assert_eq!((s, code(&p)), (400, "DEPTH_LIMIT"));
    // application/graphql: the body is the query, sent as it is.
    let resp = c
        .post(gw.url("/graphql"))
        .header("content-type", "application/graphql")
        .body("{ me { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last_request().unwrap().body, b"{ me { id } }");
    // Introspection is off.
    let (s, p) = post(&gw, &json!({"query": "{ __schema { types { name } } }"})).await;
    assert_eq!((s, code(&p)), (400, "INTROSPECTION_DISABLED"));
    let (s, p) = post(
        &gw,
        &json!({"query": "{ me { ... on User { __type(name: \"x\") { name } } } }"}),
    )
    .await;
    assert_eq!((s, code(&p)), (400, "INTROSPECTION_DISABLED"));
    let (s, _) = post(&gw, &json!({"query": "{ me { __typename } }"})).await;
    assert_eq!(s, 200);
    // Fragments are expanded (depth through a fragment), cycles refused.
    let frag = "query { me { ...A } } fragment A on User { a { b { c { d { e { f } } } } } }";
    let (s, p) = post(&gw, &json!({ "query": frag })).await;
    assert_eq!((s, code(&p)), (400, "DEPTH_LIMIT"), "{p}");
    let cycle =
        "query { me { ...A } } fragment A on User { x { ...B } } fragment B on User { y { ...A } }";
    let (s, p) = post(&gw, &json!({ "query": cycle })).await;
    assert_eq!((s, code(&p)), (400, "PARSE_ERROR"), "{p}");
    for bad in [
        "{ me { id }",
        "query A { a } query B { b }",
        "{ me { ...Missing } }",
    ] {
        let (s, p) = post(&gw, &json!({ "query": bad })).await;
        assert_eq!((s, code(&p)), (400, "PARSE_ERROR"), "{bad}: {p}");
    }
    // operationName picks the operation measured.
    let two = format!("query Small {{ me {{ id }} }} query Big {}", deep(7));
    let (s, _) = post(&gw, &json!({ "query": two, "operationName": "Small" })).await;
    assert_eq!(s, 200);
    let (s, p) = post(&gw, &json!({ "query": two, "operationName": "Big" })).await;
    assert_eq!((s, code(&p)), (400, "DEPTH_LIMIT"));
    // Batches: each operation checked; at most max_batch (10).
    let batch: Vec<Value> = (0..10).map(|_| json!({"query": "{ me { id } }"})).collect();
    let (s, _) = post(&gw, &Value::Array(batch.clone())).await;
    assert_eq!(s, 200);
    let mut bad = batch.clone();
    bad[7] = json!({"query": deep(7)});
    let (s, p) = post(&gw, &Value::Array(bad)).await;
    assert_eq!((s, code(&p)), (400, "DEPTH_LIMIT"));
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("operation 7"),
        "{p}"
    );
    let mut eleven = batch;
    eleven.push(json!({"query": "{ me { id } }"}));
    let (s, p) = post(&gw, &Value::Array(eleven)).await;
    assert_eq!((s, code(&p)), (400, "BATCH_LIMIT"));
    // Not JSON, or a form that is not GraphQL's.
    let resp = c
        .post(gw.url("/graphql"))
        .header("content-type", "application/json")
        .body("{\"query\":")
        .send()
        .await
        .unwrap();
    let (s, p) = answer(resp).await;
    assert_eq!((s, code(&p)), (400, "PARSE_ERROR"));
    let resp = c
        .post(gw.url("/graphql"))
        .header("content-type", "text/plain")
        .body("{ me { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    // Forms other servers read differently are refused, not passed.
    for (method, url, ct, body) in [
        (
            "POST",
            "/graphql?query=%7B__schema%7Btypes%7Bname%7D%7D%7D",
            "application/json",
            r#"{"query":"{ me { id } }"}"#,
        ),
        (
            "POST",
            "/graphql",
            "application/json; charset=utf-7",
            r#"{"query":"{ me { id } }"}"#,
        ),
        (
            "GET",
            "/graphql?query=%7Bme%7Bid%7D%7D&query=%7B__schema%7Btypes%7Bname%7D%7D%7D",
            "",
            "",
        ),
        (
            "PUT",
            "/graphql",
            "application/json",
            r#"{"query":"{ me { id } }"}"#,
        ),
        (
            "HEAD",
            &format!("/graphql?query={}", percent(&deep(7))),
            "",
            "",
        ),
    ] {
        let hits = up.hits();
        let mut req = c.request(method.parse().unwrap(), gw.url(url));
        if !ct.is_empty() {
            req = req.header("content-type", ct).body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        assert!(
            resp.status().is_client_error(),
            "{method} {url} {ct}: {}",
            resp.status()
        );
        assert_eq!(up.hits(), hits, "{method} {url} {ct} reached the upstream");
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn persisted_queries_by_hash_by_text_and_only_persisted() {
    let up = TestUpstream::start("graph").await;
    let gw = example(&up).await;
    let apq =
        |hash: &str| json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
    // An APQ hit: checked as the allowlisted text; the request goes on as sent.
    let (s, _) = post(&gw, &apq(&sha(ME))).await;
    assert_eq!(s, 200);
    let sent: Value = serde_json::from_slice(&up.last_request().unwrap().body).unwrap();
    assert_eq!(sent, apq(&sha(ME)));
    // A miss: PersistedQueryNotFound, as Apollo clients expect, then the
    // second try with the text passes (only_persisted is off here).
    let other = "{ me { id } }";
    let (s, p) = post(&gw, &apq(&sha(other))).await;
    assert_eq!((s, code(&p)), (400, "PERSISTED_QUERY_NOT_FOUND"));
    assert_eq!(p["errors"][0]["message"], "PersistedQueryNotFound");
    let mut second = apq(&sha(other));
    second["query"] = json!(other);
    let (s, _) = post(&gw, &second).await;
    assert_eq!(s, 200);
    // A text that does not match its hash is refused.
    second["query"] = json!("{ me { name } }");
    let (s, p) = post(&gw, &second).await;
    assert_eq!((s, code(&p)), (400, "PARSE_ERROR"));

    // only_persisted: by hash or by text, nothing else.
    let config = doc_example("graphql.md", up.addr()).replace(
        "persisted_queries_file",
        "only_persisted = true\npersisted_queries_file",
    );
    let strict = Gateway::builder(&config)
        .file("graphql/persisted-queries.json", ALLOWLIST)
        .start()
        .await;
    let (s, _) = post(&strict, &apq(&sha(ME))).await;
    assert_eq!(s, 200);
    let (s, _) = post(&strict, &json!({ "query": ME })).await;
    assert_eq!(s, 200);
    let (s, p) = post(&strict, &json!({ "query": other })).await;
    assert_eq!((s, code(&p)), (400, "PERSISTED_QUERY_REQUIRED"));
    let (s, p) = post(&strict, &second).await;
    assert_eq!((s, code(&p)), (400, "PERSISTED_QUERY_REQUIRED"));
    let (s, p) = post(&strict, &apq(&sha(other))).await;
    assert_eq!((s, code(&p)), (400, "PERSISTED_QUERY_NOT_FOUND"));
    // The allowlist reloads when edited.
    let mut list: Value = serde_json::from_str(ALLOWLIST).unwrap();
    list[sha(other)] = json!(other);
    strict.write_file("graphql/persisted-queries.json", list.to_string());
    wait_until_msg(WAIT, "the new allowlisted query", || async {
        post(&strict, &json!({ "query": other })).await.0 == 200
    })
    .await;
    let q = r#"tollgate_graphql_rejections_total{plugin="accounts_graph",reason="persisted_query_required",route="graphql"}"#;
    assert!(strict.metric(q).await.unwrap() >= 1.0);
}

#[test]
fn an_allowlist_whose_hash_does_not_match_its_text_is_a_config_error() {
    let config = doc_example("graphql.md", "127.0.0.1:9".parse().unwrap());
    let wrong = json!({ sha("{ other }"): ME }).to_string();
    let (ok, out) = check_config(&config, &[("graphql/persisted-queries.json", &wrong)]);
    assert!(!ok);
    assert!(
        out.contains("plugins.accounts_graph.persisted_queries_file"),
        "{out}"
    );
    assert!(out.contains(&sha(ME)), "names the right hash: {out}");
    let (ok, out) = check_config(
        &config
            .replace("max_depth = 6", "max_depth = 6\nonly_persisted = true")
            .replace(
                "persisted_queries_file = \"graphql/persisted-queries.json\"",
                "",
            ),
        &[],
    );
    assert!(!ok);
    assert!(out.contains("only_persisted"), "{out}");
}

#[tokio::test]
async fn the_doc_example_s_figures() {
    let up = TestUpstream::start("graph").await;
    let gw = example(&up).await;
    let q = |m: u32| {
        format!("{{ me {{ accounts(first: {m}) {{ transactions(first: 20) {{ id }} }} }} }}")
    };
    let (s, p) = post(&gw, &json!({ "query": q(50) })).await;
    assert_eq!((s, code(&p)), (400, "COMPLEXITY_LIMIT"));
    assert!(
        p["errors"][0]["message"].as_str().unwrap().contains("2051"),
        "{p}"
    );
    let (s, _) = post(&gw, &json!({ "query": q(10) })).await;
    assert_eq!(s, 200);
}
