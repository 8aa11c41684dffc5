//! A compiled upstream: its targets behind a Pingora `LoadBalancer`, with health
//! checks, per-peer options (timeouts, TLS) and retry policy resolved once.

use crate::config::{Balance, RetryOn, UpstreamConfig};
use crate::pipeline::{BuildError, BuildResult};
use pingora::lb::selection::{consistent::KetamaHashing, Random, RoundRobin};
use pingora::lb::{discovery, health_check::HttpHealthCheck, Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::utils::tls::{CertKey, WrappedX509};
use std::collections::{BTreeSet, HashMap};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum Pool {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<KetamaHashing>),
}

impl Pool {
    pub fn select_with<F>(&self, key: &[u8], accept: F) -> Option<Backend>
    where
        F: Fn(&Backend, bool) -> bool,
    {
        const MAX_ITER: usize = 256;
        // One target (most upstreams behind a gateway are one service
        // address): no selection to make. Pingora's selection would allocate
        // a set of the targets seen per request.
        let targets = self.backends().get_backend();
        if targets.len() == 1 {
            let b = targets.first()?;
            return accept(b, self.backends().ready(b)).then(|| b.clone());
        }
        match self {
            Pool::RoundRobin(lb) => lb.select_with(key, MAX_ITER, accept),
            Pool::Random(lb) => lb.select_with(key, MAX_ITER, accept),
            Pool::Hash(lb) => lb.select_with(key, MAX_ITER, accept),
        }
    }
    pub fn backends(&self) -> &Backends {
        match self {
            Pool::RoundRobin(lb) => lb.backends(),
            Pool::Random(lb) => lb.backends(),
            Pool::Hash(lb) => lb.backends(),
        }
    }
}

/// What a `consistent_hash` upstream hashes a request on (parsed with the config).
pub use crate::config::HashKey;

#[derive(Debug, Clone, Default)]
pub struct RetryPolicy {
    /// Extra tries on another target; 0 = no retries.
    pub attempts: usize,
    pub on_connect_error: bool,
    pub on_timeout: bool,
    pub on_status: Vec<u16>,
}

pub struct Upstream {
    pub name: Arc<str>,
    pub pool: Pool,
    pub hash_key: Option<HashKey>,
    /// Resolved socket address → the target as written in `targets` (metric label).
    pub labels: HashMap<std::net::SocketAddr, Arc<str>>,
    /// Targets in config order, for `/upstreams`.
    pub targets: Vec<(Backend, Arc<str>)>,
    pub tls: bool,
    pub sni: String,
    pub verify: bool,
    pub ca: Option<Arc<Box<[WrappedX509]>>>,
    pub client_cert: Option<Arc<CertKey>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// `share_connections`: idle connections are reused across client connections.
    pub share_connections: bool,
    pub retry: RetryPolicy,
    pub health_interval: Option<Duration>,
    pub last_check: parking_lot::Mutex<Option<Instant>>,
    /// Normalised config this was built from: a reload keeps the pool (health
    /// state, connections) when it is unchanged.
    /// The definition it was built from: a reload keeps the pool (and its
    /// health state) while this is equal.
    pub config: UpstreamConfig,
}

impl Upstream {
    pub fn peer(&self, backend: &Backend) -> HttpPeer {
        let mut peer = HttpPeer::new(backend.addr.clone(), self.tls, self.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.read_timeout);
        o.idle_timeout = Some(Duration::from_secs(60));
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        if let Some(ca) = &self.ca {
            let ca: &[WrappedX509] = ca;
            o.ca = Some(Arc::from(clone_certs(ca)));
        }
        if let Some(cc) = &self.client_cert {
            peer.client_cert_key = Some(cc.clone());
        }
        peer
    }

    pub fn label(&self, backend: &Backend) -> Arc<str> {
        backend
            .addr
            .as_inet()
            .and_then(|a| self.labels.get(a).cloned())
            .unwrap_or_else(|| Arc::from(backend.addr.to_string()))
    }

    pub fn is_healthy(&self, backend: &Backend) -> bool {
        self.pool.backends().ready(backend)
    }

    pub async fn run_health_check(&self) {
        match &self.pool {
            Pool::RoundRobin(lb) => lb.backends().run_health_check(true).await,
            Pool::Random(lb) => lb.backends().run_health_check(true).await,
            Pool::Hash(lb) => lb.backends().run_health_check(true).await,
        }
    }
}

fn clone_certs(ca: &[WrappedX509]) -> Box<[WrappedX509]> {
    ca.iter()
        .map(|w| WrappedX509::new(w.borrow_raw_cert().clone(), pingora::utils::tls::parse_x509))
        .collect()
}

/// PEM file → DER certificates, each checked to parse as X.509 (Pingora's own
/// parser panics on bad DER, so nothing unchecked may reach it).
pub fn load_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for c in rustls_pemfile::certs(&mut &data[..]) {
        let c = c.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| format!("{}: invalid certificate: {e}", path.display()))?;
        out.push(c.to_vec());
    }
    if out.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(out)
}

pub fn load_key(
    path: &std::path::Path,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match rustls_pemfile::private_key(&mut &data[..]) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(format!("{}: no private key found", path.display())),
        Err(e) => Err(format!("{}: invalid PEM: {e}", path.display())),
    }
}

pub fn build(
    name: &str,
    cfg: &UpstreamConfig,
    resolve: &dyn Fn(&str) -> std::path::PathBuf,
) -> BuildResult<Upstream> {
    let mut errs: Vec<BuildError> = Vec::new();
    let mut set = BTreeSet::new();
    let mut labels = HashMap::new();
    let mut targets = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        #[allow(clippy::disallowed_methods)] // compiling a config, off the request path
        let addrs: Vec<std::net::SocketAddr> = match t.addr().to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                errs.push(BuildError::at_index(
                    "targets",
                    i,
                    format!("cannot resolve {:?}: {e}", t.addr()),
                ));
                continue;
            }
        };
        let Some(addr) = addrs.first() else {
            errs.push(BuildError::at_index(
                "targets",
                i,
                format!("{:?} resolves to no address", t.addr()),
            ));
            continue;
        };
        match Backend::new_with_weight(&addr.to_string(), t.weight()) {
            Ok(b) => {
                labels.insert(*addr, Arc::from(t.addr()));
                targets.push((b.clone(), Arc::from(t.addr())));
                set.insert(b);
            }
            Err(e) => errs.push(BuildError::at_index("targets", i, e.to_string())),
        }
    }
    let ca = match &cfg.ca_file {
        Some(f) => match load_certs(&resolve(f)) {
            Ok(ders) => Some(Arc::new(
                ders.into_iter()
                    .map(|d| WrappedX509::new(d, pingora::utils::tls::parse_x509))
                    .collect::<Box<[_]>>(),
            )),
            Err(e) => {
                errs.push(BuildError::at("ca_file", e));
                None
            }
        },
        None => None,
    };
    let client_cert = match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => match (load_certs(&resolve(c)), load_key(&resolve(k))) {
            (Ok(certs), Ok(key)) => Some(Arc::new(CertKey::new(certs, key.secret_der().to_vec()))),
            (Err(e), _) => {
                errs.push(BuildError::at("client_cert", e));
                None
            }
            (_, Err(e)) => {
                errs.push(BuildError::at("client_key", e));
                None
            }
        },
        _ => None,
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let sni = cfg.sni.clone().unwrap_or_else(|| {
        cfg.targets
            .first()
            .and_then(|t| t.addr().rsplit_once(':').map(|(h, _)| h.to_string()))
            .unwrap_or_default()
    });
    let backends = || {
        let mut b = Backends::new(discovery::Static::new(set.clone()));
        if let Some(hc) = &cfg.health_check {
            let mut check = HttpHealthCheck::new(&sni_or_host(&sni), cfg.tls);
            check.consecutive_success = hc.healthy;
            check.consecutive_failure = hc.unhealthy;
            check.peer_template.options.connection_timeout = Some(hc.timeout.0);
            check.peer_template.options.read_timeout = Some(hc.timeout.0);
            check.peer_template.options.verify_cert = cfg.verify;
            check.peer_template.options.verify_hostname = cfg.verify;
            if let Ok(mut req) =
                pingora::http::RequestHeader::build("GET", hc.path.as_bytes(), None)
            {
                let _ = req.insert_header("Host", sni_or_host(&sni));
                let _ = req.insert_header("User-Agent", "tollgate-health-check");
                check.req = req;
            }
            b.set_health_check(Box::new(check));
        }
        b
    };
    let pool = match cfg.balance {
        Balance::RoundRobin => {
            let lb = LoadBalancer::from_backends(backends());
            now_or_never(lb.update());
            Pool::RoundRobin(lb)
        }
        Balance::Random => {
            let lb = LoadBalancer::from_backends(backends());
            now_or_never(lb.update());
            Pool::Random(lb)
        }
        Balance::ConsistentHash => {
            let lb = LoadBalancer::from_backends(backends());
            now_or_never(lb.update());
            Pool::Hash(lb)
        }
    };
    let hash_key = cfg.hash_key.clone();
    let retry = cfg
        .retry
        .as_ref()
        .map(|r| RetryPolicy {
            attempts: r.attempts,
            on_connect_error: r.on.contains(&RetryOn::ConnectError),
            on_timeout: r.on.contains(&RetryOn::Timeout),
            on_status: r
                .on
                .iter()
                .filter_map(|o| match o {
                    RetryOn::Status(s) => Some(*s),
                    RetryOn::ConnectError | RetryOn::Timeout => None,
                })
                .collect(),
        })
        .unwrap_or_default();
    Ok(Upstream {
        name: Arc::from(name),
        pool,
        hash_key,
        labels,
        targets,
        tls: cfg.tls,
        sni,
        verify: cfg.verify,
        ca,
        client_cert,
        connect_timeout: cfg.connect_timeout.0,
        read_timeout: cfg.read_timeout.0,
        share_connections: cfg.share_connections,
        retry,
        health_interval: cfg.health_check.as_ref().map(|h| h.interval.0),
        last_check: parking_lot::Mutex::new(None),
        config: cfg.clone(),
    })
}

fn sni_or_host(sni: &str) -> String {
    if sni.is_empty() {
        "localhost".into()
    } else {
        sni.to_string()
    }
}

/// Poll a future once: static discovery completes without waiting.
fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(o) => Some(o),
        std::task::Poll::Pending => None,
    }
}
