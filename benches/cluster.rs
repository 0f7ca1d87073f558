//! Several nodes on PostgreSQL (docs/architecture.md, "Running several nodes"), measured on real
//! `tether serve` processes over HTTP/1.1 keep-alive connections:
//!
//! 1. `authorize`: `POST /v1/authorize` with one warmed token, `TETHER_BENCH_CONNECTIONS` (8)
//!    client connections in a closed loop, against each of three PostgreSQL nodes in turn and
//!    against one SQLite node measured the same way in the same run (before and after them);
//! 2. `revoke`: `POST /v1/sessions/{id}/revoke` latency over `TETHER_BENCH_REVOCATIONS` (500)
//!    sessions, each opened on one node, allowed on all three, revoked on the next (the call
//!    answers once every node with a live lease has applied it);
//! 3. `create`: `POST /v1/sessions` from `TETHER_BENCH_CREATORS` (48, then 96) connections spread
//!    over the three nodes, sessions/s; the SQLite node the same way for comparison. Group commit
//!    makes batches, and so throughput, grow with the callers waiting: 96 is 32 a node (the
//!    single-node bench, `benches/writes.rs`, has 64 callers on one);
//! 4. `cascade`: `POST /v1/users/{id}/disable` of a user with `TETHER_BENCH_CASCADES`
//!    (10000,100000) active sessions, time to receipt, on a fresh database and three fresh nodes.
//!    The sessions are one created through the API and copies of its row bulk-inserted with one
//!    `INSERT … SELECT … unnest($ids)` straight into PostgreSQL (new ids, same chain, no token
//!    rows), before the nodes start, so every node loads them into its live view and the cascade
//!    reads and revokes real rows. The database is analyzed before each cascade (see
//!    `cascades`; `TETHER_BENCH_ANALYZE=0` skips it). From the database the bench also times
//!    when the commit became visible and when each node reported it applied. With
//!    `pg_stat_statements` loaded (benches/cluster.sh loads it), the statements every node ran
//!    are counted, until the commit and after it.
//!
//! Parts 1–3 share one cluster, part 4 has its own: each on a fresh database (`CREATE DATABASE`
//! on the admin URL `TETHER_TEST_DATABASE_URL`), the first node started alone, then the other
//! two on the same data directory (`TETHER_BENCH_CASCADE_NODES` sets part 4's count). Part 1
//! also loads all three nodes at once (a line of its own, not a target). Each part prints the
//! CPU split (host, tether, PostgreSQL, this client, other processes) and the longest gap
//! between each node's lease renewals. The `tether` binary: `TETHER_BIN`, else the release
//! binary `cargo bench` builds with this bench. `TETHER_BENCH_SECONDS` (5) is each throughput
//! run, after a warm-up second; `TETHER_BENCH_WORKERS` passes `--workers` to every node.
//!
//! `bash benches/cluster.sh` (starts PostgreSQL, builds, runs); by hand, with PostgreSQL started:
//! `cargo bench --bench cluster [-- authorize|revoke|create|cascade]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A comma-separated list of counts (`48,96`), or `default`.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn run_seconds() -> Duration {
    Duration::from_secs_f64(std::env::var("TETHER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0))
}

fn main() {
    let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        println!("cluster bench skipped: TETHER_TEST_DATABASE_URL is not set (bash benches/cluster.sh, or source tests/pg/start.sh first)");
        return;
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| part.contains(a.as_str()));
    let bin = tether_bin();
    println!("machine: {}", support::machine());
    println!("tether: {}", bin.display());
    let mut pg = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect to PostgreSQL");
    let version: String = pg.query_one("SHOW server_version", &[]).expect("version").get(0);
    println!("PostgreSQL {version}; loopback round trip (SELECT 1): {:.0} µs", support::micros(round_trip(&mut pg)));

    if wants("authorize") || wants("revoke") || wants("create") {
        let sqlite_dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Node::start(&bin, sqlite_dir.path(), None);
        let lone = Setup::new(sqlite.address(), &admin_credential(sqlite_dir.path()));
        let database = fresh_database(&admin_url, "bench");
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = cluster(&bin, dir.path(), &database);
        let at: Vec<String> = nodes.iter().map(|n| n.address().to_owned()).collect();
        let pids: Vec<u32> = nodes.iter().map(Node::pid).chain([sqlite.pid()]).collect();
        let setup = Setup::new(&at[0], &admin_credential(dir.path()));
        if wants("authorize") {
            authorize(&sqlite, &lone, &at, &pids, &setup, &database);
        }
        let mut stats = Statements::connect(&database);
        if wants("revoke") {
            revocations(&at, &pids, &setup, &mut stats);
        }
        if wants("create") {
            for creators in env_list("TETHER_BENCH_CREATORS", &[48, 96]) {
                creation(&sqlite, &lone, &at, &pids, &setup, &mut stats, creators);
            }
        }
        node_warnings(dir.path());
        node_warnings(sqlite_dir.path());
    }
    if wants("cascade") {
        cascades(&bin, &admin_url, &env_list("TETHER_BENCH_CASCADES", &[10_000, 100_000]));
    }
}

/// The `tether` executable: `TETHER_BIN`, else the one Cargo built beside this bench (Cargo
/// builds a package's binaries for its benches), else `target/release/tether` (this bench runs
/// from `target/release/deps/`).
fn tether_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(bin) = option_env!("CARGO_BIN_EXE_tether") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let release = exe.parent().and_then(Path::parent).expect("target/release");
    let bin = release.join("tether");
    assert!(bin.exists(), "no {} (cargo build --release first, or set TETHER_BIN)", bin.display());
    bin
}

fn round_trip(pg: &mut postgres::Client) -> Duration {
    let statement = pg.prepare("SELECT 1").expect("prepare");
    let start = Instant::now();
    for _ in 0..2_000 {
        pg.query_one(&statement, &[]).expect("select 1");
    }
    start.elapsed() / 2_000
}

/// A fresh database on the server; its URL.
fn fresh_database(admin_url: &str, what: &str) -> String {
    let name = format!("tether_{what}_{}", uuid::Uuid::now_v7().simple());
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls).expect("connect");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// A `tether serve` child process: SIGTERM when dropped (a draining node deletes its lease row),
/// killed if it has not exited 10 s later.
struct Node {
    child: Child,
    address: String,
}

impl Node {
    fn start(bin: &Path, dir: &Path, database: Option<&str>) -> Node {
        let log = std::fs::File::create(dir.join(format!("serve-{}.log", uuid::Uuid::now_v7().simple()))).expect("log");
        let mut command = Command::new(bin);
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        if let Ok(workers) = std::env::var("TETHER_BENCH_WORKERS") {
            command.args(["--workers", &workers]);
        }
        let mut child = command
            .env("TETHER_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tether serve");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(address) = line.strip_prefix("tether listening on http://") {
                return Node { child, address: address.to_owned() };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tether serve did not listen; its log is in {}", dir.display());
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes (or `n`) on `database` sharing `dir`: the first alone (schema, keys, admin credential),
/// then the other two.
fn cluster(bin: &Path, dir: &Path, database: &str) -> Vec<Node> {
    cluster_of(3, bin, dir, database)
}

fn cluster_of(n: usize, bin: &Path, dir: &Path, database: &str) -> Vec<Node> {
    let first = Node::start(bin, dir, Some(database));
    let mut nodes = vec![first];
    nodes.extend((1..n).map(|_| Node::start(bin, dir, Some(database))));
    // Every node must hold a lease (renewed every 250 ms) before it allows.
    std::thread::sleep(Duration::from_millis(600));
    nodes
}

/// The warnings and errors the nodes on `dir` logged (TETHER_LOG=warn), for the record.
fn node_warnings(dir: &Path) {
    let mut logs: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    logs.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("serve-")));
    logs.sort();
    for (i, log) in logs.iter().enumerate() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        // Every 5xx answer but a 503 is logged as an error (api::log_failure).
        let answers = lines.iter().filter(|l| l.contains("response failed")).count();
        let others: Vec<&&str> = lines.iter().filter(|l| !l.contains("response failed")).collect();
        if !lines.is_empty() {
            println!(
                "  node log {}: {answers} answers logged as failed (5xx but 503), {} other warnings/errors",
                i + 1,
                others.len()
            );
            for line in others.iter().take(6) {
                println!("    {}", line.chars().take(240).collect::<String>());
            }
        }
    }
}

fn admin_credential(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.credential")).expect("admin.credential").trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 keep-alive client

struct Client {
    address: String,
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
}

impl Client {
    fn connect(address: &str) -> Client {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
        Client { address: address.to_owned(), reader: BufReader::with_capacity(64 * 1024, stream), body: Vec::new() }
    }

    /// One request on this connection: the status; the body is in `self.body`.
    fn request(&mut self, method: &str, path: &str, credential: &str, body: &str) -> u16 {
        // No credential: a public route (`/metrics`).
        let authorization =
            if credential.is_empty() { String::new() } else { format!("Authorization: Bearer {credential}\r\n") };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: tether\r\n{authorization}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status: {line:?}"));
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
        self.body.clear();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).expect("chunk size");
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).expect("chunk size");
                let start = self.body.len();
                self.body.resize(start + size, 0);
                self.reader.read_exact(&mut self.body[start..]).expect("chunk");
                line.clear();
                self.reader.read_line(&mut line).expect("chunk end");
                if size == 0 {
                    break;
                }
            }
        } else {
            self.body.resize(length, 0);
            self.reader.read_exact(&mut self.body).expect("body");
        }
        status
    }

    /// A request that must answer 2xx: its JSON body.
    fn ok(&mut self, method: &str, path: &str, credential: &str, body: Value) -> Value {
        let status = self.request(method, path, credential, &body.to_string());
        let answer: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        assert!((200..300).contains(&status), "{} {method} {path}: {status} {answer}", self.address);
        answer
    }
}

fn ok(address: &str, method: &str, path: &str, credential: &str, body: Value) -> Value {
    Client::connect(address).ok(method, path, credential, body)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The objects sessions stand on, made through the API of one node.
#[derive(Clone)]
struct Setup {
    admin: String,
    platform: String,
    verifier: String,
    agent: Value,
    integration: Value,
    delegation: String,
}

impl Setup {
    fn new(address: &str, admin: &str) -> Setup {
        let mut c = Client::connect(address);
        let platform_id = c.ok("POST", "/v1/platforms", admin, json!({"name": "bench"}))["id"].clone();
        let mut credential =
            |body: Value| c.ok("POST", "/v1/credentials", admin, body)["credential"].as_str().unwrap().to_owned();
        let platform = credential(json!({"role": "platform", "platform_id": platform_id}));
        let verifier = credential(json!({"role": "verifier"}));
        let scopes = json!(["mail:read", "mail:send"]);
        let agent = c.ok("POST", "/v1/agents", &platform, json!({"name": "agent", "scopes": scopes}))["id"].clone();
        let integration =
            c.ok("POST", "/v1/integrations", &platform, json!({"name": "integration", "scopes": scopes}))["id"].clone();
        let mut setup =
            Setup { admin: admin.to_owned(), platform, verifier, agent, integration, delegation: String::new() };
        setup.delegation = setup.user(&mut c).1;
        setup
    }

    /// A new user delegating the agent: (user id, delegation id).
    fn user(&self, c: &mut Client) -> (String, String) {
        let scopes = json!(["mail:read", "mail:send"]);
        let external = format!("idp|{}", uuid::Uuid::now_v7().simple());
        let user = c.ok("POST", "/v1/users", &self.admin, json!({"external_id": external, "permissions": scopes}));
        let delegation = c.ok(
            "POST",
            "/v1/delegations",
            &self.platform,
            json!({"user_id": user["id"], "agent_id": self.agent, "integration_id": self.integration, "scopes": scopes}),
        );
        (user["id"].as_str().unwrap().to_owned(), delegation["id"].as_str().unwrap().to_owned())
    }

    fn session_body(&self) -> String {
        json!({"delegation_id": self.delegation, "scopes": ["mail:read"]}).to_string()
    }

    /// Bodies opening sessions on `n` delegations of `n` new users, made on `address`.
    fn session_bodies(&self, address: &str, n: usize) -> Vec<String> {
        let mut c = Client::connect(address);
        (0..n).map(|_| Setup { delegation: self.user(&mut c).1, ..self.clone() }.session_body()).collect()
    }

    /// A session opened on `address`: (id, token).
    fn session(&self, c: &mut Client) -> (String, String) {
        let status = c.request("POST", "/v1/sessions", &self.platform, &self.session_body());
        assert!(status == 201 || status == 200, "open session: {status} {}", String::from_utf8_lossy(&c.body));
        let answer: Value = serde_json::from_slice(&c.body).expect("json");
        (answer["session"]["id"].as_str().unwrap().to_owned(), answer["token"].as_str().unwrap().to_owned())
    }
}

/// Seconds the nodes at `at` have held the write lock (`tether_writer_locked_seconds_total`),
/// summed: on PostgreSQL the chain lock, which one batch of one node holds at a time.
fn chain_lock_held(at: &[String]) -> f64 {
    writer_counter(at, "tether_writer_locked_seconds_total")
}

/// A writer counter from every node's `/metrics`, summed.
fn writer_counter(at: &[String], name: &str) -> f64 {
    at.iter()
        .map(|address| {
            let mut c = Client::connect(address);
            assert_eq!(c.request("GET", "/metrics", "", ""), 200, "GET /metrics on {address}");
            let text = String::from_utf8_lossy(&c.body).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in /metrics"))
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Closed loops

struct Run {
    calls: usize,
    failures: usize,
    took: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.took.as_secs_f64()
    }

    fn describe(&self) -> String {
        format!(
            "{:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms  ({} calls{})",
            self.rate(),
            support::micros(support::percentile(&self.latencies, 50.0)) / 1e3,
            support::micros(support::percentile(&self.latencies, 99.0)) / 1e3,
            self.calls,
            if self.failures > 0 { format!(", {} FAILED", self.failures) } else { String::new() }
        )
    }
}

/// `per_target` connections to each address, each sending `method path body` in a loop for a
/// warm-up second and then the run; a call succeeds when its status is 2xx and its body holds
/// `expect`.
fn closed_loop(
    targets: &[String],
    per_target: usize,
    (method, path, credential, bodies): (&str, &str, &str, &[String]),
    expect: &[u8],
) -> Run {
    let connections = targets.len() * per_target;
    let barrier = Arc::new(Barrier::new(connections + 1));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let (address, barrier, measuring, stop, failures) = (
                targets[i % targets.len()].clone(),
                barrier.clone(),
                measuring.clone(),
                stop.clone(),
                failures.clone(),
            );
            let (method, path, credential, body, expect) = (
                method.to_owned(),
                path.to_owned(),
                credential.to_owned(),
                bodies[i % bodies.len()].clone(),
                expect.to_vec(),
            );
            std::thread::spawn(move || {
                let mut client = Client::connect(&address);
                let mut latencies = Vec::with_capacity(1 << 16);
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let status = client.request(&method, &path, &credential, &body);
                    let took = start.elapsed();
                    if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        if (200..300).contains(&status) && contains(&client.body, &expect) {
                            latencies.push(took);
                        } else if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            let body = String::from_utf8_lossy(&client.body[..client.body.len().min(300)]);
                            println!("  first failure ({address}): {status} {body}");
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(run_seconds());
    stop.store(true, Ordering::Relaxed);
    let took = start.elapsed();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().expect("client thread")).collect();
    latencies.sort_unstable();
    Run { calls: latencies.len(), failures: failures.load(Ordering::Relaxed), took, latencies }
}

// ---------------------------------------------------------------------------------------------
// Where the CPU went

/// CPU time in clock ticks (`/proc`): the host's busy, stolen and idle time, and what the tether
/// nodes, PostgreSQL's processes and this client used.
struct Cpu {
    busy: u64,
    steal: u64,
    idle: u64,
    tether: u64,
    /// Per process of the bench's PostgreSQL server (the postmaster of `TETHER_TEST_PG_DATA`
    /// and its children): backends come and go, and the host may run other servers.
    postgres: std::collections::HashMap<u32, u64>,
    client: u64,
}

/// A process's parent and its user + system ticks.
fn process_ticks(pid: &str) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Field 3 (state) is fields[0]: ppid (4) is fields[1], utime (14) and stime (15) are
    // fields[11] and fields[12].
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((fields.get(1)?.parse().ok()?, ticks))
}

/// The postmaster of the bench's server, from `TETHER_TEST_PG_DATA/postmaster.pid`.
fn postmaster() -> Option<u32> {
    let data = std::env::var_os("TETHER_TEST_PG_DATA")?;
    std::fs::read_to_string(Path::new(&data).join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

impl Cpu {
    fn now(tether: &[u32]) -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let master = postmaster();
        let postgres = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                        let (parent, ticks) = process_ticks(&pid.to_string())?;
                        (Some(pid) == master || Some(parent) == master).then_some((pid, ticks))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Cpu {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
            idle: at(3) + at(4),
            tether: tether.iter().filter_map(|p| process_ticks(&p.to_string())).map(|(_, t)| t).sum(),
            postgres,
            client: process_ticks("self").map(|(_, t)| t).unwrap_or(0),
        }
    }

    /// The host's use since `before`, and each party's share of the CPU time used (a backend
    /// that exited meanwhile is not counted; "other" is everything else on the host).
    fn since(&self, before: &Cpu) -> String {
        let busy = self.busy.saturating_sub(before.busy) as f64;
        let steal = self.steal.saturating_sub(before.steal) as f64;
        let total = (busy + steal + self.idle.saturating_sub(before.idle) as f64).max(1.0);
        let postgres: u64 =
            self.postgres.iter().map(|(pid, t)| t.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0))).sum();
        let parts = [self.tether.saturating_sub(before.tether), postgres, self.client.saturating_sub(before.client)];
        let share = |t: u64| t as f64 / busy.max(1.0) * 100.0;
        format!(
            "CPU: host {:.0}% busy, {:.0}% stolen; of the busy time tether {:.0}%, postgres {:.0}%, this client {:.0}%, other {:.0}%",
            busy / total * 100.0,
            steal / total * 100.0,
            share(parts[0]),
            share(parts[1]),
            share(parts[2]),
            (100.0 - share(parts.iter().sum())).max(0.0),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Authorize

fn authorize(sqlite: &Node, lone: &Setup, at: &[String], pids: &[u32], setup: &Setup, database: &str) {
    let connections = env_usize("TETHER_BENCH_CONNECTIONS", 8);
    println!("\n== authorize, one warmed token, {connections} connections per node, {:?} runs", run_seconds());
    let body = |token: &str| json!({"token": token, "scope": "mail:read"}).to_string();
    let sqlite_at = [sqlite.address().to_owned()];
    let (_, sqlite_token) = lone.session(&mut Client::connect(sqlite.address()));
    let (_, token) = setup.session(&mut Client::connect(&at[0]));
    // Warm: each node verifies and caches the token (and reads the session made elsewhere).
    for address in at.iter().chain(&sqlite_at) {
        let t = if address == sqlite.address() { &sqlite_token } else { &token };
        let v = if address == sqlite.address() { &lone.verifier } else { &setup.verifier };
        let answer = ok(address, "POST", "/v1/authorize", v, serde_json::from_str(&body(t)).unwrap());
        assert_eq!(answer["decision"], "allow", "{address}: {answer}");
    }
    let all_pids = pids;
    let run = |label: &str, targets: &[String], verifier: &str, token: &str| {
        let (cpu, leases) = (Cpu::now(all_pids), LeaseWatch::start(database));
        let run = closed_loop(targets, connections, ("POST", "/v1/authorize", verifier, &[body(token)]), b"\"allow\"");
        println!("{label:<23}{}\n  {}\n  {}", run.describe(), Cpu::now(all_pids).since(&cpu), leases.report());
        run
    };
    let before = run("sqlite node (before)", &sqlite_at, &lone.verifier, &sqlite_token);
    let mut rates = Vec::new();
    for (i, address) in at.iter().enumerate() {
        let r = run(&format!("postgres node {}", i + 1), std::slice::from_ref(address), &setup.verifier, &token);
        rates.push(r.rate());
    }
    run("postgres, all 3 at once", at, &setup.verifier, &token);
    let after = run("sqlite node (after)", &sqlite_at, &lone.verifier, &sqlite_token);
    let sqlite_mean = (before.rate() + after.rate()) / 2.0;
    let pg_mean = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "authorize per node: postgres {pg_mean:.0}/s vs sqlite {sqlite_mean:.0}/s = {:.2}× (sqlite before/after {:.2}×: the noise)",
        pg_mean / sqlite_mean,
        after.rate() / before.rate()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Revocation on all three nodes

fn revocations(at: &[String], pids: &[u32], setup: &Setup, stats: &mut Statements) {
    let rounds = env_usize("TETHER_BENCH_REVOCATIONS", 500);
    println!("\n== revocation applied on all three nodes, {rounds} sessions");
    let mut clients: Vec<Client> = at.iter().map(|a| Client::connect(a)).collect();
    let mut latencies = Vec::with_capacity(rounds);
    let mut stale = 0;
    stats.reset();
    let (started, cpu) = (Instant::now(), Cpu::now(pids));
    for round in 0..rounds {
        let (opener, revoker) = (round % 3, (round + 1) % 3);
        let (id, token) = setup.session(&mut clients[opener]);
        let body = json!({"token": token, "scope": "mail:read"}).to_string();
        // Live on every node first: each has read the session made elsewhere and allowed it.
        for c in clients.iter_mut() {
            let mut tries = 0;
            loop {
                let status = c.request("POST", "/v1/authorize", &setup.verifier, &body);
                if status == 200 && contains(&c.body, b"\"allow\"") {
                    break;
                }
                tries += 1;
                assert!(status == 503 && tries < 250, "round {round}: {status} {}", String::from_utf8_lossy(&c.body));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let path = format!("/v1/sessions/{id}/revoke");
        let start = Instant::now();
        let status = clients[revoker].request("POST", &path, &setup.platform, r#"{"reason":"bench"}"#);
        latencies.push(start.elapsed());
        assert!((200..300).contains(&status), "revoke: {status} {}", String::from_utf8_lossy(&clients[revoker].body));
        for c in clients.iter_mut() {
            c.request("POST", "/v1/authorize", &setup.verifier, &body);
            if contains(&c.body, b"\"allow\"") {
                stale += 1;
            }
        }
    }
    latencies.sort_unstable();
    let ms = |p: f64| support::micros(support::percentile(&latencies, p)) / 1e3;
    println!(
        "revoke to answer: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (target p99 <= 20 ms); stale allows after the answer: {stale}",
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0)
    );
    println!("  the whole loop (open, 3 authorizes, revoke, 3 authorizes): {}", Cpu::now(pids).since(&cpu));
    stats.report(started.elapsed(), 6, false);
}

// ---------------------------------------------------------------------------------------------
// 4. Session creation

fn creation(
    sqlite: &Node,
    lone: &Setup,
    at: &[String],
    pids: &[u32],
    setup: &Setup,
    stats: &mut Statements,
    creators: usize,
) {
    println!("\n== session creation, {creators} connections, {:?} runs", run_seconds());
    let per_node = creators.div_ceil(at.len());
    let sessions = stats.sessions();
    stats.reset();
    let locked_before = chain_lock_held(at);
    let memo = |at: &[String]| {
        let count = |outcome| writer_counter(at, &format!("tether_writer_reads_ahead_{outcome}_total"));
        (count("kept"), count("dropped"))
    };
    let memo_before = memo(at);
    let (started, cpu, leases) = (Instant::now(), Cpu::now(pids), LeaseWatch::start(&stats.database));
    // Each connection opens sessions on a delegation of its own, as many users' agents would:
    // a batch then reads a delegation and a chain per session, not one for all.
    let bodies = setup.session_bodies(&at[0], creators);
    let pg = closed_loop(at, per_node, ("POST", "/v1/sessions", &setup.platform, &bodies), b"\"token\"");
    let wall = started.elapsed();
    let locked = chain_lock_held(at) - locked_before;
    let (kept, dropped) = memo(at);
    println!("postgres, 3 nodes      {} (target >= 5000/s)", pg.describe());
    println!("  {}\n  {}", Cpu::now(pids).since(&cpu), leases.report());
    let (created, calls) = (stats.sessions() - sessions, stats.calls());
    if calls > 0 {
        println!(
            "  {created} sessions stored over the warm-up and the run; {calls} statements from all nodes, {:.1} per session",
            calls as f64 / created.max(1) as f64
        );
    }
    if let Some((batches, ms)) = stats.calls_of("FROM audit_chain_lock WHERE id = $1 FOR UPDATE") {
        println!(
            "  the chain lock (one write batch at a time across the nodes): taken {batches} times, {:.1} sessions a batch; waiting for it: {:.1} s over all writers",
            created as f64 / batches.max(1) as f64,
            ms / 1e3
        );
    }
    // Over the warm-up and the run, as `created`: what the lock admits is the sessions it let
    // through per second it was held.
    let per_session = locked / created.max(1) as f64;
    println!(
        "  the chain lock held {:.2} s over the warm-up and the run ({:.2} s), {:.0} µs a session: it admits up to {:.0} sessions/s (target >= 5000/s)",
        locked,
        wall.as_secs_f64(),
        per_session * 1e6,
        1.0 / per_session.max(1e-9)
    );
    println!(
        "  the writers' remembered reads (store/memo.rs): still true under the lock in {:.0} batches, dropped in {:.0}",
        kept - memo_before.0,
        dropped - memo_before.1
    );
    stats.report(wall, 16, true);
    let sqlite_at = [sqlite.address().to_owned()];
    let cpu = Cpu::now(pids);
    let lite = closed_loop(
        &sqlite_at,
        creators,
        ("POST", "/v1/sessions", &lone.platform, &lone.session_bodies(&sqlite_at[0], creators)),
        b"\"token\"",
    );
    println!("sqlite node            {}", lite.describe());
    println!("  {}", Cpu::now(pids).since(&cpu));
}

// ---------------------------------------------------------------------------------------------
// 3. Cascades

/// Bytes of WAL and full-page images the server has written (`pg_stat_wal`, PostgreSQL 14+).
fn wal_written(pg: &mut postgres::Client) -> (i64, i64) {
    pg.query_one("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or((0, 0))
}

fn cascades(bin: &Path, admin_url: &str, sizes: &[usize]) {
    let count = env_usize("TETHER_BENCH_CASCADE_NODES", 3).max(1);
    println!("\n== cascade: disable a user with N active sessions, {count} node(s)");
    let database = fresh_database(admin_url, "cascade");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pg = postgres::Client::connect(&database, postgres::NoTls).expect("connect");
    // The first node alone: schema, keys, the chain, the users; their sessions bulk-inserted.
    let users: Vec<(usize, String)> = {
        let first = Node::start(bin, dir.path(), Some(&database));
        let setup = Setup::new(first.address(), &admin_credential(dir.path()));
        let mut c = Client::connect(first.address());
        sizes
            .iter()
            .map(|&n| {
                let (user, delegation) = setup.user(&mut c);
                let one = Setup { delegation, ..setup.clone() };
                let (template, _) = one.session(&mut c);
                let start = Instant::now();
                bulk_copies(&mut pg, &template, n - 1);
                println!(
                    "  {n} sessions for {user}: 1 through the API, {} bulk-inserted in {:.1} s",
                    n - 1,
                    start.elapsed().as_secs_f64()
                );
                (n, user)
            })
            .collect()
        // The first node stops (SIGTERM) here, to start again with the sessions in its view.
    };
    pg.batch_execute("ANALYZE").expect("analyze");
    let admin = admin_credential(dir.path());
    // TETHER_BENCH_CASCADE_NODES=1: the same on one node, to see what the others' polling costs.
    let nodes = cluster_of(count, bin, dir.path(), &database);
    let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
    let mut stats = Statements::connect(&database);
    // Statistics as autovacuum would have them on a store that has run a while: a node's tailer
    // keeps the plan it made for its query while the audit log was tiny (a sequential scan
    // and a sort per batch, every row after the last applied one read each time) until the
    // table is analyzed; ANALYZE makes every node plan again. TETHER_BENCH_ANALYZE=0 skips it.
    let analyze = std::env::var("TETHER_BENCH_ANALYZE").map_or(true, |v| v != "0");
    for (i, (n, user)) in users.iter().enumerate() {
        let address = nodes[i % nodes.len()].address();
        let mut c = Client::connect(address);
        if analyze {
            pg.batch_execute("ANALYZE").expect("analyze");
        }
        stats.reset();
        let watch = Watch::start(&database, template_of(&mut pg, user), stats.loaded);
        let (cpu, leases) = (Cpu::now(&pids), LeaseWatch::start(&database));
        let wal_before = wal_written(&mut pg);
        let start = Instant::now();
        let status = c.request("POST", &format!("/v1/users/{user}/disable"), &admin, r#"{"reason":"bench"}"#);
        // The answer: 200 with the receipt, or 503 when the other nodes took longer than the
        // revoker waits (4 s) to confirm; the commit and each node's apply are timed below.
        let took = start.elapsed();
        let answer: Value = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
        let revoked = answer["revoked"].as_array().map(Vec::len).unwrap_or(0);
        let left: i64 = pg
            .query_one("SELECT count(*) FROM sessions WHERE user_id = $1 AND status = 'active'", &[user])
            .expect("count")
            .get(0);
        println!(
            "cascade of {n}: {:.3} s to the answer (HTTP {status}, {revoked} revoked in the receipt, {} KiB; {left} left active) (target <= 2 s to receipt)",
            took.as_secs_f64(),
            c.body.len() / 1024,
        );
        if !(200..300).contains(&status) {
            println!("  answer: {}", String::from_utf8_lossy(&c.body[..c.body.len().min(400)]));
        }
        let wal_after = wal_written(&mut pg);
        println!(
            "  WAL written by the server meanwhile: {:.1} MiB, {} full-page images",
            (wal_after.0 - wal_before.0) as f64 / (1 << 20) as f64,
            wal_after.1 - wal_before.1
        );
        let at_commit = watch.report(start);
        println!("  {}\n  {}", Cpu::now(&pids).since(&cpu), leases.report());
        match at_commit {
            Some(at) => stats.report_split(&at, ("until the commit", "from the commit until every node applied it"), 8),
            None => stats.report(took, 8, false),
        }
    }
    node_warnings(dir.path());
    drop(nodes);
}

/// `n` copies of the session row `template` under new ids (bench-only SQL, one statement).
fn bulk_copies(pg: &mut postgres::Client, template: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|_| tether::domain::SessionId::generate().to_string()).collect();
    let inserted = pg
        .execute(
            "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, depth,
                                   created_seq, scopes, status, created_at, expires_at)
             SELECT ids.id, s.delegation_id, s.user_id, s.agent_id, s.integration_id, s.platform_id, s.depth,
                    s.created_seq, s.scopes, s.status, s.created_at, s.expires_at
             FROM sessions s, unnest($1::text[]) AS ids(id) WHERE s.id = $2",
            &[&ids, &template],
        )
        .expect("bulk insert");
    assert_eq!(inserted as usize, n);
}

/// pg_stat_statements on a database, when the server has it loaded (benches/cluster.sh loads
/// it): what every node ran between `reset` and `report`, the lease renewals and tailers of idle
/// nodes included.
struct Statements {
    pg: postgres::Client,
    database: String,
    loaded: bool,
}

impl Statements {
    fn connect(database: &str) -> Statements {
        let mut pg = postgres::Client::connect(database, postgres::NoTls).expect("connect");
        let loaded = pg.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").is_ok()
            && pg.query("SELECT 1 FROM pg_stat_statements LIMIT 1", &[]).is_ok();
        if !loaded {
            println!("  (pg_stat_statements is not loaded: no statement counts; benches/cluster.sh loads it)");
        }
        Statements { pg, database: database.to_owned(), loaded }
    }

    fn reset(&mut self) {
        if self.loaded {
            self.pg.batch_execute("SELECT pg_stat_statements_reset()").expect("reset");
        }
    }

    /// Sessions stored in the database.
    fn sessions(&mut self) -> i64 {
        self.pg.query_one("SELECT count(*) FROM sessions", &[]).expect("count").get(0)
    }

    /// Calls and milliseconds of the statements whose text holds `pattern`, since the reset.
    fn calls_of(&mut self, pattern: &str) -> Option<(i64, f64)> {
        if !self.loaded {
            return None;
        }
        let row = self
            .pg
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND strpos(query, $1) > 0",
                &[&pattern],
            )
            .ok()?;
        Some((row.get(0), row.get(1)))
    }

    /// Statements counted since the reset.
    fn calls(&mut self) -> i64 {
        if !self.loaded {
            return 0;
        }
        self.pg
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .expect("calls")
            .get(0)
    }

    /// The `top` statements by execution time (or by calls).
    fn report(&mut self, wall: Duration, top: usize, by_calls: bool) {
        if self.loaded {
            let now = snapshot(&mut self.pg);
            print_statements(&format!("over {:.2} s", wall.as_secs_f64()), &now, top, by_calls);
        }
    }

    /// As `report`, split at a snapshot taken meanwhile.
    fn report_split(&mut self, at: &Snapshot, (before, after): (&str, &str), top: usize) {
        if self.loaded {
            let now = snapshot(&mut self.pg);
            let since: Snapshot = now
                .into_iter()
                .map(|(id, calls, ms, rows, query)| match at.iter().find(|s| s.0 == id) {
                    Some(&(_, c, m, r, _)) => (id, calls - c, ms - m, rows - r, query),
                    None => (id, calls, ms, rows, query),
                })
                .filter(|s| s.1 > 0)
                .collect();
            print_statements(before, at, top, false);
            print_statements(after, &since, top, false);
        }
    }
}

/// pg_stat_statements of this database: (queryid, calls, milliseconds executing, rows, text).
type Snapshot = Vec<(i64, i64, f64, i64, String)>;

fn snapshot(pg: &mut postgres::Client) -> Snapshot {
    pg.query(
        "SELECT queryid, calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g')
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[],
    )
    .expect("pg_stat_statements")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

fn print_statements(title: &str, rows: &Snapshot, top: usize, by_calls: bool) {
    let mut rows: Vec<&(i64, i64, f64, i64, String)> = rows.iter().collect();
    if by_calls {
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    } else {
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    }
    let (calls, ms) = rows.iter().fold((0, 0.0), |(c, t), r| (c + r.1, t + r.2));
    println!(
        "  pg_stat_statements {title} (all nodes): {calls} statements, {:.3} s executing in PostgreSQL; by {}:",
        ms / 1e3,
        if by_calls { "calls" } else { "time" },
    );
    for (_, calls, ms, n, query) in rows.into_iter().take(top) {
        println!("    {calls:>7} calls {ms:>9.1} ms {n:>8} rows  {}", query.chars().take(100).collect::<String>());
    }
}

/// Watches the nodes' lease renewals from the database, every 50 ms: the longest gap between two
/// renewals of each node (a renewal sets `lease_until` to the database's clock + 2 s, so the
/// gap is the difference of two successive values).
struct LeaseWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, f64, usize)>>,
}

impl LeaseWatch {
    fn start(database: &str) -> LeaseWatch {
        let mut pg = postgres::Client::connect(database, postgres::NoTls).expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let read =
                pg.prepare("SELECT id, extract(epoch FROM lease_until)::float8 FROM tether_nodes ORDER BY id").unwrap();
            // Per node: last lease_until seen, longest gap, renewals seen.
            let mut seen: Vec<(String, f64, f64, usize)> = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                for row in pg.query(&read, &[]).expect("leases") {
                    let (id, until): (String, f64) = (row.get(0), row.get(1));
                    match seen.iter_mut().find(|(n, ..)| *n == id) {
                        Some((_, last, gap, count)) if until > *last => {
                            *gap = gap.max(until - *last);
                            *last = until;
                            *count += 1;
                        }
                        Some(_) => {}
                        None => seen.push((id, until, 0.0, 0)),
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen.into_iter().map(|(id, _, gap, count)| (id, gap, count)).collect()
        });
        LeaseWatch { stop, thread }
    }

    fn report(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let nodes = self.thread.join().expect("lease watch");
        let gaps: Vec<String> =
            nodes.iter().map(|(_, gap, count)| format!("{:.0} ms ({count} renewals)", gap * 1e3)).collect();
        format!(
            "longest gap between lease renewals, per node: {} (renewed every 250 ms; allows stop after 1.9 s)",
            gaps.join(", ")
        )
    }
}

/// The one session of a cascade's user made through the API (the bulk copies share its
/// `created_at`; it is the oldest id).
fn template_of(pg: &mut postgres::Client, user: &str) -> String {
    pg.query_one("SELECT min(id) FROM sessions WHERE user_id = $1", &[&user]).expect("template").get(0)
}

/// Watches a cascade from the database, every 5 ms: when its commit became visible (a session of
/// the user revoked; pg_stat_statements is snapshot then) and when each node's lease row
/// reported the head as applied (the tailers report at once; the revoker's own row at its next
/// renewal), for up to 120 s after the commit, past the answer.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Option<Instant>, Vec<Instant>, Option<Snapshot>)>,
}

impl Watch {
    fn start(database: &str, session: String, statements: bool) -> Watch {
        let mut pg = postgres::Client::connect(database, postgres::NoTls).expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            // A primary-key read only: `max(seq)` while the cascade's rows are uncommitted walks
            // past them in the index, which would load the server.
            let status = pg.prepare("SELECT status FROM sessions WHERE id = $1").unwrap();
            let nodes = pg.prepare("SELECT id, applied_seq FROM tether_nodes").unwrap();
            let (mut committed, mut head, mut applied, mut at_commit) =
                (None, 0i64, Vec::<(String, Instant)>::new(), None);
            loop {
                match committed {
                    None if stopping.load(Ordering::Relaxed) => break,
                    None => {
                        let row = pg.query_one(&status, &[&session]).expect("status");
                        if row.get::<_, String>(0) == "revoked" {
                            committed = Some(Instant::now());
                            head = pg.query_one("SELECT max(seq) FROM audit_events", &[]).expect("head").get(0);
                            at_commit = statements.then(|| snapshot(&mut pg));
                        }
                    }
                    Some(at) => {
                        let rows = pg.query(&nodes, &[]).expect("nodes");
                        for row in &rows {
                            let id: String = row.get(0);
                            if row.get::<_, i64>(1) >= head && !applied.iter().any(|(n, _)| *n == id) {
                                applied.push((id, Instant::now()));
                            }
                        }
                        if applied.len() >= rows.len() || at.elapsed() > Duration::from_secs(120) {
                            break;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (committed, applied.into_iter().map(|(_, t)| t).collect(), at_commit)
        });
        Watch { stop, thread }
    }

    /// Prints the times after `start`; returns the statements' snapshot at the commit.
    fn report(self, start: Instant) -> Option<Snapshot> {
        self.stop.store(true, Ordering::Relaxed);
        let (committed, applied, at_commit) = self.thread.join().expect("watch");
        let at = |t: &Instant| format!("{:.3} s", t.duration_since(start).as_secs_f64());
        println!(
            "  seen from the database: committed at {}; each node's lease row reporting it applied at {}",
            committed.as_ref().map(at).unwrap_or_else(|| "?".into()),
            applied.iter().map(at).collect::<Vec<_>>().join(", ")
        );
        at_commit
    }
}
