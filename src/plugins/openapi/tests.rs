use super::*;
use pingora::http::RequestHeader;

fn plugin(spec: &str) -> OpenApi {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(spec);
    OpenApi::from_file("t", &path, Responses::Log).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn both() -> [OpenApi; 2] {
    [
        plugin("plugins/openapi/payments.yaml"),
        plugin("tests/fixtures/openapi30/payments.json"),
    ]
}

fn op<'a>(api: &'a OpenApi, method: &str, path: &str) -> (&'a Operation, Vec<(String, String)>) {
    let (pi, values) = api.find(path).unwrap_or_else(|| panic!("no path {path}"));
    let item = &api.paths[pi];
    let op = &item
        .ops
        .iter()
        .find(|(m, _)| m.as_str() == method)
        .unwrap_or_else(|| panic!("no {method} {path}"))
        .1;
    (
        op,
        values
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
}

fn params(api: &OpenApi, method: &str, uri: &str, headers: &[(&str, &str)]) -> Vec<FieldError> {
    let path = uri.split('?').next().unwrap();
    let (op, values) = op(api, method, path);
    let mut req = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
    for (n, v) in headers {
        req.insert_header(n.to_string(), *v).unwrap();
    }
    let values: Vec<(&str, String)> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    OpenApi::check_params(op, &values, &req)
}

fn body_errors(api: &OpenApi, method: &str, path: &str, body: &str) -> Vec<FieldError> {
    let m = http::Method::from_bytes(method.as_bytes()).unwrap();
    api.body_errors(&m, path, b"application/json", body.as_bytes())
        .err()
        .unwrap_or_default()
}

const PAYMENT: &str = r#"{"amount":"125.50","currency":"EUR","creditor":{"name":"ACME GmbH","iban":"DE89370400440532013000","email":"billing@acme.example"},"execute_on":"2026-12-31"}"#;

#[test]
fn paths_match_the_most_specific_template() {
    for api in both() {
        assert!(api.find("/payments").is_some());
        let (pi, v) = api.find("/payments/search").unwrap();
        assert!(
            api.paths[pi].params(&["payments", "search"]).is_empty(),
            "{v:?}"
        );
        let (_, v) = api
            .find("/payments/3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60")
            .unwrap();
        assert_eq!(
            v,
            [(
                "payment_id",
                "3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60".to_string()
            )]
        );
        assert!(api.find("/payments/x/refunds").is_some());
        assert!(api.find("/refunds").is_none());
        assert!(api.find("/payments/").is_none());
        assert!(api.find("/payments/a/b").is_none());
        let (pi, _) = api.find("/payments").unwrap();
        assert_eq!(api.paths[pi].allow, "GET, POST");
    }
}

#[test]
fn a_valid_payment_passes_and_each_mistake_is_located() {
    for api in both() {
        assert_eq!(body_errors(&api, "POST", "/payments", PAYMENT), []);
        let mut bad: serde_json::Value = serde_json::from_str(PAYMENT).unwrap();
        bad["amount"] = json!("12.345");
        bad["currency"] = json!("XXX");
        bad["creditor"].as_object_mut().unwrap().remove("iban");
        bad["execute_on"] = json!("2026-02-30");
        bad["creditor"]["email"] = json!("not an email");
        let errs = body_errors(&api, "POST", "/payments", &bad.to_string());
        let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
        for p in [
            "/amount",
            "/currency",
            "/creditor",
            "/execute_on",
            "/creditor/email",
        ] {
            assert!(pointers.contains(&p), "{p} not in {errs:#?}");
        }
        // Masked: the client's values are not quoted back.
        for e in &errs {
            assert!(
                !e.message.contains("12.345") && !e.message.contains("XXX"),
                "{e:?}"
            );
        }
        // Unknown members are refused where the schema says so.
        let extra = PAYMENT.replacen('{', r#"{"debtor_pan":"4111111111111111","#, 1);
        let errs = body_errors(&api, "POST", "/payments", &extra);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(!errs[0].message.contains("4111"), "{errs:?}");
    }
}

#[test]
fn nullable_in_3_0_and_null_type_in_3_1_are_the_same() {
    for api in both() {
        let path = "/payments/3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60/refunds";
        assert_eq!(
            body_errors(&api, "POST", path, r#"{"amount":"1","reason":null}"#),
            []
        );
        assert_eq!(
            body_errors(&api, "POST", path, r#"{"amount":"1","reason":"dup"}"#),
            []
        );
        assert_eq!(
            body_errors(&api, "POST", path, r#"{"amount":"1","reason":5}"#).len(),
            1
        );
    }
}

#[test]
fn parameters_are_coerced_and_checked() {
    for api in both() {
        let ok = params(
            &api,
            "GET",
            "/payments?limit=10&status=pending&status=settled&created_after=2026-01-31",
            &[],
        );
        assert_eq!(ok, []);
        let errs = params(&api, "GET", "/payments?limit=abc", &[]);
        assert_eq!(errs, [field("limit", "must be an integer")]);
        let errs = params(
            &api,
            "GET",
            "/payments?limit=1000&status=lost&created_after=yesterday",
            &[],
        );
        let names: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert!(
            names.contains(&"limit")
                && names.contains(&"status/0")
                && names.contains(&"created_after"),
            "{errs:?}"
        );
        let errs = params(&api, "GET", "/payments?limit=1&limit=2", &[]);
        assert_eq!(errs, [field("limit", "must be given once")]);
        let errs = params(&api, "GET", "/payments/not-a-uuid", &[]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].pointer, "payment_id");
        let errs = params(&api, "POST", "/payments", &[]);
        assert_eq!(
            errs,
            [field(
                "idempotency-key",
                "required header parameter is missing"
            )]
        );
        assert_eq!(
            params(
                &api,
                "POST",
                "/payments",
                &[("idempotency-key", "key-000001")]
            ),
            []
        );
        assert_eq!(
            params(&api, "POST", "/payments", &[("idempotency-key", "short")]).len(),
            1
        );
    }
}

#[test]
fn media_types_and_response_schemas() {
    for api in both() {
        let (search, _) = op(&api, "POST", "/payments/search");
        let body = search.body.as_ref().unwrap();
        assert!(body.media(b"application/json; charset=utf-8").is_some());
        assert!(body.media(b"TEXT/CSV").is_some());
        assert!(body.media(b"text/plain").is_none());
        assert!(body.media(b"").is_none());
        assert!(!body.required);
        let (create, _) = op(&api, "POST", "/payments");
        assert!(create.response(201).is_some());
        assert!(
            create.response(400).is_some(),
            "default (problem+json is JSON)"
        );
        let (get, _) = op(
            &api,
            "GET",
            "/payments/3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60",
        );
        assert!(get.response(200).is_some());
        assert!(get.response(404).is_none());
    }
}

#[test]
fn hostile_bodies_are_refused_as_json_errors() {
    assert!(parse_strict(br#"{"a":1,"a":2}"#)
        .unwrap_err()
        .contains("appears twice"));
    assert!(parse_strict(&[b'['; 10_000]).is_err());
    let big = format!("[{}]", "9".repeat(10_000));
    assert!(parse_strict(big.as_bytes()).is_err());
    assert!(parse_strict(b"{\"a\":\"\xff\"}").is_err());
    assert!(parse_strict(b"{} x").is_err());
    assert!(parse_strict(b"").is_err());
}

#[test]
fn broken_descriptions_are_config_errors_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        ("openapi: 3.1.0\npaths:\n  /x:\n    get: [\n", "line"),
        ("swagger: \"2.0\"\npaths: {}\n", "no `openapi` version"),
        ("openapi: 2.0.0\npaths: {}\n", "only OpenAPI 3.0 and 3.1"),
        ("openapi: 3.1.0\npaths:\n  /x:\n    get:\n      requestBody: { $ref: 'missing.yaml#/a' }\n", "missing.yaml"),
        ("openapi: 3.1.0\npaths:\n  /x:\n    get:\n      requestBody: { $ref: '#/nowhere' }\n", "#/nowhere"),
        ("openapi: 3.1.0\npaths:\n  /x:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { type: 12 }\n", "invalid schema"),
        ("openapi: 3.1.0\npaths:\n  /x/{id}:\n    get:\n      parameters: [{name: other, in: path, schema: {type: string}}]\n", "not in the path"),
        ("openapi: 3.1.0\npaths:\n  /x:\n    get:\n      parameters: [{$ref: 'https://example.com/p.yaml'}]\n", "only references to files"),
        ("openapi: 3.1.0\npaths:\n  /x/{a}{b}:\n    get: {}\n", "one `{name}`"),
        ("openapi: 3.1.0\npaths:\n  /x:\n    get:\n      requestBody: { $ref: '../outside.yaml#/a' }\n", "only references to files"),
    ];
    for (text, want) in cases {
        let p = write("api.yaml", text);
        let err = match compile::compile(&p) {
            Err(e) => e,
            Ok(_) => panic!("accepted:\n{text}"),
        };
        assert!(err.contains(want), "{want:?} not in {err:?} for\n{text}");
    }
}

use serde_json::json;

#[test]
fn partial_templates_extensions_and_wildcard_media() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("api.yaml");
    std::fs::write(
        &p,
        r#"
openapi: 3.1.0
x-owner: payments-team
paths:
  x-internal: {}
  /reports/{id}.pdf:
    get:
      parameters: [{ name: id, in: path, required: true, schema: { type: integer } }]
  /reports/latest.pdf:
    get: {}
  /uploads:
    put:
      requestBody:
        content:
          "*/*": { schema: { type: object, required: [name] } }
"#,
    )
    .unwrap();
    let api = OpenApi::from_file("t", &p, Responses::Off).unwrap();
    assert_eq!(api.paths.len(), 3, "x-internal is not a path");
    let (pi, v) = api.find("/reports/42.pdf").unwrap();
    assert_eq!(v, [("id", "42".to_string())]);
    assert_eq!(api.paths[pi].allow, "GET");
    let (pi, v) = api.find("/reports/latest.pdf").unwrap();
    assert!(v.is_empty(), "the literal wins");
    assert!(api.paths[pi].params(&["reports", "latest.pdf"]).is_empty());
    assert!(api.find("/reports/.pdf").is_none());
    assert!(api.find("/reports/42.txt").is_none());
    let put = http::Method::PUT;
    // A JSON body is checked against the wildcard's schema...
    assert!(api
        .body_errors(&put, "/uploads", b"application/json", b"{}")
        .is_err());
    assert!(api
        .body_errors(&put, "/uploads", b"application/json", br#"{"name":"a"}"#)
        .is_ok());
    // ...anything else is admitted as it is.
    assert!(api
        .body_errors(&put, "/uploads", b"image/png", b"\x89PNG")
        .is_ok());
}

#[test]
fn the_spec_s_formats_are_checked_in_3_0_and_3_1() {
    let dir = tempfile::tempdir().unwrap();
    for version in ["3.0.3", "3.1.0"] {
        let p = dir.path().join(format!("f{version}.yaml"));
        std::fs::write(
            &p,
            format!(
                r#"
openapi: {version}
paths:
  /f:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                date: {{ type: string, format: date }}
                date_time: {{ type: string, format: date-time }}
                uuid: {{ type: string, format: uuid }}
                email: {{ type: string, format: email }}
                uri: {{ type: string, format: uri }}
                ipv4: {{ type: string, format: ipv4 }}
"#
            ),
        )
        .unwrap();
        let api = OpenApi::from_file("t", &p, Responses::Off).unwrap();
        let check = |body: serde_json::Value| {
            api.body_errors(
                &http::Method::POST,
                "/f",
                b"application/json",
                body.to_string().as_bytes(),
            )
        };
        let good = json!({
            "date": "2026-12-06", "date_time": "2026-12-06T10:00:00Z",
            "uuid": "3f1c2a4e-9b7d-4c1e-8f2a-1b2c3d4e5f60", "email": "ops@bank.example",
            "uri": "https://bank.example/x", "ipv4": "192.0.2.1"
        });
        assert_eq!(check(good.clone()), Ok(()), "{version}");
        for (field, bad) in [
            ("date", "2026-02-30"),
            ("date_time", "2026-12-06 10:00"),
            ("uuid", "3f1c2a4e9b7d4c1e8f2a1b2c3d4e5f60"),
            ("email", "ops.bank.example"),
            ("uri", "not a uri"),
            ("ipv4", "192.0.2.256"),
        ] {
            let mut b = good.clone();
            b[field] = json!(bad);
            let errs = check(b).expect_err(field);
            assert_eq!(errs.len(), 1, "{version} {field}: {errs:?}");
            assert_eq!(errs[0].pointer, format!("/{field}"), "{version}");
        }
    }
}
