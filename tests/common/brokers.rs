//! Real brokers for the integration tests: a `redis-server` and a `nats-server -js`,
//! each on a free loopback port with its own temporary directory, waited for until it
//! answers, killed on drop. Both can be paused (`SIGSTOP`/`SIGCONT`), killed and restarted
//! on the same port and directory, and read back with the `redis` and `async-nats` clients.
//! Needs `redis-server` and `nats-server` (`.ci/run` installs both).

use super::{free_port, http_client, wait_for, wait_until_msg, Duration};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// How long a broker may take to start, stop or answer.
const WAIT: Duration = Duration::from_secs(15);

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// kill(2); the return code.
fn signal_pid(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, sig) }
}

/// A broker process on 127.0.0.1:`port`: started again on the same port with the
/// same arguments after [`kill`](Self::kill), killed on drop. `K` is what the kind
/// of broker keeps besides (its directory, ...): [`RedisServer`], [`NatsServer`].
pub struct Broker<K> {
    bin: &'static str,
    args: Vec<String>,
    port: u16,
    /// Other ports it opens, waited for too.
    more_ports: Vec<u16>,
    /// Ready once it answers `PING` (Redis), not only accepts connections.
    ping: bool,
    child: Option<Child>,
    kind: K,
}

impl<K> Broker<K> {
    async fn launch(
        bin: &'static str,
        args: Vec<String>,
        port: u16,
        more_ports: Vec<u16>,
        ping: bool,
        kind: K,
    ) -> Broker<K> {
        let mut p = Broker {
            bin,
            args,
            port,
            more_ports,
            ping,
            child: None,
            kind,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let child = Command::new(self.bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                let pkg = self.bin.rsplit('/').next().unwrap_or(self.bin);
                panic!(
                    "cannot start {} ({e}): apt-get install {pkg}; .ci/run does",
                    self.bin
                )
            });
        self.child = Some(child);
        let what = format!("{} to answer on port {}", self.bin, self.port);
        wait_until_msg(WAIT, &what, || async {
            let mut up = if self.ping {
                redis_ping(self.port).await
            } else {
                accepts(self.port).await
            };
            for port in &self.more_ports {
                up = up && accepts(*port).await;
            }
            up
        })
        .await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    /// SIGKILL, and wait until the port is closed.
    pub async fn kill(&mut self) {
        reap(&mut self.child);
        let port = self.port;
        let what = format!("{} to be gone", self.bin);
        wait_until_msg(WAIT, &what, || async move { !accepts(port).await }).await;
    }

    /// Start again on the same port, with the same arguments (so the same data directory).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// `SIGSTOP`, returning once every thread of the broker is stopped
    /// (`kill` only queues the signal: a thread running on another core can
    /// still answer a request in between).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.pid();
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return true;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        st.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                    .unwrap_or(true)
            })
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !stopped() {
            assert!(
                std::time::Instant::now() < end,
                "{pid} not stopped by SIGSTOP"
            );
            std::thread::yield_now();
        }
    }

    /// `SIGCONT`.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid();
        let rc = signal_pid(pid, sig);
        assert_eq!(rc, 0, "kill -{sig} {pid}");
    }
}

impl<K> Drop for Broker<K> {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

/// SIGKILL (resumed first, in case it is paused) and reap.
fn reap(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = signal_pid(c.id(), libc::SIGCONT);
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A stream entry: its id and its fields in order.
pub type Entry = (String, Vec<(String, Vec<u8>)>);

/// A real Redis on a loopback port, stopped on drop.
pub type RedisServer = Broker<Redis>;

pub struct Redis {
    /// Its `--dir`.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// On a free port, persisting nothing (a restart starts empty).
    pub async fn start() -> RedisServer {
        Self::new(free_port(), false).await
    }

    /// On `port` (picked earlier, e.g. to talk to it before it runs), persisting nothing.
    pub async fn start_on(port: u16) -> RedisServer {
        Self::new(port, false).await
    }

    /// On a free port, with an append-only file synced on every write (an acknowledged
    /// write survives `SIGKILL`; a restart replays it).
    pub async fn start_aof() -> RedisServer {
        Self::new(free_port(), true).await
    }

    async fn new(port: u16, aof: bool) -> RedisServer {
        let dir = tempdir("tollgate-redis-");
        let port_arg = port.to_string();
        let dir_arg = dir.path().display().to_string();
        let mut args = vec!["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""];
        if aof {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        args.extend(["--dir", &dir_arg]);
        let args = args.into_iter().map(String::from).collect();
        Broker::launch(
            "redis-server",
            args,
            port,
            vec![],
            true,
            Redis { _dir: dir },
        )
        .await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    /// `XRANGE key - +`: (entry id, fields in order).
    pub async fn xrange(&self, key: &str) -> Vec<Entry> {
        parse_xrange(
            self.query(redis::cmd("XRANGE").arg(key).arg("-").arg("+"))
                .await,
        )
    }

    pub async fn xlen(&self, key: &str) -> u64 {
        self.query(redis::cmd("XLEN").arg(key)).await
    }

    /// `KEYS pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<Vec<u8>> {
        self.query(redis::cmd("KEYS").arg(pattern)).await
    }

    /// Any command, on a new connection.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut c = self.conn().await;
        cmd.query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("redis command failed: {e}"))
    }

    /// The ids of the connections whose last command was `cmd` (lowercase, as
    /// `CLIENT LIST` names it; the test's own connections send other commands).
    pub async fn clients_whose_last_command_was(&self, cmd: &str) -> HashSet<String> {
        let list: String = self.query(redis::cmd("CLIENT").arg("LIST")).await;
        let wanted = format!("cmd={cmd}");
        list.lines()
            .filter(|l| l.split_whitespace().any(|kv| kv == wanted))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("id="))
                    .map(str::to_string)
            })
            .collect()
    }
}

/// Whether a Redis on 127.0.0.1:`port` answers `PING` within a second.
async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"+PONG\r\n"
}

fn bulk(v: &redis::Value) -> Vec<u8> {
    match v {
        redis::Value::BulkString(b) => b.clone(),
        redis::Value::SimpleString(s) => s.as_bytes().to_vec(),
        other => panic!("not a string: {other:?}"),
    }
}

fn parse_xrange(v: redis::Value) -> Vec<Entry> {
    let redis::Value::Array(entries) = v else {
        panic!("XRANGE answered {v:?}");
    };
    entries
        .iter()
        .map(|e| {
            let redis::Value::Array(pair) = e else {
                panic!("XRANGE entry {e:?}");
            };
            let id = String::from_utf8(bulk(&pair[0])).expect("entry id");
            let redis::Value::Array(flat) = &pair[1] else {
                panic!("XRANGE fields {:?}", pair[1]);
            };
            let fields = flat
                .chunks(2)
                .map(|kv| {
                    (
                        String::from_utf8(bulk(&kv[0])).expect("field name"),
                        bulk(&kv[1]),
                    )
                })
                .collect();
            (id, fields)
        })
        .collect()
}

/// The value of field `name` of a stream entry.
pub fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
        .unwrap_or_else(|| panic!("no field {name:?} in {fields:?}"))
}

pub fn field_str(fields: &[(String, Vec<u8>)], name: &str) -> String {
    String::from_utf8(field(fields, name).to_vec())
        .unwrap_or_else(|_| panic!("field {name:?} is not UTF-8"))
}

// ---------------------------------------------------------------------------------------------
// NATS
// ---------------------------------------------------------------------------------------------

/// A real `nats-server -js` on a loopback port, with an HTTP monitoring port (`/connz`)
/// and its own store directory (kept across restarts), stopped on drop.
pub type NatsServer = Broker<Nats>;

pub struct Nats {
    monitor: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// `nats-server -js -sd <store>` on a free port.
    pub async fn start() -> NatsServer {
        Self::start_on(free_port()).await
    }

    /// `nats-server -js -sd <store>` on `port`.
    pub async fn start_on(port: u16) -> NatsServer {
        Self::new(port, |store| {
            vec!["-js".into(), "-sd".into(), store.display().to_string()]
        })
        .await
    }

    /// `nats-server` with `args(store directory)` instead of `-js -sd <store>` (as a
    /// document writes it), on a free port.
    pub async fn start_with_args(args: impl FnOnce(&Path) -> Vec<String>) -> NatsServer {
        Self::new(free_port(), args).await
    }

    async fn new(port: u16, args: impl FnOnce(&Path) -> Vec<String>) -> NatsServer {
        let store = tempdir("tollgate-nats-");
        let monitor = free_port();
        let mut args = args(store.path());
        args.extend(["-a", "127.0.0.1", "-p"].map(String::from));
        args.extend([port.to_string(), "-m".into(), monitor.to_string()]);
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let kind = Nats {
            monitor,
            _store: store,
        };
        Broker::launch(bin, args, port, vec![monitor], false, kind).await
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client (retried until the server takes it).
    pub async fn client(&self) -> async_nats::Client {
        let url = self.url();
        wait_for(WAIT, || {
            let url = url.clone();
            async move { async_nats::connect(url).await.ok() }
        })
        .await
    }

    pub async fn js(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// A file-backed stream `name` capturing `subject`, 2 minutes of de-duplication.
    pub async fn create_stream(
        &self,
        name: &str,
        subject: &str,
    ) -> async_nats::jetstream::stream::Stream {
        let js = self.js().await;
        let cfg = async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        // JetStream may need a moment after the port opens.
        wait_for(WAIT, || {
            let js = js.clone();
            let cfg = cfg.clone();
            async move { js.get_or_create_stream(cfg).await.ok() }
        })
        .await
    }

    /// The ids (`cid`) of the connections named `name` (`/connz`).
    pub async fn connections_named(&self, name: &str) -> HashSet<u64> {
        let v: serde_json::Value = http_client()
            .get(format!("http://127.0.0.1:{}/connz", self.kind.monitor))
            .send()
            .await
            .expect("GET /connz")
            .json()
            .await
            .expect("connz JSON");
        v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == name)
            .filter_map(|c| c["cid"].as_u64())
            .collect()
    }

    /// Every message of stream `name`, in order.
    pub async fn messages(&self, name: &str) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let js = self.js().await;
        let stream = wait_for(WAIT, || {
            let js = js.clone();
            async move { js.get_stream(name).await.ok() }
        })
        .await;
        let mut info_stream = stream.clone();
        let state = info_stream.info().await.expect("stream info").state.clone();
        let mut out = Vec::with_capacity(state.messages as usize);
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let m = stream
                .get_raw_message(seq)
                .await
                .unwrap_or_else(|e| panic!("message {seq} of {name}: {e}"));
            out.push(m);
        }
        out
    }
}
