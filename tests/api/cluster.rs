//! Three `tether serve` nodes on one PostgreSQL database (issue 21; docs/architecture.md,
//! "Running several nodes"): a revocation made on one node is never allowed by another once the
//! revoking call has returned. Needs a PostgreSQL server: `.ci/run` starts one
//! (tests/pg/start.sh) and sets `TETHER_TEST_DATABASE_URL`; without it these tests say so and
//! pass only outside CI.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::instance::{admin_credential, http, ok, Server};

/// One cluster test at a time. One of them stops the shared PostgreSQL server, which would fail
/// whatever another was doing on it; and on a small machine two clusters at once starve each
/// other's lease renewals, which the tests' time bounds are not meant to absorb. (Under
/// `TETHER_TEST_BACKEND=postgres` the rest of the API suite uses the server too, so the test that
/// stops it does not run there: `nodes_fail_closed_while_postgresql_is_down_and_recover_…`.)
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A turn on the shared server for a test that runs nodes of its own (`cluster_work.rs`).
pub(crate) fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh database on the test server, or `None` (outside CI) when there is no server.
pub(crate) fn fresh_database() -> Option<String> {
    let Ok(admin_url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must run the cluster tests: TETHER_TEST_DATABASE_URL is not set");
        eprintln!("skipped: TETHER_TEST_DATABASE_URL is not set (source tests/pg/start.sh)");
        return None;
    };
    let name = format!("tether_cluster_{}", uuid::Uuid::now_v7().simple());
    let mut client = postgres::Client::connect(&admin_url, postgres::NoTls).expect("connect to the test server");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
    let (base, _) = admin_url.rsplit_once('/').expect("a database in the URL");
    Some(format!("{base}/{name}"))
}

/// `count` nodes on `database` sharing the keys in `dir`, each with the `extra` flags, started
/// one after another, each once the one before listens (the first creates the schema, the keys
/// and the admin credential).
pub(crate) fn listening_nodes(dir: &Path, database: &str, count: usize, extra: &[&str]) -> Vec<Server> {
    let flags: Vec<&str> = ["--database", database].into_iter().chain(extra.iter().copied()).collect();
    (0..count)
        .map(|_| {
            let mut server = Server::start(dir, "127.0.0.1:0", &flags);
            server.wait_listening(Duration::from_secs(60));
            server
        })
        .collect()
}

/// Starts a node on `database` sharing the keys in `dir`, listening on `listen`; does not wait.
fn start_node(dir: &Path, database: &str, listen: &str) -> Server {
    Server::start(dir, listen, &["--database", database])
}

fn credential(address: &str, admin: &str, body: Value) -> String {
    ok(address, "POST", "/v1/credentials", admin, body)["credential"].as_str().expect("credential").to_owned()
}

/// `(status, decision)` of authorizing `token` for `mail:read`, or the connection's error.
fn try_decision(address: &str, verifier: &str, token: &str) -> std::io::Result<(u16, String)> {
    let body = json!({"token": token, "scope": "mail:read"});
    let (status, answer) = http(address, "POST", "/v1/authorize", verifier, Some(&body))?;
    Ok((status, answer["decision"].as_str().unwrap_or("none").to_owned()))
}

/// Nodes on one database and one keys directory, with what every test needs: an admin, a
/// platform and a verifier credential, and a user with a delegation (agent, integration) that
/// sessions are opened under. Each setup call goes to another node, so every node serves some.
struct Cluster {
    /// Killed when the test ends, however it ends (before `dir` is deleted).
    nodes: Vec<Server>,
    /// Each node's address, by index.
    at: Vec<String>,
    admin: String,
    platform: String,
    verifier: String,
    agent: Value,
    integration: Value,
    delegation: Value,
    database: String,
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

const SCOPES: &str = "mail:read";

/// A cluster of `size` nodes on a fresh database, or `None` (outside CI) without a server.
fn cluster(size: usize) -> Option<Cluster> {
    let turn = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let database = fresh_database()?;
    let dir = tempfile::tempdir().expect("tempdir");
    // The first node creates the schema, the keys and the admin credential; the others share
    // the keys directory, as nodes must, and start together.
    let mut first = start_node(dir.path(), &database, "127.0.0.1:0");
    first.wait_listening(Duration::from_secs(60));
    let mut nodes = vec![first];
    nodes.extend((1..size).map(|_| start_node(dir.path(), &database, "127.0.0.1:0")));
    for others in &mut nodes[1..] {
        others.wait_listening(Duration::from_secs(60));
    }
    let at: Vec<String> = nodes.iter().map(|n| n.address().to_owned()).collect();
    let admin = admin_credential(dir.path());
    let on = |i: usize| at[i % size].as_str();

    let platform_id = ok(on(0), "POST", "/v1/platforms", &admin, json!({"name": "p"}))["id"].clone();
    let platform = credential(on(1), &admin, json!({"role": "platform", "platform_id": platform_id}));
    let verifier = credential(on(2), &admin, json!({"role": "verifier"}));
    let scopes = json!([SCOPES]);
    let agent = ok(on(0), "POST", "/v1/agents", &platform, json!({"name": "a", "scopes": scopes}))["id"].clone();
    let integration =
        ok(on(1), "POST", "/v1/integrations", &platform, json!({"name": "i", "scopes": scopes}))["id"].clone();
    let mut cluster = Cluster {
        nodes,
        at,
        admin,
        platform,
        verifier,
        agent,
        integration,
        delegation: Value::Null,
        database,
        dir,
        _turn: turn,
    };
    (_, cluster.delegation) = cluster.user_with_delegation(2, "idp|1");
    Some(cluster)
}

impl Cluster {
    fn size(&self) -> usize {
        self.at.len()
    }

    /// The address of node `i` (modulo the size).
    fn on(&self, i: usize) -> &str {
        &self.at[i % self.size()]
    }

    /// A new user and its delegation to the cluster's agent and integration, made through node
    /// `i`: `(user id, delegation id)`.
    fn user_with_delegation(&self, i: usize, external_id: &str) -> (Value, Value) {
        let scopes = json!([SCOPES]);
        let body = json!({"external_id": external_id, "permissions": scopes});
        let user = ok(self.on(i), "POST", "/v1/users", &self.admin, body)["id"].clone();
        let body =
            json!({"user_id": user, "agent_id": self.agent, "integration_id": self.integration, "scopes": scopes});
        let delegation = ok(self.on(i + 1), "POST", "/v1/delegations", &self.platform, body)["id"].clone();
        (user, delegation)
    }

    /// Opens a session of the cluster's delegation through node `i`: `(id, token)`.
    fn open(&self, i: usize) -> (String, String) {
        open_session(self.on(i), &self.platform, &self.delegation).expect("open a session")
    }

    fn revoke(&self, i: usize, id: &str) {
        ok(self.on(i), "POST", &format!("/v1/sessions/{id}/revoke"), &self.platform, json!({"reason": "test"}));
    }

    fn decision(&self, i: usize, token: &str) -> (u16, String) {
        try_decision(self.on(i), &self.verifier, token)
            .unwrap_or_else(|e| panic!("authorize on {}: {e}\n{}", self.on(i), self.log_tail(i)))
    }

    /// The end of node `i`'s log (its stderr), for a failure's report.
    fn log_tail(&self, i: usize) -> String {
        let log = self.nodes[i % self.size()].stderr();
        let start = log.len().saturating_sub(3000);
        let start = (start..log.len()).find(|&at| log.is_char_boundary(at)).unwrap_or(log.len());
        let pid = self.nodes[i % self.size()].pid();
        format!("node {i} (pid {pid}, {}), the end of its log:\n{}", process_state(pid), &log[start..])
    }

    /// Node `i`'s answer for `token` once it is not 503 (a node without a current lease, for a
    /// moment on a loaded machine), waiting up to `limit`: `(status, decision)`.
    fn settled_decision(&self, i: usize, token: &str, limit: Duration) -> (u16, String) {
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.decision(i, token);
            if answer.0 != 503 || Instant::now() >= deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens `count` sessions of `delegation`, spread over the nodes (one thread per node).
    fn open_many(&self, delegation: &Value, count: usize) -> Vec<(String, String)> {
        let (size, platform) = (self.size(), self.platform.as_str());
        std::thread::scope(|s| {
            let openers: Vec<_> = (0..size)
                .map(|i| {
                    let (address, share) = (self.on(i), count / size + usize::from(i < count % size));
                    s.spawn(move || {
                        (0..share)
                            .map(|_| open_session(address, platform, delegation).expect("open a session"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            openers.into_iter().flat_map(|o| o.join().expect("opener")).collect()
        })
    }

    /// `GET` through node `i`, as admin.
    fn get(&self, i: usize, path: &str) -> Value {
        ok(self.on(i), "GET", path, &self.admin, Value::Null)
    }

    /// SIGKILL to node `i`, and waits until it is gone.
    fn kill(&mut self, i: usize) {
        let pid = self.nodes[i].pid().to_string();
        assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success());
        self.nodes[i].wait_exit(Duration::from_secs(10));
    }

    /// Starts node `i` again (after [`kill`](Self::kill) or a SIGTERM) on the same database and
    /// data directory, listening on `listen`, and waits until it listens.
    fn start_again(&mut self, i: usize, listen: &str) {
        let mut node = start_node(self.dir.path(), &self.database, listen);
        self.at[i] = node.wait_listening(Duration::from_secs(60));
        self.nodes[i] = node;
    }

    fn verify_audit(&self, i: usize) {
        let report = ok(self.on(i), "GET", "/v1/audit/verify", &self.admin, Value::Null);
        assert_eq!(report["ok"], json!(true), "one chain across the nodes: {report}");
    }
}

/// Whether a child process runs, or how it ended while not yet reaped (a zombie): its state and,
/// for a zombie, its wait status, from `/proc/PID/stat` (Linux).
fn process_state(pid: u32) -> String {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return "gone".into() };
    // After the command name, which is in parentheses and may hold spaces: field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    match (fields.first(), fields.last()) {
        (Some(&"Z"), Some(status)) => {
            let status: i32 = status.parse().unwrap_or(-1);
            format!("exited: code {}, signal {}", (status >> 8) & 0xff, status & 0x7f)
        }
        (Some(state), _) => format!("state {state}"),
        _ => "unknown".into(),
    }
}

/// Opens a session of `delegation` through `address`: `(id, token)`, or why not.
fn open_session(address: &str, platform: &str, delegation: &Value) -> Result<(String, String), String> {
    let body = json!({"delegation_id": delegation, "scopes": [SCOPES]});
    match http(address, "POST", "/v1/sessions", platform, Some(&body)) {
        Ok((status, session)) if (200..300).contains(&status) => Ok((
            session["session"]["id"].as_str().expect("session id").to_owned(),
            session["token"].as_str().expect("token").to_owned(),
        )),
        Ok((status, answer)) => Err(format!("{status} {answer}")),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_session_revoked_on_one_node_is_denied_by_every_other_node_once_the_revoke_returns() {
    let Some(c) = cluster(3) else { return };
    let rounds: usize = std::env::var("TETHER_CLUSTER_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let (mut stale_allows, mut allows_before) = (0, 0);
    for round in 0..rounds {
        let (opener, revoker) = (round % 3, (round + 1) % 3);
        let (id, token) = c.open(opener);
        // A session made on one node is usable on every node at once.
        for node in 0..3 {
            // A node may answer 503 for a moment (its lease renewal was slow on a loaded
            // machine); it must allow within a few seconds.
            let (status, answer) = c.settled_decision(node, &token, Duration::from_secs(5));
            assert_eq!((status, answer.as_str()), (200, "allow"), "round {round}: {}", c.on(node));
            allows_before += 1;
        }
        c.revoke(revoker, &id);
        for node in 0..3 {
            let (status, answer) = c.decision(node, &token);
            if answer == "allow" {
                stale_allows += 1;
                eprintln!("round {round}: {} allowed a session revoked at {}", c.on(node), c.on(revoker));
            }
            assert!(status == 200 || status == 503, "round {round}: {}: {status}", c.on(node));
        }
    }
    assert_eq!(allows_before, rounds * 3);
    assert_eq!(stale_allows, 0, "no node allowed a session after its revocation had returned");
    c.verify_audit(1);
}

/// Every node's writer remembers a delegation it opens sessions on (store/memo.rs), and trusts
/// what it remembers only while the database's count of changes stands still. Sessions are
/// opened on a delegation through all three nodes, in a loop, while another node revokes it:
/// none may stay active after the revocation, and none opens once it has returned.
#[test]
fn a_delegation_revoked_while_every_node_opens_sessions_on_it_keeps_no_session_and_opens_none() {
    let Some(c) = cluster(3) else { return };
    for round in 0..6 {
        let (_, delegation) = c.user_with_delegation(round, &format!("idp|opening-{round}"));
        for node in 0..3 {
            open_session(c.on(node), &c.platform, &delegation).expect("each node remembers the delegation");
        }
        let revoked = std::sync::atomic::AtomicBool::new(false);
        let refused_after = std::sync::atomic::AtomicUsize::new(0);
        let at: Vec<String> = (0..3).map(|node| c.on(node).to_owned()).collect();
        std::thread::scope(|threads| {
            for address in &at {
                let (platform, delegation, revoked, refused_after) =
                    (&c.platform, &delegation, &revoked, &refused_after);
                threads.spawn(move || {
                    // Until a few opens after the revocation returned.
                    let mut after = 0;
                    while after < 5 {
                        let returned = revoked.load(std::sync::atomic::Ordering::SeqCst);
                        let opened = open_session(address, platform, delegation);
                        if returned {
                            after += 1;
                            match opened {
                                Err(why) if why.starts_with("409") => {
                                    refused_after.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                                other => panic!("round {round}: {address} after the revocation: {other:?}"),
                            }
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(100));
            let revoke = format!("/v1/delegations/{}/revoke", delegation.as_str().expect("id"));
            ok(c.on(round + 2), "POST", &revoke, &c.platform, json!({"reason": "test"}));
            revoked.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(refused_after.into_inner(), 15, "round {round}");
        let query = format!("/v1/sessions?delegation_id={}&status=active", delegation.as_str().expect("id"));
        let active = ok(c.on(round), "GET", &query, &c.admin, Value::Null);
        assert_eq!(active["items"].as_array().map(Vec::len), Some(0), "round {round}: {active}");
    }
    c.verify_audit(1);
}

#[test]
fn a_paused_node_delays_a_revocation_by_at_most_its_lease_and_denies_until_it_catches_up() {
    let Some(c) = cluster(2) else { return };
    let (id, token) = c.open(0);
    assert_eq!(c.decision(1, &token), (200, "allow".to_owned()));

    let paused = c.nodes[1].pid().to_string();
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill").args([name, &paused]).status().expect("kill").success());
    };
    signal("-STOP");
    let started = Instant::now();
    c.revoke(0, &id);
    let waited = started.elapsed();
    signal("-CONT");
    // The bound is the lease (2 s); the margin is for a loaded machine, not for tether.
    assert!(waited < Duration::from_secs(6), "the revoke waited {waited:?} for a paused node");
    // Continued, the paused node has no live lease and has not applied the revocation: it may
    // answer 503 for a moment, and then deny; it never allows.
    for _ in 0..50 {
        let (status, answer) = c.decision(1, &token);
        assert_ne!(answer, "allow", "the continued node allowed a revoked session (status {status})");
        if status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the continued node never caught up");
}

#[test]
fn a_node_killed_during_a_cascade_leaves_all_of_it_or_none_and_the_others_agree_with_the_database() {
    let Some(mut c) = cluster(3) else { return };
    // A first disable runs to its end: how long a whole cascade takes here.
    let user = c.user_with_sessions(0);
    let (whole, _) = cascade_killed_after(&mut c, 0, &user, None);
    let whole = whole.expect("the disable answered");
    // Then node 0 is SIGKILLed that long into the request: early (before the writer has it or
    // while its batch runs), about halfway, and near the end (around the COMMIT). A user whose
    // disable did not happen is disabled again in the next round.
    let ms = Duration::from_millis;
    let mut user = None;
    for (round, delay) in [ms(0), ms(5), ms(30), whole / 2, whole * 9 / 10].into_iter().enumerate() {
        let round = round + 1;
        let victim = user.take().unwrap_or_else(|| c.user_with_sessions(round));
        let (_, disabled) = cascade_killed_after(&mut c, round, &victim, Some(delay));
        user = (!disabled).then_some(victim);
    }
}

/// A user with [`CASCADE`] sessions, and those sessions: (id, token).
struct UserWithSessions {
    id: String,
    sessions: Vec<(String, String)>,
}

impl Cluster {
    /// A new user with [`CASCADE`] sessions opened across the nodes.
    fn user_with_sessions(&self, round: usize) -> UserWithSessions {
        let (user, delegation) = self.user_with_delegation(round, &format!("idp|cascade{round}"));
        let sessions = self.open_many(&delegation, CASCADE);
        UserWithSessions { id: user.as_str().expect("user id").to_owned(), sessions }
    }
}

/// `user` is disabled through node 0, which is SIGKILLed `kill` into the request (never, with
/// `None`); then checks, through the survivors, that the cascade happened whole or not at all
/// and that every node agrees with the database. Returns how long the disable took when it was
/// answered, and whether the user is now disabled.
fn cascade_killed_after(
    c: &mut Cluster,
    round: usize,
    user: &UserWithSessions,
    kill: Option<Duration>,
) -> (Option<Duration>, bool) {
    let started = Instant::now();
    let (sessions, user) = (&user.sessions, &user.id);
    let (victim, admin, path) = (c.at[0].clone(), c.admin.clone(), format!("/v1/users/{user}/disable"));
    let request = std::thread::spawn(move || {
        let sent = Instant::now();
        let answer = http(&victim, "POST", &path, &admin, Some(&json!({"reason": "test"})));
        (answer, sent.elapsed())
    });
    if let Some(delay) = kill {
        std::thread::sleep(delay);
        c.kill(0);
    }
    let (answered, took) = request.join().expect("the disable request");
    let acknowledged = matches!(answered, Ok((status, _)) if (200..300).contains(&status));
    assert!(kill.is_some() || acknowledged, "round {round}: {answered:?}");

    // A barrier: a revocation made through a survivor returns only once every node with a live
    // lease has applied its seq, and so everything committed before it: the killed node's
    // cascade if it committed (before the kill, or never).
    let barrier = Instant::now();
    let (canary, _) = c.open(1);
    c.revoke(2, &canary);
    let barrier = barrier.elapsed();
    let checks = Instant::now();

    // Through the survivors: every session revoked and the user disabled, or nothing.
    let revoked: Vec<bool> = sessions
        .iter()
        .enumerate()
        .map(|(n, (id, _))| c.get(1 + n % 2, &format!("/v1/sessions/{id}"))["status"] == "revoked")
        .collect();
    let count = revoked.iter().filter(|r| **r).count();
    let status = c.get(2, &format!("/v1/users/{user}"))["status"].clone();
    eprintln!(
        "round {round}: killed {kill:?} into the disable, answered {:?} after {took:?}: {count} of {CASCADE} \
         sessions revoked, user {status}",
        answered.as_ref().map(|(code, _)| code)
    );
    assert!(count == 0 || count == CASCADE, "round {round}: {count} of {CASCADE} sessions revoked");
    assert_eq!(status == "disabled", count == CASCADE, "round {round}: user {status}, {count} sessions revoked");
    if acknowledged {
        assert_eq!(count, CASCADE, "round {round}: the disable was acknowledged");
    }
    // The database says the same.
    let mut db = postgres::Client::connect(&c.database, postgres::NoTls).expect("connect");
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'revoked'), count(*) FROM sessions WHERE user_id = $1",
            &[&user],
        )
        .expect("count sessions");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (count as i64, CASCADE as i64));

    // Every surviving node agrees with the database on a sample of the tokens.
    let expected = |n: usize| if revoked[n] { "deny" } else { "allow" };
    for (n, (id, token)) in sessions.iter().enumerate().step_by(10) {
        for node in [1, 2] {
            let (code, answer) = c.settled_decision(node, token, Duration::from_secs(5));
            assert_eq!((code, answer.as_str()), (200, expected(n)), "round {round}: session {id} on {}", c.on(node));
        }
    }
    c.verify_audit(1);
    let checks = checks.elapsed();
    let restart = Instant::now();

    if kill.is_some() {
        // The killed node comes back on the same database and data directory, and agrees too.
        c.start_again(0, "127.0.0.1:0");
        for (n, (_, token)) in sessions.iter().enumerate().step_by(30) {
            assert_eq!(c.settled_decision(0, token, Duration::from_secs(5)), (200, expected(n).to_owned()));
        }
    }
    eprintln!(
        "round {round}: {:?} (barrier {barrier:?}, checks {checks:?}, restart {:?})",
        started.elapsed(),
        restart.elapsed()
    );
    (acknowledged.then_some(took), count == CASCADE)
}

/// Sessions of the user a cascade test disables.
const CASCADE: usize = 300;

/// The test server's data directory and programs (tests/pg/start.sh), to stop and start it.
struct PgServer {
    pg_ctl: std::path::PathBuf,
    data: String,
    /// Who runs `pg_ctl` (`postgres` when the tests run as root), or empty: ourselves.
    run_as: String,
}

impl PgServer {
    fn from_env() -> Option<PgServer> {
        let bin = std::env::var("TETHER_TEST_PG_BIN").ok().filter(|b| !b.is_empty())?;
        let data = std::env::var("TETHER_TEST_PG_DATA").ok().filter(|d| !d.is_empty())?;
        let run_as = std::env::var("TETHER_TEST_PG_RUNAS").unwrap_or_default();
        Some(PgServer { pg_ctl: Path::new(&bin).join("pg_ctl"), data, run_as })
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut command = if self.run_as.is_empty() {
            std::process::Command::new(&self.pg_ctl)
        } else {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", &self.run_as, "--"]).arg(&self.pg_ctl);
            runuser
        };
        // From `/`: the owner may not be allowed into the test's working directory.
        command.arg("-D").arg(&self.data).args(args).current_dir("/");
        command.stdin(std::process::Stdio::null()).output().expect("run pg_ctl")
    }

    fn stop(&self) {
        let output = self.ctl(&["-m", "fast", "-w", "stop"]);
        assert!(output.status.success(), "pg_ctl stop: {output:?}");
    }

    fn start(&self) {
        let log = format!("{}/log", self.data);
        let output = self.ctl(&["-w", "-l", &log, "start"]);
        assert!(output.status.success(), "pg_ctl start: {output:?}");
    }

    fn running(&self) -> bool {
        self.ctl(&["status"]).status.success()
    }
}

/// Starts the server again when dropped, if it is down: a test that fails while the server is
/// stopped must not leave it stopped for the tests after it.
struct StartsAgain<'a>(&'a PgServer);

impl Drop for StartsAgain<'_> {
    fn drop(&mut self) {
        if !self.0.running() {
            self.0.start();
        }
    }
}

/// Sets its flag when dropped: a test that fails while its load threads run stops them, so the
/// scope joining them ends and the failure is reported (rather than waiting forever).
struct StopsOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopsOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What the load of [`nodes_fail_closed_while_postgresql_is_down_and_recover_with_every_acknowledged_write`]
/// saw: every revocation acknowledged (when, session id, token) and every allow of one of them.
#[derive(Default)]
struct RevokingLoad {
    stop: std::sync::atomic::AtomicBool,
    acknowledged: Mutex<Vec<(Instant, String, String)>>,
    stale_allows: Mutex<Vec<String>>,
}

impl RevokingLoad {
    fn acknowledged(&self) -> Vec<(Instant, String, String)> {
        self.acknowledged.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Round-robin over the nodes until told to stop: authorize `live`, open a session, revoke
    /// it on another node and, once the revoke is acknowledged, authorize its token on every
    /// node (none may allow it). Failures (the database is down) are expected, and retried with
    /// the next round.
    fn run(&self, at: &[String], platform: &str, verifier: &str, delegation: &Value, live: &str) {
        let on = |i: usize| at[i % at.len()].as_str();
        let mut round = 0;
        while !self.stop.load(std::sync::atomic::Ordering::Acquire) {
            round += 1;
            std::thread::sleep(Duration::from_millis(10));
            let _ = try_decision(on(round), verifier, live);
            let Ok((id, token)) = open_session(on(round + 1), platform, delegation) else { continue };
            let path = format!("/v1/sessions/{id}/revoke");
            let revoked = http(on(round + 2), "POST", &path, platform, Some(&json!({"reason": "test"})));
            if !matches!(revoked, Ok((status, _)) if (200..300).contains(&status)) {
                continue;
            }
            let acknowledged_at = Instant::now();
            for address in at {
                if let Ok((status, answer)) = try_decision(address, verifier, &token) {
                    if answer == "allow" {
                        let revoker = on(round + 2);
                        self.stale_allows
                            .lock()
                            .unwrap()
                            .push(format!("{address} ({status}) allowed {id} revoked at {revoker}"));
                    }
                }
            }
            self.acknowledged.lock().unwrap().push((acknowledged_at, id, token));
        }
    }
}

#[test]
fn nodes_fail_closed_while_postgresql_is_down_and_recover_with_every_acknowledged_write() {
    if crate::helpers::on_postgres() {
        // The whole API suite uses the server at the same time then; stopping it would fail
        // those tests. The plain `cargo test` run (the cluster tests alone on the server, one
        // at a time) runs this one.
        eprintln!("skipped under TETHER_TEST_BACKEND=postgres: other tests share the server");
        return;
    }
    let Some(c) = cluster(3) else { return };
    let Some(server) = PgServer::from_env() else {
        eprintln!("skipped: TETHER_TEST_PG_BIN and TETHER_TEST_PG_DATA are not set (source tests/pg/start.sh)");
        return;
    };
    let (_, live) = c.open(0);
    let load = RevokingLoad::default();
    std::thread::scope(|s| {
        let loader = s.spawn(|| load.run(&c.at, &c.platform, &c.verifier, &c.delegation, &live));
        let _stops = StopsOnDrop(&load.stop);
        let wait_for = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + limit;
            while !done() {
                assert!(Instant::now() < deadline && !loader.is_finished(), "{what}: not within {limit:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for("revocations under load", Duration::from_secs(20), &|| load.acknowledged().len() >= 30);

        let restarts = StartsAgain(&server);
        // Stopped on a thread of its own: a fast stop signals at once but waits for the
        // shutdown checkpoint, which takes seconds on a busy disk; the nodes are watched from
        // the signal on.
        let stopping = Instant::now();
        let revoked_before = load.acknowledged();
        let server = &server;
        let stopper = s.spawn(move || {
            server.stop();
            stopping.elapsed()
        });
        // Fail closed: every node answers 503 for the live token within 3 s of the stop (its
        // lease runs out at most 2 s after its last renewal), allows nothing from then on, and
        // never allows a session revoked before. What is wrong is collected, so the server has
        // stopped (and `restarts` can start it) before the test fails.
        let sample: Vec<&String> = revoked_before.iter().rev().take(5).map(|(_, _, token)| token).collect();
        let mut closed: Vec<Option<Duration>> = vec![None; c.size()];
        let mut wrong = Vec::new();
        let mut hold_until: Option<Instant> = None;
        while hold_until.is_none_or(|until| Instant::now() < until) && stopping.elapsed() < Duration::from_secs(8) {
            for (node, closed) in closed.iter_mut().enumerate() {
                let answer = try_decision(c.on(node), &c.verifier, &live);
                match (&answer, *closed) {
                    (Ok((503, _)), None) => *closed = Some(stopping.elapsed()),
                    (Ok((503, _)), Some(_)) => {}
                    (Ok((200, decision)), None) if decision == "allow" => {}
                    _ => {
                        wrong.push(format!("{} answered {answer:?} for the live token, closed {closed:?}", c.on(node)))
                    }
                }
                for token in &sample {
                    if let Ok((status, decision)) = try_decision(c.on(node), &c.verifier, token) {
                        if decision == "allow" {
                            wrong.push(format!("{} allowed a session revoked before the stop ({status})", c.on(node)));
                        }
                    }
                }
            }
            if hold_until.is_none() && closed.iter().all(Option::is_some) {
                // Closed everywhere; stays closed while the server is down.
                hold_until = Some(Instant::now() + Duration::from_secs(1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stopped = stopper.join().expect("pg_ctl stop");
        eprintln!("pg_ctl stop took {stopped:?}; nodes answered 503 after {closed:?}");
        let logs: Vec<String> = (0..c.size()).map(|i| c.log_tail(i)).collect();
        assert!(wrong.is_empty(), "while the server was down: {wrong:#?}\n{}", logs.join("\n"));
        for (node, closed) in closed.iter().enumerate() {
            let closed = closed.unwrap_or_else(|| panic!("{} never failed closed", c.on(node)));
            assert!(closed < Duration::from_secs(3), "{} allowed for {closed:?} after the stop", c.on(node));
        }

        let starting = Instant::now();
        server.start();
        drop(restarts);
        let started = starting.elapsed();
        // Recovery: every node allows the live token again, and writes (the load's revocations)
        // are acknowledged again.
        let mut recovered = Vec::new();
        for node in 0..c.size() {
            wait_for("allow again", Duration::from_secs(15), &|| c.decision(node, &live) == (200, "allow".to_owned()));
            recovered.push(starting.elapsed());
        }
        let after_restart = || load.acknowledged().iter().filter(|(at, ..)| *at > starting).count();
        wait_for("revocations after the restart", Duration::from_secs(15), &|| after_restart() >= 10);
        eprintln!(
            "pg_ctl start took {started:?}; nodes allowed again after {recovered:?}; {} revocations before the \
             stop, {} after the restart",
            revoked_before.len(),
            after_restart()
        );
        load.stop.store(true, std::sync::atomic::Ordering::Release);
        loader.join().expect("the load");
    });
    let stale = load.stale_allows.lock().unwrap().clone();
    assert!(stale.is_empty(), "allows of acknowledged revocations: {stale:#?}");

    // Every acknowledged revocation, before the stop or after the restart, is still there: in
    // the database, through the API, and in every node's answers.
    let acknowledged = load.acknowledged();
    let mut db = postgres::Client::connect(&c.database, postgres::NoTls).expect("connect");
    for (n, (_, id, token)) in acknowledged.iter().enumerate() {
        let row = db.query_one("SELECT status FROM sessions WHERE id = $1", &[id]).expect("the session's row");
        assert_eq!(row.get::<_, &str>(0), "revoked", "session {id} in the database");
        assert_eq!(c.get(n, &format!("/v1/sessions/{id}"))["status"], "revoked", "session {id}");
        for node in 0..c.size() {
            assert_eq!(c.settled_decision(node, token, Duration::from_secs(5)), (200, "deny".to_owned()), "{id}");
        }
    }
    // And a write made now is seen by every node.
    let (id, token) = c.open(2);
    for node in 0..c.size() {
        assert_eq!(c.settled_decision(node, &token, Duration::from_secs(5)), (200, "allow".to_owned()));
    }
    c.revoke(0, &id);
    for node in 0..c.size() {
        assert_ne!(c.decision(node, &token).1, "allow");
    }
    c.verify_audit(1);
}

/// What the load of [`a_rolling_restart_fails_no_retried_request_and_allows_no_revoked_session`]
/// saw.
#[derive(Default)]
struct RoundRobinLoad {
    stop: std::sync::atomic::AtomicBool,
    /// Requests answered as they should be (after retries).
    served: std::sync::atomic::AtomicUsize,
    /// Attempts that failed over to the next node (503 or no connection).
    failed_over: std::sync::atomic::AtomicUsize,
    /// Requests that failed after every retry, or were answered wrongly.
    failures: Mutex<Vec<String>>,
    /// Sessions revoked (acknowledged): (id, token).
    revoked: Mutex<Vec<(String, String)>>,
    stale_allows: Mutex<Vec<String>>,
}

/// Attempts per request: three rounds over three nodes.
const ATTEMPTS: usize = 9;

impl RoundRobinLoad {
    fn fail(&self, failure: String) {
        self.failures.lock().unwrap().push(failure);
    }

    /// Sends a request to node `first`; a 503 or a connection error sends it to the next node,
    /// pausing after each round over the nodes, [`ATTEMPTS`] times at most. The answer, or
    /// `None` (recorded as a failure).
    fn with_retries(
        &self,
        at: &[String],
        first: usize,
        what: &str,
        request: impl Fn(&str) -> std::io::Result<(u16, Value)>,
    ) -> Option<(u16, Value)> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 && attempt % at.len() == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let address = &at[(first + attempt) % at.len()];
            match request(address) {
                Ok((503, answer)) => last = format!("{address}: 503 {answer}"),
                Err(e) => last = format!("{address}: {e}"),
                Ok(answer) => return Some(answer),
            }
            self.failed_over.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.fail(format!("{what}: failed {ATTEMPTS} times, the last on {last}"));
        None
    }

    /// Until told to stop, round-robin over the nodes: authorize `live` (must allow), open a
    /// session and, every fourth round, revoke one opened earlier and authorize its token on
    /// every node (none may allow it).
    fn run(&self, at: &[String], platform: &str, verifier: &str, delegation: &Value, live: &str) {
        let served = || {
            self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let authorize = |token: &str| json!({"token": token, "scope": SCOPES});
        let mut opened = Vec::new();
        let mut round = 0;
        while !self.stop.load(std::sync::atomic::Ordering::Acquire) {
            round += 1;
            let body = authorize(live);
            let send = |a: &str| http(a, "POST", "/v1/authorize", verifier, Some(&body));
            if let Some((status, answer)) = self.with_retries(at, round, "authorize", send) {
                match (status, answer["decision"].as_str()) {
                    (200, Some("allow")) => served(),
                    _ => self.fail(format!("authorize of the live token: {status} {answer}")),
                };
            }
            let body = json!({"delegation_id": delegation, "scopes": [SCOPES]});
            let send = |a: &str| http(a, "POST", "/v1/sessions", platform, Some(&body));
            if let Some((status, session)) = self.with_retries(at, round + 1, "open a session", send) {
                match (status, session["session"]["id"].as_str(), session["token"].as_str()) {
                    (200..300, Some(id), Some(token)) => {
                        opened.push((id.to_owned(), token.to_owned()));
                        served();
                    }
                    _ => self.fail(format!("open a session: {status} {session}")),
                }
            }
            if round % 4 != 0 {
                continue;
            }
            let Some((id, token)) = opened.pop() else { continue };
            let (path, body) = (format!("/v1/sessions/{id}/revoke"), json!({"reason": "test"}));
            let send = |a: &str| http(a, "POST", &path, platform, Some(&body));
            match self.with_retries(at, round + 2, "revoke", send) {
                Some((200..300, _)) => served(),
                Some((status, answer)) => {
                    self.fail(format!("revoke: {status} {answer}"));
                    continue;
                }
                None => continue,
            };
            let body = authorize(&token);
            for address in at {
                if let Ok((status, answer)) = http(address, "POST", "/v1/authorize", verifier, Some(&body)) {
                    if answer["decision"] == "allow" {
                        self.stale_allows.lock().unwrap().push(format!("{address} ({status}) allowed {id}"));
                    }
                }
            }
            self.revoked.lock().unwrap().push((id, token));
        }
    }
}

#[test]
fn a_rolling_restart_fails_no_retried_request_and_allows_no_revoked_session() {
    let Some(mut c) = cluster(3) else { return };
    let (_, live) = c.open(0);
    let load = RoundRobinLoad::default();
    let (at, platform, verifier, delegation) =
        (c.at.clone(), c.platform.clone(), c.verifier.clone(), c.delegation.clone());
    let served = || load.served.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    std::thread::scope(|s| {
        // Two clients, so requests are in flight on a node when it is told to stop.
        let loaders: Vec<_> =
            (0..2).map(|_| s.spawn(|| load.run(&at, &platform, &verifier, &delegation, &live))).collect();
        let _stops = StopsOnDrop(&load.stop);
        let wait_for = |what: &str, limit: Duration, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + limit;
            while !done() {
                assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
                assert!(!loaders.iter().any(|l| l.is_finished()), "a load thread ended early");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for("requests under load", Duration::from_secs(20), &|| served() >= 100);
        // One node at a time: SIGTERM, wait for it to exit, start it again on the same address,
        // database and data directory, and wait until it listens and allows again.
        for (node, address) in at.iter().enumerate() {
            let restarting = Instant::now();
            c.nodes[node].terminate();
            let status = c.nodes[node].wait_exit(Duration::from_secs(30));
            assert!(status.success(), "{address} exited with {status}");
            let stopped = restarting.elapsed();
            c.start_again(node, address);
            assert_eq!(&c.at[node], address, "started again on the same address");
            let listening = restarting.elapsed();
            wait_for("allow again", Duration::from_secs(10), &|| c.decision(node, &live) == (200, "allow".to_owned()));
            let before = served();
            wait_for("requests after the restart", Duration::from_secs(10), &|| served() >= before + 100);
            eprintln!(
                "{address}: exited after {stopped:?}, listening after {listening:?}, allowing after {:?}",
                restarting.elapsed()
            );
        }
        load.stop.store(true, std::sync::atomic::Ordering::Release);
        for loader in loaders {
            loader.join().expect("the load");
        }
    });
    let failed_over = load.failed_over.load(std::sync::atomic::Ordering::Relaxed);
    let revoked = load.revoked.lock().unwrap().clone();
    eprintln!(
        "{} requests served, {failed_over} attempts failed over, {} sessions revoked, in {:?}",
        served(),
        revoked.len(),
        started.elapsed()
    );
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests failed after retries: {failures:#?}");
    let stale = load.stale_allows.lock().unwrap().clone();
    assert!(stale.is_empty(), "allows of acknowledged revocations: {stale:#?}");
    assert!(!revoked.is_empty());
    // Every node, restarted, denies every session revoked under the load.
    for (id, token) in &revoked {
        for node in 0..c.size() {
            assert_eq!(c.settled_decision(node, token, Duration::from_secs(5)), (200, "deny".to_owned()), "{id}");
        }
    }
    c.verify_audit(2);
}
