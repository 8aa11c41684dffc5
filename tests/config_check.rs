//! `tollgate check` (and `tollgate run`) on good and bad configs (SPEC §1): every error
//! names the file, the line, and the key path (indices from 0), one error per line, exit 1;
//! a good config prints `ok` and exits 0.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One `FILE:LINE:COL: key.path: message` line of `tollgate check`'s output.
#[derive(Debug)]
struct Reported {
    line: usize,
    path: String,
    message: String,
}

/// Every located error line of the output (those that name `gateway.toml:LINE:COL:`).
fn reported(out: &str) -> Vec<Reported> {
    let mut v = Vec::new();
    for l in out.lines() {
        let Some(i) = l.find("gateway.toml:") else {
            continue;
        };
        let rest = &l[i + "gateway.toml:".len()..];
        let Some((line, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some((col, rest)) = rest.split_once(':') else {
            continue;
        };
        let (Ok(line), Ok(_col)) = (line.parse::<usize>(), col.parse::<usize>()) else {
            continue;
        };
        let rest = rest.trim_start();
        let (path, message) = rest.split_once(": ").unwrap_or(("", rest));
        v.push(Reported {
            line,
            path: path.to_string(),
            message: message.to_string(),
        });
    }
    v
}

/// 1-based number of the first line of `config` containing `needle`.
#[track_caller]
fn line_of(config: &str, needle: &str) -> usize {
    config
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the config"))
        + 1
}

/// Runs `check` on `config`, asserts exit 1, and returns the output.
#[track_caller]
fn check_fails(config: &str) -> String {
    let (ok, out) = check_config(config, &[]);
    assert!(
        !ok,
        "check accepted a bad config:\n{config}\n--- output:\n{out}"
    );
    assert!(
        !out.lines().any(|l| l.trim() == "ok"),
        "a failing check printed ok:\n{out}"
    );
    out
}

/// Asserts an error at exactly `path`, on `line`, whose message contains `msg`.
#[track_caller]
fn assert_error(out: &str, line: usize, path: &str, msg: &str) {
    let errs = reported(out);
    let found = errs
        .iter()
        .any(|e| e.line == line && e.path == path && e.message.contains(msg));
    assert!(
        found,
        "expected `gateway.toml:{line}:COL: {path}: …{msg}…` in the output:\n{out}\nparsed: {errs:#?}"
    );
}

/// A config that passes: each bad-config test changes one thing.
const BASE: &str = r#"[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
trusted_proxies = ["10.0.0.0/8"]
request_timeout = "30s"
max_request_body = "1MiB"
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[plugins.hdrs]
type = "headers"
response_set = { "x-a" = "1" }

[upstreams.payments]
targets = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
connect_timeout = "1s"

[upstreams.accounts]
targets = ["127.0.0.1:9003"]

[[routes]]
name = "payments"
upstream = "payments"
path = "/v1/payments"
methods = ["GET", "POST"]
plugins = ["hdrs"]

[[routes]]
name = "accounts"
upstream = "accounts"
path = "/v1/accounts/{id}"
"#;

/// `BASE` with the first occurrence of `from` replaced by `to` (which must change it).
#[track_caller]
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_config_is_ok() {
    // Guards every test below: their errors come from their one change.
    let (ok, out) = check_config(BASE, &[]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn repository_gateway_toml_is_ok() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let contents = std::fs::read_to_string(&path).expect("read gateway.toml");
    let (ok, out) = check_config(&contents, &[]);
    assert!(ok, "gateway.toml does not pass check:\n{out}");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn syntax_error_truncated_file() {
    // Cut the file in the middle of an inline array.
    let cut = BASE.find("\"127.0.0.1:9002\"").unwrap();
    let config = &BASE[..cut];
    let out = check_fails(config);
    let errs = reported(&out);
    assert_eq!(errs.len(), 1, "{out}");
    // The error is where the file ends: on the truncated `targets = [...` line or just
    // after it.
    let at = line_of(config, "targets = [\"127.0.0.1:9001\"");
    assert!(
        errs[0].line == at || errs[0].line == at + 1,
        "syntax error reported on line {}, the file breaks off on line {at}:\n{out}",
        errs[0].line
    );
    assert!(out.contains("TOML"), "{out}");
}

#[test]
fn syntax_error_bad_line() {
    let config = base_with("request_timeout = \"30s\"", "request_timeout = 30s\"");
    let out = check_fails(&config);
    let errs = reported(&out);
    assert_eq!(errs.len(), 1, "{out}");
    assert_eq!(errs[0].line, line_of(&config, "request_timeout ="), "{out}");
}

#[test]
fn unknown_top_level_key() {
    let config = format!("servers_count = 3\n{BASE}");
    let out = check_fails(&config);
    assert_error(&out, 1, "servers_count", "unknown key");
}

#[test]
fn unknown_key_inside_a_route() {
    let config = base_with(
        "path = \"/v1/accounts/{id}\"",
        "paht = \"/v1/accounts/{id}\"",
    );
    let out = check_fails(&config);
    assert_error(&out, line_of(&config, "paht ="), "routes[1].paht", "paht");
}

#[test]
fn unknown_key_inside_server() {
    let config = base_with("request_timeout", "request_timeuot");
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "request_timeuot"),
        "server.request_timeuot",
        "request_timeuot",
    );
}

#[test]
fn route_names_a_missing_upstream() {
    let config = base_with("upstream = \"payments\"", "upstream = \"paymnts\"");
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "\"paymnts\""),
        "routes[0].upstream",
        "no upstream named \"paymnts\"",
    );
}

#[test]
fn route_names_a_missing_plugin() {
    let config = base_with("plugins = [\"hdrs\"]", "plugins = [\"hdrs\", \"jwt_auth\"]");
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "\"jwt_auth\""),
        "routes[0].plugins[1]",
        "no plugin named \"jwt_auth\"",
    );
    // The same in [server] plugins.
    let config = base_with("plugins = [\"request_id\"]", "plugins = [\"reqid\"]");
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "\"reqid\""),
        "server.plugins[0]",
        "no plugin named \"reqid\"",
    );
}

#[test]
fn version_without_api_versions() {
    let config = base_with(
        "path = \"/v1/accounts/{id}\"",
        "path = \"/v1/accounts/{id}\"\nversion = \"v1\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "version = \"v1\""),
        "routes[1].version",
        "[api_versions]",
    );
}

#[test]
fn duplicate_route_names() {
    let config = base_with("name = \"accounts\"", "name = \"payments\"");
    let out = check_fails(&config);
    let second = config
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"payments\""))
        .map(|(i, _)| i + 1)
        .nth(1)
        .unwrap();
    assert_error(
        &out,
        second,
        "routes[1].name",
        "duplicate route name \"payments\"",
    );
}

#[test]
fn empty_targets() {
    let config = base_with("targets = [\"127.0.0.1:9003\"]", "targets = []");
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "targets = []"),
        "upstreams.accounts.targets",
        "at least one target",
    );
}

#[test]
fn bad_cidr_in_trusted_proxies() {
    let config = base_with(
        "trusted_proxies = [\"10.0.0.0/8\"]",
        "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "trusted_proxies"),
        "server.trusted_proxies[1]",
        "10.0.0.0/33",
    );
}

#[test]
fn bad_duration_units() {
    for bad in ["30", "30 parsecs", "30sec-ish", ""] {
        let config = base_with(
            "request_timeout = \"30s\"",
            &format!("request_timeout = \"{bad}\""),
        );
        let out = check_fails(&config);
        assert_error(
            &out,
            line_of(&config, "request_timeout"),
            "server.request_timeout",
            "duration",
        );
    }
    let config = base_with(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1 fortnight\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "connect_timeout"),
        "upstreams.payments.connect_timeout",
        "duration",
    );
}

#[test]
fn bad_size_units() {
    for bad in ["1MB", "1048576", "1 mebibyte", "MiB"] {
        let config = base_with(
            "max_request_body = \"1MiB\"",
            &format!("max_request_body = \"{bad}\""),
        );
        let out = check_fails(&config);
        assert_error(
            &out,
            line_of(&config, "max_request_body"),
            "server.max_request_body",
            "size",
        );
    }
}

#[test]
fn consistent_hash_without_hash_key() {
    let config = base_with(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nbalance = \"consistent_hash\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "consistent_hash"),
        "upstreams.payments.balance",
        "hash_key",
    );
}

#[test]
fn hash_key_without_consistent_hash() {
    let config = base_with(
        "targets = [\"127.0.0.1:9003\"]",
        "targets = [\"127.0.0.1:9003\"]\nhash_key = \"header:x-account-id\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "hash_key"),
        "upstreams.accounts.hash_key",
        "consistent_hash",
    );
}

#[test]
fn sni_without_tls() {
    let config = base_with(
        "targets = [\"127.0.0.1:9003\"]",
        "targets = [\"127.0.0.1:9003\"]\nsni = \"accounts.internal\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "sni ="),
        "upstreams.accounts.sni",
        "tls",
    );
}

#[test]
fn invalid_path_patterns() {
    for bad in [
        "/v1/accounts/{id",
        "v1/accounts",
        "/v1/accounts/{}",
        "/v1/acc{id}",
        "/v1/{id}/{id}",
        "=v1",
    ] {
        let config = base_with("path = \"/v1/accounts/{id}\"", &format!("path = \"{bad}\""));
        let out = check_fails(&config);
        let errs = reported(&out);
        assert!(
            errs.iter()
                .any(|e| e.path == "routes[1].path" && e.line == line_of(&config, bad)),
            "pattern {bad:?}: expected routes[1].path on line {}:\n{out}",
            line_of(&config, bad)
        );
    }
}

#[test]
fn unknown_plugin_type() {
    let config = base_with("type = \"headers\"", "type = \"headerz\"");
    let out = check_fails(&config);
    let errs = reported(&out);
    assert!(
        errs.iter().any(|e| e.path.starts_with("plugins.hdrs")
            && e.line >= line_of(&config, "[plugins.hdrs]")
            && e.line <= line_of(&config, "headerz")
            && e.message.contains("headerz")),
        "{out}"
    );
}

#[test]
fn unknown_plugin_key() {
    let config = base_with(
        "response_set = { \"x-a\" = \"1\" }",
        "response_set = { \"x-a\" = \"1\" }\nresponse_add = { \"x-b\" = \"2\" }",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "response_add"),
        "plugins.hdrs.response_add",
        "response_add",
    );
    let config = base_with(
        "type = \"request_id\"",
        "type = \"request_id\"\nheadr = \"x-id\"",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "headr"),
        "plugins.request_id.headr",
        "headr",
    );
}

/// A section that fails to parse is reported once; the routes naming it get no false
/// "no upstream named" / "no plugin named" errors (it is declared, just invalid).
#[test]
fn a_broken_section_causes_no_follow_on_errors() {
    let config = base_with(
        "targets = [\"127.0.0.1:9003\"]",
        "targets = [\"127.0.0.1:9003\"]\ntragets = [\"127.0.0.1:9004\"]",
    );
    let config = config.replacen(
        "response_set = { \"x-a\" = \"1\" }",
        "response_set = { \"x-a\" = \"1\" }\nresponse_add = { \"x-b\" = \"2\" }",
        1,
    );
    let out = check_fails(&config);
    let errs = reported(&out);
    assert!(
        errs.iter().any(|e| e.path == "upstreams.accounts.tragets"),
        "{out}"
    );
    assert!(
        errs.iter().any(|e| e.path.starts_with("plugins.hdrs")),
        "{out}"
    );
    assert_eq!(
        errs.len(),
        2,
        "only the two real errors, no follow-on errors on the routes:\n{out}"
    );
}

#[test]
fn several_errors_are_all_reported_one_per_line() {
    let config = r#"[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
trusted_proxies = ["10.0.0.0/8", "not-a-cidr"]
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[plugins.limits]
type = "rate_limit"
rate = "100/s"

[upstreams.payments]
targets = ["127.0.0.1:9001"]
sni = "payments.internal"

[upstreams.empty]
targets = []

[upstreams.hashed]
targets = ["127.0.0.1:9002"]
balance = "consistent_hash"

[[routes]]
name = "a"
upstream = "paymnts"
path = "/a"

[[routes]]
name = "a"
upstream = "payments"
path = "/b/{id"
plugins = ["nope"]
version = "v1"
"#;
    let out = check_fails(config);
    let expected = [
        (line_of(config, "not-a-cidr"), "server.trusted_proxies[1]"),
        (line_of(config, "sni ="), "upstreams.payments.sni"),
        (line_of(config, "targets = []"), "upstreams.empty.targets"),
        (
            line_of(config, "consistent_hash"),
            "upstreams.hashed.balance",
        ),
        (line_of(config, "\"paymnts\""), "routes[0].upstream"),
        (
            config
                .lines()
                .enumerate()
                .filter(|(_, l)| l.starts_with("name = \"a\""))
                .map(|(i, _)| i + 1)
                .nth(1)
                .unwrap(),
            "routes[1].name",
        ),
        (line_of(config, "{id\""), "routes[1].path"),
        (line_of(config, "\"nope\""), "routes[1].plugins[0]"),
        (line_of(config, "version ="), "routes[1].version"),
    ];
    let errs = reported(&out);
    for (line, path) in expected {
        assert!(
            errs.iter().any(|e| e.line == line && e.path == path),
            "missing `gateway.toml:{line}:COL: {path}: …` in:\n{out}"
        );
    }
    // One line per error, and nothing reported twice.
    assert_eq!(
        errs.len(),
        expected.len(),
        "expected exactly {} error lines:\n{out}",
        expected.len()
    );
    let error_lines = out.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(error_lines, expected.len(), "one line per error:\n{out}");
}

/// Runs `tollgate ARGS` to its exit (killing it after 20 s, which fails the test):
/// (exit code, stdout + stderr).
fn run_to_exit(args: &[&std::ffi::OsStr], cwd: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Poll for the exit (the process is expected to end on its own at once).
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tollgate {args:?} kept running with a bad config:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// `tollgate run` on a bad config: exit 1 with the located error, never serving.
#[test]
fn run_with_a_bad_config_exits_1_printing_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let config = BASE
        .replace("{LISTEN}", &format!("127.0.0.1:{}", free_port()))
        .replace("{ADMIN}", &format!("127.0.0.1:{}", free_port()))
        .replacen("upstream = \"payments\"", "upstream = \"paymnts\"", 1);
    std::fs::write(&file, &config).unwrap();
    let (code, text) = run_to_exit(
        &["run".as_ref(), "-c".as_ref(), file.as_os_str()],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{text}");
    assert_error(
        &text,
        line_of(&config, "\"paymnts\""),
        "routes[0].upstream",
        "no upstream named \"paymnts\"",
    );

    // A syntax error too.
    std::fs::write(&file, &config[..config.len() / 2]).unwrap();
    let (code, text) = run_to_exit(
        &["run".as_ref(), "-c".as_ref(), file.as_os_str()],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(reported(&text).len(), 1, "{text}");

    // And a missing file.
    let absent = dir.path().join("absent.toml");
    let (code, text) = run_to_exit(
        &["run".as_ref(), "-c".as_ref(), absent.as_os_str()],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("absent.toml"), "{text}");
}

/// A key of the wrong type is exactly one located error that names the key and the
/// type it needs: no second "missing field" for a required key taken out after its
/// own error, no Rust type names (`usize`, `struct RouteConfig`, `untagged enum`), and
/// inside `[plugins.X]` the key's own path (not just the table's).
#[test]
fn a_wrong_typed_key_is_one_error_naming_the_key_and_the_type() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (replace, with, path, message)
        (
            "name = \"payments\"",
            "name = 1",
            "routes[0].name",
            "expected a string",
        ),
        (
            "upstream = \"payments\"",
            "upstream = 1",
            "routes[0].upstream",
            "expected a string",
        ),
        (
            "path = \"/v1/payments\"",
            "path = [\"/v1/payments\"]",
            "routes[0].path",
            "expected a string",
        ),
        (
            "methods = [\"GET\", \"POST\"]",
            "methods = \"GET\"",
            "routes[0].methods",
            "expected an array",
        ),
        (
            "plugins = [\"hdrs\"]",
            "plugins = { hdrs = true }",
            "routes[0].plugins",
            "expected an array",
        ),
        (
            "targets = [\"127.0.0.1:9003\"]",
            "targets = 9003",
            "upstreams.accounts.targets",
            "expected an array",
        ),
        (
            "targets = [\"127.0.0.1:9003\"]",
            "targets = [9003]",
            "upstreams.accounts.targets[0]",
            "expected an address string",
        ),
        (
            "listen = \"{LISTEN}\"",
            "listen = 8080",
            "server.listen",
            "expected a string or an array of strings",
        ),
        (
            "plugins = [\"request_id\"]",
            "plugins = [\"request_id\"]\nthreads = \"2\"",
            "server.threads",
            "expected a non-negative integer",
        ),
        (
            "type = \"headers\"",
            "type = 1",
            "plugins.hdrs.type",
            "expected a string",
        ),
        (
            "response_set = { \"x-a\" = \"1\" }",
            "response_set = [\"x-a\"]",
            "plugins.hdrs.response_set",
            "expected a table",
        ),
        (
            "type = \"request_id\"",
            "type = \"request_id\"\nheader = 5",
            "plugins.request_id.header",
            "expected a string",
        ),
    ];
    for (from, to, path, msg) in cases {
        let config = base_with(from, to);
        let out = check_fails(&config);
        let errs = reported(&out);
        let changed = to.lines().last().unwrap();
        assert_eq!(errs.len(), 1, "{to:?}: exactly one error:\n{out}");
        assert_error(&out, line_of(&config, changed), path, msg);
        for rust in [
            "missing field",
            "usize",
            "struct ",
            "untagged",
            "sequence",
            "map",
        ] {
            assert!(!out.contains(rust), "{to:?}: {rust:?} in\n{out}");
        }
    }
}

/// Every wrong key of a plugin table is reported, each at its own key.
#[test]
fn every_wrong_typed_plugin_key_is_reported_at_its_key() {
    let config = base_with(
        "type = \"headers\"\nresponse_set = { \"x-a\" = \"1\" }",
        "type = \"rate_limit\"\nrate = 100\nburst = \"20\"\nkey = [\"ip\"]",
    );
    let out = check_fails(&config);
    assert_eq!(reported(&out).len(), 3, "{out}");
    assert_error(
        &out,
        line_of(&config, "rate = 100"),
        "plugins.hdrs.rate",
        "expected a string",
    );
    assert_error(
        &out,
        line_of(&config, "burst = \"20\""),
        "plugins.hdrs.burst",
        "expected a non-negative integer",
    );
    assert_error(
        &out,
        line_of(&config, "key = [\"ip\"]"),
        "plugins.hdrs.key",
        "expected a string",
    );
}

/// The closed sets of routes, upstreams and `[api_versions]` (methods, header
/// predicates, `hash_key`, `retry.on`, `sources`) are refused when the file is read,
/// each bad value at its own key, and every bad element of a list is reported at
/// its index as written, not only the first.
#[test]
fn every_bad_value_of_a_closed_set_is_reported_at_its_key() {
    let config = base_with(
        "methods = [\"GET\", \"POST\"]",
        "methods = [\"get\", \"POST\", \"BAD METHOD\"]\nheaders = { \"x-ok\" = \"1\", \"bad name\" = \"2\" }",
    );
    let config = config.replacen(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nbalance = \"consistent_hash\"\nhash_key = \"cookie:x\"\nretry = { attempts = 2, on = [\"404\", \"502\", \"reset\"] }",
        1,
    );
    let config = config.replacen(
        "[upstreams.payments]",
        "[api_versions]\nsources = [\"query:\", \"header:api-version\", \"Path\"]\n\n[upstreams.payments]",
        1,
    );
    let out = check_fails(&config);
    let methods = line_of(&config, "BAD METHOD");
    let on = line_of(&config, "\"reset\"");
    let sources = line_of(&config, "sources =");
    let expected: &[(usize, &str, &str)] = &[
        (
            sources,
            "api_versions.sources[0]",
            "invalid version source \"query:\": expected \"path\", \"header:NAME\" or \"query:NAME\"",
        ),
        (sources, "api_versions.sources[2]", "invalid version source \"Path\""),
        (
            line_of(&config, "cookie:x"),
            "upstreams.payments.hash_key",
            "invalid hash_key \"cookie:x\": expected \"header:NAME\", \"ip\", \"path\" or \"param:NAME\"",
        ),
        (
            on,
            "upstreams.payments.retry.on[0]",
            "invalid retry condition \"404\": expected \"connect_error\", \"timeout\" or a 5xx status like \"502\"",
        ),
        (on, "upstreams.payments.retry.on[2]", "invalid retry condition \"reset\""),
        (
            methods,
            "routes[0].methods[0]",
            "invalid method \"get\" (write it in upper case)",
        ),
        (
            methods,
            "routes[0].methods[2]",
            "invalid method \"BAD METHOD\" (write it in upper case)",
        ),
        (
            line_of(&config, "bad name"),
            "routes[0].headers.\"bad name\"",
            "invalid header name \"bad name\"",
        ),
    ];
    for (line, path, msg) in expected {
        assert_error(&out, *line, path, msg);
    }
    assert_eq!(reported(&out).len(), expected.len(), "{out}");
}

/// A header predicate whose value cannot be a header value is refused at its key.
#[test]
fn a_bad_header_predicate_value_is_located() {
    let config = base_with(
        "methods = [\"GET\", \"POST\"]",
        "methods = [\"GET\", \"POST\"]\nheaders = { x-tenant = \"a\\u0001b\" }",
    );
    let out = check_fails(&config);
    assert_error(
        &out,
        line_of(&config, "x-tenant"),
        "routes[0].headers.x-tenant",
        "invalid header value",
    );
    assert_eq!(reported(&out).len(), 1, "{out}");
}

/// Methods are tokens in upper case; an extension method is fine.
#[test]
fn extension_methods_in_upper_case_are_accepted() {
    let config = base_with(
        "methods = [\"GET\", \"POST\"]",
        "methods = [\"GET\", \"PURGE\"]",
    );
    let (ok, out) = check_config(&config, &[]);
    assert!(ok, "{out}");
}

#[test]
fn a_route_that_fails_to_parse_does_not_shift_the_next_routes_errors() {
    let (ok, out) = check_config(
        "[server]\nlisten = \"{LISTEN}\"\nadmin_listen = \"{ADMIN}\"\n\n\
         [upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n\n\
         [[routes]]\nname = \"a\"\nupstream = \"u\"\nmethods = [\"get\"]\n\n\
         [[routes]]\nname = \"b\"\nupstream = \"nope\"\n",
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("routes[0].methods[0]: invalid method"),
        "{out}"
    );
    assert!(
        out.contains(":15:12: routes[1].upstream: no upstream named \"nope\""),
        "{out}"
    );
    assert!(!out.contains("routes[0].upstream"), "{out}");
}

#[test]
fn plugin_table_errors_come_with_the_other_errors_in_one_pass() {
    let (ok, out) = check_config(
        "[server]\nlisten = \"{LISTEN}\"\nadmin_listen = \"{ADMIN}\"\n\n\
         [plugins.h]\ntype = \"headers\"\nrequest_set = { \"bad name\" = \"x\" }\n\n\
         [plugins.rid]\ntype = \"request_id\"\nheader = \"bad header\"\n\n\
         [upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n\n\
         [[routes]]\nname = \"a\"\nupstream = \"nope\"\nplugins = [\"h\", \"rid\"]\n",
        &[],
    );
    assert!(!ok, "{out}");
    for expected in [
        "plugins.h.request_set.\"bad name\": invalid header name",
        "plugins.rid.header: invalid header name",
        "routes[0].upstream: no upstream named \"nope\"",
    ] {
        assert!(out.contains(expected), "{expected}:\n{out}");
    }
}
