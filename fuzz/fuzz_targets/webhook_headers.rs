//! Webhook signature headers and bodies from arbitrary bytes, for every scheme.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate::plugins::webhook::WebhookSignature;

fn verifiers() -> &'static Vec<(WebhookSignature, &'static str)> {
    static V: OnceLock<Vec<(WebhookSignature, &'static str)>> = OnceLock::new();
    V.get_or_init(|| {
        [
            ("scheme = \"stripe\"\nsecrets = [\"whsec_a\", \"whsec_b\"]", "stripe-signature"),
            ("scheme = \"github\"\nsecrets = [\"gh\"]", "x-hub-signature-256"),
            ("scheme = \"standard_webhooks\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]", "webhook-signature"),
            (
                "scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-sig\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\nprefix = \"v=\"\ntimestamp_header = \"x-ts\"\nsigned_string = \"{timestamp}.{header:x-evt}.{body}\"",
                "x-sig",
            ),
        ]
        .into_iter()
        .map(|(table, header)| {
            let c: tollgate::config::WebhookSignatureConfig = toml::from_str(table).expect("valid table");
            (WebhookSignature::from_config(&c, "fuzz").unwrap_or_else(|_| panic!("builds")), header)
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // Layout: header value \0 timestamp/id \0 body.
    let mut parts = data.splitn(3, |&b| b == 0);
    let sig = parts.next().unwrap_or_default();
    let extra = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    for (v, header) in verifiers() {
        let mut h = http::HeaderMap::new();
        if let Ok(val) = http::HeaderValue::from_bytes(sig) {
            h.insert(*header, val.clone());
        }
        if let Ok(val) = http::HeaderValue::from_bytes(extra) {
            for name in ["webhook-id", "webhook-timestamp", "x-ts", "x-evt", "x-github-delivery"] {
                h.insert(name, val.clone());
            }
        }
        let _ = v.verify(&h, body, 1_614_265_330);
    }
});
