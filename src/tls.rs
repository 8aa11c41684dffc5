//! TLS listeners on rustls: certificates picked by SNI from the names they are
//! valid for, ALPN h2 + http/1.1, optional client certificates (mTLS).
//!
//! A client whose SNI matches no certificate, or that sends none (a client
//! connecting to an IP address), gets the listener's first certificate, as
//! nginx's default server does; with `[server] strict_sni = true` its
//! handshake is refused instead (rustls sends an `access_denied` alert), so a
//! scanner learns no certificate and no name from an address alone.

use crate::config::{Config, TlsListenerConfig};
use crate::runtime::upstream::{load_certs, load_key};
use pingora::listeners::tls::TlsSettings;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks the certificate whose names match the client's SNI; the first one when
/// none matches or no SNI was sent, unless `strict`. The certificates (and
/// `strict`) are swapped in place when a reload changes them, without touching
/// the listener.
#[derive(Debug)]
pub struct SniResolver {
    entries: arc_swap::ArcSwap<Vec<Entry>>,
    strict: AtomicBool,
}

/// The resolver of each TLS listen address, for certificate reloads.
static RESOLVERS: once_cell::sync::Lazy<parking_lot::Mutex<BTreeMap<String, Arc<SniResolver>>>> =
    once_cell::sync::Lazy::new(Default::default);

/// Certificates read for every TLS listen address, and `strict_sni`, ready to
/// install.
pub struct Prepared(Vec<(String, Vec<Entry>)>, bool);

fn groups(cfg: &Config) -> BTreeMap<&str, Vec<&TlsListenerConfig>> {
    let mut groups: BTreeMap<&str, Vec<&TlsListenerConfig>> = BTreeMap::new();
    for t in &cfg.server.tls {
        groups.entry(t.listen.as_str()).or_default().push(t);
    }
    groups
}

/// Read and check every certificate and key of the config (a reload fails as a
/// whole when one is broken).
pub fn prepare(cfg: &Config) -> Result<Prepared, String> {
    let mut out = Vec::new();
    for (addr, blocks) in groups(cfg) {
        let entries = blocks
            .iter()
            .map(|t| certified(cfg, t))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((addr.to_string(), entries));
    }
    Ok(Prepared(out, cfg.server.strict_sni))
}

/// Serve the prepared certificates from now on (new handshakes only).
pub fn install(p: Prepared) {
    let resolvers = RESOLVERS.lock();
    for (addr, entries) in p.0 {
        if let Some(r) = resolvers.get(&addr) {
            r.entries.store(Arc::new(entries));
            r.strict.store(p.1, Ordering::Relaxed);
        }
    }
}

fn name_matches(pattern: &str, host: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        host.split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
    } else {
        pattern.eq_ignore_ascii_case(host)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let entries = self.entries.load();
        let matched = hello.server_name().and_then(|sni| {
            entries
                .iter()
                .find(|e| e.names.iter().any(|n| name_matches(n, sni)))
        });
        match matched {
            Some(e) => Some(e.key.clone()),
            // rustls answers `None` with an access_denied alert.
            None if self.strict.load(Ordering::Relaxed) => None,
            None => entries.first().map(|e| e.key.clone()),
        }
    }
}

fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return vec![];
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_string());
            }
        }
    }
    names
}

fn certified(cfg: &Config, t: &TlsListenerConfig) -> Result<Entry, String> {
    let ders = load_certs(&cfg.resolve(&t.cert))?;
    let key = load_key(&cfg.resolve(&t.key))?;
    let names = ders.first().map(|d| cert_names(d)).unwrap_or_default();
    let chain: Vec<CertificateDer<'static>> = ders.into_iter().map(CertificateDer::from).collect();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported private key: {e}", t.key))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match().map_err(|e| {
        format!(
            "{}: does not match the private key in {}: {e}",
            t.cert, t.key
        )
    })?;
    Ok(Entry {
        names,
        key: Arc::new(key),
    })
}

/// The TLS settings of each TLS listen address (blocks sharing an address are
/// one listener choosing among their certificates by SNI).
pub fn listeners(cfg: &Config) -> Result<Vec<(String, TlsSettings)>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut out = Vec::new();
    let prepared = prepare(cfg)?;
    let strict = prepared.1;
    let mut prepared = prepared.0.into_iter();
    for (addr, blocks) in groups(cfg) {
        let entries = prepared.next().map(|(_, e)| e).unwrap_or_default();
        let resolver = Arc::new(SniResolver {
            entries: arc_swap::ArcSwap::from_pointee(entries),
            strict: AtomicBool::new(strict),
        });
        RESOLVERS.lock().insert(addr.to_string(), resolver.clone());
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| e.to_string())?;
        settings.set_cert_resolver(resolver);
        settings.enable_h2();
        let cas: Vec<&str> = blocks
            .iter()
            .filter_map(|t| t.client_ca.as_deref())
            .collect();
        if let Some(ca) = cas.first() {
            if cas.len() != blocks.len() || cas.iter().any(|c| c != ca) {
                return Err(format!("TLS listener {addr}: every [[server.tls]] block on one address must name the same client_ca"));
            }
            let mut roots = rustls::RootCertStore::empty();
            for der in load_certs(&cfg.resolve(ca))? {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| format!("{ca}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .map_err(|e| format!("{ca}: {e}"))?;
            settings.set_client_cert_verifier(verifier);
        }
        out.push((addr.to_string(), settings));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcard_names() {
        assert!(name_matches("api.example.com", "API.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
    }
}
