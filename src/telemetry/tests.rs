use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn tracer(ratio: f64) -> Tracer {
    Tracer::build(&TelemetryConfig {
        otlp_endpoint: "http://127.0.0.1:4318".into(),
        service_name: "svc".into(),
        sample_ratio: ratio,
        headers: BTreeMap::new(),
    })
    .unwrap()
}

fn headers(tp: &[&str]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for v in tp {
        h.append("traceparent", http::HeaderValue::from_str(v).unwrap());
    }
    h
}

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn traceparent_parsing_follows_w3c() {
    let p = parse_traceparent(VALID.as_bytes()).unwrap();
    assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
    assert!(p.sampled);
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled);
    // A later version may append fields after a dash.
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future";
    assert!(parse_traceparent(future.as_bytes()).is_some());
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad:?}");
    }
    // Two traceparent fields: invalid, a new trace.
    assert!(parent(&headers(&[VALID, VALID])).is_none());
    assert!(parent(&headers(&[VALID])).is_some());
}

#[test]
fn a_valid_parent_is_continued_and_its_flag_kept() {
    let t = tracer(0.0).start(&headers(&[VALID]), Instant::now());
    let id = t.trace_id_hex().unwrap();
    assert_eq!(&id, b"4bf92f3577b34da6a3ce929d0e0e4736");
    let span = t.begin_client().unwrap();
    let tp = t.traceparent(&span).unwrap();
    let tp = tp.to_str().unwrap();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(
        tp.ends_with("-01"),
        "sampled parent, ratio 0: still sampled: {tp}"
    );
    assert_ne!(&tp[36..52], "00f067aa0ba902b7");
    assert_eq!(tp.len(), 55);

    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let t = tracer(1.0).start(&headers(&[unsampled]), Instant::now());
    let s = t.begin_client().unwrap();
    assert!(t
        .traceparent(&s)
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("-00"));
}

#[test]
fn the_ratio_samples_new_traces() {
    let on = tracer(1.0);
    let off = tracer(0.0);
    let half = tracer(0.5);
    let mut sampled = 0;
    for _ in 0..4000 {
        let id = new_trace_id();
        assert!(on.sample(&id));
        assert!(!off.sample(&id));
        sampled += usize::from(half.sample(&id));
    }
    // Binomial(4000, 0.5): mean 2000, sd 31.6; ±6 sd.
    assert!((1810..=2190).contains(&sampled), "{sampled}");
}

#[test]
fn bad_tables_are_refused_with_their_key() {
    let bad = TelemetryConfig {
        otlp_endpoint: "ftp://collector".into(),
        service_name: " ".into(),
        sample_ratio: 1.5,
        headers: [
            ("content-length".to_string(), "3".to_string()),
            ("x bad".to_string(), "v".to_string()),
        ]
        .into_iter()
        .collect(),
    };
    let errs = Tracer::build(&bad).err().unwrap();
    let keys: Vec<&str> = errs.iter().map(|e| e.0).collect();
    assert_eq!(
        keys,
        [
            "otlp_endpoint",
            "service_name",
            "sample_ratio",
            "headers",
            "headers"
        ]
    );
    assert!(!errs.iter().any(|e| e.1.contains("\"3\"")));
    let t = tracer(1.0);
    assert_eq!(t.client.target().path, "/v1/traces");
    let mut c = t.config.clone();
    c.otlp_endpoint = "https://otel.example:443/base/".into();
    assert_eq!(
        Tracer::build(&c).unwrap().client.target().path,
        "/base/v1/traces"
    );
}

#[test]
fn spans_encode_as_otlp() {
    let mut t = tracer(1.0).start(&headers(&[VALID]), Instant::now());
    let server_id = t.0.as_ref().unwrap().span_id;
    let s = t.begin_client().unwrap();
    t.end_client(
        s,
        ClientEnd {
            method: "GET",
            peer: Arc::from("payments"),
            peer_key: "tollgate.upstream",
            address: Some("127.0.0.1:8080".parse().unwrap()),
            host: Some(Arc::from("payments.internal:8080")),
            port: None,
            status: Some(503),
            error: None,
            messaging: None,
        },
    );
    let f = t
        .finished(ServerEnd {
            method: "GET",
            path: "/v1/x",
            http_route: Some(Arc::from("/v1/{id}")),
            status: 502,
            client: Some("203.0.113.9".parse().unwrap()),
            route: Some(Arc::from("r1")),
            consumer: None,
        })
        .unwrap();
    assert!(t
        .finished(ServerEnd {
            method: "GET",
            path: "/",
            http_route: None,
            status: 200,
            client: None,
            route: None,
            consumer: None,
        })
        .is_none());
    let body = export::encode("svc", vec![f]);
    let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let rs = &req.resource_spans[0];
    let attrs = &rs.resource.as_ref().unwrap().attributes;
    assert!(attrs
        .iter()
        .any(|kv| kv.key == "service.name" && format!("{:?}", kv.value).contains("\"svc\"")));
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    let (client, server) = (&spans[0], &spans[1]);
    assert_eq!(client.name, "GET payments");
    assert_eq!(server.name, "GET r1");
    assert_eq!(
        hex::encode(&client.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(client.parent_span_id, server_id.to_vec());
    assert_eq!(server.span_id, server_id.to_vec());
    assert_eq!(hex::encode(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(client.status.as_ref().unwrap().code, 2, "5xx: ERROR");
    assert_eq!(server.status.as_ref().unwrap().code, 2, "5xx: ERROR");
    let text = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
            .unwrap_or_default()
    };
    assert!(text(client, "server.address").contains("\"payments.internal\""));
    assert!(text(client, "server.port").contains("8080"));
    assert!(text(server, "http.route").contains("\"/v1/{id}\""));
    assert!(text(server, "client.address").contains("\"203.0.113.9\""));
    assert!(client.end_time_unix_nano >= client.start_time_unix_nano);
    assert!(client.start_time_unix_nano > 1_600_000_000_000_000_000);
}
