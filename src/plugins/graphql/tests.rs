use super::*;

const ME: &str = "query Me { me { id name } }";

fn plugin(only_persisted: bool) -> GraphQl {
    GraphQl {
        name: "t".into(),
        limits: Limits::SPEC,
        persisted: HashMap::from([(sha256(ME), Arc::from(ME))]),
        only_persisted,
        max_batch: 3,
    }
}

fn op(query: Option<&str>, hash: Option<String>) -> Operation {
    Operation {
        query: query.map(str::to_string),
        hash,
        ..Operation::default()
    }
}

#[test]
fn the_get_form_reads_its_four_parameters() {
    let o = Operation::from_query_string(
        "query=query+Q(%24n%3A+Int)+%7B+a(first%3A+%24n)+%7B+b+%7D+%7D&operationName=Q&variables=%7B%22n%22%3A3%7D&x=1",
    )
    .unwrap();
    assert_eq!(
        o.query.as_deref(),
        Some("query Q($n: Int) { a(first: $n) { b } }")
    );
    assert_eq!(o.operation_name.as_deref(), Some("Q"));
    assert_eq!(o.variables, Some(serde_json::json!({"n": 3})));
    let h = "a".repeat(64);
    let ext = format!("extensions=%7B%22persistedQuery%22%3A%7B%22sha256Hash%22%3A%22{h}%22%7D%7D");
    assert_eq!(Operation::from_query_string(&ext).unwrap().hash, Some(h));
    assert_eq!(
        Operation::from_query_string("variables=%7Bnope")
            .unwrap_err()
            .code,
        "PARSE_ERROR"
    );
    assert!(Operation::from_query_string("query=%FF").is_err());
}

#[test]
fn the_json_form_is_strict_about_types() {
    let o =
        Operation::from_json(&serde_json::json!({"query": "{ a }", "variables": null})).unwrap();
    assert_eq!((o.query.as_deref(), o.variables), (Some("{ a }"), None));
    for bad in [
        serde_json::json!({"query": 5}),
        serde_json::json!("{ a }"),
        serde_json::json!({"query": "{ a }", "extensions": {"persistedQuery": {}}}),
    ] {
        assert_eq!(
            Operation::from_json(&bad).unwrap_err().code,
            "PARSE_ERROR",
            "{bad}"
        );
    }
}

#[test]
fn persisted_queries_and_batches() {
    let open = plugin(false);
    let strict = plugin(true);
    let other = "{ me { id } }";
    let hash = |q: &str| Some(hex::encode(sha256(q)));
    // By hash: the allowlisted text is what is measured.
    assert!(open.check(&[op(None, hash(ME))]).is_ok());
    assert!(strict.check(&[op(None, hash(ME))]).is_ok());
    // Only lower-case hex, as the upstream looks it up.
    assert_eq!(
        strict
            .check(&[op(None, hash(ME).map(|h| h.to_uppercase()))])
            .unwrap_err()
            .code,
        "PERSISTED_QUERY_NOT_FOUND"
    );
    // Not found: by hash alone; with its text, only when not only_persisted.
    assert_eq!(
        open.check(&[op(None, hash(other))]).unwrap_err().code,
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert!(open.check(&[op(Some(other), hash(other))]).is_ok());
    assert_eq!(
        strict
            .check(&[op(Some(other), hash(other))])
            .unwrap_err()
            .code,
        "PERSISTED_QUERY_REQUIRED"
    );
    // A text that is not its hash's.
    assert_eq!(
        open.check(&[op(Some(other), hash(ME))]).unwrap_err().code,
        "PARSE_ERROR"
    );
    // By text.
    assert!(strict.check(&[op(Some(ME), None)]).is_ok());
    assert_eq!(
        strict.check(&[op(Some(other), None)]).unwrap_err().code,
        "PERSISTED_QUERY_REQUIRED"
    );
    assert_eq!(
        open.check(&[op(None, None)]).unwrap_err().code,
        "PARSE_ERROR"
    );
    // Batches: max_batch = 3; the complexity is summed.
    let one = open.check(&[op(Some(other), None)]).unwrap();
    let three: Vec<Operation> = (0..3).map(|_| op(Some(other), None)).collect();
    assert_eq!(open.check(&three).unwrap(), 3 * one);
    let four: Vec<Operation> = (0..4).map(|_| op(Some(other), None)).collect();
    assert_eq!(open.check(&four).unwrap_err().code, "BATCH_LIMIT");
}

#[test]
fn allowlist_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pq.json");
    let good = serde_json::json!({ hex::encode(sha256(ME)): ME });
    std::fs::write(&p, good.to_string()).unwrap();
    assert_eq!(load_allowlist(&p).unwrap().len(), 1);
    for (bad, want) in [
        (
            serde_json::json!({ "abc": ME }).to_string(),
            "is not the SHA-256",
        ),
        (
            serde_json::json!({ hex::encode(sha256("x")): ME }).to_string(),
            "is not the SHA-256",
        ),
        (
            serde_json::json!({ hex::encode(sha256(ME)): 5 }).to_string(),
            "must be a string",
        ),
        ("[1]".to_string(), "a JSON object of hash -> query"),
    ] {
        std::fs::write(&p, bad).unwrap();
        let e = load_allowlist(&p).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn get_parameters_are_decoded_and_given_once() {
    let twice = Operation::from_query_string("query=%7Ba%7D&qu%65ry=%7Bb%7D").unwrap_err();
    assert!(twice.message.contains("more than once"), "{twice:?}");
    assert!(Operation::from_query_string("operationName=A&operationName=B").is_err());
    for bad in [
        "variables=%5B1%5D",
        "extensions=%22x%22",
        "variables=%7B%22a%22%3A1%2C%22a%22%3A2%7D",
    ] {
        assert_eq!(
            Operation::from_query_string(bad).unwrap_err().code,
            "PARSE_ERROR",
            "{bad}"
        );
    }
    for ids in ["documentId=abc", "doc_id=1", "id=1"] {
        assert!(Operation::from_query_string(ids).is_err(), "{ids}");
    }
    assert!(Operation::from_json(&serde_json::json!({"query": "{a}", "documentId": "x"})).is_err());
    assert!(Operation::from_json(&serde_json::json!({"query": "{a}", "variables": "{}"})).is_err());
}

#[test]
fn only_utf8_is_read() {
    for ok in [
        &b"application/json"[..],
        b"application/json; charset=utf-8",
        b"application/json;charset=\"UTF-8\"",
        b"application/graphql; x=y",
    ] {
        assert!(utf8_charset(ok), "{:?}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b"application/json; charset=utf-7"[..],
        b"application/json; CHARSET=iso-8859-1",
        b"application/json; charset=\"utf-16\"",
    ] {
        assert!(!utf8_charset(bad), "{:?}", String::from_utf8_lossy(bad));
    }
}
